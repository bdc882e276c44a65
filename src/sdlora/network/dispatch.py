"""Which module class a network type builds for a layer type: one table, as peft's ``dispatch_default``.

Keys are (``network.name``, the layer's exact class). kohya's own types (``lora``, ``locon``, ``lora_fa``,
``dylora``) have their classes in :mod:`~sdlora.network.lora`, :mod:`~sdlora.network.lora_fa` and
:mod:`~sdlora.network.dylora`; the LyCORIS types wrap the ``lycoris-lora`` module classes
(:mod:`~sdlora.network.lycoris`). The norm layers are LyCORIS's ``train_norm`` targets. Which layers a type targets
at all is decided in :mod:`sdlora.network.build`; this table only says what wraps each one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.dylora import DyLoRAModule
from sdlora.network.lora import LoRAConv2d, LoRALinear
from sdlora.network.lora_fa import LoRAFAConv2d, LoRAFALinear
from sdlora.network.lycoris import (
    LycorisBOFT,
    LycorisFull,
    LycorisGLoRA,
    LycorisIA3,
    LycorisLoCon,
    LycorisLoHa,
    LycorisLoKr,
    LycorisNorm,
    LycorisOFT,
)
from sdlora.network.lycoris_dylora import LycorisDyLoRA
from sdlora.network.module import ModuleSpec, NetworkModule
from sdlora.network.types import TYPES

ModuleBuilder = Callable[[nn.Module, ModuleSpec], NetworkModule]

_LAYERS: dict[NetworkType, ModuleBuilder | tuple[ModuleBuilder, ModuleBuilder]] = {
    NetworkType.lora: (LoRALinear, LoRAConv2d),
    NetworkType.locon: (LoRALinear, LoRAConv2d),
    NetworkType.lora_fa: (LoRAFALinear, LoRAFAConv2d),
    NetworkType.dylora: DyLoRAModule,
    NetworkType.lycoris_locon: LycorisLoCon,
    NetworkType.loha: LycorisLoHa,
    NetworkType.lokr: LycorisLoKr,
    NetworkType.ia3: LycorisIA3,
    NetworkType.lycoris_dylora: LycorisDyLoRA,
    NetworkType.oft: LycorisOFT,
    NetworkType.boft: LycorisBOFT,
    NetworkType.glora: LycorisGLoRA,
    NetworkType.full: LycorisFull,
}


def _table() -> dict[tuple[NetworkType, type[nn.Module]], ModuleBuilder]:
    table: dict[tuple[NetworkType, type[nn.Module]], ModuleBuilder] = {}
    for network_type, builders in _LAYERS.items():
        linear, conv = builders if isinstance(builders, tuple) else (builders, builders)
        table[(network_type, nn.Linear)] = linear
        table[(network_type, nn.Conv2d)] = conv
        if TYPES[network_type].lycoris:
            table[(network_type, nn.GroupNorm)] = LycorisNorm
            table[(network_type, nn.LayerNorm)] = LycorisNorm
    return table


MODULE_TYPES: dict[tuple[NetworkType, type[nn.Module]], ModuleBuilder] = _table()


def build_module(network_type: NetworkType, base: nn.Module, spec: ModuleSpec) -> NetworkModule:
    """The module ``network_type`` puts around ``base`` (matched by the layer's exact class)."""
    builder = MODULE_TYPES.get((NetworkType(network_type), type(base)))
    if builder is None:
        raise TypeError(f"network={NetworkType(network_type).value} has no module for {type(base).__name__} layers")
    return builder(base, spec)
