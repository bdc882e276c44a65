"""A LoRA network: the wrapper modules injected into a U-Net and text encoders, keyed by their kohya names.

The wrappers live inside the model (swapped into their parents); this object only keeps the name → module table, so
the LoRA can be saved, loaded, merged and removed, and its parameters grouped for the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from sdlora.network.lora import LoRAModule
from sdlora.network.naming import UNET_PREFIX, name_targets
from sdlora.network.targets import Target

TENSOR_SUFFIXES = ("lora_down.weight", "lora_up.weight", "alpha")


def _replace_child(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` where ``root.get_submodule(path)`` is (works for ModuleList items such as ``to_out.0``)."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)


@dataclass
class LoRANetwork:
    """kohya name → :class:`LoRAModule`, plus the roots they were injected into (to remove them again)."""

    modules: dict[str, LoRAModule] = field(default_factory=dict)
    _paths: dict[str, tuple[nn.Module, str]] = field(default_factory=dict, repr=False)

    def inject(
        self,
        root: nn.Module,
        targets: Iterable[Target],
        namer: Callable[[str], str],
        rank_alpha: Callable[[Target], tuple[int, float]],
    ) -> None:
        """Wrap every target of ``root`` (named by ``namer``) with a LoRA of the rank/alpha ``rank_alpha`` gives."""
        for name, target in name_targets(list(targets), namer).items():
            if name in self.modules:
                raise ValueError(f"duplicate LoRA module name {name}")
            rank, alpha = rank_alpha(target)
            module = LoRAModule(target.module, rank, alpha)
            _replace_child(root, target.path, module)
            self.modules[name] = module
            self._paths[name] = (root, target.path)

    def __len__(self) -> int:
        return len(self.modules)

    def names(self, prefix: str | None = None) -> list[str]:
        """Module names, optionally only those starting with ``prefix`` (e.g. ``lora_unet``, ``lora_te``)."""
        return [n for n in self.modules if prefix is None or n.startswith(prefix + "_")]

    def parameters(self, prefix: str | None = None) -> Iterator[nn.Parameter]:
        for name in self.names(prefix):
            yield from self.modules[name].lora_down.parameters()
            yield from self.modules[name].lora_up.parameters()

    def param_groups(self, default_lr: float, unet_lr: float | None, text_encoder_lr: float | None) -> list[dict]:
        """Optimizer groups ``textencoder`` and ``unet`` [kohya: text_encoder_lr, unet_lr].

        A group's lr is its own option or else ``default_lr`` (optimizer.lr); a group whose lr is 0 is dropped
        (current sd-scripts), so those LoRA modules stay at their initial values.
        """
        unet_names = set(self.names(UNET_PREFIX))
        sides = (
            ("textencoder", [n for n in self.modules if n not in unet_names], text_encoder_lr),
            ("unet", [n for n in self.modules if n in unet_names], unet_lr),
        )
        groups = []
        for group_name, names, lr in sides:
            lr = default_lr if lr is None else lr
            params = [p for n in names for p in (self.modules[n].lora_down.weight, self.modules[n].lora_up.weight)]
            if params and lr > 0:
                groups.append({"name": group_name, "params": params, "lr": lr})
        return groups

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

    def merge(self) -> None:
        """Fold every ΔW into its base weight (idempotent)."""
        for module in self.modules.values():
            module.merge()

    def remove(self) -> None:
        """Put the base layers back (unmerged weights stay as they are); the network is empty afterwards."""
        for name, module in self.modules.items():
            root, path = self._paths[name]
            _replace_child(root, path, module.base)
        self.modules.clear()
        self._paths.clear()
