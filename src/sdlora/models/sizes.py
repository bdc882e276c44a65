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

Every layer a network type may target is listed as a :class:`Layer` — its diffusers path, the class of the block it
sits in, its kind and shape — exactly as :func:`sdlora.network.targets.unet_candidates` and
:func:`~sdlora.network.targets.text_encoder_targets` find it in the built model (a test compares the two), so the
targets of any type can be chosen by the same rules the network builder uses (:mod:`sdlora.network.presets`). The
LoRA sums (:class:`LoRASums`) are read from those layers: Σ(in·k² + out) over kohya's targets, by the rank option
that sizes them; a LoRA module of rank r has r · (in·k² + out) parameters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlora.network.presets import RESNET, SAMPLERS, TRANSFORMER


class UnknownLayout(ValueError):
    """A config with a block type (or option) this module does not lay out."""


@dataclass(frozen=True)
class Layer:
    """A layer some network type may target: its path in the component (diffusers / transformers names), the class
    name of the block it is in (``""`` for a top-level layer or a text-encoder layer), its kind (``linear``,
    ``conv1x1``, ``conv`` for k×k, ``norm``) and shape. Norms have ``in_features == out_features``."""

    path: str
    container: str
    kind: str
    in_features: int
    out_features: int
    kernel: int = 1
    bias: bool = True

    @property
    def lora_sum(self) -> int:
        """in·k² + out: a rank-r LoRA on this layer has r times this many parameters."""
        return self.in_features * self.kernel**2 + self.out_features

    @property
    def weights(self) -> int:
        """Elements of the weight: in·out·k² (a norm's: its channels)."""
        return self.out_features if self.kind == "norm" else self.in_features * self.out_features * self.kernel**2

    @property
    def params(self) -> int:
        """The layer's own parameters: weight and bias (norms have both)."""
        return self.weights + (self.out_features if self.bias else 0)


@dataclass
class LoRASums:
    """Σ(in·k² + out) over LoRA targets, by the rank option that sizes them."""

    attention: int = 0  # Linear / 1×1 leaves inside Transformer2DModel blocks (network.rank)
    resnet_linear: int = 0  # LoCon: time_emb_proj, conv_shortcut (network.rank)
    resnet_conv: int = 0  # LoCon: 3×3 convs of resnets, down- and upsamplers (network.conv_rank)
    modules: int = 0  # number of attention targets
    conv_modules: int = 0  # number of LoCon targets (resnet_linear + resnet_conv)


def lora_sums(layers: list[Layer]) -> LoRASums:
    """The sums of a U-Net's :class:`Layer` list over kohya's targets (no norms, no top-level layers): transformer
    leaves → ``attention``, resnet and sampler leaves → ``resnet_conv`` (k×k) or ``resnet_linear``."""
    sums = LoRASums()
    for layer in layers:
        if layer.kind == "norm":
            continue
        if layer.container == TRANSFORMER:
            sums.attention += layer.lora_sum
            sums.modules += 1
        elif layer.container == RESNET or layer.container in SAMPLERS:
            if layer.kind == "conv":
                sums.resnet_conv += layer.lora_sum
            else:
                sums.resnet_linear += layer.lora_sum
            sums.conv_modules += 1
    return sums


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
    layers: list[Layer] = field(default_factory=list)  # the layers network types may target (U-Net, text encoders)
    config: dict[str, Any] = field(default_factory=dict)  # the diffusers config it was read from (U-Net)


def linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def conv(i: int, o: int, k: int = 3) -> int:
    return i * o * k * k + o


def norm(c: int) -> int:
    return 2 * c


