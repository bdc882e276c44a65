"""The run record ``summary.json``: one small JSON file per run folder saying how the run went.

Written atomically (by the process of global rank 0 only) when the Hydra job starts (``status: running``) and again
when it ends: ``completed`` with the numbers — final train loss (``loss/average``), final and best ``val/loss`` (and
``val/loss_ema``), optimizer steps, wall time, LoRA files, the best LoRA (``save.best_by``: ``best`` = path, step,
metric, value), the metric returned to the sweeper — or ``failed`` with the error message
(``user_error: true`` for a :class:`~sdlora.errors.SdloraError`, else the traceback), or ``interrupted`` / ``preempted``
(a signal stopped it: :mod:`sdlora.signals`; ``resume_from`` names the state to continue from).
A record that still says ``running`` belongs to a job that is running or was killed. The sweep summary
(:mod:`sdlora.tools.sweep_summary`) reads these records.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sdlora.utils.atomic import atomic_write_json

RECORD_NAME = "summary.json"


def _finite(value: Any) -> float | None:
    """A float for JSON, None where there is no finite number (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class RunRecord:
    """``<run folder>/summary.json`` of one job; ``write=False`` (ranks other than 0) keeps it in memory only."""

    def __init__(self, run_dir: str | Path, overrides: list[str], job_num: int | None = None, write: bool = True):
        self.path = Path(run_dir) / RECORD_NAME
        self.write = write
        self._start = time.perf_counter()
        self.data: dict[str, Any] = {
            "status": "running",
            "job_num": job_num,
            "overrides": [str(o) for o in overrides],
            "run_dir": str(Path(run_dir).resolve()),
            "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "pid": os.getpid(),
        }
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
            self.data["cuda_visible_devices"] = os.environ["CUDA_VISIBLE_DEVICES"]

    def _save(self) -> None:
        if self.write:
            atomic_write_json(self.path, self.data)

    def start(self) -> None:
        self._save()

    def _finish(self, status: str, **values: Any) -> None:
        self.data.update(
            status=status,
            time_s=round(time.perf_counter() - self._start, 3),
            finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **values,
        )
        self._save()

    def completed(self, summary: dict[str, Any], metric: float | None, metric_name: str | None) -> None:
        """A finished run: the numbers of :func:`sdlora.run.train`'s summary and the metric given to the sweeper."""
        files = [str(f) for f in summary.get("files", [])]
        self._finish(
            "completed",
            dry_run="steps" not in summary,
            steps=summary.get("steps"),
            total_steps=summary.get("total_steps"),
            loss=_finite(summary.get("loss")),
            val_loss=_finite(summary.get("val_loss")),
            best_val_loss=_finite(summary.get("best_val_loss")),
            metric=_finite(metric),
            metric_name=metric_name,
            files=files,
            lora=_final_lora(files),
            val_loss_ema=_finite(summary.get("val_loss_ema")),
            best_val_loss_ema=_finite(summary.get("best_val_loss_ema")),
            best=summary.get("best"),  # save.best_by: {path, step, metric, value} of <name>-best
        )

    def failed(self, exc: BaseException, user_error: bool) -> None:
        """A run stopped by an exception: the message of a user error, the traceback of anything else."""
        values: dict[str, Any] = {"error": str(exc) or type(exc).__name__, "user_error": user_error}
        if not user_error:
            values["error_type"] = type(exc).__name__
            values["traceback"] = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._finish("failed", **values)

    def interrupted(self, status: str = "interrupted", reason: str = "KeyboardInterrupt", resume: str | None = None):
        """A run stopped by a signal (``status``: ``interrupted`` or ``preempted``); ``resume``: what it left to
        continue from (a training state, or without states the LoRA so far)."""
        values: dict[str, Any] = {"error": f"{status} ({reason})"}
        if resume is not None:
            values["resume_from"] = resume
        self._finish(status, **values)


def _final_lora(files: list[str]) -> str | None:
    """The final LoRA: saved last (step/epoch files come before it), its variants (``-ema``) just after it."""
    main = [f for f in files if not Path(f).stem.endswith("-ema")]
    return main[-1] if main else (files[-1] if files else None)


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run record of ``run_dir``, or None where there is none (or it cannot be read)."""
    import json

    path = Path(run_dir) / RECORD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
