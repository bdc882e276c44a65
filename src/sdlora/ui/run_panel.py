"""What the page shows of a run as it trains (the Training tab's panel and the Runs tab's details): a progress bar
(step / total, it/s, time left), loss and learning-rate charts, the sample images as they are written, the LoRA files
and states, the log tail and the TensorBoard command. Plain values (the charts: pictures, :mod:`sdlora.ui.charts`);
:mod:`sdlora.ui.widgets` holds the components.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.callbacks.progress import format_duration
from sdlora.ui.charts import chart, series
from sdlora.ui.runs import RunView

FINISHED = ("completed", "failed", "interrupted", "preempted", "stopped")


def progress_html(view: RunView | None) -> str:
    """A progress bar with ``data-step``/``data-total``/``data-status`` attributes (read by the browser tests)."""
    if view is None:
        return '<div class="sdlora-progress" data-status="none">No run yet: press Start.</div>'
    total = view.total or 0
    percent = round(100 * view.fraction)
    parts = [f"step {view.step}/{total or '?'} ({percent}%)"]
    if view.rate and view.status == "running":
        parts.append(f"{view.rate:.3g} it/s")
        if view.eta_s is not None:
            parts.append(f"{format_duration(view.eta_s)} left")
    parts.append(view.status)
    color = {"failed": "#dc2626", "interrupted": "#d97706", "stopped": "#d97706"}.get(view.status, "#16a34a")
    return (
        f'<div class="sdlora-progress" data-step="{view.step}" data-total="{total}" data-status="{view.status}">'
        f'<div style="background:#e5e7eb;border-radius:6px;height:18px;overflow:hidden">'
        f'<div style="width:{percent}%;background:{color};height:18px"></div></div>'
        f'<div style="margin-top:4px">{html.escape(" · ".join(parts))}</div></div>'
    )


def files_markdown(view: RunView) -> str:
    """The LoRA files and training states of the run, as paths (shown, never executed)."""
    if not view.files:
        return "No LoRA file yet."
    lines = []
    for path in view.files:
        kind = "training state" if path.is_dir() else f"{path.stat().st_size / 1e6:.2f} MB"
        lines.append(f"- `{path}` ({kind})")
    return "\n".join(lines)


def status_markdown(view: RunView) -> str:
    record = view.record
    lines = [f"**{view.status}** — `{view.path}`"]
    if record.get("loss") is not None:
        lines.append(f"final train loss (loss/average): {record['loss']:.5g}")
    if record.get("val_loss") is not None:
        lines.append(f"final val/loss: {record['val_loss']:.5g} (best {record.get('best_val_loss') or 0:.5g})")
    if record.get("error"):
        lines.append(f"message: {record['error'].splitlines()[0]}")
    if record.get("resume_from"):
        lines.append(f"continue with Resume (from `{record['resume_from']}`)")
    return "  \n".join(lines)


def tensorboard_markdown(path: Path) -> str:
    command = f"tensorboard --logdir {path / 'tensorboard'} --host 127.0.0.1"
    return f"TensorBoard: run `{command}` and open [http://127.0.0.1:6006](http://127.0.0.1:6006)"


@dataclass
class Panel:
    """Every value of a run's panel, in :data:`PANEL_ORDER`."""

    status: str
    progress: str
    loss: Any
    lr: Any
    samples: list[str]
    files: str
    log: str
    tensorboard: str

    def values(self) -> list[Any]:
        return [self.status, self.progress, self.loss, self.lr, self.samples, self.files, self.log, self.tensorboard]


def panel(view: RunView | None) -> Panel:
    if view is None:
        return Panel("", progress_html(None), None, None, [], "", "", "")
    samples = [str(p) for p in view.samples[-12:]]
    loss, lr = chart("loss", series(view.scalars, "loss/")), chart("learning rate", series(view.scalars, "lr/"))
    return Panel(status_markdown(view), progress_html(view), loss, lr, samples, files_markdown(view), view.log_tail,
                 tensorboard_markdown(view.path))  # fmt: skip
