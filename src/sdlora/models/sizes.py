"""Parameter counts and block layout of the diffusers U-Net, VAE and CLIP text encoders, from their ``config.json``
alone — no torch, no weights — for the memory estimate before launch (:mod:`sdlora.memory`).

The layout follows diffusers' constructors (``UNet2DConditionModel``, ``AutoencoderKL``; transformers'
``CLIPTextModel[WithProjection]``) for the block types SD 1.x, 2.x and SDXL use; any other block type raises
:class:`UnknownLayout`. Layers (weights + biases):

- Linear(i → o): i·o + o (q/k/v of attention have no bias); Conv(i → o, k×k): i·o·k² + o; GroupNorm / LayerNorm(c): 2c.
- ResnetBlock2D(i → o): GN(i), Conv(i → o, 3), Linear(temb → o) (U-Net only), GN(o), Conv(o → o, 3), and a 1×1
  Conv(i → o) shortcut when i ≠ o.
- Transformer2DModel(C, depth d, inner D = heads·⌊C/heads⌋, cross X): GN(C), proj_in / proj_out (Linear or 1×1 Conv),
  and d blocks of LN, self-attention (q, k, v: D → D; out: D → D), LN, cross-attention (q: D → D; k, v: X → D; out),
  LN, GEGLU feed-forward (D → 8D, 4D → D).
- U-Net: conv_in, time embedding (c₀ → 4c₀ → 4c₀), SDXL's addition embedding (text_time), down blocks (layers_per_block
  resnets, attentions, a stride-2 conv), the mid block (resnet, attention, resnet), up blocks (layers_per_block + 1
  resnets over the concatenated skip, attentions, an upsampling conv), GN, conv_out.

LoRA targets (:mod:`sdlora.network.targets`) are summed as Σ(in + out) over the Linear / 1×1-conv leaves of the
attention blocks (``network.rank`` each) and, for LoCon, Σ(in·k² + out) over the resnets' and samplers' 3×3 convs
(``network.conv_rank``) plus Σ(in + out) over their Linear / 1×1 leaves (``network.rank``). A LoRA module of rank r
then has r · (in·k² + out) parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class UnknownLayout(ValueError):
    """A config with a block type (or option) this module does not lay out."""


@dataclass
class LoRASums:
    """Σ(in·k² + out) over LoRA targets, by the rank option that sizes them."""

    attention: int = 0  # Linear / 1×1 leaves inside Transformer2DModel blocks (network.rank)
    resnet_linear: int = 0  # LoCon: time_emb_proj, conv_shortcut (network.rank)
    resnet_conv: int = 0  # LoCon: 3×3 convs of resnets, down- and upsamplers (network.conv_rank)
    modules: int = 0  # number of attention targets
    conv_modules: int = 0  # number of LoCon targets (resnet_linear + resnet_conv)
    top_linear: int = 0  # the time embedding's two Linear layers (LyCORIS preset full, SD 1.x/2.x: network.rank)
    top_conv: int = 0  # conv_in and conv_out (LyCORIS preset full, SD 1.x/2.x: network.conv_rank)


@dataclass
class Stage:
    """Blocks at one resolution (1/``scale`` of the latent side): what the activation estimate needs."""

    scale: int  # the latent side divided by this
    resnets: list[tuple[int, int]] = field(default_factory=list)  # (in channels, out channels)
    transformers: list[tuple[int, int, int]] = field(default_factory=list)  # (channels, inner dim, depth)
    samplers: list[int] = field(default_factory=list)  # channels of a stride-2 / upsampling conv


@dataclass
class ComponentSize:
    """Parameters of one model component, its LoRA target sums and (U-Net, VAE) its stages."""

    params: int
    lora: LoRASums = field(default_factory=LoRASums)
    stages: list[Stage] = field(default_factory=list)
    extra: dict[str, int] = field(default_factory=dict)  # e.g. hidden size, layers, cross-attention width


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def conv(i: int, o: int, k: int = 3) -> int:
    return i * o * k * k + o


def norm(c: int) -> int:
    return 2 * c


class _Counter:
    def __init__(self) -> None:
        self.params = 0
        self.lora = LoRASums()

    def resnet(self, i: int, o: int, temb: int | None) -> None:
        self.params += norm(i) + conv(i, o) + norm(o) + conv(o, o)
        self.lora.resnet_conv += (i * 9 + o) + (o * 9 + o)
        self.lora.conv_modules += 2
        if temb is not None:
            self.params += linear(temb, o)
            self.lora.resnet_linear += temb + o
            self.lora.conv_modules += 1
        if i != o:
            self.params += conv(i, o, 1)
            self.lora.resnet_linear += i + o
            self.lora.conv_modules += 1

    def sampler(self, c: int) -> None:
        self.params += conv(c, c)
        self.lora.resnet_conv += c * 9 + c
        self.lora.conv_modules += 1

    def transformer(self, c: int, heads: int, depth: int, cross: int, linear_projection: bool) -> int:
        inner = heads * (c // heads)
        self.params += norm(c) + (linear(c, inner) + linear(inner, c) if linear_projection else conv(c, inner, 1)
                                  + conv(inner, c, 1))  # fmt: skip
        self.lora.attention += (c + inner) * 2
        self.lora.modules += 2
        for _ in range(depth):
            attn1 = 3 * linear(inner, inner, bias=False) + linear(inner, inner)
            attn2 = linear(inner, inner, bias=False) + 2 * linear(cross, inner, bias=False) + linear(inner, inner)
            ff = linear(inner, 8 * inner) + linear(4 * inner, inner)
            self.params += 3 * norm(inner) + attn1 + attn2 + ff
            lora_attn1 = 4 * (inner + inner)  # to_q, to_k, to_v, to_out.0
            lora_attn2 = 2 * (inner + inner) + 2 * (cross + inner)  # to_q, to_out.0; to_k, to_v from the text
            lora_ff = (inner + 8 * inner) + (4 * inner + inner)  # ff.net.0.proj, ff.net.2
            self.lora.attention += lora_attn1 + lora_attn2 + lora_ff
            self.lora.modules += 10
        return inner


def _per_block(value: Any, n: int) -> list[int]:
    return list(value) if isinstance(value, list | tuple) else [value] * n


def _check_unet_layout(config: dict[str, Any]) -> None:
    """Raise :class:`UnknownLayout` for a U-Net config whose blocks or options the counts below do not cover."""
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") != "UNetMidBlock2DCrossAttn":
        raise UnknownLayout(f"mid block {config.get('mid_block_type')}")
    for option in ("class_embed_type", "encoder_hid_dim_type", "time_cond_proj_dim", "num_class_embeds"):
        if config.get(option) is not None:
            raise UnknownLayout(f"{option}={config[option]!r}")
    if isinstance(config["cross_attention_dim"], list | tuple):
        raise UnknownLayout("per-block cross_attention_dim")
    if config.get("addition_embed_type") not in (None, "text_time"):
        raise UnknownLayout(f"addition_embed_type={config['addition_embed_type']!r}")
    for kinds, known in ((config["down_block_types"], ("CrossAttnDownBlock2D", "DownBlock2D")),
                         (config["up_block_types"], ("CrossAttnUpBlock2D", "UpBlock2D"))):  # fmt: skip
        for kind in kinds:
            if kind not in known:
                raise UnknownLayout(kind)


def unet_size(config: dict[str, Any]) -> ComponentSize:
    """Parameters, LoRA sums and stages of a ``UNet2DConditionModel`` config."""
    _check_unet_layout(config)
    down, up = config["down_block_types"], config["up_block_types"]
    channels = list(config["block_out_channels"])
    n = len(channels)
    heads = _per_block(config.get("num_attention_heads") or config.get("attention_head_dim", 8), n)
    depths = _per_block(config.get("transformer_layers_per_block", 1), n)
    reverse_depths = config.get("reverse_transformer_layers_per_block") or list(reversed(depths))
    cross = config["cross_attention_dim"]
    linear_projection = bool(config.get("use_linear_projection", False))
    layers = config.get("layers_per_block", 2)
    count = _Counter()
    c0, temb = channels[0], channels[0] * 4
    text_time = _top_level(config, count, c0, temb)
    stages = [Stage(2**i) for i in range(n)]
    out = c0
    for i, kind in enumerate(down):
        cin, out = out, channels[i]
        for j in range(layers):
            count.resnet(cin if j == 0 else out, out, temb)
            stages[i].resnets.append((cin if j == 0 else out, out))
            if kind == "CrossAttnDownBlock2D":
                inner = count.transformer(out, heads[i], depths[i], cross, linear_projection)
                stages[i].transformers.append((out, inner, depths[i]))
        if i < n - 1:
            count.sampler(out)
            stages[i].samplers.append(out)
    mid = channels[-1]
    count.resnet(mid, mid, temb)
    inner = count.transformer(mid, heads[-1], depths[-1], cross, linear_projection)
    count.resnet(mid, mid, temb)
    stages[-1].resnets += [(mid, mid), (mid, mid)]
    stages[-1].transformers.append((mid, inner, depths[-1]))
    reversed_channels, reversed_heads = list(reversed(channels)), list(reversed(heads))
    previous = reversed_channels[0]
    for i, kind in enumerate(up):
        out, skip_in = reversed_channels[i], reversed_channels[min(i + 1, n - 1)]
        stage = stages[n - 1 - i]
        for j in range(layers + 1):
            skip = skip_in if j == layers else out
            cin = (previous if j == 0 else out) + skip
            count.resnet(cin, out, temb)
            stage.resnets.append((cin, out))
            if kind == "CrossAttnUpBlock2D":
                inner = count.transformer(out, reversed_heads[i], reverse_depths[i], cross, linear_projection)
                stage.transformers.append((out, inner, reverse_depths[i]))
        if i < n - 1:
            count.sampler(out)
            stage.samplers.append(out)
        previous = out
    extra = {"cross_attention_dim": cross, "time_embed_dim": temb, "text_time_embedding": int(text_time)}
    return ComponentSize(count.params, count.lora, stages, extra)


def _top_level(config: dict[str, Any], count: _Counter, c0: int, temb: int) -> bool:
    """Count the U-Net's layers outside its blocks — conv_in, the time embedding (c₀ → 4c₀ → 4c₀), SDXL's addition
    embedding, the output norm and conv_out — and their LoRA sums; whether it has SDXL's addition embedding."""
    in_channels, out_channels = config.get("in_channels", 4), config.get("out_channels", 4)
    k_in, k_out = config.get("conv_in_kernel", 3), config.get("conv_out_kernel", 3)
    count.params += conv(in_channels, c0, k_in) + linear(c0, temb) + linear(temb, temb)
    count.params += norm(c0) + conv(c0, out_channels, k_out)
    count.lora.top_linear = (c0 + temb) + (temb + temb)
    count.lora.top_conv = (in_channels * k_in**2 + c0) + (c0 * k_out**2 + out_channels)
    text_time = config.get("addition_embed_type") == "text_time"
    if text_time:
        count.params += linear(config["projection_class_embeddings_input_dim"], temb) + linear(temb, temb)
    return text_time


