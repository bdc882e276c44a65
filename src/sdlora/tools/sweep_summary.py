"""One table for a sweep: one row per job with its overrides, final train loss, final and best ``val/loss``, steps,
time, LoRA file, best LoRA file (``save.best_by``: ``<name>-best``) and status (failed jobs with their error).

    python scripts/summarize_sweep.py multirun/2025-01-31/12-00-00

prints the table and the best job, and writes ``summary.csv``, ``summary.md`` and ``sweep.png`` (the best val/loss
of every job; matplotlib, from the ``sweep`` extra) into the sweep folder (``--out`` for another folder).

A job folder is a subfolder with Hydra's ``.hydra/`` or a run record ``summary.json`` (:mod:`sdlora.sweep.record`).
The numbers come from the record; for a job without a finished record (running, killed) they are read from its
TensorBoard event files. The overrides column shows the overrides that differ between the jobs (all of them in
the CSV). "Best" is the lowest best val/loss, or the lowest final train loss where no job has a validation loss.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.sweep.record import RECORD_NAME, read_record
from sdlora.utils.atomic import atomic_write_text
from sdlora.versions import version_text

COLUMNS = ("job", "overrides", "status", "train_loss", "val_loss", "best_val_loss", "steps", "time_s", "lora",
           "best_lora")  # fmt: skip


@dataclass
class JobRow:
    folder: Path
    job: int | None
    overrides: list[str]
    status: str
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    steps: int | None = None
    time_s: float | None = None
    lora: str | None = None
    best_lora: str | None = None  # <name>-best (save.best_by)
    error: str | None = None
    shown_overrides: list[str] = field(default_factory=list)  # the overrides that differ between jobs

    @property
    def score(self) -> float | None:
        """What "best" compares: the best val/loss, else the final train loss (completed jobs only)."""
        return self.best_val_loss if self.best_val_loss is not None else self.train_loss


@dataclass
class SweepSummary:
    folder: Path
    rows: list[JobRow]
    optuna_best: dict[str, Any] | None = None

    @property
    def metric_name(self) -> str:
        return "best val/loss" if any(r.best_val_loss is not None for r in self.rows) else "final train loss"

    @property
    def best(self) -> JobRow | None:
        """The completed job with the lowest score (best val/loss where any job has one)."""
        use_val = any(r.best_val_loss is not None for r in self.rows)
        candidates = [r for r in self.rows if r.status == "completed"]
        scored = [(r.best_val_loss if use_val else r.train_loss, r) for r in candidates]
        scored = [(s, r) for s, r in scored if s is not None]
        return min(scored, key=lambda item: item[0])[1] if scored else None


# ------------------------------------------------------------------------------------------------ reading jobs
def job_folders(sweep_dir: Path) -> list[Path]:
    """The job folders of a sweep folder (or the folder itself when it is a single run folder)."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SdloraError(f"{sweep_dir} is not a folder: give the sweep folder (e.g. multirun/<date>/<time>)")
    jobs = [p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and _is_run_folder(p)]
    if not jobs and _is_run_folder(sweep_dir):
        return [sweep_dir]
    if not jobs:
        raise SdloraError(f"{sweep_dir} holds no job folders (subfolders with .hydra/ or {RECORD_NAME})")
    return jobs


def _is_run_folder(folder: Path) -> bool:
    return (folder / ".hydra").is_dir() or (folder / RECORD_NAME).is_file()


def _job_number(folder: Path, record: dict | None) -> int | None:
    if record and isinstance(record.get("job_num"), int):
        return record["job_num"]
    head = folder.name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _hydra_overrides(folder: Path) -> list[str]:
    from omegaconf import OmegaConf

    path = folder / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


def _output_name(folder: Path) -> str:
    from omegaconf import OmegaConf

    path = folder / ".hydra" / "config.yaml"
    if path.is_file():
        name = OmegaConf.select(OmegaConf.load(path), "save.output_name", default=None, throw_on_missing=False)
        if isinstance(name, str):
            return name
    return "last"


def _final_lora(folder: Path, suffix_of_name: str = "") -> str | None:
    name = _output_name(folder) + suffix_of_name
    for suffix in (".safetensors", ".ckpt", ".pt"):
        if (folder / f"{name}{suffix}").is_file():
            return str(folder / f"{name}{suffix}")
    return None


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the run's TensorBoard event files as (step, value) pairs, by tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events_dir in sorted({p.parent for p in folder.rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(events_dir), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            scalars.setdefault(tag, []).extend((e.step, float(e.value)) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in scalars.items()}


def read_job(folder: Path) -> JobRow:
    """One job's row: from its run record, else from its TensorBoard events."""
    record = read_record(folder)
    overrides = list(record.get("overrides", [])) if record else _hydra_overrides(folder)
    row = JobRow(folder, _job_number(folder, record), overrides, record.get("status", "unknown") if record else "")
    if record and record.get("status") in ("completed", "failed", "interrupted", "preempted"):
        row.train_loss, row.val_loss = record.get("loss"), record.get("val_loss")
        row.best_val_loss, row.steps = record.get("best_val_loss"), record.get("steps")
        row.time_s, row.lora, row.error = record.get("time_s"), record.get("lora"), record.get("error")
        best = record.get("best")
        row.best_lora = best.get("path") if isinstance(best, dict) else None
        return row
    # no finished record: a running or killed job (or one from before run records): its events so far
    row.status = row.status or "no record"
    scalars = tensorboard_scalars(folder)
    if scalars.get("loss/average"):
        row.steps, row.train_loss = scalars["loss/average"][-1][0] + 1, scalars["loss/average"][-1][1]
    if scalars.get("val/loss"):
        row.val_loss = scalars["val/loss"][-1][1]
        row.best_val_loss = min(v for _, v in scalars["val/loss"])
    row.lora = _final_lora(folder)
    row.best_lora = _final_lora(folder, "-best")
    return row


