"""The network part of kohya's metadata: ``ss_network_args`` and the ``ss_network_dim``/``ss_network_alpha`` used.

kohya records ``--network_args`` as a JSON object of strings (``{"conv_dim": "4", "rank_dropout": "0.1"}``); we write
the same names for the options that are set, so kohya's tools and the web UIs read our files as theirs. The U-Net
block lr weights are written as kohya's three lists ``down_lr_weight``, ``mid_lr_weight``, ``up_lr_weight``.

A LyCORIS type (``lycoris.kohya``) writes ``algo`` and every option of its type under LyCORIS's names (``dora_wd``
for ``network.weight_decompose``, ``dropout`` for ``network.dropout``), as a kohya_ss run passes them; Kohya DyLoRA
writes ``unit``.
"""

from __future__ import annotations

from typing import Any

from sdlora.config.schema import NetworkConfig


def _csv(values) -> str:
    return ",".join(str(v) for v in values)


def split_block_lr_weight(weights) -> dict[str, str]:
    """25 values → down (12), mid (1), up (12); 23 (SDXL) → down (blocks 1–9), mid (10–12), up (13–21)."""
    weights = list(weights)
    if len(weights) == 25:
        down, mid, up = weights[:12], weights[12:13], weights[13:]
    else:
        down, mid, up = weights[1:10], weights[10:13], weights[13:22]
    return {"down_lr_weight": _csv(down), "mid_lr_weight": _csv(mid), "up_lr_weight": _csv(up)}


#: sdlora key → the network_args name kohya_ss passes to lycoris.kohya.
_ARG_NAMES = {"weight_decompose": "dora_wd"}


def _type_args(network: NetworkConfig) -> dict[str, str]:
    """``algo``/``conv_dim``/``conv_alpha`` and the type's own options (LyCORIS's names), as strings."""
    from sdlora.network.build import conv_alpha, conv_rank
    from sdlora.network.types import trains_convs, type_info

    info, args = type_info(network.name), {}
    if info.algo is not None:
        args["algo"] = info.algo
    if trains_convs(network.name, network.conv_rank) is not False and info.has_rank:
        args["conv_dim"] = str(conv_rank(network))
        if info.has_alpha:
            args["conv_alpha"] = str(conv_alpha(network))
    for option in sorted(info.options):
        value = getattr(network, option)
        if option == "preset" and value is None:
            value = "full"
        args[_ARG_NAMES.get(option, option)] = str(value.value if hasattr(value, "value") else value)
    if info.lycoris and network.dropout:
        args["dropout"] = str(network.dropout)
    return args


def network_args(network: NetworkConfig) -> dict[str, str]:
    """kohya's network_args for the ``network`` options (only what is set)."""
    args = _type_args(network)
    for option in ("rank_dropout", "module_dropout"):
        if getattr(network, option):
            args[option] = str(getattr(network, option))
    for option in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        if getattr(network, option) is not None:
            args[option] = _csv(getattr(network, option))
    if network.block_lr_weight is not None:
        args.update(split_block_lr_weight(network.block_lr_weight))
    for option in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio"):
        if getattr(network, option) is not None:
            args[option] = str(getattr(network, option))
    return args


def used_dim_alpha(network: NetworkConfig, lora: Any = None) -> tuple[Any, Any]:
    """(ss_network_dim, ss_network_alpha): the configured values, or with ``network.weights`` those of the built
    network's Linear/1×1 modules — one number each when they agree, else "Dynamic" (kohya's word for mixed ranks)."""
    from sdlora.network.functional import effective_alpha

    if network.weights is None or lora is None:
        if network.rank is None or network.alpha is None:
            return network.rank, network.alpha
        return network.rank, effective_alpha(network.alpha, network.rank)
    base = [
        m for m in lora.modules.values() if m.base.weight.dim() >= 2 and tuple(m.base.weight.shape[2:]) in ((), (1, 1))
    ]
    ranks = {m.dim_alpha()[0] for m in base}
    alphas = {m.dim_alpha()[1] for m in base}
    rank = ranks.pop() if len(ranks) == 1 else "Dynamic"
    alpha = alphas.pop() if len(alphas) == 1 else "Dynamic"
    return rank, alpha
