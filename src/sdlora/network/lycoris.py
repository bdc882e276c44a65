"""LyCORIS's modules (the ``lycoris-lora`` package, what kohya_ss runs as ``lycoris.kohya``) as sdlora modules.

Each wrapper holds the frozen layer (``base``) and one LyCORIS module (``adapter``) built around it, exactly as
``lycoris.kohya`` builds it (rank, alpha, dropouts and the type's options as keyword arguments). The adapter's own
code gives the forward (with its dropouts), the file tensors (``custom_state_dict``), the loading and the max-norm;
the wrapper only adds what sdlora's interface needs (docs/network-types.md §4):

- the adapter is not monkey-patched into the layer (``apply_to``): the wrapper is swapped into the parent and calls
  ``adapter(x)``, which calls the frozen layer's forward itself;
- ``delta_weight()`` is what that forward applies, in eval mode: ``get_diff_weight`` for iA3/OFT/BOFT/GLoRA/full/
  norms; for LoCon/LoHa/LoKr the rebuilt low-rank weight (× the DoRA decomposition with ``weight_decompose``), since
  lycoris-lora 4.1's ``get_diff_weight`` of LoHa/LoKr multiplies alpha/rank in twice;
- after LyCORIS's max-norm, a scale it keeps in the non-trained ``scalar`` buffer (LoCon, LoHa) is folded into the
  tensor its file stores it in (``lora_up`` / ``hada_w1_a``): the file is the same, and a training state then holds
  every number the module computes with (exact resume).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from sdlora.network.module import ModuleSpec, NetworkModule

log = logging.getLogger("sdlora")


def lycoris_class(name: str) -> type:
    """A class of ``lycoris.modules`` (imported on first use: the package takes seconds to import)."""
    import lycoris.modules as modules

    logging.getLogger("LyCORIS").setLevel(logging.WARNING)  # its per-layer INFO lines say nothing new
    return getattr(modules, name)


@contextlib.contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    mode = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(mode)


class LycorisModule(NetworkModule):
    """One LyCORIS module around a frozen ``nn.Linear`` / ``nn.Conv2d``; subclasses name the LyCORIS class."""

    lycoris: ClassVar[str]
    #: Names of the module's tensors that LoRA+ speeds up (LyCORIS's rule: parameters named ``lora_up``).
    plus_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, base: nn.Module, spec: ModuleSpec) -> None:
        super().__init__(base)
        self.rank = spec.rank
        self.adapter = self.make_adapter(base, spec)
        self.adapter.to(base.weight.device)

    def make_adapter(self, base: nn.Module, spec: ModuleSpec) -> nn.Module:
        """``lycoris.kohya``'s call: (name, layer, multiplier, dim, alpha, dropout, rank_dropout, module_dropout,
        **options)."""
        cls = lycoris_class(self.lycoris)
        return cls("", base, 1.0, spec.rank or 1, spec.alpha, spec.dropout, spec.rank_dropout, spec.module_dropout,
                   **dict(spec.options))  # fmt: skip

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.merged:
            return self.base(x, *args, **kwargs)
        return self.adapter(x, *args, **kwargs)

    # --------------------------------------------------------------------------------------------------- file
    def file_tensors(self) -> dict[str, torch.Tensor]:
        custom = self.adapter.custom_state_dict()
        return dict(custom) if custom is not None else dict(self.adapter.state_dict())

    @torch.no_grad()
    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = getattr(self.adapter, "alpha", None)
        if own is not None and "alpha" in tensors and not torch.isclose(tensors["alpha"].float(), own.float()):
            raise ValueError(f"alpha {float(tensors['alpha']):g} differs from this module's {float(own):g}")
        try:
            self.adapter.load_state_dict(dict(tensors), strict=True)
        except RuntimeError as exc:
            raise ValueError(" ".join(str(exc).split())[:300]) from None

    # ----------------------------------------------------------------------------------------------- training
    def adapter_modules(self) -> list[nn.Module]:
        return [self.adapter]

    def plus_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.adapter.named_parameters() if name.startswith(self.plus_names)]

    # -------------------------------------------------------------------------------------------------- maths
    def weight_diff(self) -> torch.Tensor:
        """The low-rank ΔW before any DoRA decomposition (subclasses); the default is LyCORIS's own."""
        return self.adapter.get_diff_weight()[0]

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """ΔW in float32 as the eval-mode forward applies it (DoRA: W′ − W with W′ the decomposed W + ΔW)."""
        with _eval(self.adapter):
            diff = self.weight_diff().float().reshape(self.base.weight.shape)
            if getattr(self.adapter, "wd", False):
                weight = self.base.weight.float()
                return self.adapter.apply_weight_decompose(weight + diff).float() - weight
            return diff

    @torch.no_grad()
    def cap_norm_(self, max_norm: float) -> tuple[bool, float] | None:
        """LyCORIS's ``apply_max_norm``; a scale it leaves in ``scalar`` is folded into the stored tensor."""
        scaled, norm = self.adapter.apply_max_norm(max_norm, self.base.weight.device)
        if scaled is None:
            return None
        self.fold_scalar()
        return bool(scaled), float(norm)

    def fold_scalar(self) -> None:
        """Move a max-norm scale out of the ``scalar`` buffer into the tensor the file multiplies by it."""

    def dim_alpha(self) -> tuple[int | None, float | None]:
        alpha = getattr(self.adapter, "alpha", None)
        return self.rank, (float(alpha) if alpha is not None else None)

    def extra_repr(self) -> str:
        return f"lycoris={self.lycoris}, rank={self.rank}"


