"""What every module of a network is: a trainable adapter around one frozen base layer, swapped into its parent.

The network (:class:`sdlora.network.network.LoRANetwork`) and everything around it — saving, loading, the optimizer's
parameter groups, max-norm, sharding — talk to its modules only through this interface, so a module type (plain LoRA
today; others are added in :mod:`sdlora.network.dispatch`) brings its own maths and its own file tensors:

- ``file_tensors()`` / ``load_file_tensors()``: the module's tensors in the file, by key suffix (``lora_down.weight``,
  ``lora_up.weight``, ``alpha`` for LoRA); the network prefixes them with the module's kohya name;
- ``trainable_parameters()`` in a fixed order (the optimizer's order), ``plus_parameters()`` the subset LoRA+ gives
  the larger learning rate, ``adapter_modules()`` the child modules holding them (kept whole under sharding);
- ``delta_weight()`` (ΔW, shaped like the base weight), ``cap_norm_()`` (max-norm), ``merge()`` / ``unmerge()``;
- ``set_training(mode)``: train/eval mode of the adapter alone (its dropouts), whatever the frozen base's mode.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleSpec:
    """What to build for one target layer [kohya: network_dim, network_alpha, conv_dim, conv_alpha, the dropouts].

    ``alpha`` None or 0 means alpha = rank (scale 1), as kohya.
    """

    rank: int
    alpha: float | None
    dropout: float = 0.0  # [network_dropout]
    rank_dropout: float = 0.0  # [rank_dropout]
    module_dropout: float = 0.0  # [module_dropout]


class NetworkModule(nn.Module):
    """Base class of the adapter modules; the frozen layer is the child ``base`` and never part of a LoRA file."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base
        self.merged = False

    # ------------------------------------------------------------------------------------------------ file
    def file_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------------------------------------- training
    def adapter_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        for module in self.adapter_modules():
            yield from module.parameters()

    def plus_parameters(self) -> list[nn.Parameter]:
        """The parameters LoRA+ trains with ``lr × loraplus_lr_ratio`` [loraplus_lr_ratio]."""
        raise NotImplementedError

    def set_training(self, mode: bool) -> None:
        for module in self.adapter_modules():
            module.train(mode)
        self.training = mode

    def cast_(self, dtype: torch.dtype) -> None:
        """Cast the adapter's parameters (not the base layer) to ``dtype``."""
        for module in self.adapter_modules():
            module.to(dtype)

    # ------------------------------------------------------------------------------------------------ maths
    def delta_weight(self) -> torch.Tensor:
        """ΔW in float32, shaped like the base weight."""
        raise NotImplementedError

    def cap_norm_(self, max_norm: float) -> tuple[bool, float]:
        """Max-norm [scale_weight_norms]: scale the adapter so that ‖ΔW‖ ≤ ``max_norm``; (scaled, norm after)."""
        raise NotImplementedError

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into the base weight; the adapter branch is then skipped. Calling it twice changes nothing."""
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
