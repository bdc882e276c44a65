"""Peak accelerator memory of a run, estimated before the model is loaded — printed with the data plan and checked
against ``trainer.memory_budget_gb`` (docs/performance.md, "Memory estimate"). Pure: no torch, no weights.

The model's architecture comes from its diffusers config (:mod:`sdlora.models.sizes`: exact parameter counts, LoRA
target sums and the U-Net's stages); the run's options give dtypes, batch and the largest bucket. In bytes:

- frozen weights: Σ_component params × bytes(dtype) — U-Net and text encoders in ``precision.weight_dtype``, the VAE
  in float32 with ``no_half_vae``;
- the network: P parameters, counted module by module on the layers its type and preset select
  (:mod:`sdlora.memory_params`; a LoRA of rank r: r · (in·k² + out) a layer), for the U-Net and, when trained, the
  text encoders; parameters and gradients in ``precision.lora_dtype`` (none for the parameters a type holds frozen,
  LoRA-FA's ``lora_down``); optimizer state = P × state bytes per element (:func:`optimizer_bytes`: AdamW 2 states,
  8-bit AdamW 2 bytes, Lion 1, Prodigy 4, D-Adaptation 2–5); Adafactor keeps float32 row and column means of each
  parameter of two or more dimensions (:func:`sdlora.memory_params.factored_elements`) and, with ``beta1``, a
  float32 first moment;
- rebuilt weights: LyCORIS's types (outside ``bypass_mode``) run each layer with a rebuilt W′ = W + ΔW, which
  autograd keeps for backward — about one copy of every targeted weight in the activation dtype (fewer with gradient
  checkpointing; :func:`sdlora.memory_params.rebuilt_weights`), counted with the activations;
- activations of the U-Net step for the largest bucket × batch (latent h × w = H/8 × W/8), per image, in elements:

      A = a_r · Σ_resnets (c_in + c_out)·hw_s + a_t · Σ_blocks D·hw_s + a_c · Σ_transformers C·hw_s + a_x · Σ_blocks L·X

  over the stages s (hw_s = h·w / 4^s), transformer blocks of inner width D, transformers of C channels, text length
  L = 77 + 75·(chunks − 1) and cross-attention width X; times the activation bytes (4 for fp32, 2 under bf16/fp16).
  The coefficients are measured: bytes autograd saves for backward (``saved_tensors_hooks``) on SD1.5- and SDXL-
  shaped U-Nets of several sizes at 64–512 px, fitted by least squares (docs/performance.md; the mixed-precision
  ones by ``benchmarks/fit_activations.py``). With gradient
  checkpointing (diffusers checkpoints every resnet and transformer block) the saved part is the inputs of those
  blocks plus the largest block recomputed in backward: Σ_resnets c_in·hw + Σ_blocks D·hw + a_c·Σ C·hw + max(block);
- text encoders trained: their activations, the same way per layer (a_te · layers · L · (4·hidden + intermediate));
- encoding per step (no latent cache): the VAE encoder at the bucket's pixel size under ``no_grad`` — its largest two
  feature maps: 2 · c₀ · H · W (the first stage);
- sampling: the VAE decoder's largest two feature maps at the sample size (2 · c₀ · H · W) and the U-Net under
  ``no_grad`` (a few feature maps) on top of the weights.

Training peak = weights on the accelerator + LoRA (parameters, gradients, optimizer) + max(activations + the
first-stage gradient, encoding): with a latent cache the VAE, with cached text-encoder outputs the text encoders wait
in host memory (:mod:`sdlora.models.host_parts`). Sampling and validation bring them over: every weight + LoRA +
optimizer state + sampling. Peak = the larger of the two. What it leaves out: the CUDA context (~0.3–0.5 GB, not
counted by ``torch.cuda.max_memory_allocated``), allocator fragmentation, cuDNN/cuBLAS workspaces and
``torch.compile``'s buffers. Cached latents (``data.cache_latents=memory``) live in host memory, reported separately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from sdlora.memory_params import network_parameters
from sdlora.models.host_parts import HostParts
from sdlora.models.sizes import ComponentSize, ModelSize

GB = 1e9
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
TEXT_TOKENS = 77
UNET, VAE, TEXT_ENCODERS = "U-Net", "VAE", "text encoder(s)"  # the frozen weights' entries, by component

# Activation coefficients: elements saved per feature-map element, in units of the activation bytes (4 for fp32, 2
# under autocast). Fitted to the bytes autograd saves in a LoRA step (docs/performance.md "Memory estimate"; the mixed
# ones by benchmarks/fit_activations.py, SD1.5- and SDXL-shaped U-Nets of five widths at 128–512 px, 0.92–1.03× of
# the measured bytes; 16-bit LoRA weights, the full_* options, save 0–5 % less, not counted). LoCon adds the resnet
# convs' inputs (measured with kohya's LoCon; used for every network with modules on those convs, such as LyCORIS's
# types under the full preset).
COEFFICIENTS_BY_KIND = {
    "fp32": {"resnet": 5.2, "block": 18.3, "transformer": 7.0, "text": 1.5, "locon": 0.3},
    "mixed": {"resnet": 1.48, "block": 31.93, "transformer": 4.86, "text": 0.41, "locon": 0.44},
}
COEFFICIENTS = COEFFICIENTS_BY_KIND["fp32"]
A_TEXT_ENCODER = 12.0  # per layer and token, × (4·hidden + intermediate) / 4 (not measured: small next to the U-Net)


@dataclass(frozen=True)
class Activations:
    """U-Net activation elements per image at one latent size, without and with gradient checkpointing."""

    full: float
    checkpointed: float
    first_stage: float  # one feature map of the first stage (c₀ · h · w): the size of the largest gradients


def unet_activation_features(
    unet: ComponentSize, latent_hw: tuple[int, int], text_tokens: int = TEXT_TOKENS
) -> dict[str, float]:
    """The sums the activation formula weighs, per image: Σ(c_in + c_out)·hw over resnets, Σ D·hw over transformer
    blocks, Σ C·hw over transformers, Σ L·X over blocks (their cross-attention keys and values)."""
    h, w = latent_hw
    cross = unet.extra.get("cross_attention_dim", 0)
    features = {"resnet": 0.0, "block": 0.0, "transformer": 0.0, "text": 0.0}
    for stage in unet.stages:
        hw = max(1, h // stage.scale) * max(1, w // stage.scale)
        for c_in, c_out in stage.resnets:
            features["resnet"] += (c_in + c_out) * hw
        for channels, inner, depth in stage.transformers:
            features["transformer"] += channels * hw
            features["block"] += depth * inner * hw
            features["text"] += depth * text_tokens * cross
    return features


def unet_activations(
    unet: ComponentSize,
    latent_hw: tuple[int, int],
    text_tokens: int = TEXT_TOKENS,
    coefficients: dict[str, float] = COEFFICIENTS,
    locon: bool = False,
) -> Activations:
    """Elements per image the U-Net step keeps for backward, without and with gradient checkpointing (module
    docstring)."""
    h, w = latent_hw
    cross = unet.extra.get("cross_attention_dim", 0)
    a_r = coefficients["resnet"] + (coefficients["locon"] if locon else 0.0)
    a_b, a_t, a_x = coefficients["block"], coefficients["transformer"], coefficients["text"]
    features = unet_activation_features(unet, latent_hw, text_tokens)
    full = a_r * features["resnet"] + a_b * features["block"] + a_t * features["transformer"] + a_x * features["text"]
    inputs = largest = 0.0
    for stage in unet.stages:
        hw = max(1, h // stage.scale) * max(1, w // stage.scale)
        for c_in, c_out in stage.resnets:
            inputs += c_in * hw
            largest = max(largest, a_r * (c_in + c_out) * hw)
        for channels, inner, depth in stage.transformers:
            inputs += a_t * channels * hw + depth * inner * hw
            largest = max(largest, a_b * inner * hw + a_x * text_tokens * cross)
    first = unet.stages[0].resnets[0][1] * h * w if unet.stages and unet.stages[0].resnets else 0
    return Activations(full, inputs + largest, first)


def text_encoder_activations(te: ComponentSize, text_tokens: int = TEXT_TOKENS) -> float:
    """Elements per caption a trained CLIP text encoder keeps for backward: a_te · layers · L · (4·D + I)."""
    d, layers, inner = te.extra["hidden_size"], te.extra["layers"], te.extra["intermediate_size"]
    return A_TEXT_ENCODER * layers * text_tokens * (4 * d + inner) / 4


def optimizer_bytes(class_name: str, lora_bytes: int) -> tuple[float, str]:
    """Optimizer state bytes per LoRA parameter for an optimizer named as kohya's rules name it
    (:func:`sdlora.optim.factory.rule_name`), and how it was counted."""
    short = class_name.rsplit(".", 1)[-1]
    package = class_name.split(".", 1)[0]
    if package == "bitsandbytes" and "8bit" in short:
        states = 2 if "Adam" in short else 1
        return float(states), f"{states} 8-bit state{'s' if states > 1 else ''} per parameter"
    table = {
        "AdamW": 2, "Adam": 2, "AdamW32bit": 2, "PagedAdamW": 2, "PagedAdamW32bit": 2, "Lion": 1, "SGD": 1,
        "Prodigy": 4, "DAdaptAdam": 3, "DAdaptAdamPreprint": 3, "DAdaptAdaGrad": 3, "DAdaptSGD": 3, "DAdaptLion": 2,
        "DAdaptAdan": 5, "DAdaptAdanIP": 5,
    }  # fmt: skip
    if short == "Adafactor":
        return 0.0, "factored second moments"
    if short in table:
        # bitsandbytes' 32-bit optimizers keep float32 state; torch's keep the parameters' dtype
        per = 4 if package == "bitsandbytes" else lora_bytes
        return float(table[short] * per), f"{table[short]} state{'s' if table[short] > 1 else ''} per parameter"
    return 2.0 * lora_bytes, "2 states assumed"


@dataclass
class MemoryEstimate:
    """The estimate of one run, in bytes (see the module docstring)."""

    weights: dict[str, float]
    lora_params: int
    lora_bytes: float  # parameters + gradients
    optimizer_bytes: float
    optimizer_note: str
    activations: float  # as the run is configured (with or without gradient checkpointing)
    activations_other: float  # the other choice of gradient checkpointing
    encode_peak: float
    sampling_peak: float
    host_cached_latents: float
    batch_size: int
    bucket: tuple[int, int]
    checkpointing: bool
    architecture: str
    notes: list[str] = field(default_factory=list)
    host: tuple[str, ...] = ()  # the weights that wait in host memory while training (models/host_parts.py)
    visits: bool = False  # they come to the accelerator during the run (sampling, validation)

    @property
    def static(self) -> float:
        """What stays on the accelerator through training: the weights there, the LoRA and the optimizer state."""
        on_device = sum(value for name, value in self.weights.items() if name not in self.host)
        return on_device + self.lora_bytes + self.optimizer_bytes

    @property
    def training_peak(self) -> float:
        return self.static + max(self.activations, self.encode_peak)

    @property
    def visiting_peak(self) -> float:
        """Sampling or validating: every weight, the LoRA and its optimizer state, and the sampling peak."""
        if not (self.visits or self.sampling_peak):
            return 0.0
        return sum(self.weights.values()) + self.lora_bytes + self.optimizer_bytes + self.sampling_peak

    @property
    def peak(self) -> float:
        return max(self.training_peak, self.visiting_peak)

    def format(self) -> str:
        w, h = self.bucket
        lines = [f"Memory estimate (accelerator peak ≈ {human(self.peak)}; {self.architecture})"]
        lines.append("  frozen weights: " + ", ".join(
            f"{name} {human(value)}" + (" (in host memory while training)" if name in self.host else "")
            for name, value in self.weights.items()
        ))  # fmt: skip
        lines.append(f"  LoRA: {self.lora_params / 1e6:.2f} M parameters, with gradients {human(self.lora_bytes)}; "
                     f"optimizer state {human(self.optimizer_bytes)} ({self.optimizer_note})")  # fmt: skip
        other = "with" if not self.checkpointing else "without"
        lines.append(
            f"  activations, largest bucket {w}×{h} × batch {self.batch_size}: {human(self.activations)} "
            f"({'with' if self.checkpointing else 'without'} gradient checkpointing; {other}: "
            f"{human(self.activations_other)})"
        )
        if self.encode_peak:
            lines.append(f"  VAE encoding each step (latents not cached): {human(self.encode_peak)}")
        if self.sampling_peak:
            lines.append(f"  sample images: {human(self.sampling_peak)} over the weights")
        if self.host_cached_latents:
            lines.append(f"  cached latents in host memory: {human(self.host_cached_latents)}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_gb": self.peak / GB, "training_peak_gb": self.training_peak / GB,
            "weights_gb": {k: v / GB for k, v in self.weights.items()}, "lora_parameters": self.lora_params,
            "lora_gb": self.lora_bytes / GB, "optimizer_gb": self.optimizer_bytes / GB,
            "activations_gb": self.activations / GB, "activations_other_checkpointing_gb": self.activations_other / GB,
            "encode_gb": self.encode_peak / GB, "sampling_gb": self.sampling_peak / GB,
            "host_cached_latents_gb": self.host_cached_latents / GB, "bucket": list(self.bucket),
            "batch_size": self.batch_size, "gradient_checkpointing": self.checkpointing,
            "architecture": self.architecture, "notes": list(self.notes), "host_memory_weights": list(self.host),
        }  # fmt: skip


#: The boolean ``network`` options :class:`RunShape` copies: they change which layers get a module or what one holds.
MODULE_OPTIONS = ("train_norm", "train_on_input", "use_tucker", "use_scalar", "weight_decompose", "wd_on_output",
                  "decompose_both", "rescaled", "bypass_mode")  # fmt: skip


@dataclass(frozen=True)
class RunShape:
    """What the estimate reads of a run (from the resolved config and the data plan; tests build it directly)."""

    weight_dtype: str = "float32"
    vae_dtype: str = "float32"
    lora_dtype: str = "float32"
    autocast: bool = False  # activations in 16 bits
    batch_size: int = 1
    bucket: tuple[int, int] = (512, 512)  # largest (W, H)
    gradient_checkpointing: bool = False
    network: str = "lora"
    preset: str = "full"  # network.preset (LyCORIS types)
    rank: int = 8  # network.rank; 1 for the types without a rank (ia3: one vector per layer; full)
    conv_rank: int = 0
    train_norm: bool = False  # MODULE_OPTIONS: the network options that change what a module holds (memory_params)
    train_on_input: bool = False
    use_tucker: bool = False
    use_scalar: bool = False
    weight_decompose: bool = False
    wd_on_output: bool = True
    factor: int = -1  # LoKr
    decompose_both: bool = False  # LoKr
    rescaled: bool = False  # OFT, BOFT
    bypass_mode: bool = False  # LyCORIS: the branch added to the layer's output instead of a rebuilt weight
    block_size: int = 1  # LyCORIS DyLoRA: down/up held in rank / block_size pieces
    block_lr_weight: tuple[float, ...] | None = None  # a U-Net block of weight 0 gets no module
    block_dims: tuple[int, ...] | None = None  # rank per U-Net block (Linear and 1×1 layers)
    conv_block_dims: tuple[int, ...] | None = None  # rank per U-Net block (k×k convs)
    train_unet: bool = True
    train_text_encoder: bool = False
    optimizer: str = "torch.optim.AdamW"
    first_moment: bool = False  # Adafactor with beta1 set: a first moment besides the factored second
    cache_latents: str = "none"
    cache_text: bool = False  # text-encoder outputs cached
    validation: bool = False  # a validation loss (held-out images encoded with the VAE and text encoders)
    cached_images: int = 0  # images (and flips) held by a latent cache
    text_chunks: int = 1  # model.max_token_length / 75
    sample_size: tuple[int, int] | None = None  # (W, H) of sample images, when sampling


def estimate(size: ModelSize, shape: RunShape) -> MemoryEstimate:
    """The memory estimate of ``shape`` on the architecture ``size``."""
    wb, vb, lb = DTYPE_BYTES[shape.weight_dtype], DTYPE_BYTES[shape.vae_dtype], DTYPE_BYTES[shape.lora_dtype]
    act_bytes = 2 if shape.autocast or shape.weight_dtype != "float32" else 4
    weights = {UNET: size.unet.params * wb, VAE: size.vae.params * vb}
    if size.text_encoders:
        weights[TEXT_ENCODERS] = size.text_encoder_params * wb
    counted = network_parameters(size, shape)
    params = counted.trained
    opt_per, opt_note = optimizer_bytes(shape.optimizer, lb)
    if opt_note == "factored second moments":  # float32 row and column means; beta1: a float32 first moment
        opt_total = 4.0 * (counted.factored + (params if shape.first_moment else 0))
        opt_note += ", a first moment (beta1)" if shape.first_moment else ""
    else:
        opt_total = opt_per * params
    tokens = TEXT_TOKENS + 75 * (shape.text_chunks - 1)
    w, h = shape.bucket
    coefficients = COEFFICIENTS_BY_KIND["fp32" if act_bytes == 4 else "mixed"]
    unet_act = unet_activations(size.unet, (h // 8, w // 8), tokens, coefficients, counted.block_convs)
    per_image = (unet_act.checkpointed, unet_act.full)
    te_act = sum(text_encoder_activations(te, tokens) for te in size.text_encoders) if shape.train_text_encoder else 0
    chosen, other = per_image if shape.gradient_checkpointing else per_image[::-1]
    rebuilt = (counted.rebuilt_checkpointed, counted.rebuilt)  # weights, not per image
    kept, kept_other = rebuilt if shape.gradient_checkpointing else rebuilt[::-1]
    grads = 2 * unet_act.first_stage  # the largest gradients alive in backward
    activations = (shape.batch_size * (chosen + te_act + grads) + kept) * act_bytes
    activations_other = (shape.batch_size * (other + te_act + grads) + kept_other) * act_bytes
    vae_c0 = size.vae.stages[0].resnets[0][1] if size.vae.stages and size.vae.stages[0].resnets else 128
    encode = 0.0 if shape.cache_latents != "none" else shape.batch_size * 2 * vae_c0 * w * h * vb
    sw, sh = shape.sample_size or (0, 0)
    sampling = 2 * vae_c0 * sw * sh * vb + (4 * unet_act.first_stage * act_bytes if shape.sample_size else 0)
    latents = size.vae.extra.get("latent_channels", 4) * (w // 8) * (h // 8) * 2 * vb  # mean and std
    host = shape.cached_images * latents if shape.cache_latents == "memory" else 0.0
    notes = []
    if counted.frozen:
        notes.append(f"network={shape.network}: {counted.frozen / 1e6:.2f} M of its parameters are held frozen "
                     "(no gradient or optimizer state)")  # fmt: skip
    if opt_note == "2 states assumed":
        notes.append(f"optimizer {shape.optimizer} is not in the estimate's table: 2 states per parameter assumed")
    parts = HostParts.of(shape.cache_latents != "none", shape.cache_text)
    on_host = tuple(name for name, waits in ((VAE, parts.vae), (TEXT_ENCODERS, parts.text_encoders)) if waits)
    return MemoryEstimate(
        weights, params + counted.frozen, (2.0 * params + counted.frozen) * lb, opt_total, opt_note, activations,
        activations_other, encode, sampling, host, shape.batch_size, shape.bucket, shape.gradient_checkpointing,
        size.source, notes, on_host, shape.validation,
    )  # fmt: skip


def human(value: float) -> str:
    """Bytes as MB below 1 GB, else GB (decimal units, as GPU memory is quoted)."""
    if not math.isfinite(value):
        return "unknown"
    return f"{value / 1e6:.1f} MB" if value < GB else f"{value / GB:.2f} GB"
