"""The Hydra job around a training run (the body of ``train.py``'s task function).

- It writes the run record ``summary.json`` (:mod:`.record`) at the start and the end of the job.
- It returns the metric a sweeper minimises: the final ``val/loss`` when validation is on (``validation.dir`` or
  ``validation.split``), else the final ``loss/average``.
- A user error (:class:`~sdlora.errors.SdloraError`) is printed as one message without traceback. In a single run
  the process exits with code 1. In a sweep the job is recorded as failed and ends with :class:`SweepJobError`,
  which Hydra reports as a message, not a traceback: the basic and joblib launchers still run every other job of
  the batch (Hydra then reports the first failure and exits with code 1), and the Optuna sweeper records the trial
  as failed and goes on (``hparams_search=optuna`` sets ``max_failure_rate: 1.0``).
- Anything else is a bug: recorded with its traceback, then raised as it is.
- A run stopped by a signal (:mod:`sdlora.signals`: Ctrl-C, SIGTERM, the pre-emption signal) is recorded as
  ``interrupted`` (``preempted``) with what it left to continue from, and exits with code 128 + the signal's number
  (130, 143, …; a sweep stops there too). After the pre-emption signal a SLURM job is requeued.
- In a sweep with ``SDLORA_JOB_GPUS`` set (``hydra/launcher=joblib`` on several GPUs), the job first takes its GPU
  (:mod:`.gpus`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig

from sdlora.errors import SdloraError
from sdlora.sweep.record import RunRecord

log = logging.getLogger("sdlora")


class SweepJobError(CompactHydraException):
    """A sweep job stopped by a user error; Hydra prints its message without a traceback."""


def job_metric(summary: dict[str, Any]) -> tuple[float | None, str | None]:
    """(value, name) of what the job returns to the sweeper: final ``val/loss``, else final ``loss/average``."""
    if summary.get("val_loss") is not None:
        return float(summary["val_loss"]), "val/loss"
    if summary.get("loss") is not None:
        return float(summary["loss"]), "loss/average"
    return None, None  # dry_run


def multirun_problems(cfg: DictConfig) -> list[str]:
    """Several processes per job in a local sweep: Lightning's DDP starts them by re-running the command line,
    which inside a multirun would start the whole sweep again in every process."""
    from sdlora.distributed.world import planned_world_size, processes_started_outside

    if planned_world_size(cfg.trainer) > 1 and not processes_started_outside():
        return [
            f"trainer.devices={cfg.trainer.devices} (× trainer.num_nodes={cfg.trainer.num_nodes}) in a multirun "
            "(-m): Lightning's DDP starts its processes by re-running the command, which a sweep cannot do. Give "
            "each job one device (hydra/launcher=joblib runs jobs side by side), or run multi-GPU jobs through "
            "hydra/launcher=submitit_slurm (one SLURM task per device), or run one training per command"
        ]
    return []


def _job_num(hydra_cfg) -> int | None:
    from omegaconf import OmegaConf

    num = OmegaConf.select(hydra_cfg, "job.num", default=None, throw_on_missing=False)
    return int(num) if isinstance(num, int) else None


def _stop_signals(cfg: DictConfig):
    """The run's signal handlers (a bad ``trainer.preemption_signal`` is reported by the config checks)."""
    from omegaconf import OmegaConf

    from sdlora.signals import StopSignals, signal_number

    try:
        preemption = signal_number(OmegaConf.select(cfg, "trainer.preemption_signal", default=None))
    except ValueError:
        preemption = None
    return StopSignals(preemption)


def _before_the_job(cfg: DictConfig, hydra_cfg, run_dir: Path, multirun: bool, signals) -> None:
    """Refuse a run folder inside the dataset (undoing Hydra's files there); in a sweep, take this job's GPU."""
    from sdlora.sweep.gpus import assign_job_gpu
    from sdlora.sweep.run_dir import refuse_run_dir_in_dataset

    refusal = refuse_run_dir_in_dataset(cfg, run_dir)
    if refusal is not None:
        log.error("%s", refusal)
        signals.uninstall()
        if not multirun:
            raise SystemExit(1)
        raise SweepJobError(refusal)
    if multirun:
        try:
            gpu = assign_job_gpu(hydra_cfg.sweep.dir)
        except SdloraError as exc:
            log.error("%s", exc)
            raise SweepJobError(str(exc)) from None
        if gpu is not None:
            log.info("Job %s runs on GPU %s (CUDA_VISIBLE_DEVICES)", hydra_cfg.job.get("num"), gpu)


def _rank_zero(cfg: DictConfig) -> bool:
    from sdlora.distributed.world import is_rank_zero

    try:
        return is_rank_zero(cfg.trainer)
    except SdloraError:
        return True  # a bad trainer.devices is reported by the validation pass


def run_hydra_job(cfg: DictConfig, train: Callable[..., dict[str, Any]]) -> float | None:
    """Run ``train(cfg, <Hydra output folder>, signals=...)`` as one Hydra job (see the module docstring)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sdlora.signals import RunStopped

    signals = _stop_signals(cfg)
    signals.install()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    _before_the_job(cfg, hydra_cfg, run_dir, multirun, signals)
    rank_zero = _rank_zero(cfg)
    record = RunRecord(run_dir, list(hydra_cfg.overrides.task), _job_num(hydra_cfg) if multirun else None, rank_zero)
    record.start()
    try:
        problems = multirun_problems(cfg) if multirun else []
        if problems:
            raise SdloraError("this job cannot run in a sweep:", problems)
        summary = train(cfg, run_dir, signals=signals)
    except SdloraError as exc:
        log.error("%s", exc)
        record.failed(exc, user_error=True)
        if not multirun:
            raise SystemExit(1) from None
        raise SweepJobError(str(exc)) from None
    except RunStopped as exc:
        log.warning("Stopped by %s at once (nothing of the current step was saved)", exc.args[0][len("stopped by ") :])
        record.interrupted(exc.status, exc.args[0])
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        record.interrupted()
        raise SystemExit(130) from None
    except Exception as exc:
        record.failed(exc, user_error=False)
        raise
    finally:
        signals.uninstall()
    if summary.get("stopped_by") is not None:  # a signal stopped the run after a step: the sweep stops too
        _stopped(summary, signals, record, rank_zero)
    metric, name = job_metric(summary)
    record.completed(summary, metric, name)
    return metric


def _stopped(summary: dict[str, Any], signals, record: RunRecord, rank_zero: bool) -> None:
    """Record a run a signal stopped after a step, requeue a pre-empted SLURM job, exit 128 + the signal."""
    import signal

    from sdlora.signals import PREEMPTED, requeue_slurm_job

    signum = int(summary["stopped_by"])
    status, name = signals.status(signum), signal.Signals(signum).name
    record.interrupted(status, f"stopped by {name} after step {summary.get('steps')}", summary.get("interrupted"))
    if status == PREEMPTED and rank_zero:
        requeue_slurm_job()
    raise SystemExit(128 + signum)
