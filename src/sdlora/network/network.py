"""A network: the adapter modules injected into a U-Net and text encoders, keyed by their kohya names.

The modules live inside the model (swapped into their parents); this object keeps the name → module table (with each
module's injection site and U-Net block), so the network can be written to and read from a file, merged and removed,
its parameters grouped for the optimizer (:mod:`sdlora.network.param_groups`) and its norms capped
(:mod:`sdlora.network.max_norm`). It only talks to its modules through :class:`~sdlora.network.module.NetworkModule`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from sdlora.network.blocks import BlockOptions
from sdlora.network.module import NetworkModule
from sdlora.network.naming import UNET_PREFIX
from sdlora.network.targets import Target

#: Builds the module for a named target, or returns None to leave that target alone.
ModuleFactory = Callable[[str, Target], "NetworkModule | None"]


def _replace_child(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` where ``root.get_submodule(path)`` is (works for ModuleList items such as ``to_out.0``)."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


@dataclass(frozen=True)
class Injection:
    """Where a module was injected: its root model, the module path inside it, and the pipeline component's name
    (``unet``, ``text_encoder``, ``text_encoder_2`` — diffusers' names, used by the diffusers/PEFT export)."""

    root: nn.Module
    path: str
    component: str


@dataclass
class LoRANetwork:
    """kohya name → :class:`NetworkModule`, plus where each one was injected (to export or remove them again)."""

    modules: dict[str, NetworkModule] = field(default_factory=dict)
    injections: dict[str, Injection] = field(default_factory=dict, repr=False)
    #: kohya U-Net block number of each U-Net module (block-wise learning rates; −1 outside the blocks).
    blocks: dict[str, int] = field(default_factory=dict, repr=False)
    block_options: BlockOptions = field(default_factory=BlockOptions)
    #: LoRA+ ratios [loraplus_lr_ratio, loraplus_unet_lr_ratio, loraplus_text_encoder_lr_ratio].
    loraplus: dict[str, float | None] = field(default_factory=dict)
    #: The seeded generator of the modules' per-step draws (DyLoRA); None until :meth:`seed_draws`, and for types
    #: that draw nothing. Training states keep its state.
    generator: torch.Generator | None = field(default=None, repr=False)

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
            self.injections[name] = Injection(root, target.path, component)
            if block_index is not None:
                self.blocks[name] = block_index(name)

    def __len__(self) -> int:
        return len(self.modules)

    def names(self, prefix: str | None = None) -> list[str]:
        """Module names, optionally only those starting with ``prefix`` (e.g. ``lora_unet``, ``lora_te``)."""
        return [n for n in self.modules if prefix is None or n.startswith(prefix + "_")]

    def is_unet(self, name: str) -> bool:
        return name.startswith(UNET_PREFIX + "_")

    # -------------------------------------------------------------------------------------------- training
    def trainable_parameters(self, prefix: str | None = None) -> Iterator[nn.Parameter]:
        for name in self.names(prefix):
            yield from self.modules[name].trainable_parameters()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.trainable_parameters())

    def param_groups(
        self, default_lr: float, unet_lr: float | None, text_encoder_lr: float | list[float] | None
    ) -> list[dict]:
        """Optimizer groups [kohya: text_encoder_lr, unet_lr, block lr weights, LoRA+]; see
        :func:`sdlora.network.param_groups.param_groups`."""
        from sdlora.network.param_groups import param_groups

        return param_groups(self, default_lr, unet_lr, text_encoder_lr)

    def set_trainable(self, flag: bool = True) -> LoRANetwork:
        """``requires_grad`` of every adapter parameter."""
        for p in self.trainable_parameters():
            p.requires_grad_(flag)
        return self

    def set_training(self, mode: bool = True) -> None:
        """Train/eval mode of the adapters only (their dropouts), independent of the frozen model's mode."""
        for module in self.modules.values():
            module.set_training(mode)

    def seed_draws(self, seed: int) -> torch.Generator | None:
        """Create the generator of the per-step draws (a CPU generator seeded with ``seed``; the same on every
        process, so DDP ranks train the same rows), if any module draws."""
        if self.generator is None and any(m.draws_per_step for m in self.modules.values()):
            self.generator = torch.Generator().manual_seed(seed)
        return self.generator

    def begin_step(self) -> None:
        """Before a training step's forward: every module draws what it needs (DyLoRA: its trainable rows), in
        module order, from :attr:`generator`."""
        if self.generator is None:
            return
        for module in self.modules.values():
            module.begin_step(self.generator)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[LoRANetwork]:
        """Eval mode (no dropouts) inside the block, each module's previous mode restored afterwards.

        For sample images and validation loss. Unlike kohya, whose dropouts stay active while it samples.
        """
        previous = {name: module.training for name, module in self.modules.items()}
        self.set_training(False)
        try:
            yield self
        finally:
            for name, module in self.modules.items():
                module.set_training(previous[name])

    def cast_(self, dtype: torch.dtype) -> LoRANetwork:
        """Cast the adapter parameters (not the base layers) to ``dtype``."""
        for module in self.modules.values():
            module.cast_(dtype)
        return self

    def adapter_modules(self) -> list[nn.Module]:
        """The child modules holding the adapter parameters (what a sharding strategy must keep whole)."""
        return [part for module in self.modules.values() for part in module.adapter_modules()]

    # ------------------------------------------------------------------------------------------------ file
    def kohya_tensors(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The file's tensors, ``<name>.<suffix>`` (LoRA: ``lora_down.weight``, ``lora_up.weight``, ``alpha``), on
        the CPU, cast to ``dtype`` if given."""
        out: dict[str, torch.Tensor] = {}
        for name, module in self.modules.items():
            for suffix, tensor in module.file_tensors().items():
                t = tensor.detach().to("cpu")
                out[f"{name}.{suffix}"] = (t.to(dtype) if dtype is not None else t).contiguous()
        return out

    @torch.no_grad()
    def load_kohya_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy a file's tensors into the modules; missing, unexpected or mis-shaped keys are an error."""
        expected = {f"{n}.{s}" for n, m in self.modules.items() for s in m.file_tensors()}
        missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
        if missing or unexpected:
            raise ValueError(f"LoRA keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name, module in self.modules.items():
            own = {s: tensors[f"{name}.{s}"] for s in module.file_tensors()}
            try:
                module.load_file_tensors(own)
            except ValueError as exc:
                raise ValueError(f"{name}.{exc}") from None

    # ----------------------------------------------------------------------------------------------- maths
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
            injection = self.injections[name]
            _replace_child(injection.root, injection.path, module.base)
        self.modules.clear()
        self.injections.clear()
        self.blocks.clear()
