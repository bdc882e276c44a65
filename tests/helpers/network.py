"""Build one network module around a layer, as the network builder would (through the dispatch table), and compute a
layer's output with a given weight (to compare a module's forward with W + ΔW)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.dispatch import build_module
from sdlora.network.module import ModuleSpec, NetworkModule


def lora(base: nn.Module, rank: int | None, alpha: float | None, network: NetworkType = NetworkType.lora,
         options: Mapping[str, Any] | None = None, **dropouts: float) -> NetworkModule:  # fmt: skip
    """The ``network`` module (LoRA by default) of ``rank``/``alpha`` around ``base``; ``options``: the type's own
    (LyCORIS keyword arguments, DyLoRA's ``unit``); ``dropouts``: dropout, rank_dropout, module_dropout."""
    return build_module(network, base, ModuleSpec(rank, alpha, options=dict(options or {}), **dropouts))


def layer_output(base: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``base``'s forward with ``weight``/``bias`` in place of its own (Linear, Conv2d, GroupNorm, LayerNorm)."""
    if isinstance(base, nn.Linear):
        return F.linear(x, weight, bias)
    if isinstance(base, nn.Conv2d):
        return F.conv2d(x, weight, bias, base.stride, base.padding, base.dilation, base.groups)
    if isinstance(base, nn.GroupNorm):
        return F.group_norm(x, base.num_groups, weight, bias, base.eps)
    return F.layer_norm(x, base.normalized_shape, weight, bias, base.eps)


@torch.no_grad()
def randomise_(module: NetworkModule, seed: int = 1, std: float = 0.1) -> None:
    """Add N(0, std²) noise to every trainable tensor of ``module`` (deterministic in ``seed``)."""
    generator = torch.Generator().manual_seed(seed)
    for p in module.trainable_parameters():
        p.add_(torch.randn(p.shape, generator=generator) * std)
