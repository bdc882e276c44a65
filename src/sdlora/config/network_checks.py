"""Value and combination checks of the ``network`` options (part of the one validation pass in :mod:`.validate`).

Needs only the config and the model family's class (block count, number of text encoders): nothing is loaded, and a
``network.weights`` file is checked from its key names alone.
"""

from __future__ import annotations

from numbers import Number

from omegaconf import DictConfig

from sdlora.config.schema import NetworkType

_DROPOUTS = ("dropout", "rank_dropout", "module_dropout")
_LORAPLUS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")


def check_network(network: DictConfig, family_cls, problems: list[str]) -> None:
    """Append one readable message per problem of the ``network`` node to ``problems``."""
    from sdlora.config.network_type_checks import check_type

    check_type(network, problems)
    if not (network.train_unet or network.train_text_encoder):
        problems.append("network.train_unet and network.train_text_encoder are both false: nothing to train")
    for option in _DROPOUTS:
        if not 0 <= network[option] < 1:
            problems.append(f"network.{option} must be in [0, 1) (a probability; 0 = off), got {network[option]}")
    if network.scale_weight_norms < 0:
        problems.append(f"network.scale_weight_norms must be ≥ 0 (0 = off; kohya suggests 1), got "
                        f"{network.scale_weight_norms}")  # fmt: skip
    if network.unet_lr is not None and network.unet_lr < 0:
        problems.append(f"network.unet_lr must be ≥ 0, got {network.unet_lr}")
    encoders = len(family_cls.te_prefixes) if family_cls is not None else None
    _check_text_encoder_lr(network.text_encoder_lr, encoders, problems)
    for option in _LORAPLUS:
        if network[option] is not None and network[option] <= 0:
            problems.append(f"network.{option} must be > 0 or null, got {network[option]}")
    if family_cls is not None:
        _check_blocks(network, family_cls, problems)
        _check_block_lr_forms(network, family_cls, problems)
    if network.weights is not None:
        from sdlora.network.weights import check_network_file

        problem = check_network_file(network.weights, NetworkType(network.name))
        if problem:
            problems.append(problem)


def _check_text_encoder_lr(value, encoders: int | None, problems: list[str]) -> None:
    values = [value] if value is None or isinstance(value, Number) else list(value)
    if any(v is not None and (not isinstance(v, Number) or isinstance(v, bool) or v < 0) for v in values):
        problems.append(f"network.text_encoder_lr must be null, a number ≥ 0, or a list of them; got {value}")
    elif encoders is not None and len(values) not in (1, encoders):
        problems.append(
            f"network.text_encoder_lr has {len(values)} values but this model has {encoders} text encoder(s): give one "
            "value for all, or one per encoder"
        )


def _check_blocks(network: DictConfig, family_cls, problems: list[str]) -> None:
    count = family_cls.unet_blocks
    for option, what in (
        ("block_lr_weight", "lr factor"),
        ("block_dims", "rank"),
        ("block_alphas", "alpha"),
        ("conv_block_dims", "rank"),
        ("conv_block_alphas", "alpha"),
    ):
        values = network[option]
        if values is None:
            continue
        if len(values) != count:
            problems.append(
                f"network.{option} needs {count} values for model={family_cls.name} (one {what} per U-Net block: "
                f"{_layout(count)}), got {len(values)}"
            )
        if any(v < 0 for v in values):
            problems.append(f"network.{option} values must be ≥ 0, got {list(values)}")


BLOCK_LR_FORMS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")


def block_lr_from_forms(network, family_cls) -> list[float] | None:
    """kohya's ``down_lr_weight`` / ``mid_lr_weight`` / ``up_lr_weight`` (lists or presets) and
    ``block_lr_zero_threshold`` → one ``block_lr_weight`` list (:func:`sdlora.network.blocks.kohya_block_lr_weight`);
    None when none of the three is set. Raises ValueError for an unknown preset."""
    from omegaconf import OmegaConf

    from sdlora.network.blocks import kohya_block_lr_weight

    def value(key: str):
        v = network[key]
        v = OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
        return [v] if isinstance(v, int | float) and not isinstance(v, bool) else v

    down, mid, up = (value(k) for k in BLOCK_LR_FORMS)
    sdxl = family_cls.unet_blocks == 23
    return kohya_block_lr_weight(down, mid, up, float(network.block_lr_zero_threshold), sdxl)


def _check_block_lr_forms(network: DictConfig, family_cls, problems: list[str]) -> None:
    forms = [k for k in BLOCK_LR_FORMS if network[k] is not None]
    if network.block_lr_zero_threshold < 0:
        problems.append(f"network.block_lr_zero_threshold must be ≥ 0, got {network.block_lr_zero_threshold}")
    if not forms:
        return
    if network.block_lr_weight is not None:
        problems.append(f"network.block_lr_weight and network.{forms[0]} are both set: use one form (the down/mid/up "
                        "values are turned into block_lr_weight)")  # fmt: skip
        return
    for key in ("down_lr_weight", "up_lr_weight"):
        v = network[key]
        if v is not None and not isinstance(v, str) and not _is_list(v):
            problems.append(f"network.{key} must be a list or a preset (cosine, sine, linear, reverse_linear, zeros, "
                            f"optionally +<base>), got {v!r}")  # fmt: skip
            return
    try:
        weights = block_lr_from_forms(network, family_cls)
    except (ValueError, TypeError) as exc:
        problems.append(f"network.down_lr_weight/mid_lr_weight/up_lr_weight: {exc}")
        return
    if weights is not None and any(v < 0 for v in weights):
        problems.append(f"network.down_lr_weight/mid_lr_weight/up_lr_weight values must be ≥ 0, got {weights}")


def _is_list(value) -> bool:
    from omegaconf import OmegaConf

    return OmegaConf.is_list(value) or isinstance(value, list | tuple)


def _layout(count: int) -> str:
    return "IN00–IN11, MID, OUT00–OUT11" if count == 25 else "emb, IN0–IN8, MID0–MID2, OUT0–OUT8, out"
