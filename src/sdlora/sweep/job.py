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
- A run stopped by Ctrl-C after saving a state (``save.state=true``) is recorded as interrupted and exits with code
  130 (a sweep stops there too).
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


def run_hydra_job(cfg: DictConfig, train: Callable[[DictConfig, Path], dict[str, Any]]) -> float | None:
    """Run ``train(cfg, <Hydra output folder>)`` as one Hydra job (see the module docstring)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from sdlora.distributed.world import is_rank_zero
    from sdlora.sweep.gpus import assign_job_gpu

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if multirun:
        try:
            gpu = assign_job_gpu(hydra_cfg.sweep.dir)
        except SdloraError as exc:
            log.error("%s", exc)
            raise SweepJobError(str(exc)) from None
        if gpu is not None:
            log.info("Job %s runs on GPU %s (CUDA_VISIBLE_DEVICES)", hydra_cfg.job.get("num"), gpu)
    try:
        rank_zero = is_rank_zero(cfg.trainer)
    except SdloraError:
        rank_zero = True  # a bad trainer.devices is reported by the validation pass
    record = RunRecord(run_dir, list(hydra_cfg.overrides.task), _job_num(hydra_cfg) if multirun else None, rank_zero)
    record.start()
    try:
        problems = multirun_problems(cfg) if multirun else []
        if problems:
            raise SdloraError("this job cannot run in a sweep:", problems)
        summary = train(cfg, run_dir)
    except SdloraError as exc:
        log.error("%s", exc)
        record.failed(exc, user_error=True)
        if not multirun:
            raise SystemExit(1) from None
        raise SweepJobError(str(exc)) from None
    except KeyboardInterrupt:
        record.interrupted()
        raise
    except Exception as exc:
        record.failed(exc, user_error=False)
        raise
    if "interrupted" in summary:  # Ctrl-C with save.state=true: a state was saved, the sweep stops too
        record.interrupted()
        log.warning("Training stopped by Ctrl-C; continue with resume=%s", summary["interrupted"])
        raise SystemExit(130)
    metric, name = job_metric(summary)
    record.completed(summary, metric, name)
    return metric
