"""What every module of a network is: a trainable adapter around one frozen base layer, swapped into its parent.

The network (:class:`sdlora.network.network.LoRANetwork`) and everything around it — saving, loading, the optimizer's
parameter groups, max-norm, sharding — talk to its modules only through this interface, so a module type (kohya's
LoRA, LoRA-FA and DyLoRA, the LyCORIS types; :mod:`sdlora.network.dispatch`) brings its own maths and file tensors:

- ``file_tensors()`` / ``load_file_tensors()``: the module's tensors in the file, by key suffix (``lora_down.weight``,
  ``lora_up.weight``, ``alpha`` for LoRA); the network prefixes them with the module's kohya name;
- ``trainable_parameters()`` in a fixed order (the optimizer's order), ``plus_parameters()`` the subset LoRA+ gives
  the larger learning rate, ``adapter_modules()`` the child modules holding them (kept whole under sharding);
- ``delta_weight()`` (ΔW, shaped like the base weight; ``delta_bias()`` for types that train the bias),
  ``cap_norm_()`` (max-norm), ``merge()`` / ``unmerge()``;
- ``set_training(mode)``: train/eval mode of the adapter alone (its dropouts), whatever the frozen base's mode;
- ``begin_step(generator)``: called before every training step's forward, for types that draw per step (DyLoRA);
- ``lora_factors()``: (down, up, scale) for types whose file is a plain LoRA (the diffusers/PEFT export);
  ``dim_alpha()``: the rank and alpha ``ss_network_dim`` / ``ss_network_alpha`` report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class ModuleSpec:
    """What to build for one target layer [kohya: network_dim, network_alpha, conv_dim, conv_alpha, the dropouts].

    ``alpha`` None or 0 means alpha = rank (scale 1), as kohya. ``options``: the type's own options (LyCORIS's
    keyword arguments such as ``use_tucker``, kohya DyLoRA's ``unit``).
    """

    rank: int | None
    alpha: float | None
    dropout: float = 0.0  # [network_dropout]
    rank_dropout: float = 0.0  # [rank_dropout]
    module_dropout: float = 0.0  # [module_dropout]
    options: Mapping[str, Any] = field(default_factory=dict)


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

    def delta_bias(self) -> torch.Tensor | None:
        """Δb in float32 for types that train the base layer's bias (LyCORIS full, norms); None otherwise."""
        return None

    def cap_norm_(self, max_norm: float) -> tuple[bool, float] | None:
        """Max-norm [scale_weight_norms]: scale the adapter so that ‖ΔW‖ ≤ ``max_norm``; (scaled, norm after), or
        None for a module that has no max-norm (left out of the statistics, as LyCORIS does)."""
        raise NotImplementedError

    def begin_step(self, generator: torch.Generator) -> None:
        """Before a training step's forward: draw what the step needs from ``generator`` (nothing by default)."""

    #: Whether :meth:`begin_step` draws (the network then owns a seeded generator that training states keep).
    draws_per_step = False

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        """(down, up, scale) with ΔW = scale · up∘down, for modules whose file is a plain LoRA; None otherwise."""
        return None

    def dim_alpha(self) -> tuple[int | None, float | None]:
        """The module's rank and alpha as ``ss_network_dim`` / ``ss_network_alpha`` count them."""
        return None, None

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW (and Δb) into the base layer; the adapter branch is then skipped. Twice changes nothing."""
        if self.merged:
            return
        self._add_delta(1.0)
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to the base weight's rounding)."""
        if not self.merged:
            return
        self._add_delta(-1.0)
        self.merged = False

    def _add_delta(self, sign: float) -> None:
        """Add (merge) or subtract (unmerge) the update; the one merged is kept, since some types' ΔW depends on the
        base weight (iA3, OFT, DoRA) and would be computed from the merged weight otherwise."""
        if sign > 0:
            self._merged_delta = (self.delta_weight(), self.delta_bias())
        weight_delta, bias_delta = self._merged_delta
        pairs = [(self.base.weight, weight_delta)]
        if bias_delta is not None and getattr(self.base, "bias", None) is not None:
            pairs.append((self.base.bias, bias_delta))
        for target, delta in pairs:
            target.copy_((target.float() + sign * delta.to(target.device)).to(target.dtype))
