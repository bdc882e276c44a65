"""Typed schemas of the Hydra config, registered in Hydra's ConfigStore.

``conf/train.yaml`` starts from ``train_schema`` (:class:`TrainConfig`), so every group option is merged into a typed
node: a misspelt key (``network.rnak=4``) or a wrong type (``network.rank=abc``) fails at compose time with Hydra's
message naming the key. Optimizer and scheduler nodes are open (``_target_`` + keyword arguments of any class); their
keys are checked against the target's signature before training starts (:mod:`sdlora.optim.factory`).

Field comments give the kohya_ss / sd-scripts option each key matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from sdlora.config.choices import (
    Attention,
    CacheMode,
    EMADevice,
    HuberSchedule,
    LossType,
    LycorisPreset,
    NetworkType,
    SaveFormat,
    SavePrecision,
    ShardingStrategy,
)
from sdlora.config.frozen import Freezable


@dataclass
class ModelConfig(Freezable):
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
class NetworkConfig(Freezable):
    """The network [kohya: --network_module, --network_args, and the network options of train_network.py].

    Keys a type does not use are errors naming the type (sdlora.config.network_checks); each type's file in
    conf/network/ sets only its own.
    """

    name: NetworkType = NetworkType.lora  # set by the group option network=<type>
    rank: int | None = 8  # [network_dim]; OFT/BOFT: the block size; null for ia3 and full (no rank)
    alpha: float | None = 1.0  # scale = alpha / rank; 0 means alpha = rank [network_alpha]; null: no alpha
    alpha_ratio: float | None = None  # set: alpha = alpha_ratio × rank, replacing alpha (no kohya option; sweeps)
    conv_rank: int | None = None  # rank of the 3×3 convs [conv_dim]
    conv_alpha: float | None = None  # alpha of the 3×3 convs [conv_alpha]
    dropout: float = 0.0  # neuron dropout on the rank activations, 0 = off [network_dropout; LyCORIS dropout]
    rank_dropout: float = 0.0  # per-sample rank-channel dropout, 0 = off [rank_dropout]
    module_dropout: float = 0.0  # skip a whole module for a batch, 0 = off [module_dropout]
    scale_weight_norms: float = 0.0  # max-norm of every module's ΔW, 0 = off [scale_weight_norms]
    train_unet: bool = True  # false = text encoder only [network_train_text_encoder_only]
    train_text_encoder: bool = True  # false = U-Net only [network_train_unet_only]
    unet_lr: float | None = None  # null: optimizer.lr [unet_lr]
    text_encoder_lr: Any = None  # null: optimizer.lr; a number, or [TE1, TE2] for SDXL [text_encoder_lr]
    weights: str | None = None  # a file of this type to start from; its ranks and alphas are used [network_weights]
    block_lr_weight: list[float] | None = None  # lr factor per U-Net block (25 SD1/2, 23 SDXL) [up/mid/down_lr_weight]
    block_dims: list[int] | None = None  # rank per U-Net block (Linear/1×1 targets) [block_dims]
    block_alphas: list[float] | None = None  # alpha per U-Net block [block_alphas]
    conv_block_dims: list[int] | None = None  # rank per U-Net block for 3×3 convs [conv_block_dims]
    conv_block_alphas: list[float] | None = None  # [conv_block_alphas]
    # kohya's down/mid/up form of block_lr_weight (resolved into it): a list, or for down/up a preset cosine, sine,
    # linear, reverse_linear, zeros with an optional +<base> ("sine+.5") [down_lr_weight, mid_lr_weight, up_lr_weight]
    down_lr_weight: Any = None  # 12 values (SDXL 9) or a preset
    mid_lr_weight: Any = None  # a number (SDXL: 3 values)
    up_lr_weight: Any = None  # 12 values (SDXL 9) or a preset
    block_lr_zero_threshold: float = 0.0  # block lr factors ≤ this become 0: the block gets no modules
    loraplus_lr_ratio: float | None = None  # lora_up weights get lr × ratio [loraplus_lr_ratio]
    loraplus_unet_lr_ratio: float | None = None  # U-Net only, overrides the common ratio [loraplus_unet_lr_ratio]
    loraplus_text_encoder_lr_ratio: float | None = None  # [loraplus_text_encoder_lr_ratio]
    # --- LyCORIS options (lycoris.kohya network_args of the same names); docs/network-types.md §3
    preset: LycorisPreset | None = None  # null: full (LyCORIS's default) [preset]
    use_tucker: bool = False  # Tucker decomposition of k×k convs [use_tucker; kohya_ss GUI: use_cp]
    use_scalar: bool = False  # a trained scalar on ΔW, both factors random at start [use_scalar]
    rank_dropout_scale: bool = False  # rescale rank dropout by the kept fraction [rank_dropout_scale]
    train_norm: bool = False  # also train the norm layers inside the targeted blocks [train_norm]
    factor: int = -1  # LoKr Kronecker factor, -1 = the most balanced [factor]
    decompose_both: bool = False  # LoKr: also decompose the smaller Kronecker factor [decompose_both]
    block_size: int | None = None  # LyCORIS DyLoRA: rows trained per step [block_size; kohya_ss GUI: unit]
    constraint: float = 0.0  # OFT/BOFT: cap on ‖Q‖ (× out features), 0 = off [constraint]
    rescaled: bool = False  # OFT/BOFT: a trained per-output scale [rescaled]
    bypass_mode: bool = False  # compute x·ΔW beside the frozen layer instead of rebuilding W [bypass_mode]
    rs_lora: bool = False  # scale alpha/√rank instead of alpha/rank [rs_lora]
    weight_decompose: bool = False  # DoRA: train magnitude and direction apart [dora_wd]
    wd_on_output: bool = True  # DoRA: the magnitude per output (true) or per input channel [wd_on_output]
    train_on_input: bool = False  # iA3: scale the layer's input instead of its output [train_on_input]
    # --- Kohya DyLoRA (networks.dylora)
    unit: int | None = None  # rows/columns of down/up trained per step; rank must be a multiple [unit]


@dataclass
class LossConfig(Freezable):
    """Diffusion loss: timesteps, noise, loss type and per-sample weights [kohya: train_network.py loss options].

    Formulas: src/sdlora/diffusion/ (weighting.py, noise.py, loss.py, schedule.py) and README "Loss and noise".
    """

    min_timestep: int = 0  # timesteps are uniform integers in [min_timestep, max_timestep) [min_timestep]
    max_timestep: int = 1000  # [max_timestep]; min == max gives a constant timestep
    type: LossType = LossType.l2  # [loss_type]
    huber_c: float = 0.1  # [huber_c]
    huber_scale: float = 1.0  # [huber_scale]
    huber_schedule: HuberSchedule = HuberSchedule.snr  # [huber_schedule]
    min_snr_gamma: float | None = None  # min-SNR weighting, e.g. 5 [min_snr_gamma]
    scale_v_pred_loss_like_noise_pred: bool = False  # v-models only [scale_v_pred_loss_like_noise_pred]
    v_pred_like_loss: float | None = None  # ε-models only [v_pred_like_loss]
    debiased_estimation: bool = False  # [debiased_estimation_loss]
    noise_offset: float | None = None  # e.g. 0.05 [noise_offset]
    adaptive_noise_scale: float | None = None  # needs noise_offset [adaptive_noise_scale]
    noise_offset_random_strength: bool = False  # [noise_offset_random_strength]
    multires_noise_iterations: int | None = None  # e.g. 6 [multires_noise_iterations]
    multires_noise_discount: float = 0.3  # [multires_noise_discount]
    ip_noise_gamma: float | None = None  # e.g. 0.1 [ip_noise_gamma]
    ip_noise_gamma_random_strength: bool = False  # [ip_noise_gamma_random_strength]
    zero_terminal_snr: bool = False  # rescale the schedule to SNR_T = 0 [zero_terminal_snr]
    masked: bool = False  # weight the loss by a mask (data.mask_dir file or alpha channel) [masked_loss]
    prior_loss_weight: float = 1.0  # loss weight of regularisation images (data.reg_dir) [prior_loss_weight]


@dataclass
class SubsetConfig(Freezable):
    """One image folder of ``data.subsets`` (kohya's dataset-config ``[[datasets.subsets]]``); null = data.*'s value."""

    dir: str = MISSING  # folder with the images (not recursive) [image_dir]
    repeats: int = 1  # [num_repeats]
    class_tokens: str | None = None  # caption of images without a caption file [class_tokens]
    is_reg: bool = False  # regularisation images (balanced as kohya; loss.prior_loss_weight) [is_reg]
    caption_extension: str | None = None  # [caption_extension]
    shuffle_caption: bool | None = None  # [shuffle_caption]
    keep_tokens: int | None = None  # [keep_tokens]
    caption_separator: str | None = None  # [caption_separator]
    caption_dropout_rate: float | None = None  # [caption_dropout_rate]
    caption_tag_dropout_rate: float | None = None  # [caption_tag_dropout_rate]
    caption_dropout_every_n_epochs: int | None = None  # [caption_dropout_every_n_epochs]
    flip_aug: bool | None = None  # [flip_aug]
    color_aug: bool | None = None  # [color_aug]
    random_crop: bool | None = None  # [random_crop]


@dataclass
class DataConfig(Freezable):
    """Training images in kohya's folder convention, captions, buckets, augmentation and caches."""

    train_dir: str | None = None  # parent of the `<repeats>_<name>` folders [train_data_dir]
    reg_dir: str | None = None  # parent of `<repeats>_<class>` regularisation folders [reg_data_dir]
    subsets: list[SubsetConfig] = field(default_factory=list)  # explicit folders instead of / besides train_dir
    resolution: str | None = None  # "512" or "768,512" (W,H); null: the family's default [resolution]
    batch_size: int = 1  # [train_batch_size]
    # captions
    caption_extension: str = ".caption"  # kohya's default; most datasets use .txt [caption_extension]
    shuffle_caption: bool = False  # shuffle the comma-separated tags [shuffle_caption]
    keep_tokens: int = 0  # the first n tags stay in place (tags, not CLIP tokens) [keep_tokens]
    caption_separator: str = ","  # tag separator for shuffling and tag dropout [caption_separator]
    caption_dropout_rate: float = 0.0  # probability of an empty caption [caption_dropout_rate]
    caption_tag_dropout_rate: float = 0.0  # probability of dropping each non-kept tag [caption_tag_dropout_rate]
    caption_dropout_every_n_epochs: int = 0  # every n-th epoch trains uncaptioned [caption_dropout_every_n_epochs]
    max_caption_bytes: int = 65536  # longer caption files are cut there, with a warning (no kohya option)
    # aspect-ratio buckets
    enable_bucket: bool = True  # kohya_ss GUI default (sd-scripts' CLI default is off) [enable_bucket]
    min_bucket_reso: int | None = None  # null: the family's default (256; 64 for tiny) [min_bucket_reso]
    max_bucket_reso: int | None = None  # null: the family's default (1024) [max_bucket_reso]
    bucket_reso_steps: int = 64  # bucket sides are multiples of this (SDXL: of 32) [bucket_reso_steps]
    bucket_no_upscale: bool = False  # buckets from the image sizes, never upscaling [bucket_no_upscale]
    # augmentation
    flip_aug: bool = False  # horizontal flip with p = 0.5 [flip_aug]
    color_aug: bool = False  # hue shift or gamma with p = 0.33 [color_aug]
    random_crop: bool = False  # random instead of centred crop [random_crop]
    # caches
    cache_latents: CacheMode = CacheMode.none  # [cache_latents / cache_latents_to_disk]
    vae_batch_size: int = 1  # images per VAE call while caching [vae_batch_size]
    cache_text_encoder_outputs: bool = False  # [cache_text_encoder_outputs]
    cache_text_encoder_outputs_to_disk: bool = False  # implies cache_text_encoder_outputs [..._to_disk]
    caption_variants: int = 1  # cached caption variants per image (shuffle/tag dropout with a TE cache)
    cache_dir: str | None = None  # disk caches; null: <run folder>/cache (set it to share between runs)
    num_workers: int = 0  # DataLoader worker processes; decoding threads while caching [max_data_loader_n_workers]
    strict: bool = False  # unreadable or unusable images are errors instead of skipped with a warning
    mask_dir: str | None = None  # loss.masked: masks with the images' stems (else their alpha channel)
    persistent_workers: bool = True  # keep DataLoader workers between epochs [persistent_data_loader_workers]
    weighted_captions: bool = False  # (word:1.2), (word), [word] emphasis in captions and prompts [weighted_captions]


@dataclass
class PrecisionConfig(Freezable):
    """Numeric precision [kohya: mixed_precision, full_fp16, full_bf16]."""

    name: str = "fp32"
    trainer_precision: str = "32-true"  # Lightning's precision flag
    weight_dtype: str = "float32"  # dtype of the frozen base model (U-Net, text encoders, VAE)
    mixed_precision: str = "no"  # kohya's name for it, written to ss_mixed_precision
    lora_dtype: str = "float32"  # LoRA params, grads, optimizer state; 16-bit = [full_fp16 / full_bf16]
    stochastic_rounding: bool = False  # full_bf16: round LoRA updates stochastically (beyond kohya)
    no_half_vae: bool | None = None  # VAE in float32; null: the family's default (true for SDXL) [no_half_vae]


#: Module classes that become FSDP units under trainer=fsdp (diffusers' and transformers' blocks of SD 1.x/2.x/SDXL).
FSDP_WRAPPED_BLOCKS = ("BasicTransformerBlock", "ResnetBlock2D", "CLIPEncoderLayer")


@dataclass
class FSDPConfig(Freezable):
    """``trainer.strategy=fsdp`` (``trainer=fsdp``): what FSDP shards and how (README "Several GPUs")."""

    sharding_strategy: ShardingStrategy = ShardingStrategy.FULL_SHARD
    # module classes that become FSDP units (gathered for their forward, freed after)
    wrapped_blocks: list[str] = field(default_factory=lambda: list(FSDP_WRAPPED_BLOCKS))


@dataclass
class TrainerConfig(Freezable):
    """Lightning Trainer settings (Lightning's own names)."""

    max_steps: int = 1600  # upper limit on optimizer steps; -1 = none [max_train_steps]
    max_epochs: int | None = None  # upper limit on epochs; null = none [max_train_epochs]
    accumulate_grad_batches: int = 1  # [gradient_accumulation_steps]
    gradient_clip_val: float | None = 1.0  # max norm of the LoRA gradients; null or 0 disables [max_grad_norm]
    log_every_n_steps: int | None = None  # scalars every n steps; null: every step up to 200 steps, at most every 10
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"  # auto, ddp, ddp_find_unused_parameters_true, fsdp (trainer=ddp / trainer=fsdp)
    fsdp: FSDPConfig = field(default_factory=FSDPConfig)
    num_nodes: int = 1
    enable_progress_bar: bool = True
    fast_dev_run: Any = False
    skip_nonfinite: bool = False  # skip (count and log) batches with a non-finite loss instead of stopping (no kohya)
    max_skipped_fraction: float = 0.1  # a run that skipped more of its batches (non-finite loss/weights) fails
    check_finite_every_n_steps: int | None = None  # LoRA weights finite? null: every step with skip_nonfinite
    preemption_signal: str | None = "SIGUSR1"  # a cluster's warning before it stops a job: save, requeue (SLURM)
    memory_budget_gb: float | None = None  # stop before loading the model when the memory estimate exceeds it


@dataclass
class ModelCardConfig(Freezable):
    """The model card kohya writes into the LoRA's ``modelspec.*`` metadata [metadata_title, metadata_author, …]."""

    title: str | None = None  # modelspec.title; null: save.output_name [metadata_title]
    author: str | None = None  # modelspec.author [metadata_author]
    description: str | None = None  # modelspec.description [metadata_description]
    license: str | None = None  # modelspec.license [metadata_license]
    tags: str | None = None  # modelspec.tags, comma-separated [metadata_tags]


@dataclass
class SaveConfig(Freezable):
    """LoRA files and training states written to the run folder (names and retention as kohya, docs/kohya.md §8)."""

    output_name: str = "last"  # <output_name>.safetensors [output_name]
    precision: SavePrecision | None = None  # null: the dtype the LoRA was trained in [save_precision]
    format: SaveFormat = SaveFormat.safetensors  # [save_model_as]
    also_diffusers: bool = False  # also write <name>.diffusers.safetensors in diffusers/PEFT key format
    every_n_steps: int | None = None  # <name>-step00000200.<ext> every n optimizer steps [save_every_n_steps]
    every_n_epochs: int | None = None  # <name>-000001.<ext> every n epochs, not after the last [save_every_n_epochs]
    last_n_steps: int | None = None  # keep files of the last n steps only [save_last_n_steps]
    last_n_epochs: int | None = None  # keep the last n epoch files only [save_last_n_epochs]
    state: bool = False  # a training state folder <name>-…-state/ beside every save and at the end [save_state]
    last_n_steps_state: int | None = None  # null: save.last_n_steps (n counts steps) [save_last_n_steps_state]
    last_n_epochs_state: int | None = None  # null: save.last_n_epochs [save_last_n_epochs_state]
    best_by: str | None = None  # val/loss or val/loss_ema: <name>-best.<ext> is the LoRA with the lowest value so far
    training_comment: str | None = None  # ss_training_comment [training_comment]
    metadata: ModelCardConfig = field(default_factory=lambda: ModelCardConfig())  # modelspec.* [metadata_*]


@dataclass
class SampleConfig(Freezable):
    """Sample images during training, written to <run folder>/sample/ and TensorBoard (docs/kohya.md §12)."""

    prompts: str | None = None  # .txt with --n --w --h --s --l --d options, .toml or .json [sample_prompts]
    every_n_steps: int | None = None  # every n optimizer steps [sample_every_n_steps]
    every_n_epochs: int | None = None  # at the end of every n-th epoch; may be combined [sample_every_n_epochs]
    at_start: bool = False  # also before the first step (and when a resumed run starts) [sample_at_first]
    sampler: str = "ddim"  # ddim, euler, euler_a, dpmsolver++, … (README) [sample_sampler]


@dataclass
class ValidationConfig(Freezable):
    """A deterministic validation loss, ``val/loss`` (fixed timesteps and noise; what sweeps minimise)."""

    dir: str | None = None  # held-out kohya-style folder (parent of <repeats>_<name> folders; repeats ignored)
    split: float = 0.0  # or: this fraction of the training images (at least one), chosen by validation.seed
    every_n_steps: int | None = None  # evaluate every n optimizer steps; null: only at the end of training
    num_timesteps: int = 4  # timesteps spread over [loss.min_timestep, loss.max_timestep)
    seed: int = 0  # fixes the split and the noise, independent of the training seed
    batch_size: int | None = None  # null: data.batch_size
    timestep_bands: int = 4  # also val/loss per band of timesteps (4: val/loss_t000-249, …); 0 = off


@dataclass
class EMAConfig(Freezable):
    """An exponential moving average of the LoRA weights (``ema=default``; no kohya_ss option, sd-scripts #1321).

    Formulas: :mod:`sdlora.ema.decay`; the callback: :mod:`sdlora.callbacks.ema`.
    """

    enabled: bool = False  # set by ema=default
    decay: float = 0.999  # β per update; with power: its upper limit
    power: float | None = None  # warm-up form β = 1 − (1 + n/inv_gamma)^−power (diffusers' EMAModel); null: constant
    inv_gamma: float = 1.0  # the warm-up form's γ
    every_n_steps: int = 1  # one EMA update every n optimizer steps
    device: EMADevice = EMADevice.device  # cpu keeps the (float32) EMA in CPU memory
    use_for_eval: bool = True  # sample images with the EMA weights, and log val/loss_ema beside val/loss
    posthoc: bool = False  # also snapshot power-function EMAs for sdlora-posthoc-ema (Karras et al. 2024)
    posthoc_sigma_rels: list[float] = field(default_factory=lambda: [0.05, 0.10])  # their relative widths σ_rel
    snapshot_every: int = 100  # optimizer steps between post-hoc snapshots (and one after the last step)


@dataclass
class TrainConfig(Freezable):
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
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)  # ema=default turns it on (off by default)
    seed: int = 42  # [seed]
    dry_run: bool = False  # print the data plan and exit (no model needed)
    verbose: bool = False  # also Lightning's model summary and device lines
    resume: str | None = None  # a state folder, a folder of runs (its newest state), "latest", "auto" [resume]
    resume_allow_changes: bool = False  # resume although the data order or the schedule changed (no kohya option)


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