def _vae_attention(c: int) -> int:
    return norm(c) + 4 * linear(c, c)


def vae_size(config: dict[str, Any]) -> ComponentSize:
    """Parameters and encoder/decoder stages of an ``AutoencoderKL`` config (stage scale: 1 = the image side)."""
    channels = list(config["block_out_channels"])
    n, layers, latent = len(channels), config.get("layers_per_block", 1), config.get("latent_channels", 4)
    for kind in (*config.get("down_block_types", []), *config.get("up_block_types", [])):
        if kind not in ("DownEncoderBlock2D", "UpDecoderBlock2D"):
            raise UnknownLayout(kind)
    count = _Counter()
    stages = [Stage(2**i) for i in range(n)]
    count.params += conv(config.get("in_channels", 3), channels[0])
    out = channels[0]
    for i, c in enumerate(channels):  # encoder
        for j in range(layers):
            count.resnet(out if j == 0 else c, c, None)
            stages[i].resnets.append((out if j == 0 else c, c))
        out = c
        if i < n - 1:
            count.sampler(c)
    mid = channels[-1]
    for _ in range(4):  # two resnets in the encoder's and in the decoder's mid block
        count.resnet(mid, mid, None)
    count.params += 2 * _vae_attention(mid)
    count.params += norm(mid) + conv(mid, 2 * latent) + conv(2 * latent, 2 * latent, 1)  # encoder out, quant_conv
    count.params += conv(latent, latent, 1) + conv(latent, mid)  # post_quant_conv, decoder conv_in
    reversed_channels, previous = list(reversed(channels)), mid
    for i, c in enumerate(reversed_channels):  # decoder
        for j in range(layers + 1):
            count.resnet(previous if j == 0 else c, c, None)
        previous = c
        if i < n - 1:
            count.sampler(c)
    count.params += norm(channels[0]) + conv(channels[0], config.get("out_channels", 3))
    return ComponentSize(count.params, LoRASums(), stages, {"latent_channels": latent})