def _differing(rows: list[JobRow]) -> None:
    """Set every row's ``shown_overrides`` to the overrides whose value is not the same in every job."""
    keyed = [dict(o.split("=", 1) if "=" in o else (o, "") for o in r.overrides) for r in rows]
    keys = {k for d in keyed for k in d}
    varying = {k for k in keys if len({d.get(k) for d in keyed}) > 1} if len(rows) > 1 else keys
    for row, values in zip(rows, keyed, strict=True):
        row.shown_overrides = [f"{k}={v}" if v else k for k, v in values.items() if k in varying]


def summarize(sweep_dir: str | Path) -> SweepSummary:
    """Read every job of ``sweep_dir`` (sorted by job number) and the Optuna result, if any."""
    from omegaconf import OmegaConf

    sweep_dir = Path(sweep_dir)
    rows = [read_job(folder) for folder in job_folders(sweep_dir)]
    rows.sort(key=lambda r: (r.job is None, r.job if r.job is not None else 0, r.folder.name))
    _differing(rows)
    optuna = sweep_dir / "optimization_results.yaml"
    best = OmegaConf.to_container(OmegaConf.load(optuna)) if optuna.is_file() else None
    return SweepSummary(sweep_dir, rows, best if isinstance(best, dict) else None)


# ------------------------------------------------------------------------------------------------------ output
def _number(value: Any, digits: int = 5) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def _one_line(text: str, limit: int = 160) -> str:
    """An error message on one line (its list items joined), cut to ``limit`` characters."""
    line = " ".join(part.strip().removeprefix("- ") for part in text.splitlines() if part.strip())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cells(summary: SweepSummary, row: JobRow, full: bool) -> dict[str, str]:
    lora, best_lora = row.lora or "", row.best_lora or ""
    if not full:  # the job number names its folder; the CSV has the full paths
        lora, best_lora = (Path(p).name if p else "" for p in (lora, best_lora))
    status = row.status if row.status != "failed" or full else f"failed: {_one_line(row.error or '')}"
    return {
        "job": "" if row.job is None else str(row.job),
        "overrides": " ".join(row.overrides if full else row.shown_overrides),
        "status": status,
        "train_loss": _number(row.train_loss),
        "val_loss": _number(row.val_loss),
        "best_val_loss": _number(row.best_val_loss),
        "steps": _number(row.steps),
        "time_s": _number(row.time_s, 4),
        "lora": lora,
        "best_lora": best_lora,
    }


def to_csv(summary: SweepSummary) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*COLUMNS, "best", "error", "folder"], lineterminator="\n")
    writer.writeheader()
    best = summary.best
    for row in summary.rows:
        cells = _cells(summary, row, full=True)
        writer.writerow({**cells, "best": "yes" if row is best else "", "error": row.error or "",
                         "folder": str(row.folder)})  # fmt: skip
    return out.getvalue()


def to_markdown(summary: SweepSummary) -> str:
    """The table (Markdown) and a line naming the best job."""
    headers = ["job", "overrides", "status", "train loss", "val loss", "best val loss", "steps", "time (s)", "LoRA",
               "best LoRA"]  # fmt: skip
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    best = summary.best
    for row in summary.rows:
        cells = _cells(summary, row, full=False)
        cells["job"] = f"**{cells['job']}** ★" if row is best else cells["job"]
        lines.append("| " + " | ".join(cells[c].replace("|", "\\|") for c in COLUMNS) + " |")
    failed = sum(r.status == "failed" for r in summary.rows)
    lines += ["", f"{len(summary.rows)} job(s), {failed} failed."]
    if best is not None:
        overrides = " ".join(best.shown_overrides) or "(no overrides)"
        lines.append(f"Best ({summary.metric_name} {_number(best.score)}): job {best.job} — {overrides} — "
                     f"{best.best_lora or best.lora or 'no LoRA file'}")  # fmt: skip
    if summary.optuna_best:
        params = summary.optuna_best.get("best_params", {})
        lines.append(f"Optuna's best: {' '.join(f'{k}={v}' for k, v in params.items())} "
                     f"(value {_number(summary.optuna_best.get('best_value'))})")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_outputs(summary: SweepSummary, out_dir: Path, plot: bool = True) -> list[Path]:
    """``summary.csv``, ``summary.md`` and (with matplotlib) ``sweep.png`` in ``out_dir``."""
    written = [
        atomic_write_text(out_dir / "summary.csv", to_csv(summary)),
        atomic_write_text(out_dir / "summary.md", to_markdown(summary)),
    ]
    if plot:
        from sdlora.tools.sweep_plot import plot_sweep

        written.append(plot_sweep(summary, out_dir / "sweep.png"))
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Summarise a Hydra sweep of sdlora runs in one table.")
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("sweep", type=Path, help="the sweep folder (multirun/<date>/<time>, or hydra.sweep.dir)")
    parser.add_argument("--out", type=Path, default=None, help="where to write the files (default: the sweep folder)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw sweep.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = summarize(args.sweep)
        print(to_markdown(summary), end="")
        written = write_outputs(summary, args.out or args.sweep, plot=not args.no_plot)
    except SdloraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
