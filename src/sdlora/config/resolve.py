"""Resolve the composed config once, at the edge of a run: one typed, read-only :class:`TrainConfig`.

composed config (Hydra) → typed against the schema (unknown keys and wrong types are errors, also with ``+``) → the
one pass of checks (:mod:`sdlora.config.checks`, every problem at once) → the rules that fill in or replace options:

- ``network.alpha_ratio`` r: ``network.alpha`` = r × ``network.rank`` (sweeps keep the scale alpha/rank fixed);
- kohya's block lr forms: ``network.down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` (lists or presets such as
  ``sine+.5``) become ``network.block_lr_weight`` (factors ≤ ``network.block_lr_zero_threshold`` become 0, also in a
  ``block_lr_weight`` given directly);
- the model family's defaults: ``data.resolution``, ``data.min_bucket_reso`` / ``max_bucket_reso``,
  ``model.v_parameterization`` (when the checkpoint or the family says it before loading; a hub id without a local
  declaration stays null and is known after the download), ``precision.no_half_vae``;
- the device: ``trainer.accelerator`` becomes the device type that will train (cpu, cuda, mps) — an explicit gpu,
  cuda or mps that is not there is an error (a warning in a dry run, which may plan for another machine) — and
  the precision falls back where the device lacks it (fp16 on a CPU → bf16,
  :func:`sdlora.precision.policy.resolve_precision`);
- kohya's optimizer rules (:mod:`sdlora.optim.rules`): Adafactor with a relative step uses ``scheduler=adafactor``
  with ``initial_lr`` = ``optimizer.lr``;
- kohya's fallbacks: ``save.last_n_steps_state`` / ``last_n_epochs_state`` default to ``save.last_n_steps`` /
  ``last_n_epochs`` when states are saved; ``validation.batch_size`` defaults to ``data.batch_size``.

The result is frozen (:mod:`sdlora.config.frozen`): nothing downstream changes it, and the training-state
fingerprint, the LoRA metadata and resume all read this one object. The run folder keeps it as
``resolved_config.yaml`` beside Hydra's ``.hydra/config.yaml`` (what the user wrote).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdlora.config.frozen import freeze, thaw
from sdlora.config.schema import TrainConfig
from sdlora.errors import SdloraError

log = logging.getLogger("sdlora")

RESOLVED_NAME = "resolved_config.yaml"


def typed_config(cfg: Any) -> DictConfig:
    """``cfg`` (a composed config, a saved ``.hydra/config.yaml``, a dict) merged into the schema: an unknown key —
    also one added with Hydra's ``+`` — or a value of the wrong type is an :class:`SdloraError` naming it. The open
    nodes (``optimizer``, ``scheduler``, ``logger``) take any key; they are checked against their target's
    signature by :mod:`sdlora.config.checks`."""
    from omegaconf.errors import OmegaConfBaseException

    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if OmegaConf.is_config(cfg) else cfg
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainConfig), plain)
    except OmegaConfBaseException as exc:
        raise SdloraError(_schema_message(exc)) from None


def _schema_message(exc: Exception) -> str:
    key = getattr(exc, "full_key", None) or "?"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__ == "ConfigKeyError":
        from sdlora.config.spelling import suggestion

        parent = key.rpartition(".")[0] or "the config"
        return (
            f"unknown option {key}: {parent} has no such key{suggestion(key)}; Hydra's + adds keys only to "
            "optimizer, scheduler and logger, which take their target's arguments"
        )
    return f"option {key}: {first}"


def resolve(cfg: Any) -> TrainConfig:
    """The resolved, read-only config of a run (see the module docstring); logs the rules' warnings once."""
    from hydra.utils import get_class

    from sdlora.config.checks import check_config

    node = typed_config(cfg)
    check_config(node)
    family = get_class(node.model._target_)
    if node.network.alpha_ratio is not None:
        node.network.alpha = float(node.network.alpha_ratio) * node.network.rank
    _block_lr(node, family)
    _family_defaults(node, family)
    notes = _device_and_precision(node, family)
    notes += _optimizer_rules(node)
    _fallbacks(node)
    for note in notes:
        log.warning("%s", note)
    return freeze(OmegaConf.to_object(node))


def _block_lr(node: DictConfig, family: Any) -> None:
    from sdlora.config.network_checks import block_lr_from_forms

    network = node.network
    weights = block_lr_from_forms(network, family)
    if weights is None and network.block_lr_weight is not None and network.block_lr_zero_threshold > 0:
        threshold = network.block_lr_zero_threshold
        weights = [v if v > threshold else 0.0 for v in network.block_lr_weight]
    if weights is not None:
        network.block_lr_weight = weights


def _family_defaults(node: DictConfig, family: Any) -> None:
    from sdlora.config.checks import expected_prediction_type

    data = node.data
    if data.resolution is None:
        data.resolution = str(family.default_resolution)
    if data.min_bucket_reso is None:
        data.min_bucket_reso = family.default_bucket_reso[0]
    if data.max_bucket_reso is None:
        data.max_bucket_reso = family.default_bucket_reso[1]
    if node.model.v_parameterization is None:
        prediction = expected_prediction_type(node)
        if prediction is not None:
            node.model.v_parameterization = prediction == "v_prediction"


def _device_and_precision(node: DictConfig, family: Any) -> list[str]:
    from sdlora.precision.policy import GPU_ACCELERATORS, device_type, resolve_precision

    asked = str(node.trainer.accelerator).lower()
    device = device_type(asked)
    node.trainer.accelerator = device
    values, notes = resolve_precision(node.precision, device, family.vae_needs_fp32)
    for key, value in values.items():
        node.precision[key] = value
    if asked in GPU_ACCELERATORS and device == "cpu":  # Lightning would refuse it; a plan may be for elsewhere
        missing = f"trainer.accelerator={asked}, but no {'MPS device' if asked == 'mps' else 'CUDA GPU'} is available "
        if not node.dry_run:
            raise SdloraError(missing + "here: use trainer.accelerator=auto (the GPU where there is one) or cpu")
        notes.append(missing + "here: the plan is made as for a CPU run")
    return notes


def _optimizer_rules(node: DictConfig) -> list[str]:
    from sdlora.optim.rules import optimizer_notes, resolve_schedule

    replacement, notes = resolve_schedule(node.optimizer, node.scheduler)
    if replacement is not None:
        node.scheduler = replacement
    return notes + optimizer_notes(node, node.trainer.accelerator)


def _fallbacks(node: DictConfig) -> None:
    save = node.save
    if save.state and save.last_n_steps_state is None:
        save.last_n_steps_state = save.last_n_steps
    if save.state and save.last_n_epochs_state is None:
        save.last_n_epochs_state = save.last_n_epochs
    if node.validation.batch_size is None:
        node.validation.batch_size = node.data.batch_size


def resolved_yaml(config: TrainConfig) -> str:
    """The resolved config as YAML (``resolved_config.yaml``)."""
    return OmegaConf.to_yaml(OmegaConf.create(thaw(config)))
