"""diffusers components ↔ *original-format* (CompVis / A1111 / SGM) single-file checkpoint keys.

The inverse of the converters in ``diffusers.loaders.single_file_utils`` (``convert_ldm_unet_checkpoint``,
``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``, ``convert_open_clip_checkpoint``). The tools use it to
write a merged checkpoint with its own keys (``sdlora-merge-lora``, ``sdlora-merge-lycoris``), to export the tiny
models as single files (``sdlora-export-model``), and the tests to write original-format checkpoints. Works for any
number of blocks and any (integer) ``layers_per_block`` L.

Every conversion is a table from a diffusers module path to an LDM module path; a state-dict key is renamed by its
longest dotted prefix found in the table (:func:`rename`). The tables:

UNet (prefix ``model.diffusion_model.``)
  - ``time_embedding.linear_1/2`` -> ``time_embed.0/2``; ``conv_in`` -> ``input_blocks.0.0``;
    ``conv_norm_out``/``conv_out`` -> ``out.0``/``out.2``; ``add_embedding``/``class_embedding.linear_1/2`` ->
    ``label_emb.0.0/0.2`` (SDXL ``text_time``).
  - ``down_blocks.i.resnets.j`` -> ``input_blocks.{(L+1)i+j+1}.0``, ``.attentions.j`` -> ``input_blocks.{..}.1``,
    ``down_blocks.i.downsamplers.0.conv`` -> ``input_blocks.{(L+1)(i+1)}.0.op``.
  - ``up_blocks.i.resnets.j`` -> ``output_blocks.{(L+1)i+j}.0``, ``.attentions.j`` -> ``output_blocks.{..}.1``,
    ``up_blocks.i.upsamplers.0`` -> ``output_blocks.{(L+1)i+L}.{2 if the block has attentions else 1}``.
  - ``mid_block.resnets.0`` / ``attentions.0`` / ``resnets.1`` -> ``middle_block.0`` / ``.1`` / ``.2``.
  - resnet internals: ``norm1 in_layers.0, conv1 in_layers.2, norm2 out_layers.0, conv2 out_layers.3,
    time_emb_proj emb_layers.1, conv_shortcut skip_connection``. Transformer internals (``proj_in``, ``norm``,
    ``transformer_blocks.k...``, ``proj_out``; linear or 1x1 conv) keep their names (SD2 files may hold 1x1-conv
    ``proj_in``/``proj_out`` where the diffusers model has Linear layers: same numbers, other shape).

VAE (prefix ``first_stage_model.``)
  - ``encoder.down_blocks.i.resnets.j`` -> ``encoder.down.i.block.j``, ``.downsamplers.0`` -> ``.downsample``;
    ``decoder.up_blocks.i`` -> ``decoder.up.{n-1-i}`` (LDM numbers up blocks from the lowest resolution), with
    ``resnets`` -> ``block`` and ``upsamplers.0`` -> ``upsample``; ``mid_block.resnets.0/1`` -> ``mid.block_1/2``;
    ``conv_norm_out`` -> ``norm_out``; resnet ``conv_shortcut`` -> ``nin_shortcut``.
  - ``mid_block.attentions.0.{group_norm,to_q,to_k,to_v,to_out.0}`` -> ``mid.attn_1.{norm,q,k,v,proj_out}``; the
    linear q/k/v/proj_out weights become 1x1 convs ``[o, i, 1, 1]`` as in the original AttnBlock.

HF CLIP (SD1 ``cond_stage_model.transformer.``, SDXL te1 ``conditioner.embedders.0.transformer.``)
  - HF keys unchanged, but always under ``text_model.`` (transformers >= 5.6 ``CLIPTextModel`` has no such prefix in
    its own state dict; diffusers' loader strips it again).

OpenCLIP (SD2 ``cond_stage_model.model.``, SDXL te2 ``conditioner.embedders.1.model.``)
  - ``embeddings.token_embedding`` -> ``token_embedding``; ``embeddings.position_embedding.weight`` ->
    ``positional_embedding``; ``final_layer_norm`` -> ``ln_final``; ``text_projection.weight`` -> ``text_projection``
    transposed to ``[width, proj_dim]`` (only when the model has one);
  - ``encoder.layers.n`` -> ``transformer.resblocks.n`` with ``layer_norm1/2`` -> ``ln_1/2``,
    ``mlp.fc1/fc2`` -> ``mlp.c_fc/c_proj``, ``self_attn.out_proj`` -> ``attn.out_proj`` and
    ``self_attn.{q,k,v}_proj`` concatenated (q, k, v order) into ``attn.in_proj_weight`` / ``attn.in_proj_bias``
    (a :class:`Slot` with the row range of each projection).
  - Real SD2 files hold all 24 OpenCLIP-H layers (diffusers ignores ``resblocks.23``); this exports the model's own N.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdlora.network.naming import RESNET_TO_SGM

__all__ = [
    "LAYOUTS",
    "Slot",
    "checkpoint_slots",
    "clip_to_ldm",
    "open_clip_to_ldm",
    "to_ldm_state_dict",
    "unet_to_ldm",
    "vae_to_ldm",
    "write_checkpoint",
]

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."

_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",
    "class_embedding.linear_2": "label_emb.0.2",
}
_UNET_RESNET = RESNET_TO_SGM  # the same children in both checkpoint layouts
_VAE_TOP = {
    "quant_conv": "quant_conv",
    "post_quant_conv": "post_quant_conv",
    **{
        f"{side}.{a}": f"{side}.{b}"
        for side in ("encoder", "decoder")
        for a, b in (("conv_in", "conv_in"), ("conv_out", "conv_out"), ("conv_norm_out", "norm_out"))
    },
}
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding": "token_embedding",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm": "ln_final",
    "text_projection.weight": "text_projection",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
    "self_attn.in_proj_weight": "attn.in_proj_weight",
    "self_attn.in_proj_bias": "attn.in_proj_bias",
}


@dataclass(frozen=True)
class Slot:
    """Where a diffusers parameter lives in an original-format checkpoint: the key, and for the fused OpenCLIP
    ``in_proj`` tensors the row range ``[start, stop)`` of its q, k or v part; ``transposed`` for OpenCLIP's
    ``text_projection`` ([width, proj_dim], the transpose of the Linear weight)."""

    key: str
    rows: tuple[int, int] | None = None
    transposed: bool = False


def _nest(src: str, dst: str, inner: dict[str, str]) -> dict[str, str]:
    """Table entries for a sub-module whose children are renamed by ``inner``."""
    return {f"{src}.{a}": f"{dst}.{b}" for a, b in inner.items()}


def rename(key: str, table: dict[str, str]) -> str:
    """``key`` renamed by its longest dotted prefix present in ``table``; KeyError when none is."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        head = ".".join(parts[:n])
        if head in table:
            return ".".join([table[head], *parts[n:]])
    raise KeyError(f"no LDM mapping for {key!r}")


