"""LyCORIS's DyLoRA [lycoris.kohya, algo=dylora] (docs/network-types.md §5) as an sdlora module.

LyCORIS keeps down/up as ``rank / block_size`` blocks of ``block_size`` rows (``down_list`` / ``up_list``). In a
training step it draws a block index k uniformly in [0, rank/block_size − 1], uses blocks 0 … k (0 … k−1 frozen, k
trained; the blocks after k not at all) and scales by alpha/(k + 1): ΔW_k = alpha/(k+1) · up[:, :(k+1)·bs] ·
down[:(k+1)·bs]. The file is a plain LoRA: lora_down [rank, in(, kh, kw)], lora_up, alpha, read with alpha/rank.

sdlora uses LyCORIS's module and its ``get_diff_weight(rank=k·bs)`` for the training forward, and differs in three
places, each written down here:

- k is drawn from the network's seeded generator before each training step (:meth:`begin_step`), not with Python's
  ``random`` inside every forward — the same distribution, kept in training states, stable under gradient
  checkpointing;
- eval mode (samples, validation) applies the file's ΔW = alpha/rank · up·down at full rank; LyCORIS draws a random
  rank there too. (At full rank LyCORIS trains with alpha/(rank/bs), which is the file's alpha/rank only for
  ``block_size`` 1 — the kohya_ss GUI's default unit);
- a convolution's lora_up is written [out, rank, 1, 1], kohya's LoRA shape, so that LyCORIS's own loader (which
  reads the file as LoCon) takes it; LyCORIS writes it [out, rank].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from sdlora.network.functional import lora_scale
from sdlora.network.lycoris import LycorisModule
from sdlora.network.module import ModuleSpec
from sdlora.network.naming import ALPHA, LORA_DOWN, LORA_UP


class LycorisDyLoRA(LycorisModule):
    """LyCORIS's DyLoRA around a ``nn.Linear`` / ``nn.Conv2d``."""

    lycoris = "DyLoraModule"
    draws_per_step = True

    def __init__(self, base: nn.Module, spec: ModuleSpec) -> None:
        super().__init__(base, spec)
        self.block = self.adapter.block_count - 1  # k; training steps draw it

    def begin_step(self, generator: torch.Generator) -> None:
        self.block = int(torch.randint(0, self.adapter.block_count, (1,), generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapter, out = self.adapter, self.base(x)
        if self.merged:
            return out
        if self.training:
            if adapter.module_dropout and torch.rand(1) < adapter.module_dropout:
                return out
            diff = adapter.get_diff_weight(rank=self.block * adapter.block_size)[0]
        else:
            diff = self.delta_weight()
        return out + adapter.op(x, diff.to(x.dtype), None, **adapter.kw_dict)

    # --------------------------------------------------------------------------------------------------- file
    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(down [rank, in(, kh, kw)], up [out, rank(, 1, 1)]) — kohya's LoRA shapes."""
        adapter = self.adapter
        spatial = tuple(adapter.shape[2:])
        down = torch.cat(tuple(adapter.down_list)).reshape(adapter.lora_dim, -1, *spatial)
        up = torch.cat(tuple(adapter.up_list), dim=1).reshape(-1, adapter.lora_dim, *(1 for _ in spatial))
        return down, up

    def file_tensors(self) -> dict[str, torch.Tensor]:
        down, up = self._factors()
        return {LORA_DOWN: down, LORA_UP: up, ALPHA: self.adapter.alpha}

    @torch.no_grad()
    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        adapter, (down, up) = self.adapter, self._factors()
        for suffix, own in ((LORA_DOWN, down), (LORA_UP, up)):
            if tensors[suffix].numel() != own.numel():
                raise ValueError(f"{suffix.removesuffix('.weight')} has shape {tuple(tensors[suffix].shape)} but "
                                 f"this model's layer needs {tuple(own.shape)}")  # fmt: skip
        if ALPHA in tensors and float(tensors[ALPHA]) != float(adapter.alpha):
            raise ValueError(f"alpha {float(tensors[ALPHA]):g} differs from this module's {float(adapter.alpha):g}")
        rows, size = tensors[LORA_DOWN].reshape(adapter.lora_dim, -1), adapter.block_size
        cols = tensors[LORA_UP].reshape(-1, adapter.lora_dim)
        for i, (d, u) in enumerate(zip(adapter.down_list, adapter.up_list, strict=True)):
            d.copy_(rows[i * size : (i + 1) * size])
            u.copy_(cols[:, i * size : (i + 1) * size])

    # -------------------------------------------------------------------------------------------------- maths
    @property
    def file_scale(self) -> float:
        return lora_scale(float(self.adapter.alpha), self.adapter.lora_dim)

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        down, up = self._factors()
        product = up.flatten(1).float() @ down.flatten(1).float()
        return (self.file_scale * product).reshape(self.base.weight.shape)

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        down, up = self._factors()
        return down, up, self.file_scale

    def cap_norm_(self, max_norm: float) -> None:
        return None  # LyCORIS defines no max-norm for DyLoRA (the config refuses scale_weight_norms)
