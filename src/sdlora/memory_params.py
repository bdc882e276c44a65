"""The parameters a run trains, by network type, from the model's config alone (no torch): the LoRA term of the memory
estimate (:mod:`sdlora.memory`; docs/performance.md "Memory estimate").

- kohya's LoRA, LoCon and DyLoRA: rank · Σ(in + out) over kohya's targets (LoCon adds its convs at ``conv_rank``) —
  the sums of :mod:`sdlora.models.sizes`;
- ``network=full``: the whole weights of the targeted layers;
- LyCORIS LoCon and LoHa: their preset's layers (LoHa: two pairs a layer), for every preset but attn-only and ia3;
- the other LyCORIS types and presets, LoRA-FA and OFT: a LoRA of the same rank on kohya's targets, which
  :func:`counted_exactly` tells the estimate to note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdlora.models.sizes import ComponentSize, ModelSize

if TYPE_CHECKING:
    from sdlora.memory import RunShape

EXACT_NETWORKS = ("lora", "locon", "dylora", "full")  # the types whose trained parameters are counted exactly
# LyCORIS types counted from their preset's layers: parameters per layer, in LoRAs of the same rank
LYCORIS_PER_LAYER = {"lycoris_locon": 1, "loha": 2}
CONV_SUMS = ("resnet_conv", "top_conv")  # sized by network.conv_rank (LyCORIS: the rank when unset)


def preset_sums(preset: str) -> tuple[str, ...] | None:
    """The LoRA sums (:class:`sdlora.models.sizes.LoRASums`, and "text": the text encoders' attention and MLP) that make
    up the layers of a LyCORIS preset, read from its definition (:data:`sdlora.network.presets.PRESETS`); ``None``
    for the presets that pick parts of blocks the sums do not separate (attn-only, ia3). The top-level layers count
    for SD 1.x/2.x only: SDXL's are named so that no preset finds them."""
    from sdlora.config.schema import LycorisPreset
    from sdlora.network.presets import PRESETS, RESNET, TRANSFORMER

    spec = PRESETS[LycorisPreset(preset)]
    if "Attention" in spec.unet_containers or spec.leaf_endings:
        return None
    sums = ["attention"] if TRANSFORMER in spec.unet_containers else []
    if RESNET in spec.unet_containers:
        sums += ["resnet_linear", "resnet_conv"] if spec.enable_conv else ["resnet_linear"]
    if any(name.startswith("time_embedding.") for name in spec.unet_names):
        sums.append("top_linear")
    if spec.enable_conv and any(name.startswith("conv_") for name in spec.unet_names):
        sums.append("top_conv")
    return (*sums, "text") if spec.text_encoder == "all" else tuple(sums)


def lycoris_preset_counted(shape: RunShape) -> bool:
    return shape.network in LYCORIS_PER_LAYER and preset_sums(shape.preset) is not None


def counted_exactly(shape: RunShape) -> bool:
    """Whether :func:`trained_parameter_count` counts ``shape``'s network exactly (``full``: within 0.3 %)."""
    return shape.network in EXACT_NETWORKS or lycoris_preset_counted(shape)


def trained_parameter_count(size: ModelSize, shape: RunShape) -> int:
    """P, the trained parameters: rank · Σ(in + out) over the targets (LoCon adds its convs); ``network=full`` the
    whole weights — every U-Net parameter, which overcounts by the norms and the top-level layers the preset leaves
    out (SD1.5 0.02 %, SDXL 0.3 %; up to 3 % on the tiny test models) — and :func:`text_encoder_full_weights`."""
    if lycoris_preset_counted(shape):
        return LYCORIS_PER_LAYER[shape.network] * lycoris_preset_layers(size, shape)
    full = shape.network == "full"
    params = 0
    if shape.train_unet:
        lora = size.unet.lora
        params += size.unet.params if full else shape.rank * lora.attention
        if shape.network == "locon":
            params += shape.rank * lora.resnet_linear + shape.conv_rank * lora.resnet_conv
    if shape.train_text_encoder:
        params += sum(text_encoder_full_weights(te) if full else shape.rank * te.lora.attention
                      for te in size.text_encoders)  # fmt: skip
    return params


def lycoris_preset_layers(size: ModelSize, shape: RunShape) -> int:
    """Parameters of a rank-r LoRA on every layer ``shape.preset`` targets: Σ over its sums (:func:`preset_sums`)
    of rank · sum, the k×k convs at ``conv_rank`` (the rank when unset, LyCORIS's default); the U-Net's sums when
    ``train_unet``, the text encoders' when ``train_text_encoder``."""
    rank, conv_rank = shape.rank, shape.conv_rank or shape.rank
    sums = preset_sums(shape.preset) or ()
    if size.unet.extra.get("text_time_embedding"):
        sums = tuple(name for name in sums if not name.startswith("top_"))
    params = 0
    if shape.train_unet:
        lora = size.unet.lora
        unet_sums = [name for name in sums if name != "text"]
        params += sum((conv_rank if name in CONV_SUMS else rank) * getattr(lora, name) for name in unet_sums)
    if shape.train_text_encoder and "text" in sums:
        params += rank * sum(te.lora.attention for te in size.text_encoders)
    return params


def text_encoder_full_weights(te: ComponentSize) -> int:
    """Weights and biases of a CLIP text encoder's attention and MLP layers — what ``network=full`` trains in it:
    layers · (4·(D² + D) + 2·D·I + I + D) (q, k, v, out; fc1, fc2)."""
    d, layers, inner = te.extra["hidden_size"], te.extra["layers"], te.extra["intermediate_size"]
    return layers * (4 * (d * d + d) + 2 * d * inner + inner + d)
