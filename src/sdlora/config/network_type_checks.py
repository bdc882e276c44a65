"""Checks of ``network=<type>`` against the options it reads (part of the one validation pass).

The facts come from :mod:`sdlora.network.types`: a type-specific option (``network.factor``, ``network.unit``, …)
set for a type that does not read it, a dropout the type's code never applies, ``scale_weight_norms`` or LoRA+ for a
type that defines none, rank/alpha for a type that has none — each is one message naming the option and the type.
"""

from __future__ import annotations

import dataclasses

from omegaconf import DictConfig

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.network.types import TYPE_OPTIONS, active_dropouts, diffusers_loadable, trains_convs, type_info

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(NetworkConfig)}
_CONV_OPTIONS = ("conv_rank", "conv_alpha", "conv_block_dims", "conv_block_alphas")
_LORAPLUS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")


def check_type(network: DictConfig, problems: list[str]) -> None:
    """Append a message for every option ``network.name`` does not read or whose value it cannot take."""
    name = NetworkType(network.name)
    _rank_alpha(network, name, problems)
    _conv(network, name, problems)
    _unused_options(network, name, problems)
    _dropouts(network, name, problems)
    _option_values(network, name, problems)


def _set(network: DictConfig, key: str) -> bool:
    return network[key] != _DEFAULTS[key]


def _rank_alpha(network: DictConfig, name: NetworkType, problems: list[str]) -> None:
    info = type_info(name)
    for key, has, meaning in (("rank", info.has_rank, "≥ 1"), ("alpha", info.has_alpha, "≥ 0 (0 means alpha = rank)")):
        value = network[key]
        if not has:
            if value is not None:
                problems.append(f"network.{key} is set, but network={name.value} has no {key}: leave it null")
        elif value is None or value < (1 if key == "rank" else 0):
            problems.append(f"network.{key} must be {meaning}, got {value}")
    if network.alpha_ratio is not None and not (info.has_rank and info.has_alpha):
        problems.append(f"network.alpha_ratio is set, but network={name.value} has no alpha/rank scale")
    if not info.has_rank and network.block_dims is not None:
        problems.append(f"network.block_dims is set, but network={name.value} has no rank")
    if not info.has_alpha and network.block_alphas is not None:
        problems.append(f"network.block_alphas is set, but network={name.value} has no alpha")


def _conv(network: DictConfig, name: NetworkType, problems: list[str]) -> None:
    info, convs = type_info(name), trains_convs(name, network.conv_rank)
    if name == NetworkType.locon and (network.conv_rank is None or network.conv_rank < 1):
        problems.append(f"network=locon needs network.conv_rank ≥ 1 (kohya conv_dim), got {network.conv_rank}")
    elif network.conv_rank is not None and network.conv_rank < 1:
        problems.append(f"network.conv_rank must be ≥ 1 or null, got {network.conv_rank}")
    if network.conv_alpha is not None and network.conv_alpha < 0:
        problems.append(f"network.conv_alpha must be ≥ 0 (0 means alpha = conv_rank), got {network.conv_alpha}")
    if convs is False:
        unused = [f"network.{o}" for o in _CONV_OPTIONS if network[o] is not None]
        if unused:
            verb = "is" if len(unused) == 1 else "are"
            how = "use network=locon (kohya's LoCon) or leave them null" if name == NetworkType.lora else (
                "set network.conv_rank to train them")  # fmt: skip
            problems.append(f"{', '.join(unused)} {verb} set, but network={name.value} trains no 3×3 convs: {how}")
        return
    no_rank = [o for o in _CONV_OPTIONS if network[o] is not None and not info.has_rank]
    no_alpha = [o for o in ("conv_alpha", "conv_block_alphas") if network[o] is not None and not info.has_alpha]
    for option in dict.fromkeys(no_rank + no_alpha):
        problems.append(f"network.{option} is set, but network={name.value} has no "
                        f"{'rank' if option in no_rank else 'alpha'}")  # fmt: skip
    if name == NetworkType.dylora:
        if network.conv_rank is not None and network.conv_rank != network.rank:
            problems.append(f"network=dylora needs network.conv_rank = network.rank ({network.rank}) or null (kohya's "
                            f"networks.dylora asserts it), got {network.conv_rank}")  # fmt: skip
        if network.conv_alpha is not None or network.conv_block_alphas is not None:
            problems.append("network.conv_alpha is set, but kohya's networks.dylora gives the 3×3 convs "
                            "network.alpha: leave it null")  # fmt: skip