def text_encoder_size(config: dict[str, Any]) -> ComponentSize:
    """Parameters and LoRA sums of a ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` config."""
    d, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    params = config["vocab_size"] * d + config.get("max_position_embeddings", 77) * d + norm(d)
    params += layers * (2 * norm(d) + 4 * linear(d, d) + linear(d, inner) + linear(inner, d))
    if "CLIPTextModelWithProjection" in config.get("architectures", []):
        params += linear(d, config.get("projection_dim", d), bias=False)
    lora = LoRASums(attention=layers * (4 * 2 * d + (d + inner) * 2), modules=layers * 6)
    extra = {"hidden_size": d, "layers": layers, "positions": config.get("max_position_embeddings", 77),
             "intermediate_size": inner}  # fmt: skip
    return ComponentSize(params, lora, [], extra)


@dataclass
class ModelSize:
    """The sizes of a model's components, read from a diffusers config folder."""

    unet: ComponentSize
    vae: ComponentSize
    text_encoders: list[ComponentSize]
    source: str

    @property
    def text_encoder_params(self) -> int:
        return sum(te.params for te in self.text_encoders)


def model_size(folder: str | Path) -> ModelSize:
    """The sizes of the diffusers config folder ``folder`` (``unet/``, ``vae/``, ``text_encoder[_2]/config.json``)."""
    folder = Path(folder)

    def read(sub: str) -> dict[str, Any]:
        return json.loads((folder / sub / "config.json").read_text())

    encoders = [text_encoder_size(read(sub)) for sub in ("text_encoder", "text_encoder_2") if (folder / sub).is_dir()]
    return ModelSize(unet_size(read("unet")), vae_size(read("vae")), encoders, str(folder))
