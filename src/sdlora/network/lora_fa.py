"""kohya's LoRA-FA [networks.lora_fa] (docs/kohya.md §1.5): a LoRA whose ``lora_down`` stays frozen.

Everything is kohya's ``networks.lora`` (targets, names, file, forward, the three dropouts) except:

- ``lora_down`` starts from a normal distribution, std √(2 / (in + rank)) with ``in`` the layer's input features or
  channels (not × the kernel size), and is never trained;
- ``lora_up`` (zeros at the start) is the only trained tensor, so ΔW = (alpha/rank) · up∘down moves only through up.

**sdlora:** max-norm (``network.scale_weight_norms``) multiplies ``lora_up`` alone by max_norm/‖ΔW‖, which puts ΔW on
the cap as kohya's rule does; kohya scales both factors by √ratio, which would change the frozen ``lora_down``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import nn

from sdlora.network.functional import delta_weight_norm, max_norm_ratio
from sdlora.network.lora import LoRAConv2d, LoRALinear, LoRAModule
from sdlora.network.module import ModuleSpec


def init_down_normal_(weight: torch.Tensor, in_features: int, rank: int) -> None:
    """lora_down ~ N(0, 2 / (in + rank)) [kohya networks.lora_fa, after the LoRA-FA paper]."""
    nn.init.normal_(weight, std=math.sqrt(2.0 / (in_features + rank)))


class LoRAFAModule(LoRAModule):
    """The frozen-down part, mixed into the Linear and Conv2d LoRA classes."""

    def __init__(self, base: nn.Module, down: nn.Module, up: nn.Module, spec: ModuleSpec) -> None:
        super().__init__(base, down, up, spec)
        self.lora_down.weight.requires_grad_(False)

    def init_down_(self, weight: torch.Tensor) -> None:
        in_features = weight.shape[1]  # Linear: in_features; Conv2d: in_channels (kohya's in_dim)
        init_down_normal_(weight, in_features, weight.shape[0])

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        yield self.lora_up.weight

    @torch.no_grad()
    def cap_norm_(self, max_norm: float) -> tuple[bool, float]:
        """If ‖ΔW‖_F > ``max_norm``, multiply lora_up by max_norm/‖ΔW‖ (lora_down stays as it started)."""
        norm = float(delta_weight_norm(self.lora_up.weight, self.lora_down.weight, self.scale))
        ratio = max_norm_ratio(norm, max_norm)
        if ratio == 1.0:
            return False, norm
        self.lora_up.weight.mul_(ratio)
        return True, norm * ratio


class LoRAFALinear(LoRALinear, LoRAFAModule):
    """LoRA-FA on ``nn.Linear``: down [r, in] (frozen), up [out, r]."""


class LoRAFAConv2d(LoRAConv2d, LoRAFAModule):
    """LoRA-FA on ``nn.Conv2d``: down [r, in, kh, kw] (frozen), up [out, r, 1, 1]."""
