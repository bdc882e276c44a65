"""Model families as the LoRA tools see them: the family adapters by preset name, the kohya LoRA targets of a model
(every module kohya could put a LoRA on, by kohya name, with its pipeline component), and which family a LoRA file
belongs to.

Target tables come from the family's shipped config built on the ``meta`` device (no weights, no memory), or from
loaded components (:mod:`sdlora.tools.checkpoint`). A LoRA file belongs to a family when every module name is one of
the family's targets and every tensor fits its layer (a 1×1 convolution and a Linear layer fit each other).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from sdlora.models.presets import FAMILY_CLASSES, KIND, MODEL_NAMES
from sdlora.network.naming import name_targets, text_encoder_namer
from sdlora.network.targets import Target, text_encoder_targets, unet_targets


def family(model: str, **kwargs: Any):
    """A family adapter (``sdlora.models.*``) for the preset ``model``; ``kwargs`` go to its constructor."""
    module, _, cls = FAMILY_CLASSES[model].rpartition(".")
    return getattr(importlib.import_module(module), cls)(**kwargs)


def component_name(index: int) -> str:
    """Pipeline component of the ``index``-th text encoder: ``text_encoder``, ``text_encoder_2``."""
    return "text_encoder" if index == 0 else f"text_encoder_{index + 1}"


@dataclass(frozen=True)
class NamedTarget:
    """A LoRA target and the pipeline component (``unet``, ``text_encoder``, ``text_encoder_2``) it sits in."""

    component: str
    target: Target

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.target.module.weight.shape)


def lora_targets(fam: Any, unet: nn.Module, text_encoders: Sequence[nn.Module], conv: bool = True):
    """kohya name → :class:`NamedTarget` for every module kohya could put a LoRA on (``conv``: also the resnets and
    samplers, the "LoCon" targets), text encoders first."""
    table: dict[str, NamedTarget] = {}
    for i, (prefix, encoder) in enumerate(zip(fam.te_prefixes, text_encoders, strict=True)):
        for name, target in name_targets(text_encoder_targets(encoder), text_encoder_namer(prefix)).items():
            table[name] = NamedTarget(component_name(i), target)
    for name, target in name_targets(unet_targets(unet, conv=conv), fam.unet_namer(unet)).items():
        table[name] = NamedTarget("unet", target)
    return table


def meta_components(model: str) -> tuple[nn.Module, list[nn.Module]]:
    """U-Net and text encoders of ``model``'s shipped config on the ``meta`` device (structure only)."""
    import torch
    import transformers
    from diffusers import UNet2DConditionModel

    from sdlora.models.configs import config_dir

    fam = family(model)
    folder = config_dir(fam.shipped_config)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        encoders = [
            getattr(transformers, cls)(transformers.CLIPTextConfig.from_pretrained(folder / sub))
            for cls, sub in zip(fam.text_encoder_classes, ("text_encoder", "text_encoder_2"), strict=False)
        ]
    return unet, encoders


@functools.cache
def shipped_targets(model: str) -> Mapping[str, NamedTarget]:
    """:func:`lora_targets` of ``model``'s shipped config (cached; built on the meta device)."""
    unet, encoders = meta_components(model)
    return lora_targets(family(model), unet, encoders)


def fits(down_shape: Sequence[int], up_shape: Sequence[int], weight_shape: Sequence[int]) -> bool:
    """Whether lora_down/lora_up of these shapes fit a layer weight [out, in, (kh, kw)] (1×1 conv ≡ Linear)."""

    def squeeze(shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(shape)
        return shape[:2] if len(shape) == 4 and shape[2:] == (1, 1) else shape

    down, up, weight = squeeze(down_shape), squeeze(up_shape), squeeze(weight_shape)
    return len(up) >= 2 and up[0] == weight[0] and down[1:] == weight[1:] and up[1] == down[0]


def candidates(names: Sequence[str], hint: str | None = None) -> list[str]:
    """Presets to try for a LoRA with these kohya names (SGM U-Net names or two text encoders → SDXL-shaped)."""
    sgm = any(
        n.startswith(("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks")) for n in names
    )
    xl = sgm or any(n.startswith(("lora_te1_", "lora_te2_")) for n in names)
    return hinted([m for m in MODEL_NAMES if (KIND[m] == "sdxl") == xl], hint)


def hinted(models: Sequence[str], hint: str | None) -> list[str]:
    """``models`` to try in order: ``hint`` (from a file's metadata) first, then the presets of its architecture — the
    metadata of a tiny model's LoRA names the real family, and a tiny SD 2.x-v LoRA also fits ``tiny``."""
    if hint not in KIND:
        return list(models)
    return sorted(models, key=lambda m: (m != hint, KIND[m] != KIND[hint]))


def identify(shapes: Mapping[str, tuple[Sequence[int], Sequence[int]]], hint: str | None = None) -> str | None:
    """The first preset whose targets hold every module of ``shapes`` (name → (down shape, up shape)) with tensors
    that fit; None if no family has them all."""
    for model in candidates(list(shapes), hint):
        table = shipped_targets(model)
        if all(n in table and fits(d, u, table[n].shape) for n, (d, u) in shapes.items()):
            return model
    return None


def model_from_metadata(metadata: Mapping[str, str]) -> str | None:
    """The preset a LoRA's metadata names (``ss_base_model_version`` or ``modelspec.architecture``), if any."""
    version = metadata.get("ss_base_model_version", "")
    arch = metadata.get("modelspec.architecture", "")
    if version.startswith("sdxl") or arch.startswith("stable-diffusion-xl"):
        return "sdxl"
    if version == "sd_v2_v" or arch.startswith("stable-diffusion-v2-768-v"):
        return "sd2_v"
    if version.startswith("sd_v2") or arch.startswith("stable-diffusion-v2"):
        return "sd2"
    if version.startswith("sd_v1") or arch.startswith("stable-diffusion-v1"):
        return "sd15"
    return None
