"""A LoRA network: the wrapper modules injected into a U-Net and text encoders, keyed by their kohya names.

The wrappers live inside the model (swapped into their parents); this object only keeps the name → module table (with
each module's root, path, pipeline component and U-Net block), so the LoRA can be saved, loaded, merged and removed,
its parameters grouped for the optimizer (:mod:`sdlora.network.param_groups`) and its norms capped
(:mod:`sdlora.network.max_norm`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from sdlora.network.blocks import BlockOptions
from sdlora.network.lora import LoRAModule
from sdlora.network.naming import UNET_PREFIX
from sdlora.network.targets import Target

TENSOR_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")

#: Builds the LoRA for a named target, or returns None to leave that target alone.
ModuleFactory = Callable[[str, Target], "LoRAModule | None"]


def _replace_child(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` where ``root.get_submodule(path)`` is (works for ModuleList items such as ``to_out.0``)."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


@dataclass(frozen=True)
class Placement:
    """Where a LoRA module sits: its root model, the module path inside it, and the pipeline component's name
    (``unet``, ``text_encoder``, ``text_encoder_2`` — diffusers' names, used by the diffusers/PEFT export)."""

    root: nn.Module
    path: str
    component: str


@dataclass
class LoRANetwork:
    """kohya name → :class:`LoRAModule`, plus where each one was injected (to export or remove them again)."""

    modules: dict[str, LoRAModule] = field(default_factory=dict)
    placements: dict[str, Placement] = field(default_factory=dict, repr=False)
    #: kohya U-Net block number of each U-Net module (block-wise learning rates; −1 outside the blocks).
    blocks: dict[str, int] = field(default_factory=dict, repr=False)
    block_options: BlockOptions = field(default_factory=BlockOptions)
    #: LoRA+ ratios [loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio].
    loraplus: dict[str, float | None] = field(default_factory=dict)

    def inject(
        self,
        root: nn.Module,
        targets: Mapping[str, Target],
        factory: ModuleFactory,
        component: str = "unet",
        block_index: Callable[[str], int] | None = None,
    ) -> None:
        """Wrap every target of ``root`` (kohya name → target, see :func:`~sdlora.network.naming.name_targets`) with
        the module ``factory`` builds for it."""
        for name, target in targets.items():
            if name in self.modules:
                raise ValueError(f"duplicate LoRA module name {name}")
            module = factory(name, target)
            if module is None:
                continue
            _replace_child(root, target.path, module)
            self.modules[name] = module
            self.placements[name] = Placement(root, target.path, component)
            if block_index is not None:
                self.blocks[name] = block_index(name)

    def __len__(self) -> int:
        return len(self.modules)

    def names(self, prefix: str | None = None) -> list[str]:
        """Module names, optionally only those starting with ``prefix`` (e.g. ``lora_unet``, ``lora_te``)."""
        return [n for n in self.modules if prefix is None or n.startswith(prefix + "_")]

    def parameters(self, prefix: str | None = None) -> Iterator[nn.Parameter]:
        for name in self.names(prefix):
            yield from self.modules[name].lora_down.parameters()
            yield from self.modules[name].lora_up.parameters()

    def param_groups(
        self, default_lr: float, unet_lr: float | None, text_encoder_lr: float | list[float] | None
    ) -> list[dict]:
        """Optimizer groups [kohya: text_encoder_lr, unet_lr, block lr weights, LoRA+]; see
        :func:`sdlora.network.param_groups.param_groups`."""
        from sdlora.network.param_groups import param_groups

        return param_groups(self, default_lr, unet_lr, text_encoder_lr)

    def requires_grad_(self, flag: bool = True) -> LoRANetwork:
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def train(self, mode: bool = True) -> None:
        """Train/eval mode of the LoRA modules only (their dropouts), independent of the frozen model's mode."""
        for module in self.modules.values():
            module.lora_down.train(mode)
            module.lora_up.train(mode)
            module.training = mode

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[LoRANetwork]:
        """Eval mode (no dropouts) inside the block, each module's previous mode restored afterwards.

        For sample images and validation loss. Unlike kohya, whose dropouts stay active while it samples.
        """
        previous = {name: module.training for name, module in self.modules.items()}
        self.train(False)
        try:
            yield self
        finally:
            for name, module in self.modules.items():
                module.lora_down.train(previous[name])
                module.lora_up.train(previous[name])
                module.training = previous[name]

    def to(self, dtype: torch.dtype) -> LoRANetwork:
        """Cast the LoRA parameters (not the base layers) to ``dtype``."""
        for module in self.modules.values():
            module.lora_down.to(dtype)
            module.lora_up.to(dtype)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The kohya LoRA state dict: ``<name>.lora_down.weight``, ``<name>.lora_up.weight``, ``<name>.alpha``."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            tensors = (module.lora_down.weight, module.lora_up.weight, module.alpha)
            for suffix, tensor in zip(TENSOR_SUFFIXES, tensors, strict=True):
                t = tensor.detach().to("cpu")
                out[f"{name}.{suffix}"] = (t.to(dtype) if dtype is not None else t).contiguous()
        return out

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a kohya state dict into the modules; missing, unexpected or mis-shaped keys are an error."""
        expected = {f"{n}.{s}" for n in self.modules for s in TENSOR_SUFFIXES}
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise ValueError(f"LoRA keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, module in self.modules.items():
            for suffix, tensor in (
                ("lora_down.weight", module.lora_down.weight),
                ("lora_up.weight", module.lora_up.weight),
            ):
                value = state[f"{name}.{suffix}"]
                if value.shape != tensor.shape:
                    raise ValueError(f"{name}.{suffix}: shape {tuple(value.shape)} != {tuple(tensor.shape)}")
                tensor.copy_(value)
            module.alpha.fill_(float(state[f"{name}.alpha"]))
            module.scale = float(module.alpha) / module.rank

    def apply_max_norm(self, max_norm: float) -> tuple[int, float, float]:
        """[kohya: scale_weight_norms] Cap every ‖ΔW‖ at ``max_norm``; see :func:`sdlora.network.max_norm.apply`."""
        from sdlora.network.max_norm import apply_max_norm

        return apply_max_norm(self.modules.values(), max_norm)

    def merge(self) -> None:
        """Fold every ΔW into its base weight (idempotent)."""
        for module in self.modules.values():
            module.merge()

    def remove(self) -> None:
        """Put the base layers back (unmerged weights stay as they are); the network is empty afterwards."""
        for name, module in self.modules.items():
            placement = self.placements[name]
            _replace_child(placement.root, placement.path, module.base)
        self.modules.clear()
        self.placements.clear()
        self.blocks.clear()

    def is_unet(self, name: str) -> bool:
        return name.startswith(UNET_PREFIX + "_")
