"""Which module class a network type builds for a layer type: one table, as peft's ``dispatch_default``.

``network=lora`` and ``network=locon`` (kohya's ``networks.lora``) build :class:`~sdlora.network.lora.LoRALinear`
for ``nn.Linear`` and :class:`~sdlora.network.lora.LoRAConv2d` for ``nn.Conv2d`` (1×1 and, with LoCon, 3×3). Which
layers a type targets at all is decided in :mod:`sdlora.network.build`; this table only says what wraps each one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.lora import LoRAConv2d, LoRALinear
from sdlora.network.module import ModuleSpec, NetworkModule

ModuleBuilder = Callable[[nn.Module, ModuleSpec], NetworkModule]

MODULE_TYPES: dict[tuple[NetworkType, type[nn.Module]], ModuleBuilder] = {
    (NetworkType.lora, nn.Linear): LoRALinear,
    (NetworkType.lora, nn.Conv2d): LoRAConv2d,
    (NetworkType.locon, nn.Linear): LoRALinear,
    (NetworkType.locon, nn.Conv2d): LoRAConv2d,
}


def build_module(network_type: NetworkType, base: nn.Module, spec: ModuleSpec) -> NetworkModule:
    """The module ``network_type`` puts around ``base`` (matched by the layer's exact class)."""
    builder = MODULE_TYPES.get((NetworkType(network_type), type(base)))
    if builder is None:
        raise TypeError(f"network={NetworkType(network_type).value} has no module for {type(base).__name__} layers")
    return builder(base, spec)
