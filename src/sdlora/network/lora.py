"""The LoRA wrapper layer: it holds the frozen base layer and is swapped into the base layer's parent.

State-dict names are kohya's (``lora_down.weight``, ``lora_up.weight``, ``alpha``); the base layer is the child
``base`` and is never part of the LoRA file. Merging folds ΔW into the base weight (idempotent) and turns the branch
off; unmerging restores the base weight.

In training mode the three kohya dropouts act on the branch, in kohya's order (kohya-semantics §2): module dropout
(skip the branch), then ``lx = down(x)``, neuron dropout on lx, rank dropout on lx (scale × 1/(1−p)), then ``up``.
In eval mode the branch is deterministic.
"""

from __future__ import annotations

import torch
from torch import nn

from sdlora.network.functional import (
    delta_weight,
    init_down_,
    init_up_,
    lora_scale,
    module_dropout_skips,
    neuron_dropout,
    rank_dropout,
)


class LoRAModule(nn.Module):
    """``y = base(x) + multiplier · scale · up(down(x))`` around a frozen ``nn.Linear`` or ``nn.Conv2d``."""

    def __init__(
        self,
        base: nn.Module,
        rank: int,
        alpha: float | None,
        dropout: float = 0.0,
        rank_dropout: float = 0.0,
        module_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if isinstance(base, nn.Linear):
            down = nn.Linear(base.in_features, rank, bias=False)
            up = nn.Linear(rank, base.out_features, bias=False)
        elif isinstance(base, nn.Conv2d):
            if base.groups != 1:
                raise ValueError("LoRA on grouped convolutions is not supported")
            down = nn.Conv2d(
                base.in_channels, rank, base.kernel_size, base.stride, base.padding, base.dilation, bias=False
            )
            up = nn.Conv2d(rank, base.out_channels, 1, bias=False)
        else:
            raise TypeError(f"LoRA wraps nn.Linear or nn.Conv2d, not {type(base).__name__}")
        self.base = base
        self.lora_down = down.to(device=base.weight.device)
        self.lora_up = up.to(device=base.weight.device)
        self.rank = rank
        self.scale = lora_scale(alpha, rank)
        alpha_value = float(alpha) if alpha else float(rank)
        self.register_buffer("alpha", torch.tensor(alpha_value, device=base.weight.device), persistent=True)
        self.multiplier = 1.0
        self.merged = False
        self.dropout = dropout  # [network_dropout]
        self.rank_dropout = rank_dropout  # [rank_dropout]
        self.module_dropout = module_dropout  # [module_dropout]
        init_down_(self.lora_down.weight)
        init_up_(self.lora_up.weight)

    def lora_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The low-rank branch up(down(x)), computed in the LoRA parameters' dtype."""
        dtype = self.lora_down.weight.dtype
        return self.lora_up(self.lora_down(x.to(dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged or self.multiplier == 0:
            return out
        if not self.training:
            return out + (self.lora_forward(x) * (self.multiplier * self.scale)).to(out.dtype)
        if module_dropout_skips(self.module_dropout):
            return out
        lx = self.lora_down(x.to(self.lora_down.weight.dtype))  # [B, …, r] or [B, r, h, w]
        lx = neuron_dropout(lx, self.dropout)
        lx, factor = rank_dropout(lx, self.rank_dropout)
        return out + (self.lora_up(lx) * (self.multiplier * self.scale * factor)).to(out.dtype)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = multiplier · scale · up∘down in float32, shaped like the base weight."""
        up = self.lora_up.weight.float()
        down = self.lora_down.weight.float()
        return delta_weight(up, down, self.multiplier * self.scale, self.base.weight.shape)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight; the branch is then skipped. Calling it twice changes nothing."""
        if self.merged:
            return
        weight = self.base.weight
        weight.copy_((weight.float() + self.delta_weight().to(weight.device)).to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to the base weight's rounding)."""
        if not self.merged:
            return
        weight = self.base.weight
        weight.copy_((weight.float() - self.delta_weight().to(weight.device)).to(weight.dtype))
        self.merged = False

    def extra_repr(self) -> str:
        dropouts = (
            ("dropout", self.dropout),
            ("rank_dropout", self.rank_dropout),
            ("module_dropout", self.module_dropout),
        )
        extra = "".join(f", {k}={v:g}" for k, v in dropouts if v)
        return f"rank={self.rank}, alpha={float(self.alpha):g}, scale={self.scale:g}{extra}"
