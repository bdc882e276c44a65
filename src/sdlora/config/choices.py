"""The choices of the config's enumerated options (network type, loss type, cache mode, …), used by the typed schemas
(:mod:`sdlora.config.schema`). Hydra checks a value against its enum at compose time; each choice prints as its value.

Member comments give the kohya_ss / sd-scripts option or GUI value each choice matches.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A config option's choice: prints as its value (``glora``), in messages and f-strings alike, not as
    ``NetworkType.glora`` (what Python 3.11+ prints for a plain ``(str, Enum)``)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class Attention(Choice):
    """Attention backend of the U-Net [kohya: --sdpa / --xformers]."""

    sdpa = "sdpa"
    xformers = "xformers"
    none = "none"  # plain attention, the full attention matrix (diffusers' AttnProcessor) [kohya_ss GUI: none]


class LossType(Choice):
    """Elementwise loss [kohya: --loss_type]."""

    l2 = "l2"
    l1 = "l1"
    huber = "huber"
    smooth_l1 = "smooth_l1"


class HuberSchedule(Choice):
    """How the Huber parameter c depends on the timestep [kohya: --huber_schedule]."""

    constant = "constant"
    exponential = "exponential"
    snr = "snr"


class SavePrecision(Choice):
    """dtype of the saved LoRA tensors [kohya: --save_precision]; ``fp32`` and kohya's ``float`` are the same."""

    fp32 = "fp32"
    float = "float"
    fp16 = "fp16"
    bf16 = "bf16"


class SaveFormat(Choice):
    """File format of the saved LoRA [kohya: --save_model_as]; ckpt/pt carry no metadata (as kohya)."""

    safetensors = "safetensors"
    ckpt = "ckpt"
    pt = "pt"


class NetworkType(Choice):
    """The module type [kohya_ss GUI: "LoRA type"]; what each one runs is in docs/network-types.md."""

    lora = "lora"  # "Standard": Linear/1×1 layers of the U-Net transformers and the text encoders [networks.lora]
    locon = "locon"  # "Kohya LoCon": also the resnets' and samplers' convs [networks.lora with conv_dim]
    lycoris_locon = "lycoris_locon"  # "LyCORIS/LoCon" [lycoris.kohya, algo=lora]
    loha = "loha"  # "LyCORIS/LoHa" [lycoris.kohya, algo=loha]
    lokr = "lokr"  # "LyCORIS/LoKr" [lycoris.kohya, algo=lokr]
    ia3 = "ia3"  # "LyCORIS/iA3" [lycoris.kohya, algo=ia3]
    lycoris_dylora = "lycoris_dylora"  # "LyCORIS/DyLoRA" [lycoris.kohya, algo=dylora]
    dylora = "dylora"  # "Kohya DyLoRA" [networks.dylora]
    lora_fa = "lora_fa"  # "LoRA-FA" [networks.lora_fa]
    oft = "oft"  # LyCORIS Diag-OFT [lycoris.kohya, algo=diag-oft]
    boft = "boft"  # LyCORIS BOFT [lycoris.kohya, algo=boft]
    glora = "glora"  # LyCORIS GLoRA [lycoris.kohya, algo=glora]
    full = "full"  # LyCORIS full fine-tuning of the targeted layers [lycoris.kohya, algo=full]


_PRESETS = ("full", "full-lin", "attn-mlp", "attn-only", "unet-only", "unet-transformer-only", "unet-convblock-only",
            "ia3")  # fmt: skip
#: Which layers a LyCORIS type targets [lycoris.kohya network_args: preset] (docs/network-types.md §2). The names
#: are LyCORIS's own spelling (``network.preset=attn-mlp``, as kohya_ss users write it); Hydra accepts an enum's
#: names only, so the hyphenated names are the members (the functional API allows them) and the underscore spellings
#: (``attn_mlp``, also ``LycorisPreset.attn_mlp`` in code) are aliases of the same members.
LycorisPreset = Choice(
    "LycorisPreset",
    [(name, name) for name in _PRESETS] + [(name.replace("-", "_"), name) for name in _PRESETS if "-" in name],
    module=__name__,
    qualname="LycorisPreset",
)
LycorisPreset.__doc__ = "Which layers a LyCORIS type targets [lycoris.kohya network_args: preset]."


class CacheMode(Choice):
    """Where VAE latents are cached [kohya: --cache_latents (memory), --cache_latents_to_disk (disk)]."""

    none = "none"
    memory = "memory"
    disk = "disk"


class ShardingStrategy(Choice):
    """How ``trainer=fsdp`` shards the frozen model (torch FSDP's names)."""

    FULL_SHARD = "FULL_SHARD"
    SHARD_GRAD_OP = "SHARD_GRAD_OP"
    HYBRID_SHARD = "HYBRID_SHARD"
    NO_SHARD = "NO_SHARD"


class EMADevice(Choice):
    """Where the EMA copy of the LoRA lives."""

    device = "device"  # beside the LoRA (the training device)
    cpu = "cpu"  # in CPU memory (saves accelerator memory; slower updates)
