"""The last pass of ``sdlora-migrate``: fit the collected overrides to what sdlora's checks accept, saying what changed.

Real kohya_ss configs (the GUI's own presets among them) hold values that kohya's programs pass along or ignore but
sdlora's one validation pass refuses, so the printed command would stop before training:

- a whole number saved as a float (``"gradient_accumulation_steps": 1.0``) for an integer key → the integer;
- a resolution side that is not a multiple of 8 (``"max_resolution": "512,650"``; the VAE's latents are 1/8 of the
  image) → the nearest multiple of 8, with a note;
- ``bucket_reso_steps`` that is not a multiple of the family's step (64 for SD 1.x/2.x, 32 for SDXL; current
  sd-scripts asserts the same in ``verify_bucket_reso_steps``) → the nearest multiple, with a note;
- save and sample options that act only with another one that is off (``save_last_n_steps_state`` without
  ``save_state``, ``sample_every_n_epochs`` without prompts: the GUI passes them, sd-scripts ignores them; the rules
  of :mod:`sdlora.config.save_checks`) → left out, with a note;
- network options the chosen type does not read — the GUI passes ``network_dim``, ``network_alpha``, the dropouts and
  ``scale_weight_norms`` to every type, and LyCORIS's iA3 or ``full`` ignore rank and alpha, most LyCORIS types the
  plain dropout, … (the facts of :mod:`sdlora.network.types`, the ones the checks read) → left out, with a note.
"""

from __future__ import annotations

import functools
from typing import Any

from sdlora.tools.migrate_rules import Context, Override, network_info


@functools.lru_cache(maxsize=1)
def _kinds() -> dict[str, str]:
    from sdlora.config.docs import walk_schema
    from sdlora.config.schema import TrainConfig

    return {doc.key: doc.kind for doc in walk_schema(TrainConfig)}


def _whole(key: str, value: Any) -> Any:
    """An integer key's whole-number float as an int (other values as they are)."""
    integral = isinstance(value, float) and value.is_integer()
    return int(value) if integral and _kinds().get(key.removeprefix("++")) == "int" else value


def _bucket_step(ctx: Context, overrides: list[Override]) -> list[Override]:
    from hydra.utils import get_class

    from sdlora.config.data_checks import bucket_step_ok
    from sdlora.models.presets import FAMILY_CLASSES

    out, multiple = [], int(get_class(FAMILY_CLASSES[ctx.model]).bucket_reso_multiple)
    for o in overrides:
        if o.key == "data.bucket_reso_steps" and isinstance(o.value, int) and not bucket_step_ok(o.value, multiple):
            fitted = max(multiple, round(o.value / multiple) * multiple)
            ctx.notes.append(f"bucket_reso_steps={o.value}: bucket sides step by a multiple of {multiple} for "
                             f"model={ctx.model} (the U-Net halves the latents; current sd-scripts asserts it too): "
                             f"{fitted} is used")  # fmt: skip
            o = Override(o.key, fitted)
        out.append(o)
    return out


def _resolution(ctx: Context, overrides: list[Override]) -> list[Override]:
    from sdlora.data.resolution import parse_resolution

    out = []
    for o in overrides:
        if o.key == "data.resolution":
            try:
                parse_resolution(o.value)
            except ValueError:
                sides = [int(p) for p in str(o.value).split(",") if p.strip().isdigit()]
                if sides and len(sides) == len(str(o.value).split(",")):
                    fitted = ",".join(str(max(64, round(side / 8) * 8)) for side in sides)
                    ctx.notes.append(f"resolution {o.value}: sides are multiples of 8 (the VAE's latents are 1/8 of "
                                     f"the image): {fitted} is used")  # fmt: skip
                    o = Override(o.key, fitted)
        out.append(o)
    return out


def _idle(ctx: Context, overrides: list[Override]) -> list[Override]:
    """Leave out the save/sample options that act only with one that is off (:mod:`sdlora.config.save_checks`)."""
    from sdlora.config.save_checks import sample_needs, save_needs
    from sdlora.config.schema import SampleConfig, SaveConfig

    save, sample = SaveConfig(), SampleConfig()
    for o in overrides:
        node, _, name = o.key.partition(".")
        if node in ("save", "sample") and hasattr(save if node == "save" else sample, name):
            setattr(save if node == "save" else sample, name, o.value)
    if ctx.prompt_text:
        sample.prompts = "(typed into the GUI)"
    idle = [*save_needs(save), *sample_needs(sample)]
    keys = {key for keys, _ in idle for key in keys.split(",")}
    if "sample.prompts" in keys:
        ctx.prompt_text = None
    for key, message in idle:
        ctx.notes.append(f"{message}; kohya ignores {'them' if ',' in key else 'it'}: {key.replace(',', ', ')} left "
                         "out")  # fmt: skip
    return [o for o in overrides if o.key not in keys]


def unread_network_keys(network: str, bypass_mode: bool = False) -> set[str]:
    """The ``network.*`` keys of kohya's common options that ``network=<network>`` does not read."""
    from sdlora.network.types import active_dropouts, type_info

    info = type_info(network)
    unread = set() if info.has_rank else {"rank", "conv_rank", "block_dims", "conv_block_dims"}
    unread |= set() if info.has_alpha else {"alpha", "conv_alpha", "block_alphas", "conv_block_alphas"}
    acting = active_dropouts(network, bypass_mode)
    unread |= {d for d in ("dropout", "rank_dropout", "module_dropout") if d not in acting}
    unread |= set() if info.max_norm else {"scale_weight_norms"}
    return {f"network.{key}" for key in unread}


def _network(ctx: Context, overrides: list[Override]) -> list[Override]:
    bypass = any(o.key == "network.bypass_mode" and o.value is True for o in overrides)
    unread = unread_network_keys(ctx.network, bypass)
    dropped = [o for o in overrides if o.key in unread and o.value not in (None, 0, 0.0, False)]
    if dropped:
        it = "it" if len(dropped) == 1 else "them"
        ctx.notes.append(f"{', '.join(o.key for o in dropped)}: network={ctx.network} does not read {it} (kohya "
                         f"passes {it} to every type; this one ignores {it}): left out")  # fmt: skip
    return [o for o in overrides if o.key not in unread]


def fit(ctx: Context, overrides: list[Override]) -> list[Override]:
    """``overrides`` fitted to sdlora's checks (see the module docstring); the changes go to ``ctx.notes``."""
    overrides = [Override(o.key, _whole(o.key, o.value), o.group) for o in overrides]
    overrides = _idle(ctx, _resolution(ctx, _bucket_step(ctx, overrides)))
    return _network(ctx, overrides) if network_info(ctx) is not None else overrides
