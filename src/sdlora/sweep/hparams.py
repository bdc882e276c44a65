"""A run's hyperparameters with its final metrics in TensorBoard's HParams tab.

``tensorboard --logdir <sweep folder>`` then lists every job as a run named by its folder (the job's overrides) and
the HParams tab compares them: the main LoRA hyperparameters plus every key the job overrode, against
``hparams/loss`` (final ``loss/average``), ``hparams/val_loss`` and ``hparams/best_val_loss``.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import OmegaConf

from sdlora.config.frozen import thaw

# Always logged, so that the runs of any sweep share the same columns.
KEY_HPARAMS = (
    "model._target_",
    "network.name",
    "network.rank",
    "network.alpha",
    "network.alpha_ratio",
    "optimizer._target_",
    "optimizer.lr",
    "network.unet_lr",
    "network.text_encoder_lr",
    "scheduler._target_",
    "data.batch_size",
    "trainer.accumulate_grad_batches",
    "trainer.max_steps",
    "loss.min_snr_gamma",
    "loss.noise_offset",
    "precision.name",
    "seed",
)


def _value(value: Any) -> Any:
    """A value TensorBoard's hparams accept (numbers, strings, booleans)."""
    if isinstance(value, bool | int | float | str):
        return value
    if value is None:
        return "null"
    if OmegaConf.is_config(value):
        return str(OmegaConf.to_container(value, resolve=True))
    return str(thaw(value))


def _override_key(override: str) -> str | None:
    key = override.split("=", 1)[0].lstrip("+~")
    return None if key.startswith("hydra.") or key.startswith("hydra/") else key


def run_hparams(cfg: Any, overrides: list[str] | None = None) -> dict[str, Any]:
    """The key hyperparameters and every overridden key, with the values the run used (``cfg``: the resolved config,
    or a composed one)."""
    if not OmegaConf.is_config(cfg):
        cfg = OmegaConf.create(thaw(cfg))
    keys = list(KEY_HPARAMS)
    for override in overrides or []:
        key = _override_key(override)
        if key and key not in keys:
            keys.append(key)
    params: dict[str, Any] = {}
    for key in keys:
        selected = OmegaConf.select(cfg, key.replace("/", "."), default=None, throw_on_missing=False)
        if OmegaConf.is_config(selected) and overrides:  # a group choice (model=tiny): the option's name
            chosen = [o.split("=", 1)[1] for o in overrides if _override_key(o) == key and "=" in o]
            selected = chosen[0] if chosen else selected
        params[key] = _value(selected)
    return params


def final_metrics(summary: dict[str, Any]) -> dict[str, float]:
    """The run's final numbers under ``hparams/*`` (finite values only)."""
    names = {"loss": "hparams/loss", "val_loss": "hparams/val_loss", "best_val_loss": "hparams/best_val_loss"}
    metrics = {}
    for key, tag in names.items():
        value = summary.get(key)
        if value is not None and math.isfinite(float(value)):
            metrics[tag] = float(value)
    return metrics


def log_run_hparams(trainer, cfg: Any, summary: dict[str, Any]) -> None:
    """Write the hyperparameters and final metrics to every TensorBoard logger of ``trainer`` (rank 0 only)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    metrics = final_metrics(summary)
    if not metrics or not trainer.is_global_zero:
        return
    params = run_hparams(cfg, _hydra_overrides())
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics, step=trainer.global_step)
            logger.experiment.flush()


def _hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
