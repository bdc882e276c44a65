"""Stopping a run on a signal without losing work: Ctrl-C (SIGINT), SIGTERM (``kill``, a cluster ending or
pre-empting a job) and the cluster's pre-emption warning (``trainer.preemption_signal``, SIGUSR1 by default:
``sbatch --signal=USR1@90``).

- Before training starts (planning, loading, caching) a signal stops the run at once: :class:`RunStopped`.
- During training the first signal asks for a stop after the current optimizer step
  (:class:`sdlora.callbacks.graceful_stop.GracefulStop`): the LoRA files and the training state of that step are
  written (without ``save.state``: ``<name>-interrupted.safetensors``); a second signal stops at once.
- The run record says ``interrupted`` (``preempted`` for the pre-emption signal) and the process exits with
  128 + the signal's number (130 for SIGINT, 143 for SIGTERM, 138 for SIGUSR1).
- After the pre-emption signal on SLURM the job is requeued (``scontrol requeue``), and the requeued job resumes from
  the newest state in its own run folder by itself (:func:`requeued_by_slurm`; also ``resume=auto``).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("sdlora")

INTERRUPTED, PREEMPTED = "interrupted", "preempted"


def signal_number(name: str | None) -> int | None:
    """``"SIGUSR1"`` / ``"USR1"`` / ``"10"`` → its number; None for null or ``"none"``. A ValueError names the
    option for anything else."""
    if name is None or str(name).strip().lower() in ("", "none", "null"):
        return None
    text = str(name).strip().upper()
    if text.isdigit():
        return int(text)
    text = text if text.startswith("SIG") else f"SIG{text}"
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"trainer.preemption_signal={name!r} is not a signal name (e.g. SIGUSR1, SIGUSR2)") from None


class RunStopped(BaseException):
    """A signal stopped the run at once (before training, or a second signal during it). A BaseException, so that
    no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, status: str = INTERRUPTED) -> None:
        self.signum = signum
        self.status = status
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """The signal handlers of one run (installed in the main thread only).

    ``graceful`` False: a signal raises :class:`RunStopped`. True (during training): the first signal sets
    :attr:`requested` (its number) and returns; the next one raises.
    """

    def __init__(self, preemption: int | None = None) -> None:
        self.preemption = preemption
        self.signals = tuple(dict.fromkeys(s for s in (signal.SIGINT, signal.SIGTERM, preemption) if s is not None))
        self.graceful = False
        self.requested: int | None = None
        self._previous: dict[int, Callable | int | None] = {}

    def status(self, signum: int | None) -> str:
        return PREEMPTED if signum is not None and signum == self.preemption else INTERRUPTED

    def install(self) -> None:
        """Take over the signals (again: Lightning installs its own SIGTERM handler when training starts)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def uninstall(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.graceful and self.requested is None:
            self.requested = signum
            log.warning("%s: stopping after this optimizer step with the LoRA and a state saved (%s again stops at "
                        "once)", name, name)  # fmt: skip
            return
        raise RunStopped(signum, self.status(signum))


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this SLURM job (an array task as ``<array job>_<task>``); False outside SLURM or when the
    command fails (logged)."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}" if array_job else os.environ.get("SLURM_JOB_ID")
    if not job or not re.fullmatch(r"[0-9_]+", job):
        return False
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("could not requeue SLURM job %s (%s); resubmit it with resume=auto", job, exc)
        return False
    if result.returncode != 0:
        log.warning("scontrol requeue %s failed (%s); resubmit the job with resume=auto", job, result.stderr.strip())
        return False
    log.warning("Requeued SLURM job %s: it resumes from its newest state when it starts again", job)
    return True


def requeued_by_slurm() -> bool:
    """Whether this is a SLURM job that was requeued (``SLURM_RESTART_COUNT`` ≥ 1): it resumes by itself."""
    count = os.environ.get("SLURM_RESTART_COUNT", "")
    return count.isdigit() and int(count) > 0
