"""Which modules of a UNet / CLIP text encoder get a LoRA (kohya sd-scripts ``networks/lora.py`` rules).

kohya walks ``named_modules()`` of each root model; every module whose *class name* is in a container list is searched
for descendants that are plain ``Linear`` / ``Conv2d`` layers, and each of those gets its own LoRA. We keep the
container lists as data and check the leaves by type. For the text encoder, kohya's class-name containers
(``CLIPAttention``, ``CLIPMLP``) are renamed across transformers versions, so we match the module *path* instead.

A :class:`Target` records the module path inside its root model (e.g. ``down_blocks.0.attentions.0.proj_in``); the kohya
key name is derived from that path in :mod:`sdlora.network.naming`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

TargetKind = Literal["linear", "conv1x1", "conv", "norm"]

#: Containers searched by default (attention-only LoRA).
UNET_CONTAINERS: tuple[str, ...] = ("Transformer2DModel",)
#: Extra containers searched with ``conv=True`` (kohya "LoCon": ``conv_dim`` set).
UNET_CONV_CONTAINERS: tuple[str, ...] = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
#: Leaf module types that get a LoRA (exact types: subclasses and already-wrapped layers are skipped).
LEAF_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
#: Norm layers inside the containers, targets only of LyCORIS's ``train_norm``.
NORM_TYPES: tuple[type[nn.Module], ...] = (nn.GroupNorm, nn.LayerNorm)
#: U-Net layers outside the blocks that LyCORIS's presets name (diffusers paths = kohya's SD1/2 names).
UNET_TOP_LEVEL: tuple[str, ...] = ("conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2")

#: Text-encoder leaves: attention projections and MLP of every encoder layer (6 per layer).
_TE_LEAF = re.compile(r"(?:^|\.)encoder\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|out_proj)|mlp\.fc[12])$")


@dataclass(frozen=True)
class Target:
    """A module that gets a LoRA: its path inside the root model, the module, its kind, and the class name of the
    container it was found in (``""`` for a layer named directly, such as ``conv_in``)."""

    path: str
    module: nn.Module
    kind: TargetKind
    container: str = ""


def module_kind(module: nn.Module) -> TargetKind:
    """``linear`` for Linear, ``conv1x1`` for a 1x1 Conv2d, ``conv`` for any other Conv2d (e.g. 3x3), ``norm`` for
    GroupNorm / LayerNorm."""
    if type(module) in NORM_TYPES:
        return "norm"
    if type(module) is nn.Linear:
        return "linear"
    if type(module) is nn.Conv2d:
        return "conv1x1" if tuple(module.kernel_size) == (1, 1) else "conv"
    raise TypeError(f"not a LoRA target type: {type(module).__name__}")


def _is_leaf(module: nn.Module) -> bool:
    return type(module) in LEAF_TYPES


def unet_targets(unet: nn.Module, conv: bool = False) -> list[Target]:
    """Every plain Linear/Conv2d inside a ``Transformer2DModel`` (plus resnets and samplers with ``conv=True``).

    Order is ``unet.named_modules()`` order; a leaf inside nested containers is listed once.
    """
    containers = UNET_CONTAINERS + (UNET_CONV_CONTAINERS if conv else ())
    prefixes = tuple(f"{name}." for name, m in unet.named_modules() if name and type(m).__name__ in containers)
    return [
        Target(path, m, module_kind(m)) for path, m in unet.named_modules() if _is_leaf(m) and path.startswith(prefixes)
    ]


def unet_candidates(unet: nn.Module) -> list[Target]:
    """Everything any network type may target in the U-Net: the Linear/Conv2d leaves and the norms inside the
    transformer, resnet and sampler containers (each with its container's class name), and the top-level layers
    LyCORIS's presets name (:data:`UNET_TOP_LEVEL`). ``named_modules()`` order; each layer once."""
    containers = UNET_CONTAINERS + UNET_CONV_CONTAINERS
    found: dict[str, Target] = {}
    owners = [(f"{name}.", type(m).__name__) for name, m in unet.named_modules() if type(m).__name__ in containers]
    for path, m in unet.named_modules():
        if type(m) not in LEAF_TYPES + NORM_TYPES:
            continue
        owner = next((cls for prefix, cls in owners if path.startswith(prefix)), None)
        if owner is not None:
            found[path] = Target(path, m, module_kind(m), owner)
        elif path in UNET_TOP_LEVEL and type(m) in LEAF_TYPES:
            found[path] = Target(path, m, module_kind(m))
    return list(found.values())


def text_encoder_targets(text_encoder: nn.Module) -> list[Target]:
    """q/k/v/out projections and fc1/fc2 of every CLIP encoder layer, matched by path (any transformers version)."""
    return [
        Target(path, m, module_kind(m))
        for path, m in text_encoder.named_modules()
        if type(m) is nn.Linear and _TE_LEAF.search(path)
    ]
