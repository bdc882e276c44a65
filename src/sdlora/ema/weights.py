"""float32 shadow copies of the LoRA's trainable parameters: the EMA θ̄ ← β·θ̄ + (1 − β)·θ, and swapping them into
the network for evaluation and saving (the trained weights are put back bit for bit).

The shadows stay float32 whatever the training precision (under ``full_bf16`` a bf16 EMA would round every small
step away), on the parameters' device or on the CPU (``ema.device=cpu``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


class ShadowWeights:
    """The EMA of a fixed list of parameters (the network's :meth:`trainable_parameters`, in order)."""

    def __init__(self, params: Sequence[torch.Tensor], device: str | torch.device | None = None) -> None:
        self.shadow = [p.detach().to(device=device or p.device, dtype=torch.float32, copy=True) for p in params]

    @torch.no_grad()
    def update(self, params: Sequence[torch.Tensor], beta: float) -> None:
        """θ̄ ← β·θ̄ + (1 − β)·θ (β = 0: θ̄ = θ exactly)."""
        for shadow, param in zip(self.shadow, params, strict=True):
            value = param.detach().to(device=shadow.device, dtype=torch.float32)
            if beta == 0.0:
                shadow.copy_(value)
            else:
                shadow.lerp_(value, 1.0 - beta)

    @contextlib.contextmanager
    def swapped(self, params: Sequence[torch.Tensor]) -> Iterator[None]:
        """The shadows in ``params`` (cast to their dtype) inside the block; the previous values afterwards."""
        with torch.no_grad():
            kept = [p.detach().clone() for p in params]
            for param, shadow in zip(params, self.shadow, strict=True):
                param.copy_(shadow.to(device=param.device, dtype=param.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for param, value in zip(params, kept, strict=True):
                    param.copy_(value)

    @contextlib.contextmanager
    def exact(self, params: Sequence[torch.Tensor]) -> Iterator[None]:
        """For writing files: the float32 shadows themselves as the parameters' values (``.data``) inside the block,
        where :meth:`swapped` would round them to a bf16/fp16 LoRA's dtype; the previous tensors afterwards. Not for
        forward passes (a float32 LoRA on a half-precision model)."""
        if all(p.dtype == s.dtype for p, s in zip(params, self.shadow, strict=True)):
            with self.swapped(params):
                yield
            return
        kept = [p.data for p in params]
        try:
            for param, shadow in zip(params, self.shadow, strict=True):
                param.data = shadow.to(param.device)
            yield
        finally:
            for param, value in zip(params, kept, strict=True):
                param.data = value

    def state_dict(self) -> list[torch.Tensor]:
        return [s.detach().to("cpu", copy=True) for s in self.shadow]

    @torch.no_grad()
    def load_state_dict(self, tensors: Sequence[torch.Tensor]) -> None:
        if len(tensors) != len(self.shadow) or any(
            a.shape != b.shape for a, b in zip(tensors, self.shadow, strict=True)
        ):
            raise ValueError("the EMA in the training state does not fit this network")
        for shadow, tensor in zip(self.shadow, tensors, strict=True):
            shadow.copy_(tensor)
