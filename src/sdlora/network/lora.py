"""kohya's LoRA module [networks.lora]: ``y = base(x) + scale · up(down(x))`` around a frozen Linear or Conv2d.

File tensors are kohya's (``lora_down.weight``, ``lora_up.weight``, ``alpha``); the maths lives in
:mod:`sdlora.network.functional`. One class per layer type (:class:`LoRALinear`, :class:`LoRAConv2d`), chosen by the
dispatch table (:mod:`sdlora.network.dispatch`).

In training mode the three kohya dropouts act on the branch, in kohya's order (docs/kohya.md §2): module
dropout (skip the branch), then ``lx = down(x)``, neuron dropout on lx, rank dropout on lx (scale × 1/(1−p)), then
``up``. In eval mode the branch is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from sdlora.network.functional import (
    branch_input,
    delta_weight,
    delta_weight_norm,
    effective_alpha,
    init_down_,
    init_up_,
    lora_scale,
    max_norm_ratio,
    module_dropout_skips,
    neuron_dropout,
    rank_dropout,
)
from sdlora.network.module import ModuleSpec, NetworkModule
from sdlora.network.naming import ALPHA, LORA_DOWN, LORA_UP


class LoRAModule(NetworkModule):
    """The layer-independent part; subclasses build ``lora_down`` / ``lora_up`` for their base layer type."""

    def __init__(self, base: nn.Module, down: nn.Module, up: nn.Module, spec: ModuleSpec) -> None:
        super().__init__(base)
        device = base.weight.device
        self.lora_down = down.to(device=device)
        self.lora_up = up.to(device=device)
        self.rank = spec.rank
        self.register_buffer("alpha", torch.tensor(0.0, device=device), persistent=True)
        self.set_alpha(spec.alpha)
        self.dropout = spec.dropout  # [network_dropout]
        self.rank_dropout = spec.rank_dropout  # [rank_dropout]
        self.module_dropout = spec.module_dropout  # [module_dropout]
        self.init_down_(self.lora_down.weight)
        init_up_(self.lora_up.weight)

    def init_down_(self, weight: torch.Tensor) -> None:
        """lora_down's start: Kaiming-uniform (kohya's networks.lora); LoRA-FA overrides it."""
        init_down_(weight)

    @torch.no_grad()
    def set_alpha(self, alpha: float | None) -> None:
        """alpha (None or 0: the rank) and the scale alpha/rank that follows from it [network_alpha]."""
        value = effective_alpha(alpha, self.rank)
        self.alpha.fill_(value)
        self.scale = lora_scale(value, self.rank)

    # ------------------------------------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        if not self.training:
            lora = self.lora_up(self.lora_down(branch_input(x, self.lora_down.weight.dtype)))
            return out + (lora * self.scale).to(out.dtype)
        if module_dropout_skips(self.module_dropout):
            return out
        lx = self.lora_down(branch_input(x, self.lora_down.weight.dtype))  # [B, …, r] or [B, r, h, w]
        lx = neuron_dropout(lx, self.dropout)
        lx, factor = rank_dropout(lx, self.rank_dropout)
        return out + (self.lora_up(lx) * (self.scale * factor)).to(out.dtype)

    # --------------------------------------------------------------------------------------------------- file
    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {LORA_DOWN: self.lora_down.weight, LORA_UP: self.lora_up.weight, ALPHA: self.alpha}

    @torch.no_grad()
    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy down/up (shapes must match; a 1×1-conv tensor fits a Linear and back) and take the file's alpha."""
        for suffix, param in ((LORA_DOWN, self.lora_down.weight), (LORA_UP, self.lora_up.weight)):
            value = tensors[suffix]
            if value.shape != param.shape:
                if value.numel() != param.numel() or value.shape[:2] != param.shape[:2]:
                    raise ValueError(
                        f"{suffix.removesuffix('.weight')} has shape {tuple(value.shape)} but this model's layer needs "
                        f"{tuple(param.shape)}"
                    )
                value = value.reshape(param.shape)
            param.copy_(value)
        self.set_alpha(float(tensors[ALPHA]) if ALPHA in tensors else None)

    # ----------------------------------------------------------------------------------------------- training
    def adapter_modules(self) -> list[nn.Module]:
        return [self.lora_down, self.lora_up]

    def plus_parameters(self) -> list[nn.Parameter]:
        return [self.lora_up.weight]

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        return self.lora_down.weight, self.lora_up.weight, self.scale

    def dim_alpha(self) -> tuple[int, float]:
        return self.rank, float(self.alpha)

    # -------------------------------------------------------------------------------------------------- maths
    def delta_weight(self) -> torch.Tensor:
        """ΔW = scale · up∘down in float32, shaped like the base weight."""
        up, down = self.lora_up.weight.float(), self.lora_down.weight.float()
        return delta_weight(up, down, self.scale, self.base.weight.shape)

    @torch.no_grad()
    def cap_norm_(self, max_norm: float) -> tuple[bool, float]:
        """If ‖ΔW‖_F > ``max_norm``, multiply up and down by √(max_norm/‖ΔW‖): ΔW lands on the cap."""
        up, down = self.lora_up.weight, self.lora_down.weight
        norm = float(delta_weight_norm(up, down, self.scale))
        ratio = max_norm_ratio(norm, max_norm)
        if ratio == 1.0:
            return False, norm
        factor = math.sqrt(ratio)
        up.mul_(factor)
        down.mul_(factor)
        return True, norm * ratio

    def extra_repr(self) -> str:
        dropouts = (("dropout", self.dropout), ("rank_dropout", self.rank_dropout),
                    ("module_dropout", self.module_dropout))  # fmt: skip
        extra = "".join(f", {k}={v:g}" for k, v in dropouts if v)
        return f"rank={self.rank}, alpha={float(self.alpha):g}, scale={self.scale:g}{extra}"


class LoRALinear(LoRAModule):
    """LoRA on ``nn.Linear``: down [r, in], up [out, r]."""

    def __init__(self, base: nn.Linear, spec: ModuleSpec) -> None:
        down = nn.Linear(base.in_features, spec.rank, bias=False)
        up = nn.Linear(spec.rank, base.out_features, bias=False)
        super().__init__(base, down, up, spec)


class LoRAConv2d(LoRAModule):
    """LoRA on ``nn.Conv2d``: down [r, in, kh, kw] with the base's kernel, stride, padding and dilation; up
    [out, r, 1, 1]."""

    def __init__(self, base: nn.Conv2d, spec: ModuleSpec) -> None:
        if base.groups != 1:
            raise ValueError("LoRA on grouped convolutions is not supported")
        down = nn.Conv2d(base.in_channels, spec.rank, base.kernel_size, base.stride, base.padding, base.dilation,
                         bias=False)  # fmt: skip
        up = nn.Conv2d(spec.rank, base.out_channels, 1, bias=False)
        super().__init__(base, down, up, spec)