class _ScalarFold(LycorisModule):
    """LoCon/LoHa: LyCORIS's max-norm multiplies ``scalar``; the file stores ``<folded> * scalar``."""

    folded: ClassVar[str]

    @torch.no_grad()
    def fold_scalar(self) -> None:
        scalar = self.adapter.scalar
        if isinstance(scalar, nn.Parameter) or float(scalar) == 1.0:
            return  # use_scalar: a trained scalar stays where it is
        self.adapter.get_parameter(self.folded).mul_(scalar.to(self.adapter.get_parameter(self.folded).dtype))
        scalar.fill_(1.0)


class LycorisLoCon(_ScalarFold):
    """LyCORIS's LoRA/LoCon [algo=lora]: ΔW = (alpha/rank) · up∘(mid∘)down (+ DoRA)."""

    lycoris = "LoConModule"
    folded = "lora_up.weight"
    plus_names = ("lora_up",)

    def weight_diff(self) -> torch.Tensor:
        return self.adapter.make_weight(self.base.weight.device) * self.adapter.scale

    def lora_factors(self) -> tuple[torch.Tensor, torch.Tensor, float] | None:
        adapter = self.adapter
        if adapter.tucker or adapter.wd:
            return None
        return adapter.lora_down.weight, adapter.lora_up.weight * adapter.scalar, adapter.scale


class LycorisLoHa(_ScalarFold):
    """LyCORIS's LoHa [algo=loha]: ΔW = (alpha/rank) · (w1_a w1_b) ⊙ (w2_a w2_b) (+ DoRA)."""

    lycoris = "LohaModule"
    folded = "hada_w1_a"

    def weight_diff(self) -> torch.Tensor:
        return self.adapter.get_weight(self.adapter.shape) * self.adapter.scalar


class LycorisLoKr(LycorisModule):
    """LyCORIS's LoKr [algo=lokr]: ΔW = (alpha/rank) · w1 ⊗ w2 (+ DoRA)."""

    lycoris = "LokrModule"

    def weight_diff(self) -> torch.Tensor:
        return self.adapter.get_weight(self.adapter.shape) * self.adapter.scalar


class LycorisIA3(LycorisModule):
    """LyCORIS's iA3 [algo=ia3]: W′ = W · (1 + w) per output (or input) channel."""

    lycoris = "IA3Module"


class LycorisOFT(LycorisModule):
    """LyCORIS's Diag-OFT [algo=diag-oft]: W′ = R W, R block-diagonal orthogonal."""

    lycoris = "DiagOFTModule"


class LycorisBOFT(LycorisModule):
    """LyCORIS's BOFT [algo=boft]: W′ = R W, R a product of butterfly-permuted block-diagonal rotations."""

    lycoris = "ButterflyOFTModule"


class LycorisGLoRA(LycorisModule):
    """LyCORIS's GLoRA [algo=glora]: ΔW = (alpha/rank) · (W a1 a2 + b1 b2)."""

    lycoris = "GLoRAModule"


class LycorisFull(LycorisModule):
    """LyCORIS's full [algo=full]: the layer's weight (and bias) trained as a difference (file: diff, diff_b)."""

    lycoris = "FullModule"

    def file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"diff": self.adapter.weight}
        if self.adapter.bias is not None:
            tensors["diff_b"] = self.adapter.bias
        return tensors

    @torch.no_grad()
    def load_file_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = {"diff": self.adapter.weight, "diff_b": self.adapter.bias}
        if set(tensors) != {k for k, v in own.items() if v is not None}:
            raise ValueError(
                f"has {sorted(tensors)} but this layer needs {sorted(k for k, v in own.items() if v is not None)}"
            )
        for key, value in tensors.items():
            if value.shape != own[key].shape:
                raise ValueError(f"{key} has shape {tuple(value.shape)} but this layer needs {tuple(own[key].shape)}")
            own[key].copy_(value)

    def delta_bias(self) -> torch.Tensor | None:
        return None if self.adapter.bias is None else self.adapter.bias.detach().float()

    def dim_alpha(self) -> tuple[None, None]:
        return None, None


class LycorisNorm(LycorisModule):
    """LyCORIS's norm training [train_norm]: GroupNorm/LayerNorm weight and bias + (w_norm, b_norm)."""

    lycoris = "NormModule"

    def make_adapter(self, base: nn.Module, spec: ModuleSpec) -> nn.Module:
        options = {k: v for k, v in spec.options.items() if k == "rank_dropout_scale"}
        return lycoris_class(self.lycoris)("", base, 1.0, spec.rank_dropout, spec.module_dropout, **options)

    def delta_bias(self) -> torch.Tensor | None:
        b_norm = getattr(self.adapter, "b_norm", None)
        return None if b_norm is None else b_norm.detach().float()

    def dim_alpha(self) -> tuple[None, None]:
        return None, None
