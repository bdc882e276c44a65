"""The parameters a run trains, by network type, from the model's config alone (no torch): the LoRA term of the memory
estimate (:mod:`sdlora.memory`; docs/performance.md "Memory estimate").

- kohya's LoRA, LoCon and DyLoRA: rank · Σ(in + out) over kohya's targets (LoCon adds its convs at ``conv_rank``) —
  the sums of :mod:`sdlora.models.sizes`;
- ``network=full``: the whole weights of the targeted layers;
- LyCORIS LoCon and LoHa under the preset ``full``: the preset's layers (LoHa: two pairs a layer);
- the other LyCORIS types and presets, LoRA-FA and OFT: a LoRA of the same rank on kohya's targets, which
  :func:`counted_exactly` tells the estimate to note.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdlora.models.sizes import ComponentSize, ModelSize

if TYPE_CHECKING:
    from sdlora.memory import RunShape

EXACT_NETWORKS = ("lora", "locon", "dylora", "full")  # the types whose trained parameters are counted exactly
# LyCORIS types counted exactly under their default preset `full`: parameters per layer, in LoRAs of the same rank
LYCORIS_PER_LAYER = {"lycoris_locon": 1, "loha": 2}


def lycoris_full_preset(shape: RunShape) -> bool:
    return shape.network in LYCORIS_PER_LAYER and shape.preset == "full"


def counted_exactly(shape: RunShape) -> bool:
    """Whether :func:`trained_parameter_count` counts ``shape``'s network exactly (``full``: within 0.3 %)."""
    return shape.network in EXACT_NETWORKS or lycoris_full_preset(shape)


def trained_parameter_count(size: ModelSize, shape: RunShape) -> int:
    """P, the trained parameters: rank · Σ(in + out) over the targets (LoCon adds its convs); ``network=full`` the
    whole weights — every U-Net parameter, which overcounts by the norms and the top-level layers the preset leaves
    out (SD1.5 0.02 %, SDXL 0.3 %; up to 3 % on the tiny test models) — and :func:`text_encoder_full_weights`."""
    if lycoris_full_preset(shape):
        return LYCORIS_PER_LAYER[shape.network] * lycoris_full_preset_layers(size, shape)
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


def lycoris_full_preset_layers(size: ModelSize, shape: RunShape) -> int:
    """Parameters of a rank-r LoRA on every layer LyCORIS's preset ``full`` targets: LoCon's layers with
    ``conv_rank`` = rank when unset (LyCORIS's default), plus, for SD 1.x/2.x, ``conv_in``, ``conv_out`` and the time
    embedding (SDXL's are named so that the preset does not find them; docs/network-types.md §2)."""
    rank, conv_rank = shape.rank, shape.conv_rank or shape.rank
    params = 0
    if shape.train_unet:
        lora = size.unet.lora
        params += rank * (lora.attention + lora.resnet_linear) + conv_rank * lora.resnet_conv
        if not size.unet.extra.get("text_time_embedding"):
            params += rank * lora.top_linear + conv_rank * lora.top_conv
    if shape.train_text_encoder:
        params += rank * sum(te.lora.attention for te in size.text_encoders)
    return params


def text_encoder_full_weights(te: ComponentSize) -> int:
    """Weights and biases of a CLIP text encoder's attention and MLP layers — what ``network=full`` trains in it:
    layers · (4·(D² + D) + 2·D·I + I + D) (q, k, v, out; fc1, fc2)."""
    d, layers, inner = te.extra["hidden_size"], te.extra["layers"], te.extra["intermediate_size"]
    return layers * (4 * (d * d + d) + 2 * d * inner + inner + d)
