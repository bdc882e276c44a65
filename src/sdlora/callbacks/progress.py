"""One progress bar for the whole run: optimizer steps done / the run's total, steps per second, the time left, the
epoch and the running loss — not one bar per epoch (Lightning's bar counted the batches of an epoch: a 20-step run
with 60 batches per epoch ended at "33% 20/60", and a resumed run showed "5/?").

On a terminal it is a tqdm bar on stderr, and log lines (the "Saved …" of each step file, warnings) are printed above
it while it runs, each as it happens. When stderr is not a terminal (a log file, a SLURM job, the web UI's run) no
bar is drawn: a plain progress line is logged at every tenth of the run, at most every 30 s in between and at the
last step, so ``train.log`` shows how far the run got.
"""

from __future__ import annotations

import logging
import sys
import time
from contextlib import ExitStack
from typing import Any

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar

log = logging.getLogger("sdlora")


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(step: int, total: int, rate: float | None, extra: dict[str, Any]) -> str:
    """``step 20/60 (33%), 10.3 it/s, 0:04 left, epoch 1, loss/average 0.1234``."""
    parts = [f"step {step}/{total} ({100 * step // max(total, 1)}%)"]
    if rate:
        parts.append(f"{rate:.3g} it/s, {format_duration((total - step) / rate)} left")
    parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items()]
    return ", ".join(parts)


class RunProgressBar(ProgressBar):
    """Lightning progress bar over the run's optimizer steps (see the module docstring). ``total_steps``: the
    plan's total; ``interactive``: draw a bar (default: when stderr is a terminal)."""

    LOG_EVERY_S = 30.0

    def __init__(self, total_steps: int, interactive: bool | None = None) -> None:
        super().__init__()
        self.total_steps = int(total_steps)
        self.interactive = sys.stderr.isatty() if interactive is None else interactive
        self.enabled = True
        self._bar = None
        self._redirect = ExitStack()
        self._start = (0, 0.0)  # (step, time) when this process started training
        self._logged = (0, 0.0, -1)  # (tenth of the run, time, step) of the last plain line

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def _extra(self, trainer) -> dict[str, Any]:
        extra: dict[str, Any] = {"epoch": trainer.current_epoch + 1}
        for key, value in trainer.progress_bar_metrics.items():
            extra[key] = float(value)
        return extra

    def _rate(self, step: int) -> float | None:
        first, started = self._start
        elapsed = time.monotonic() - started
        return (step - first) / elapsed if step > first and elapsed > 0 else None

    def on_train_start(self, trainer, pl_module) -> None:
        if not self.enabled:
            return
        self._start = (trainer.global_step, time.monotonic())
        self._logged = (10 * trainer.global_step // max(self.total_steps, 1), time.monotonic(), trainer.global_step)
        if self.interactive:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self._bar = tqdm(total=self.total_steps, initial=trainer.global_step, desc="Training", unit="step",
                             dynamic_ncols=True, file=sys.stderr, smoothing=0.1)  # fmt: skip
            self._redirect.enter_context(logging_redirect_tqdm())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.enabled:
            return
        step = trainer.global_step
        if self._bar is not None:
            if step != self._bar.n:
                self._bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v
                                       for k, v in self._extra(trainer).items()}, refresh=False)  # fmt: skip
                self._bar.update(step - self._bar.n)
            return
        tenth, now = 10 * step // max(self.total_steps, 1), time.monotonic()
        last_tenth, last_time, last_step = self._logged
        due = tenth > last_tenth or now - last_time >= self.LOG_EVERY_S or step >= self.total_steps
        if due and step != last_step:
            self._logged = (tenth, now, step)
            log.info("Progress: %s", progress_line(step, self.total_steps, self._rate(step), self._extra(trainer)))

    def on_train_end(self, trainer, pl_module) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._redirect.close()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        if self._bar is not None:
            self._bar.write(sep.join(map(str, args)), file=sys.stderr)
        else:
            print(*args, sep=sep, **kwargs)
