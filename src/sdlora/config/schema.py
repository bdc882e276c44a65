"""Typed schemas of the Hydra config, registered in Hydra's ConfigStore.

``conf/train.yaml`` starts from ``train_schema`` (:class:`TrainConfig`), so every group option is merged into a typed
node: a misspelt key (``network.rnak=4``) or a wrong type (``network.rank=abc``) fails at compose time with Hydra's
message naming the key. Optimizer and scheduler nodes are open (``_target_`` + keyword arguments of any class); their
keys are checked against the target's signature before training starts (:mod:`sdlora.optim.factory`).

Field comments give the kohya_ss / sd-scripts option each key matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from omegaconf import MISSING


class Attention(str, Enum):
    """Attention backend of the U-Net [kohya: --sdpa / --xformers]."""

    sdpa = "sdpa"
    xformers = "xformers"


class SavePrecision(str, Enum):
    """dtype of the saved LoRA tensors [kohya: --save_precision]."""

    float = "float"
    fp16 = "fp16"
    bf16 = "bf16"


class SaveFormat(str, Enum):
    """File format of the saved LoRA [kohya: --save_model_as]; ckpt/pt carry no metadata (as kohya)."""

    safetensors = "safetensors"
    ckpt = "ckpt"
    pt = "pt"


@dataclass
class ModelConfig:
    """Base model: which family adapter to use and where its weights come from."""

    _target_: str = "sdlora.models.sd15.SD15Family"
    pretrained: str | None = None  # hub id, diffusers folder or .safetensors/.ckpt file [pretrained_model_name_or_path]
    vae: str | None = None  # VAE file or folder replacing the model's VAE [vae]
    v_parameterization: bool | None = None  # null: the family's default / what the file says [v_parameterization]
    clip_skip: int | None = None  # SD1/2: use the n-th last text-encoder layer (+ final layer norm) [clip_skip]
    max_token_length: int = 75  # 75, 150 or 225 tokens per caption [max_token_length]
    gradient_checkpointing: bool = False  # [gradient_checkpointing]
    attention: Attention = Attention.sdpa  # [sdpa / xformers]
    channels_last: bool = False  # U-Net weights in channels-last memory format (no kohya option)
    compile: bool = False  # torch.compile the U-Net [torch_compile]
    compile_backend: str = "inductor"  # torch.compile backend [dynamo_backend]
    config: str | None = None  # diffusers config folder for single-file checkpoints (default: shipped for the family)
    init_seed: int = 0  # tiny families without `pretrained`: seed of the random weights


@dataclass
class NetworkConfig:
    """LoRA network [kohya: networks.lora]."""

    rank: int = 8  # [network_dim]
    alpha: float = 1.0  # scale = alpha / rank; 0 means alpha = rank [network_alpha]
    train_unet: bool = True  # false = text encoder only [network_train_text_encoder_only]
    train_text_encoder: bool = True  # false = U-Net only [network_train_unet_only]
    unet_lr: float | None = None  # null: optimizer.lr [unet_lr]
    text_encoder_lr: float | None = None  # null: optimizer.lr [text_encoder_lr]


@dataclass
class LossConfig:
    """Diffusion loss: timesteps and targets [kohya: train_network.py loss options]."""

    min_timestep: int = 0  # timesteps are uniform integers in [min_timestep, max_timestep) [min_timestep]
    max_timestep: int = 1000  # [max_timestep]; min == max gives a constant timestep


@dataclass
class DataConfig:
    """Training images in kohya's folder convention."""

    train_dir: str = MISSING  # parent of the `<repeats>_<name>` folders [train_data_dir]
    resolution: str | None = None  # "512" or "768,512" (W,H); null: the family's default [resolution]
    batch_size: int = 1  # [train_batch_size]
    caption_extension: str = ".caption"  # kohya's default; most datasets use .txt [caption_extension]
    num_workers: int = 0  # DataLoader worker processes [max_data_loader_n_workers]
    strict: bool = False  # unreadable or unusable images are errors instead of skipped with a warning


@dataclass
class PrecisionConfig:
    """Numeric precision [kohya: mixed_precision, full_fp16, full_bf16]."""

    name: str = "fp32"
    trainer_precision: str = "32-true"  # Lightning's precision flag
    weight_dtype: str = "float32"  # dtype of the frozen base model (U-Net, text encoders, VAE)
    mixed_precision: str = "no"  # kohya's name for it, written to ss_mixed_precision
    lora_dtype: str = "float32"  # LoRA params, grads, optimizer state; 16-bit = [full_fp16 / full_bf16]
    stochastic_rounding: bool = False  # full_bf16: round LoRA updates stochastically (beyond kohya)
    no_half_vae: bool | None = None  # VAE in float32; null: the family's default (true for SDXL) [no_half_vae]


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (Lightning's own names)."""

    max_steps: int = 1600  # upper limit on optimizer steps; -1 = none [max_train_steps]
    max_epochs: int | None = None  # upper limit on epochs; null = none [max_train_epochs]
    accumulate_grad_batches: int = 1  # [gradient_accumulation_steps]
    gradient_clip_val: float | None = 1.0  # max norm of the LoRA gradients; null or 0 disables [max_grad_norm]
    log_every_n_steps: int = 10  # scalars are written every n steps (1 = every step, as kohya)
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    enable_progress_bar: bool = True
    fast_dev_run: Any = False


@dataclass
class SaveConfig:
    """LoRA files written to the run folder."""

    output_name: str = "last"  # <output_name>.safetensors [output_name]
    precision: SavePrecision | None = None  # null: the dtype the LoRA was trained in [save_precision]
    format: SaveFormat = SaveFormat.safetensors  # [save_model_as]


@dataclass
class TrainConfig:
    """The root of ``conf/train.yaml``."""

    model: ModelConfig = field(default_factory=ModelConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    optimizer: Any = MISSING  # `_target_` + `_partial_: true` + keyword arguments (lr, ...) [optimizer_type, ...]
    scheduler: Any = MISSING  # `_target_` + `_partial_: true` + arguments [lr_scheduler, lr_warmup_steps, ...]
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: Any = None  # `_target_` of a Lightning logger, or null
    save: SaveConfig = field(default_factory=SaveConfig)
    seed: int = 42  # [seed]
    dry_run: bool = False  # print the data plan and exit


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
