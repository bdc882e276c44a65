"""kohya key names for LoRA targets.

A kohya LoRA key is ``<prefix>_<module path with "." replaced by "_">`` (tensors ``<name>.lora_down.weight``,
``<name>.lora_up.weight``, ``<name>.alpha``). The module path is the one in *kohya's* model, which differs from ours:

- SD1/2: kohya's UNet reuses diffusers module names, so the name is the diffusers path (:func:`diffusers_unet_name`).
- SDXL: kohya's UNet uses Stability/LDM ("SGM") names (``input_blocks.4.1`` ...). :class:`SGMUNetNamer` maps a
  diffusers path to the SGM path; block numbers come from the UNet config, so any ``layers_per_block`` works.
- Text encoders: kohya's CLIP paths start with ``text_model.``; transformers >= 5.6 ``CLIPTextModel`` has no such prefix
  (``CLIPTextModelWithProjection`` still has it), so :func:`text_encoder_name` adds it when missing.

A namer is any ``Callable[[str], str]`` from module path to key name; :func:`name_targets` builds the name table.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch-free at run time: the memory estimate numbers blocks by these names
    from sdlora.network.targets import Target

#: Key suffixes of a kohya LoRA module's tensors: ``<name>.lora_down.weight``, ``<name>.lora_up.weight``,
#: ``<name>.alpha``.
LORA_DOWN = "lora_down.weight"
LORA_UP = "lora_up.weight"
ALPHA = "alpha"

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"  # SD1/2: the single text encoder
TE1_PREFIX = "lora_te1"  # SDXL: CLIP ViT-L (CLIPTextModel)
TE2_PREFIX = "lora_te2"  # SDXL: OpenCLIP bigG (CLIPTextModelWithProjection)

Namer = Callable[[str], str]

#: diffusers ResnetBlock2D children -> LDM ResBlock children.
RESNET_TO_SGM: dict[str, str] = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
#: Children of the other block kinds (``None``: names are the same in both models).
_CHILD_TO_SGM: dict[str, dict[str, str] | None] = {
    "resnets": RESNET_TO_SGM,
    "attentions": None,
    "downsamplers": {"conv": "op"},
    "upsamplers": {"conv": "conv"},
}
#: Modules outside the down/mid/up blocks (never LoRA targets in kohya, mapped for completeness).
TOP_LEVEL_TO_SGM: dict[str, str] = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _flat(prefix: str, path: str) -> str:
    return f"{prefix}_{path.replace('.', '_')}"


def diffusers_unet_name(path: str) -> str:
    """SD1/2 UNet key name: ``lora_unet_`` + the diffusers path with "." -> "_"."""
    return _flat(UNET_PREFIX, path)


def text_encoder_name(prefix: str, path: str) -> str:
    """Text-encoder key name; ``text_model.`` is inserted when the path lacks it (transformers >= 5.6 CLIPTextModel)."""
    if not path.startswith("text_model."):
        path = f"text_model.{path}"
    return _flat(prefix, path)


def text_encoder_namer(prefix: str) -> Namer:
    """A namer for one text encoder, e.g. ``text_encoder_namer(TE1_PREFIX)``."""
    return functools.partial(text_encoder_name, prefix)


class SGMUNetNamer:
    """Maps diffusers SDXL UNet paths to kohya's SGM names (``lora_unet_input_blocks_4_1_...``).

    Built from a ``UNet2DConditionModel`` or its config (``down_block_types``, ``up_block_types``,
    ``layers_per_block``). LDM numbering: ``input_blocks.0`` is conv_in; each down level has one input block per layer
    (resnet at ``.0``, attention at ``.1``) plus one for its downsampler (``.0.op``) unless it is the last level. Each
    up level has ``layers + 1`` output blocks; its upsampler sits in the last of them at ``.2`` when the level has
    attentions, else ``.1``. The middle block is resnet ``0``, attention ``1``, resnet ``2``.
    """

    def __init__(self, unet_or_config: Any) -> None:
        cfg: Mapping[str, Any] = getattr(unet_or_config, "config", unet_or_config)
        down_types: Sequence[str] = cfg["down_block_types"]
        up_types: Sequence[str] = cfg["up_block_types"]
        lpb = cfg["layers_per_block"]
        layers = [lpb] * len(down_types) if isinstance(lpb, int) else list(lpb)
        if len(layers) != len(down_types) or len(up_types) != len(down_types):
            raise ValueError("down_block_types, up_block_types and layers_per_block must have the same length")
        self.blocks: dict[str, str] = self._block_table(down_types, up_types, layers)

    @staticmethod
    def _block_table(down_types: Sequence[str], up_types: Sequence[str], layers: Sequence[int]) -> dict[str, str]:
        """diffusers block path (``down_blocks.1.attentions.0``) -> SGM block path (``input_blocks.4.1``)."""
        last = len(layers) - 1
        table: dict[str, str] = {}
        idx = 1
        for i, n in enumerate(layers):
            for j in range(n):
                table[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{idx}.0"
                if "Attn" in down_types[i]:
                    table[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{idx}.1"
                idx += 1
            if i < last:
                table[f"down_blocks.{i}.downsamplers.0"] = f"input_blocks.{idx}.0"
                idx += 1
        table |= {
            "mid_block.resnets.0": "middle_block.0",
            "mid_block.attentions.0": "middle_block.1",
            "mid_block.resnets.1": "middle_block.2",
        }
        idx = 0
        for i, n in enumerate(reversed(layers)):
            has_attn = "Attn" in up_types[i]
            for j in range(n + 1):
                table[f"up_blocks.{i}.resnets.{j}"] = f"output_blocks.{idx}.0"
                if has_attn:
                    table[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{idx}.1"
                idx += 1
            if i < last:
                table[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{idx - 1}.{2 if has_attn else 1}"
        return table

    def to_sgm(self, path: str) -> str:
        """The SGM (LDM) module path for a diffusers path, e.g. ``down_blocks.0.downsamplers.0.conv`` ->
        ``input_blocks.3.0.op``."""
        if path in TOP_LEVEL_TO_SGM:
            return TOP_LEVEL_TO_SGM[path]
        parts = path.split(".")
        n = 3 if parts[0] == "mid_block" else 4
        block, rest = ".".join(parts[:n]), parts[n:]
        if block not in self.blocks:
            raise ValueError(f"no SGM name for UNet module {path!r}")
        child_map = _CHILD_TO_SGM[parts[n - 2]]
        if rest and child_map is not None:
            if rest[0] not in child_map:
                raise ValueError(f"no SGM name for UNet module {path!r}")
            rest = [child_map[rest[0]], *rest[1:]]
        return ".".join([self.blocks[block], *rest])

    def __call__(self, path: str) -> str:
        return _flat(UNET_PREFIX, self.to_sgm(path))


def name_targets(targets: Iterable[Target], namer: Namer) -> dict[str, Target]:
    """kohya name -> target, in target order. Raises ValueError if two targets get the same name."""
    table: dict[str, Target] = {}
    for t in targets:
        name = namer(t.path)
        if name in table:
            raise ValueError(f"duplicate LoRA name {name!r} for {table[name].path!r} and {t.path!r}")
        table[name] = t
    return table