class _Counter:
    """Adds up a component's parameters; the layers a network may target are also listed (:class:`Layer`)."""

    def __init__(self) -> None:
        self.params = 0
        self.layers: list[Layer] = []

    def layer(self, path: str, container: str, kind: str, i: int, o: int, k: int = 1, bias: bool = True) -> None:
        self.layers.append(Layer(path, container, kind, i, o, k, bias))
        self.params += self.layers[-1].params

    def resnet(self, path: str, i: int, o: int, temb: int | None) -> None:
        """ResnetBlock2D: norm1, conv1, time_emb_proj (U-Net only), norm2, conv2, a 1×1 conv_shortcut when i ≠ o."""
        self.layer(f"{path}.norm1", RESNET, "norm", i, i)
        self.layer(f"{path}.conv1", RESNET, "conv", i, o, 3)
        if temb is not None:
            self.layer(f"{path}.time_emb_proj", RESNET, "linear", temb, o)
        self.layer(f"{path}.norm2", RESNET, "norm", o, o)
        self.layer(f"{path}.conv2", RESNET, "conv", o, o, 3)
        if i != o:
            self.layer(f"{path}.conv_shortcut", RESNET, "conv1x1", i, o)

    def sampler(self, path: str, container: str, c: int) -> None:
        self.layer(f"{path}.conv", container, "conv", c, c, 3)

    def transformer(self, path: str, c: int, heads: int, depth: int, cross: int, linear_projection: bool) -> int:
        """Transformer2DModel: norm, proj_in, ``depth`` BasicTransformerBlocks, proj_out; returns the inner width."""
        inner, t = heads * (c // heads), TRANSFORMER
        projection = "linear" if linear_projection else "conv1x1"
        self.layer(f"{path}.norm", t, "norm", c, c)
        self.layer(f"{path}.proj_in", t, projection, c, inner)
        for d in range(depth):
            block = f"{path}.transformer_blocks.{d}"
            for n, (attn, source) in enumerate((("attn1", inner), ("attn2", cross)), start=1):
                self.layer(f"{block}.norm{n}", t, "norm", inner, inner)
                self.layer(f"{block}.{attn}.to_q", t, "linear", inner, inner, bias=False)
                self.layer(f"{block}.{attn}.to_k", t, "linear", source, inner, bias=False)
                self.layer(f"{block}.{attn}.to_v", t, "linear", source, inner, bias=False)
                self.layer(f"{block}.{attn}.to_out.0", t, "linear", inner, inner)
            self.layer(f"{block}.norm3", t, "norm", inner, inner)
            self.layer(f"{block}.ff.net.0.proj", t, "linear", inner, 8 * inner)  # GEGLU: value and gate
            self.layer(f"{block}.ff.net.2", t, "linear", 4 * inner, inner)
        self.layer(f"{path}.proj_out", t, projection, inner, c)
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
    """Parameters, LoRA sums, candidate layers and stages of a ``UNet2DConditionModel`` config."""
    _check_unet_layout(config)
    channels = list(config["block_out_channels"])
    n = len(channels)
    heads = _per_block(config.get("num_attention_heads") or config.get("attention_head_dim", 8), n)
    depths = _per_block(config.get("transformer_layers_per_block", 1), n)
    reverse_depths = config.get("reverse_transformer_layers_per_block") or list(reversed(depths))
    count = _Counter()
    c0, temb = channels[0], channels[0] * 4
    text_time = _top_level(config, count, c0, temb)
    stages = [Stage(2**i) for i in range(n)]
    blocks = _Blocks(count, stages, temb, config["cross_attention_dim"], bool(config.get("use_linear_projection")))
    layers = config.get("layers_per_block", 2)
    out = c0
    for i, kind in enumerate(config["down_block_types"]):
        cin, out = out, channels[i]
        for j in range(layers):
            blocks.resnet(f"down_blocks.{i}.resnets.{j}", i, cin if j == 0 else out, out)
            if kind == "CrossAttnDownBlock2D":
                blocks.transformer(f"down_blocks.{i}.attentions.{j}", i, out, heads[i], depths[i])
        if i < n - 1:
            blocks.sampler(f"down_blocks.{i}.downsamplers.0", "Downsample2D", i, out)
    mid = channels[-1]
    blocks.resnet("mid_block.resnets.0", n - 1, mid, mid)
    blocks.transformer("mid_block.attentions.0", n - 1, mid, heads[-1], depths[-1])
    blocks.resnet("mid_block.resnets.1", n - 1, mid, mid)
    reversed_channels, reversed_heads = list(reversed(channels)), list(reversed(heads))
    previous = reversed_channels[0]
    for i, kind in enumerate(config["up_block_types"]):
        out, skip_in = reversed_channels[i], reversed_channels[min(i + 1, n - 1)]
        for j in range(layers + 1):
            cin = (previous if j == 0 else out) + (skip_in if j == layers else out)
            blocks.resnet(f"up_blocks.{i}.resnets.{j}", n - 1 - i, cin, out)
            if kind == "CrossAttnUpBlock2D":
                blocks.transformer(f"up_blocks.{i}.attentions.{j}", n - 1 - i, out, reversed_heads[i],
                                   reverse_depths[i])  # fmt: skip
        if i < n - 1:
            blocks.sampler(f"up_blocks.{i}.upsamplers.0", "Upsample2D", n - 1 - i, out)
        previous = out
    extra = {"cross_attention_dim": config["cross_attention_dim"], "time_embed_dim": temb,
             "text_time_embedding": int(text_time)}  # fmt: skip
    return ComponentSize(count.params, lora_sums(count.layers), stages, extra, count.layers, dict(config))


@dataclass
class _Blocks:
    """Lays out the U-Net's blocks into the counter and records the stages the activation estimate reads."""

    count: _Counter
    stages: list[Stage]
    temb: int
    cross: int
    linear_projection: bool

    def resnet(self, path: str, stage: int, i: int, o: int) -> None:
        self.count.resnet(path, i, o, self.temb)
        self.stages[stage].resnets.append((i, o))

    def transformer(self, path: str, stage: int, c: int, heads: int, depth: int) -> None:
        inner = self.count.transformer(path, c, heads, depth, self.cross, self.linear_projection)
        self.stages[stage].transformers.append((c, inner, depth))

    def sampler(self, path: str, container: str, stage: int, c: int) -> None:
        self.count.sampler(path, container, c)
        self.stages[stage].samplers.append(c)


def _top_level(config: dict[str, Any], count: _Counter, c0: int, temb: int) -> bool:
    """Count the U-Net's layers outside its blocks — conv_in, the time embedding (c₀ → 4c₀ → 4c₀), SDXL's addition
    embedding, the output norm and conv_out; the four LyCORIS's presets name are listed as layers. Returns whether it
    has SDXL's addition embedding."""
    in_channels, out_channels = config.get("in_channels", 4), config.get("out_channels", 4)
    count.layer("conv_in", "", "conv", in_channels, c0, config.get("conv_in_kernel", 3))
    count.layer("time_embedding.linear_1", "", "linear", c0, temb)
    count.layer("time_embedding.linear_2", "", "linear", temb, temb)
    count.layer("conv_out", "", "conv", c0, out_channels, config.get("conv_out_kernel", 3))
    count.params += norm(c0)  # conv_norm_out
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
            count.resnet(f"encoder.down_blocks.{i}.resnets.{j}", out if j == 0 else c, c, None)
            stages[i].resnets.append((out if j == 0 else c, c))
        out = c
        if i < n - 1:
            count.sampler(f"encoder.down_blocks.{i}.downsamplers.0", "Downsample2D", c)
    mid = channels[-1]
    for coder in ("encoder", "decoder"):
        for j in range(2):
            count.resnet(f"{coder}.mid_block.resnets.{j}", mid, mid, None)
    count.params += 2 * _vae_attention(mid)
    count.params += norm(mid) + conv(mid, 2 * latent) + conv(2 * latent, 2 * latent, 1)  # encoder out, quant_conv
    count.params += conv(latent, latent, 1) + conv(latent, mid)  # post_quant_conv, decoder conv_in
    reversed_channels, previous = list(reversed(channels)), mid
    for i, c in enumerate(reversed_channels):  # decoder
        for j in range(layers + 1):
            count.resnet(f"decoder.up_blocks.{i}.resnets.{j}", previous if j == 0 else c, c, None)
        previous = c
        if i < n - 1:
            count.sampler(f"decoder.up_blocks.{i}.upsamplers.0", "Upsample2D", c)
    count.params += norm(channels[0]) + conv(channels[0], config.get("out_channels", 3))
    return ComponentSize(count.params, LoRASums(), stages, {"latent_channels": latent})


def text_encoder_size(config: dict[str, Any]) -> ComponentSize:
    """Parameters, LoRA sums and candidate layers of a ``CLIPTextModel`` / ``CLIPTextModelWithProjection`` config."""
    d, inner, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    count = _Counter()
    for n in range(layers):
        path = f"encoder.layers.{n}"  # transformers 5 adds "text_model." in front in the model with projection
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            count.layer(f"{path}.self_attn.{projection}", "", "linear", d, d)
        count.layer(f"{path}.mlp.fc1", "", "linear", d, inner)
        count.layer(f"{path}.mlp.fc2", "", "linear", inner, d)
    params = count.params + layers * 2 * norm(d) + norm(d)  # two LayerNorms a layer, the final one
    params += config["vocab_size"] * d + config.get("max_position_embeddings", 77) * d
    if "CLIPTextModelWithProjection" in config.get("architectures", []):
        params += linear(d, config.get("projection_dim", d), bias=False)
    sums = LoRASums(attention=sum(layer.lora_sum for layer in count.layers), modules=len(count.layers))
    extra = {"hidden_size": d, "layers": layers, "positions": config.get("max_position_embeddings", 77),
             "intermediate_size": inner}  # fmt: skip
    return ComponentSize(params, sums, [], extra, count.layers)


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