def _remap(state_dict: dict[str, Tensor], table: dict[str, str], prefix: str) -> dict[str, Tensor]:
    """Rename every key by :func:`rename`; unmapped or colliding keys raise."""
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = prefix + rename(key, table)
        if new in out:
            raise KeyError(f"two keys map to {new!r}")
        out[new] = value.detach()
    return out


def unet_table(unet: torch.nn.Module) -> dict[str, str]:
    """diffusers module path -> LDM module path for a ``UNet2DConditionModel`` (SD1/SD2/SDXL layouts)."""
    lpb = unet.config.layers_per_block
    if not isinstance(lpb, int):
        raise ValueError(f"LDM layout needs one integer layers_per_block, got {lpb!r}")
    step = lpb + 1
    table = dict(_UNET_TOP)
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            table |= _nest(f"down_blocks.{i}.resnets.{j}", f"input_blocks.{step * i + j + 1}.0", _UNET_RESNET)
            table[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{step * i + j + 1}.1"
        table[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{step * (i + 1)}.0.op"
    for i, block in enumerate(unet.up_blocks):
        for j in range(len(block.resnets)):
            table |= _nest(f"up_blocks.{i}.resnets.{j}", f"output_blocks.{step * i + j}.0", _UNET_RESNET)
            table[f"up_blocks.{i}.attentions.{j}"] = f"output_blocks.{step * i + j}.1"
        has_attn = len(getattr(block, "attentions", None) or ()) > 0
        table[f"up_blocks.{i}.upsamplers.0"] = f"output_blocks.{step * i + lpb}.{2 if has_attn else 1}"
    for j, dst in enumerate(("middle_block.0", "middle_block.2")):
        table |= _nest(f"mid_block.resnets.{j}", dst, _UNET_RESNET)
    table["mid_block.attentions.0"] = "middle_block.1"
    return table


def unet_to_ldm(unet: torch.nn.Module) -> dict[str, Tensor]:
    """``UNet2DConditionModel`` (SD1/SD2/SDXL layouts) -> ``model.diffusion_model.*`` state dict."""
    return _remap(unet.state_dict(), unet_table(unet), UNET_PREFIX)


def vae_to_ldm(vae: torch.nn.Module) -> dict[str, Tensor]:
    """``AutoencoderKL`` -> ``first_stage_model.*`` state dict (mid attention as 1x1 convs)."""
    table = dict(_VAE_TOP)
    n_up = len(vae.decoder.up_blocks)
    sides = (
        ("encoder", "down", vae.encoder.down_blocks, "downsample", lambda i: i),
        ("decoder", "up", vae.decoder.up_blocks, "upsample", lambda i: n_up - 1 - i),
    )
    for side, ldm_name, blocks, sampler, order in sides:
        for i, block in enumerate(blocks):
            src, dst = f"{side}.{ldm_name}_blocks.{i}", f"{side}.{ldm_name}.{order(i)}"
            for j in range(len(block.resnets)):
                table |= _nest(f"{src}.resnets.{j}", f"{dst}.block.{j}", _VAE_RESNET)
            table[f"{src}.{ldm_name}samplers.0"] = f"{dst}.{sampler}"
        for j in range(2):
            table |= _nest(f"{side}.mid_block.resnets.{j}", f"{side}.mid.block_{j + 1}", _VAE_RESNET)
        table |= _nest(f"{side}.mid_block.attentions.0", f"{side}.mid.attn_1", _VAE_ATTN)
    out = _remap(vae.state_dict(), table, VAE_PREFIX)
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(("q.weight", "k.weight", "v.weight", "proj_out.weight")):
            out[key] = value.reshape(*value.shape, 1, 1)
    return out


def _clip_key(key: str) -> str:
    return key if key.startswith(("text_model.", "text_projection.")) else f"text_model.{key}"


def clip_to_ldm(text_encoder: torch.nn.Module, prefix: str = "cond_stage_model.transformer.") -> dict[str, Tensor]:
    """HF CLIP text model -> ``{prefix}text_model.*`` (plus ``text_projection.weight`` if the model has one)."""
    return {prefix + _clip_key(k): v.detach() for k, v in text_encoder.state_dict().items()}


def _open_clip_table(num_layers: int) -> dict[str, str]:
    table = dict(_OPEN_CLIP_TOP)
    for n in range(num_layers):
        table |= _nest(f"encoder.layers.{n}", f"transformer.resblocks.{n}", _OPEN_CLIP_LAYER)
    return table


def open_clip_to_ldm(text_encoder: torch.nn.Module, prefix: str = "cond_stage_model.model.") -> dict[str, Tensor]:
    """HF CLIP text model (with or without projection) -> OpenCLIP ``{prefix}transformer.resblocks.*`` layout."""
    sd = {k.removeprefix("text_model."): v.detach() for k, v in text_encoder.state_dict().items()}
    for n in range(text_encoder.config.num_hidden_layers):
        layer = f"encoder.layers.{n}"
        for kind in ("weight", "bias"):
            sd[f"{layer}.self_attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(f"{layer}.self_attn.{x}_proj.{kind}") for x in "qkv"]
            )
    out = _remap(sd, _open_clip_table(text_encoder.config.num_hidden_layers), prefix)
    if prefix + "text_projection" in out:
        out[prefix + "text_projection"] = out[prefix + "text_projection"].T.contiguous()
    return out


# --------------------------------------------------------------------------- where each diffusers tensor is stored
def unet_slots(unet: torch.nn.Module, prefix: str = UNET_PREFIX) -> dict[str, Slot]:
    """U-Net state-dict key -> its :class:`Slot` in the checkpoint."""
    table = unet_table(unet)
    return {key: Slot(prefix + rename(key, table)) for key in unet.state_dict()}


def clip_slots(text_encoder: torch.nn.Module, prefix: str) -> dict[str, Slot]:
    """HF CLIP state-dict key -> its :class:`Slot` (the same names under ``{prefix}text_model.``)."""
    return {key: Slot(prefix + _clip_key(key)) for key in text_encoder.state_dict()}


def open_clip_slots(text_encoder: torch.nn.Module, prefix: str) -> dict[str, Slot]:
    """HF CLIP state-dict key -> its :class:`Slot` in the OpenCLIP layout (q/k/v as row ranges of ``in_proj``)."""
    width = text_encoder.config.hidden_size
    table = _open_clip_table(text_encoder.config.num_hidden_layers)
    slots: dict[str, Slot] = {}
    for key in text_encoder.state_dict():
        short = key.removeprefix("text_model.")
        parts = short.split(".")
        if len(parts) == 6 and parts[4] in ("q_proj", "k_proj", "v_proj"):  # encoder.layers.n.self_attn.q_proj.weight
            i = "qkv".index(parts[4][0])
            fused = f"{prefix}transformer.resblocks.{parts[2]}.attn.in_proj_{parts[5]}"
            slots[key] = Slot(fused, (i * width, (i + 1) * width))
        elif short == "text_projection.weight":
            slots[key] = Slot(prefix + "text_projection", transposed=True)
        else:
            slots[key] = Slot(prefix + rename(short, table))
    return slots


_Exporter = Callable[[torch.nn.Module, str], dict[str, Tensor]]
LAYOUTS: dict[str, tuple[tuple[_Exporter, str], ...]] = {
    "sd1": ((clip_to_ldm, "cond_stage_model.transformer."),),
    "sd2": ((open_clip_to_ldm, "cond_stage_model.model."),),
    "sdxl": (
        (clip_to_ldm, "conditioner.embedders.0.transformer."),
        (open_clip_to_ldm, "conditioner.embedders.1.model."),
    ),
}
_SLOTS = {clip_to_ldm: clip_slots, open_clip_to_ldm: open_clip_slots}


def _check_layout(layout: str, text_encoders: Sequence[torch.nn.Module]) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if len(text_encoders) != len(LAYOUTS[layout]):
        raise ValueError(f"layout {layout!r} needs {len(LAYOUTS[layout])} text encoder(s), got {len(text_encoders)}")


def checkpoint_slots(
    *, unet: torch.nn.Module, text_encoders: Sequence[torch.nn.Module], layout: str
) -> dict[str, dict[str, Slot]]:
    """Per pipeline component (``unet``, ``text_encoder``, ``text_encoder_2``): state-dict key -> :class:`Slot`."""
    _check_layout(layout, text_encoders)
    slots = {"unet": unet_slots(unet)}
    for i, (te, (export, prefix)) in enumerate(zip(text_encoders, LAYOUTS[layout], strict=True)):
        slots["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = _SLOTS[export](te, prefix)
    return slots


def to_ldm_state_dict(
    *, unet: torch.nn.Module, vae: torch.nn.Module, text_encoders: Sequence[torch.nn.Module], layout: str
) -> dict[str, Tensor]:
    """Whole-pipeline LDM state dict; ``text_encoders`` in pipeline order (SDXL: ``[te1, te2]``)."""
    _check_layout(layout, text_encoders)
    sd = unet_to_ldm(unet) | vae_to_ldm(vae)
    for te, (export, prefix) in zip(text_encoders, LAYOUTS[layout], strict=True):
        sd |= export(te, prefix)
    return sd


def write_checkpoint(
    path: str | Path,
    *,
    unet: torch.nn.Module,
    vae: torch.nn.Module,
    text_encoders: Sequence[torch.nn.Module],
    layout: str,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write an original-format checkpoint: ``.safetensors``, or ``.ckpt``/``.pt``/``.pth`` as
    ``torch.save({"state_dict": ...})``. ``dtype`` optionally casts floating tensors (e.g. fp16 like most releases).
    The file is written under a temporary name and renamed into place."""
    from sdlora.utils.atomic import atomic_write

    path = Path(path)
    sd = to_ldm_state_dict(unet=unet, vae=vae, text_encoders=text_encoders, layout=layout)
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        return atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata={"format": "pt"}))
    if path.suffix in {".ckpt", ".pt", ".pth"}:
        return atomic_write(path, lambda tmp: torch.save({"state_dict": sd}, tmp))
    raise ValueError(f"unsupported checkpoint suffix {path.suffix!r} (use .safetensors or .ckpt)")
