"""Build one network module around a layer, as the network builder would (through the dispatch table)."""

from __future__ import annotations

from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.dispatch import build_module
from sdlora.network.module import ModuleSpec, NetworkModule


def lora(base: nn.Module, rank: int, alpha: float | None, network: NetworkType = NetworkType.lora,
         **dropouts: float) -> NetworkModule:  # fmt: skip
    """The ``network`` module (LoRA by default) of ``rank``/``alpha`` around ``base``; ``dropouts``: dropout,
    rank_dropout, module_dropout."""
    return build_module(network, base, ModuleSpec(rank, alpha, **dropouts))
