"""kohya's DyLoRA [networks.dylora] (docs/kohya.md §1.4): a LoRA trained a few rank rows at a time.

``lora_down`` and ``lora_up`` are held as ``rank`` separate rows/columns (kohya's ``lora_A`` / ``lora_B`` parameter
lists; one parameter each, so the optimizer skips a row that got no gradient, as in kohya). In training, each step:

1. b is drawn, a multiple of ``unit`` in [0, rank − unit], uniformly [kohya: random.randint(0, rank−1) floored to a
   multiple of unit];
2. only rows b … b+unit−1 of down and columns b … b+unit−1 of up are trainable (``requires_grad``), the rest frozen;
3. the branch uses the *full* down/up: y = base(x) + (alpha/rank) · √(rank / (b + unit)) · up(down(x)).

In eval mode (samples, validation, the file) b = rank − unit: the factor is 1 and ΔW = (alpha/rank) · up∘down, a plain
rank-``rank`` LoRA whose first ``unit``·k rows are a rank-``unit``·k LoRA of the same alpha.

**sdlora:** b is drawn from the network's seeded generator (kept in training states) once per training step before
the forward, by :meth:`DyLoRAModule.begin_step`; kohya draws with Python's ``random`` inside every forward call. In a
step each module runs once, so the distribution is the same, and gradient checkpointing's recomputed forward sees the
same b (kohya's would draw again). Max-norm, which kohya's DyLoRA network lacks, is LoRA's (§3).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from sdlora.network.functional import (
    branch_input,
    delta_weight,
    delta_weight_norm,
    effective_alpha,
    lora_scale,
    max_norm_ratio,
)
from sdlora.network.module import ModuleSpec, NetworkModule
from sdlora.network.naming import ALPHA, LORA_DOWN, LORA_UP


def draw_trainable_row(rank: int, unit: int, generator: torch.Generator) -> int:
    """b ∈ {0, unit, 2·unit, …, rank − unit}, uniform [kohya: randint(0, rank−1) − (that % unit)]."""
    return int(torch.randint(0, rank // unit, (1,), generator=generator)) * unit


def dylora_scale(alpha: float, rank: int, b: int, unit: int) -> float:
    """(alpha/rank) · √(rank / (b + unit)): kohya's scale while rows b … b+unit−1 train."""
    return lora_scale(alpha, rank) * math.sqrt(rank / (b + unit))


