"""Which layers each network type targets: kohya's rules for its own types, LyCORIS's presets for the others.

kohya (``networks.lora``, ``networks.dylora``, ``networks.lora_fa``): every Linear/1×1 conv inside the U-Net's
``Transformer2DModel``\\ s and the text encoders' attention and MLP; with convs (LoCon, or ``conv_dim`` for DyLoRA and
LoRA-FA) also every Linear/conv of the resnets and samplers (docs/kohya.md §1.1).

LyCORIS (``lycoris.kohya``, ``preset=`` in its network_args; docs/network-types.md §2): a preset lists U-Net container
classes, U-Net layers by name, text-encoder containers, and whether k×k convs are trained. Inside a container every
Linear and Conv2d is a target (and with ``train_norm`` every GroupNorm/LayerNorm). The layers it names (``conv_in``,
``conv_out``, ``time_embedding.linear_1/2``) are matched on kohya's module paths: kohya's SDXL U-Net names them
``input_blocks.0.0``, ``out.2``, ``time_embed.0/2``, so under kohya LyCORIS targets them for SD1/2 only — as sdlora
does. The ``ia3`` preset names leaves (``to_k``, ``to_v``, ``ff.net.2``; ``k_proj``, ``v_proj``, ``mlp.fc2``) and trains
the feed-forward outputs on their input; sdlora matches those names as path endings (LyCORIS 1.x's reading; 4.x
matches them from the start of the path and so finds none in an SD model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sdlora.config.schema import LycorisPreset


class Candidate(Protocol):
    """What the rules below read of a layer: a built model's :class:`sdlora.network.targets.Target`, or a layer the
    memory estimate lists from a config (:class:`sdlora.models.sizes.Layer`) — no torch needed."""

    @property
    def path(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def container(self) -> str: ...


TRANSFORMER, RESNET, SAMPLERS = "Transformer2DModel", "ResnetBlock2D", frozenset({"Downsample2D", "Upsample2D"})
_ATTENTION = (".attn1.", ".attn2.")


@dataclass(frozen=True)
class Preset:
    """One LyCORIS preset, in terms of sdlora's targets."""

    unet_containers: frozenset[str]  # class names; "Attention" = the attn1/attn2 layers only
    unet_names: tuple[str, ...]  # top-level layers it names (SD1/2; convs among them only with enable_conv)
    text_encoder: str  # "all" (attention + MLP), "attn", "none"
    enable_conv: bool  # k×k convs get conv_rank (else they are left out)
    leaf_endings: tuple[str, ...] = ()  # only leaves whose path ends so (ia3)
    on_input_endings: tuple[str, ...] = ()  # these train_on_input (ia3)


_FULL_CONTAINERS = frozenset({TRANSFORMER, RESNET, *SAMPLERS})
_CONVS = ("conv_in", "conv_out")
_TIME = ("time_embedding.linear_1", "time_embedding.linear_2")
PRESETS: dict[LycorisPreset, Preset] = {
    LycorisPreset.full: Preset(_FULL_CONTAINERS, _CONVS + _TIME, "all", True),
    LycorisPreset.full_lin: Preset(frozenset({TRANSFORMER, RESNET}), _TIME, "all", False),
    LycorisPreset.attn_mlp: Preset(frozenset({TRANSFORMER}), (), "all", False),
    LycorisPreset.attn_only: Preset(frozenset({"Attention"}), (), "attn", False),
    LycorisPreset.unet_only: Preset(_FULL_CONTAINERS, _CONVS + _TIME, "none", True),
    LycorisPreset.unet_transformer_only: Preset(frozenset({TRANSFORMER}), (), "none", False),
    LycorisPreset.unet_convblock_only: Preset(frozenset({RESNET, *SAMPLERS}), _CONVS, "none", True),
    LycorisPreset.ia3: Preset(
        frozenset({TRANSFORMER}), (), "all", False,
        leaf_endings=(".to_k", ".to_v", ".ff.net.2", ".k_proj", ".v_proj", ".mlp.fc2"),
        on_input_endings=(".ff.net.2", ".mlp.fc2"),
    ),
}  # fmt: skip


def kohya_selects(target: Candidate, unet: bool, convs: bool) -> bool:
    """kohya's ``networks.*`` rule: transformer leaves (and with ``convs`` resnet/sampler leaves); never norms or the
    top-level layers. Text-encoder targets are all taken."""
    if target.kind == "norm":
        return False
    if not unet:
        return True
    return target.container == TRANSFORMER or (convs and target.container in (RESNET, *SAMPLERS))


def lycoris_selects(preset: Preset, target: Candidate, unet: bool, sgm_names: bool, train_norm: bool) -> bool:
    """LyCORIS's rule for ``preset`` (see the module docstring). ``sgm_names``: the U-Net is named as kohya's SDXL
    U-Net (its top-level layers are not found by name)."""
    if target.kind == "norm" and not train_norm:
        return False
    if target.kind == "conv" and not preset.enable_conv:
        return False
    if preset.leaf_endings and not target.path.endswith(preset.leaf_endings):
        return False
    if not unet:
        mode = preset.text_encoder
        return mode == "all" or (mode == "attn" and ".self_attn." in f".{target.path}")
    if target.container == "":
        return not sgm_names and target.path in preset.unet_names
    if "Attention" in preset.unet_containers:
        return target.container == TRANSFORMER and any(a in f".{target.path}" for a in _ATTENTION)
    return target.container in preset.unet_containers


def on_input(preset: Preset, target: Candidate) -> bool:
    """Whether ``preset`` trains iA3 on this layer's input (ia3: the feed-forward outputs)."""
    return bool(preset.on_input_endings) and target.path.endswith(preset.on_input_endings)