def _unused_options(network: DictConfig, name: NetworkType, problems: list[str]) -> None:
    info = type_info(name)
    for option in sorted(TYPE_OPTIONS - info.options):
        if _set(network, option):
            problems.append(f"network.{option} is set, but network={name.value} does not use it")
    if network.scale_weight_norms and not info.max_norm:
        problems.append(f"network.scale_weight_norms is set, but network={name.value} has no max-norm (LyCORIS "
                        "defines it for LoCon, LoHa, LoKr, Diag-OFT and BOFT)")  # fmt: skip
    if not info.loraplus:
        for option in _LORAPLUS:
            if network[option] is not None:
                problems.append(f"network.{option} is set, but network={name.value} has no lora_up matrix for "
                                "LoRA+ to speed up")  # fmt: skip


def _dropouts(network: DictConfig, name: NetworkType, problems: list[str]) -> None:
    info = type_info(name)
    acting = active_dropouts(name, bool(network.bypass_mode))
    for option in ("dropout", "rank_dropout", "module_dropout"):
        if network[option] and option not in acting:
            bypass = option in info.bypass_dropouts and not network.bypass_mode
            how = " it acts only with network.bypass_mode=true" if bypass else " leave it 0"
            problems.append(f"network.{option} is set, but network={name.value} applies no such dropout:{how}")


def _option_values(network: DictConfig, name: NetworkType, problems: list[str]) -> None:
    rank = network.rank
    if name == NetworkType.dylora:
        _multiple_of(network, "unit", rank, problems)
    if name == NetworkType.lycoris_dylora:
        _multiple_of(network, "block_size", rank, problems)
    if network.factor != -1 and network.factor < 1:
        problems.append(f"network.factor must be -1 (the most balanced) or ≥ 1, got {network.factor}")
    if network.constraint < 0:
        problems.append(f"network.constraint must be ≥ 0 (0 = off), got {network.constraint}")
    if network.weight_decompose and network.bypass_mode:
        problems.append("network.weight_decompose=true with network.bypass_mode=true: LyCORIS ignores DoRA in bypass "
                        "mode")  # fmt: skip
    if not network.wd_on_output and not network.weight_decompose:
        problems.append("network.wd_on_output is set, but only network.weight_decompose=true (DoRA) uses it")


def _multiple_of(network: DictConfig, key: str, rank: int | None, problems: list[str]) -> None:
    value = network[key]
    if value is None or value < 1:
        problems.append(f"network.{key} must be ≥ 1, got {value}")
        return
    for option in ("rank", "conv_rank"):
        if network[option] is not None and network[option] % value:
            problems.append(f"network.{option}={network[option]} must be a multiple of network.{key}={value}")
    dims = [d for d in [*(network.block_dims or []), *(network.conv_block_dims or [])] if d]
    if any(d % value for d in dims):
        problems.append(f"network.block_dims / conv_block_dims must be multiples of network.{key}={value}")


def check_diffusers_export(cfg: DictConfig, problems: list[str]) -> None:
    """``save.also_diffusers`` needs a network diffusers/PEFT can load: plain LoRA modules (lora_down/lora_up)."""
    network = cfg.network
    if cfg.save.also_diffusers and not diffusers_loadable(
        network.name, network.use_tucker, network.weight_decompose, network.train_norm
    ):
        name = NetworkType(network.name).value
        problems.append(
            f"save.also_diffusers=true: diffusers/PEFT cannot load network={name} files (only plain LoRA modules: "
            "network=lora, locon, lora_fa, dylora, lycoris_dylora, and lycoris_locon without use_tucker, "
            "weight_decompose or train_norm); ComfyUI, A1111/Forge and LyCORIS read the kohya-format file — set "
            "save.also_diffusers=false"
        )
