"""Reading run folders for the page: status, progress, charts, samples, files and the log — only from what every run
writes anyway (docs/design.md §3): ``summary.json`` (the run record: status, final numbers, the process id),
``data_plan.json`` (total steps), the TensorBoard event files (``loss/*``, ``lr/*`` per logged step, with wall times),
``train.log`` (its plain ``Progress:`` lines, :mod:`sdlora.callbacks.progress`), ``sample/*.png`` and the LoRA files
and ``*-state`` folders at the top of the folder.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlora.sweep.record import read_record

RUN_FOLDERS = ("outputs", "multirun")
LORA_SUFFIXES = (".safetensors", ".ckpt", ".pt")
_PROGRESS = re.compile(r"Progress: step (\d+)/(\d+)")
_ACCUMULATORS: dict[str, Any] = {}
_ACCUMULATORS_LOCK = threading.Lock()


@dataclass
class RunView:
    """What the page shows of one run folder."""

    path: Path
    status: str  # starting, running, completed, failed, interrupted, preempted, stopped (killed)
    step: int = 0
    total: int | None = None
    rate: float | None = None  # optimizer steps per second, recently
    record: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)  # tag → (step, value, time)
    samples: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    log_tail: str = ""

    @property
    def eta_s(self) -> float | None:
        if self.rate and self.total:
            return max(0.0, (self.total - self.step) / self.rate)
        return None

    @property
    def fraction(self) -> float:
        if self.status == "completed":
            return 1.0
        return min(1.0, self.step / self.total) if self.total else 0.0


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """Every scalar of the run's TensorBoard files: tag → [(step, value, wall time)] (read incrementally)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float, float]]] = {}
    for events_dir in sorted({p.parent for p in run_dir.rglob("events.out.tfevents.*")}):
        with _ACCUMULATORS_LOCK:
            accumulator = _ACCUMULATORS.get(str(events_dir))
            if accumulator is None:
                accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
                _ACCUMULATORS[str(events_dir)] = accumulator
            accumulator.Reload()
            for tag in accumulator.Tags().get("scalars", []):
                found.setdefault(tag, []).extend((e.step, e.value, e.wall_time) for e in accumulator.Scalars(tag))
    return found


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ("" when there is none)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64_000))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _total_steps(run_dir: Path) -> int | None:
    try:
        return int(json.loads((run_dir / "data_plan.json").read_text(encoding="utf-8"))["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _rate(points: list[tuple[int, float, float]]) -> float | None:
    """Steps per second over the last logged points."""
    recent = sorted(points)[-20:]
    if len(recent) < 2 or recent[-1][2] <= recent[0][2]:
        return None
    return (recent[-1][0] - recent[0][0]) / (recent[-1][2] - recent[0][2])


def run_files(run_dir: Path) -> list[Path]:
    """LoRA files and training-state folders at the top of the run folder, oldest first."""
    items = [p for p in run_dir.iterdir() if (p.is_file() and p.suffix in LORA_SUFFIXES) or p.name.endswith("-state")]
    return sorted(items, key=lambda p: (p.stat().st_mtime, p.name))


def read_run(run_dir: str | Path, alive: bool | None = None) -> RunView:
    """The run folder as the page shows it; ``alive``: whether its process is known to be running (None: unknown)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir) or {}
    status = record.get("status") or ("starting" if alive or alive is None else "stopped")
    if status == "running" and alive is False:
        status = "stopped"  # killed: its record never got to say how it ended
    view = RunView(run_dir, status, record=record, total=_total_steps(run_dir))
    if not run_dir.is_dir():
        return view
    view.scalars = scalars(run_dir)
    loss = view.scalars.get("loss/current", [])
    view.step = max((s + 1 for s, _, _ in loss), default=0)
    view.log_tail = tail(run_dir / "train.log") or tail(run_dir / "console.log")
    for match in _PROGRESS.finditer(view.log_tail):
        view.step, view.total = max(view.step, int(match.group(1))), view.total or int(match.group(2))
    if record.get("steps") is not None and status != "running":
        view.step = int(record["steps"])
    view.rate = _rate(loss)
    view.samples = sorted((run_dir / "sample").glob("*.png")) if (run_dir / "sample").is_dir() else []
    view.files = run_files(run_dir)
    return view


def find_runs(base: Path, folders: tuple[str, ...] = RUN_FOLDERS, max_depth: int = 4) -> list[Path]:
    """Run folders (holding ``summary.json``) under ``base/outputs`` and ``base/multirun``, newest first."""
    found = set()
    for name in folders:
        root = base / name
        for depth in range(1, max_depth + 1):
            found.update(p.parent for p in root.glob("/".join(["*"] * depth) + "/summary.json"))
    return sorted(found, key=lambda p: (p / "summary.json").stat().st_mtime, reverse=True)


def find_sweeps(base: Path) -> list[Path]:
    """Sweep folders (``multirun/<date>/<time>``, Hydra's ``multirun.yaml`` inside), newest first."""
    sweeps = {p.parent for p in (base / "multirun").glob("*/*/multirun.yaml")}
    return sorted(sweeps, key=lambda p: p.stat().st_mtime, reverse=True)


def overrides_of(run_dir: Path) -> list[str]:
    """The overrides a run was started with (its record, else Hydra's ``.hydra/overrides.yaml``), without
    ``hydra.*`` settings and ``resume``."""
    record = read_record(run_dir) or {}
    overrides = record.get("overrides")
    if overrides is None:
        try:
            from omegaconf import OmegaConf

            overrides = list(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
        except Exception:
            overrides = []
    return [str(o) for o in overrides if not str(o).startswith(("hydra.", "resume="))]