class DyLoRAModule(NetworkModule):
    """kohya's DyLoRA around a ``nn.Linear`` or ``nn.Conv2d`` (1×1 or k×k)."""

    draws_per_step = True

    def __init__(self, base: nn.Module, spec: ModuleSpec) -> None:
        super().__init__(base)
        self.rank, self.unit = spec.rank, int(spec.options.get("unit", 1))
        if self.rank % self.unit:
            raise ValueError(f"DyLoRA rank {self.rank} is not a multiple of unit {self.unit}")
        weight = base.weight
        conv = isinstance(base, nn.Conv2d)
        down_shape = (1, weight.shape[1], *weight.shape[2:]) if conv else (1, weight.shape[1])
        up_shape = (weight.shape[0], 1, 1, 1) if conv else (weight.shape[0], 1)
        new = {"device": weight.device, "dtype": torch.float32}
        self.lora_A = nn.ParameterList([nn.Parameter(torch.empty(down_shape, **new)) for _ in range(self.rank)])
        self.lora_B = nn.ParameterList([nn.Parameter(torch.zeros(up_shape, **new)) for _ in range(self.rank)])
        for row in self.lora_A:
            nn.init.kaiming_uniform_(row, a=math.sqrt(5))  # per row, as kohya; the bound 1/√fan_in is the same
        self.register_buffer("alpha", torch.tensor(effective_alpha(spec.alpha, self.rank), device=weight.device))
        self.scale = lora_scale(float(self.alpha), self.rank)
        self.trainable_row = self.rank - self.unit  # b; training steps draw it (begin_step)

    # ------------------------------------------------------------------------------------------------ forward
    def begin_step(self, generator: torch.Generator) -> None:
        """Draw b and make only rows/columns b … b+unit−1 trainable for this step."""
        b = draw_trainable_row(self.rank, self.unit, generator)
        self.trainable_row = b
        for i in range(self.rank):
            trainable = b <= i < b + self.unit
            self.lora_A[i].requires_grad_(trainable)
            self.lora_B[i].requires_grad_(trainable)

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(down [r, in, …], up [out, r, …]) from the rows."""
        return torch.cat(tuple(self.lora_A), dim=0), torch.cat(tuple(self.lora_B), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        b = self.trainable_row if self.training else self.rank - self.unit
        down, up = self._factors()
        x = branch_input(x, down.dtype)
        if isinstance(self.base, nn.Conv2d):
            base = self.base
            lx = F.conv2d(x, down, stride=base.stride, padding=base.padding, dilation=base.dilation)
            lx = F.conv2d(lx, up)
        else:
            lx = F.linear(F.linear(x, down), up)
        return out + (lx * dylora_scale(float(self.alpha), self.rank, b, self.unit)).to(out.dtype)

    # --------------------------------------------------------------------------------------------------- file
    def file_tensors(self) -> dict[str, torch.Tensor]:
        """A plain kohya LoRA: lora_down [r, in(, kh, kw)], lora_up [out, r(, 1, 1)], alpha."""
        down, up = self._factors()
        return {LORA_DOWN: down, LORA_UP: up, ALPHA: self.alpha}

    @torch.no_grad()
    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        down, up = self._factors()
        for suffix, value, own in ((LORA_DOWN, tensors[LORA_DOWN], down), (LORA_UP, tensors[LORA_UP], up)):
            if value.numel() != own.numel() or value.shape[:2] != own.shape[:2]:
                raise ValueError(f"{suffix.removesuffix('.weight')} has shape {tuple(value.shape)} but this model's "
                                 f"layer needs {tuple(own.shape)}")  # fmt: skip
        down, up = tensors[LORA_DOWN].reshape(down.shape), tensors[LORA_UP].reshape(up.shape)
        for i in range(self.rank):
            self.lora_A[i].copy_(down[i : i + 1])
            self.lora_B[i].copy_(up[:, i : i + 1])
        self.alpha.fill_(effective_alpha(float(tensors[ALPHA]) if ALPHA in tensors else None, self.rank))
        self.scale = lora_scale(float(self.alpha), self.rank)

    # ----------------------------------------------------------------------------------------------- training
    def adapter_modules(self) -> list[nn.Module]:
        return [self.lora_A, self.lora_B]

    def plus_parameters(self) -> list[nn.Parameter]:
        return list(self.lora_B)  # kohya: the lora_B parameters [loraplus_lr_ratio]

    # -------------------------------------------------------------------------------------------------- maths
    def delta_weight(self) -> torch.Tensor:
        """ΔW = (alpha/rank) · up∘down (the eval-mode, full-rank update)."""
        down, up = self._factors()
        return delta_weight(up.float(), down.float(), self.scale, self.base.weight.shape)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        down, up = self._factors()
        return down, up, self.scale

    def dim_alpha(self) -> tuple[int, float]:
        return self.rank, float(self.alpha)

    @torch.no_grad()
    def cap_norm_(self, max_norm: float) -> tuple[bool, float]:
        """LoRA's rule: every row of down and up × √(max_norm/‖ΔW‖) when ‖ΔW‖ > max_norm."""
        down, up = self._factors()
        norm = float(delta_weight_norm(up, down, self.scale))
        ratio = max_norm_ratio(norm, max_norm)
        if ratio == 1.0:
            return False, norm
        for row in (*self.lora_A, *self.lora_B):
            row.mul_(math.sqrt(ratio))
        return True, norm * ratio

    def extra_repr(self) -> str:
        return f"rank={self.rank}, unit={self.unit}, alpha={float(self.alpha):g}"
