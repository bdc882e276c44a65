"""kohya option → sdlora key: the one table the README shows and ``sdlora-migrate`` follows.

Each :class:`Row` is a row of README's "kohya option → sdlora key" table (generated from here: :func:`markdown`; a
test checks that README holds exactly that) and says in ``maps`` how each kohya option of the row becomes an sdlora
override: a dotted key (the value as is) or ``@rule`` (a function of :mod:`sdlora.tools.migrate`). Option names are
sd-scripts' (``network_args`` entries included, split into their own names); the kohya_ss GUI's own names are rows
marked "GUI". :data:`OPTIMIZERS` is the optimizer table, the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Row:
    kohya: str
    sdlora: str
    notes: str = ""
    maps: dict[str, str] = field(default_factory=dict)


def R(kohya: str, sdlora: str, notes: str = "", **maps: str) -> Row:
    return Row(kohya, sdlora, notes, maps)


ROWS: tuple[Row, ...] = (
    R("`pretrained_model_name_or_path`", "`model.pretrained`", "file, diffusers folder or hub id",
      pretrained_model_name_or_path="model.pretrained"),
    R("`v2`, `sdxl`", "`model=sd2` / `model=sd2_v` / `model=sdxl`", "the family preset", v2="@family", sdxl="@family"),
    R("`v_parameterization`", "`model.v_parameterization`",
      "null = the family default, or what a diffusers folder's scheduler says", v_parameterization="@family"),
    R("`vae`", "`model.vae`", "file or folder", vae="model.vae"),
    R("`clip_skip`", "`model.clip_skip`", "SD1/2 (SDXL ignores it, as kohya)", clip_skip="@clip_skip"),
    R("`max_token_length`", "`model.max_token_length`", "75, 150, 225", max_token_length="@max_token_length"),
    R("`gradient_checkpointing`", "`model.gradient_checkpointing`", "",
      gradient_checkpointing="model.gradient_checkpointing"),
    R("`sdpa` / `xformers`", "`model.attention=sdpa\\|xformers`", "xformers needs the package and CUDA",
      sdpa="@attention", xformers="@attention"),
    R("GUI `xformers` (`xformers` / `sdpa` / `none`)", "`model.attention=xformers\\|sdpa\\|none`",
      "`none`: plain attention, the whole attention matrix (diffusers' `AttnProcessor`)", xformers="@attention"),
    R("`mem_eff_attn`", "`model.attention=sdpa`",
      "kohya's pure-PyTorch memory-efficient attention; torch's SDPA computes the same with fused kernels",
      mem_eff_attn="@attention"),
    R("`torch_compile`, `dynamo_backend`", "`model.compile=true`, `model.compile_backend`",
      "the U-Net only; default backend `inductor`", torch_compile="model.compile",
      dynamo_backend="@dynamo_backend"),
    R("—", "`model.channels_last=true`", "U-Net weights in channels-last memory format"),
    R("`network_dim`", "`network.rank`", "default 8 (kohya_ss GUI)", network_dim="network.rank"),
    R("`network_alpha`", "`network.alpha`", "default 1; scale = alpha/rank; 0 means alpha = rank",
      network_alpha="network.alpha"),
    R('GUI LoRA type (`LoRA_type`) "Standard" / "Kohya LoCon"; `network_module`', "`network=lora` / `network=locon`",
      "",
      LoRA_type="@network_type", network_module="@network_type"),
    R('GUI LoRA type "LyCORIS/LoCon", "LyCORIS/LoHa", "LyCORIS/LoKr", "LyCORIS/iA3", "LyCORIS/DyLoRA" '
      '(`--network_module lycoris.kohya`, `algo=lora\\|loha\\|lokr\\|ia3\\|dylora`)',
      "`network=lycoris_locon`, `loha`, `lokr`, `ia3`, `lycoris_dylora`",
      "LyCORIS's modules (the `lycoris-lora` package, a dependency); see *Network types*",
      LoRA_type="@network_type", network_module="@network_type"),
    R('GUI LoRA type "Kohya DyLoRA" (`networks.dylora`), "LoRA-FA" (`networks.lora_fa`)',
      "`network=dylora`, `network=lora_fa`", "kohya's own code, reproduced"),
    R('GUI LoRA type "LyCORIS/Diag-OFT", "LyCORIS/BOFT", "LyCORIS/GLoRA", "LyCORIS/Native Fine-Tuning" (kohya_ss '
      "after v21.8.8; LyCORIS `algo=diag-oft\\|boft\\|glora\\|full`)",
      "`network=oft`, `boft`, `glora`, `full`", ""),
    R("`conv_dim`, `conv_alpha` (network_args)", "`network.conv_rank`, `network.conv_alpha`",
      "`locon` (defaults 4 and 1); optional for `lora_fa`, `dylora` (= rank); LyCORIS types: null = `network.rank` / "
      "`network.alpha`", conv_dim="@conv", conv_alpha="@conv"),
    R("`unit` (network_args, Kohya DyLoRA)", "`network.unit`", "default 1; rank a multiple of it",
      unit="@network_options"),
    R("`preset` (LyCORIS network_args; GUI `LyCORIS_preset`)", "`network.preset`",
      "`full` (default), `full-lin`, `attn-mlp`, `attn-only`, `unet-only`, `unet-transformer-only`, "
      "`unet-convblock-only`, `ia3`", preset="@network_options", LyCORIS_preset="@network_options"),
    R("`use_tucker` / `use_cp`, `use_scalar`, `rank_dropout_scale`, `train_norm`, `bypass_mode`, `rs_lora` (LyCORIS)",
      "same names under `network.`", "where the type reads them; else an error naming the type",
      use_tucker="@network_options", use_cp="@network_options", use_scalar="@network_options",
      rank_dropout_scale="@network_options", train_norm="@network_options", bypass_mode="@network_options",
      rs_lora="@network_options"),
    R("`dora_wd`, `wd_on_output` (LyCORIS)", "`network.weight_decompose`, `network.wd_on_output`",
      "DoRA on `lycoris_locon`, `loha`, `lokr`", dora_wd="@network_options", wd_on_output="@network_options"),
    R("`factor`, `decompose_both` (LyCORIS LoKr)", "`network.factor`, `network.decompose_both`", "`lokr`",
      factor="@network_options", decompose_both="@network_options"),
    R("`block_size` (LyCORIS DyLoRA; the GUI's \"unit\")", "`network.block_size`", "`lycoris_dylora`; default 1",
      block_size="@network_options"),
    R("`constraint` (GUI `constrain`), `rescaled` (LyCORIS OFT/BOFT)", "`network.constraint`, `network.rescaled`",
      "`oft`, `boft`",
      constraint="@network_options", constrain="@network_options", rescaled="@network_options"),
    R("`train_on_input` (LyCORIS iA3)", "`network.train_on_input`", "`ia3`", train_on_input="@network_options"),
    R("`network_dropout`", "`network.dropout`", "0 = off; in [0, 1)", network_dropout="network.dropout"),
    R("`rank_dropout`, `module_dropout` (network_args)", "`network.rank_dropout`, `network.module_dropout`",
      "0 = off; in [0, 1)", rank_dropout="network.rank_dropout", module_dropout="network.module_dropout"),
    R("`scale_weight_norms`", "`network.scale_weight_norms`", "0 = off (kohya suggests 1)",
      scale_weight_norms="network.scale_weight_norms"),
    R("`network_train_unet_only`", "`network.train_text_encoder=false`", "the other side gets no modules at all",
      network_train_unet_only="@unet_only"),
    R("`network_train_text_encoder_only`", "`network.train_unet=false`", "",
      network_train_text_encoder_only="@text_encoder_only"),
    R("`unet_lr`, `text_encoder_lr`", "`network.unet_lr`, `network.text_encoder_lr`",
      "null = `optimizer.lr`; 0 drops the group; SDXL: one value or `[te1,te2]`", unet_lr="@lrs",
      text_encoder_lr="@lrs"),
    R("`network_weights` (+ `dim_from_weights`)", "`network.weights`", "ranks and alphas always come from the file",
      network_weights="network.weights", dim_from_weights="@always"),
    R("GUI `lora_network_weights`", "`network.weights`", "", lora_network_weights="network.weights"),
    R("`down_lr_weight`, `mid_lr_weight`, `up_lr_weight`, `block_lr_zero_threshold` (network_args)",
      "`network.down_lr_weight`, `mid_lr_weight`, `up_lr_weight`, `block_lr_zero_threshold`, or one "
      "`network.block_lr_weight`",
      "lists or the presets `cosine`, `sine`, `linear`, `reverse_linear`, `zeros` (`+<base>`, e.g. `sine+.5`), "
      "resolved into `block_lr_weight` (25 factors SD1/2, 23 SDXL); factors ≤ the threshold drop the block",
      down_lr_weight="@block_lr", mid_lr_weight="@block_lr", up_lr_weight="@block_lr",
      block_lr_zero_threshold="@block_lr"),
    R("`block_dims`, `block_alphas`, `conv_block_dims`, `conv_block_alphas` (network_args)",
      "same names under `network.`", "lists of 25 / 23 values", block_dims="@list", block_alphas="@list",
      conv_block_dims="@list", conv_block_alphas="@list"),
    R("`loraplus_lr_ratio`, `loraplus_unet_lr_ratio`, `loraplus_text_encoder_lr_ratio` (network_args)",
      "same names under `network.`", "", loraplus_lr_ratio="network.loraplus_lr_ratio",
      loraplus_unet_lr_ratio="network.loraplus_unet_lr_ratio",
      loraplus_text_encoder_lr_ratio="network.loraplus_text_encoder_lr_ratio"),
    R("`optimizer_type` (GUI `optimizer`)", "`optimizer=<option>` (table below)",
      "any other class: `optimizer=custom optimizer._target_=pkg.Class`", optimizer_type="@optimizer",
      optimizer="@optimizer"),
    R("`use_8bit_adam`, `use_lion_optimizer`", "`optimizer=adamw8bit`, `optimizer=lion`", "",
      use_8bit_adam="@optimizer", use_lion_optimizer="@optimizer"),
    R("`learning_rate`", "`optimizer.lr`", "adaptive optimizers (DAdapt*, Prodigy): about 1.0",
      learning_rate="optimizer.lr"),
    R("`optimizer_args`", "`optimizer.<arg>=<value>` (`+optimizer.<arg>=` for one the YAML does not list)",
      "checked against the class's signature; lists for tuples: `optimizer.betas=[0.9,0.99]`",
      optimizer_args="@optimizer_args"),
    R("`lr_scheduler`", "`scheduler=<option>` (table below)", "", lr_scheduler="@scheduler"),
    R("`lr_scheduler_type`, `lr_scheduler_args`",
      "`scheduler=custom scheduler._target_=pkg.Class +scheduler.<arg>=…`",
      "a bare class name is `torch.optim.lr_scheduler`'s (as sd-scripts)", lr_scheduler_type="@scheduler",
      lr_scheduler_args="@scheduler_args"),
    R("`lr_warmup_steps`", "`scheduler.warmup_steps`",
      "optimizer steps, or a fraction < 1 of the run's steps (current sd-scripts)", lr_warmup_steps="@warmup"),
    R("GUI `lr_warmup` (% of the steps)", "`scheduler.warmup_steps=<%/100>`", "a fraction of the run's steps",
      lr_warmup="@warmup"),
    R("`lr_decay_steps`", "`scheduler.decay_steps`", "`warmup_stable_decay`; steps or a fraction",
      lr_decay_steps="scheduler.decay_steps"),
    R("`lr_scheduler_num_cycles`", "`scheduler.num_cycles`",
      "`cosine_with_restarts`, `cosine_with_min_lr`, `warmup_stable_decay`", lr_scheduler_num_cycles="@cycles"),
    R("`lr_scheduler_power`", "`scheduler.power`", "`polynomial`", lr_scheduler_power="@power"),
    R("`lr_scheduler_min_lr_ratio`", "`scheduler.min_lr_ratio`",
      "`cosine_with_min_lr` (default 0.1), `warmup_stable_decay` (default 0)",
      lr_scheduler_min_lr_ratio="scheduler.min_lr_ratio"),
    R("`mixed_precision`", "`precision=fp32\\|bf16_mixed\\|fp16_mixed`", "LoRA parameters stay fp32",
      mixed_precision="@precision"),
    R("`full_bf16`, `full_fp16`", "`precision=full_bf16\\|full_fp16`",
      "LoRA parameters, gradients, optimizer state in 16 bits", full_bf16="@precision", full_fp16="@precision"),
    R("—", "`precision.stochastic_rounding=true`", "with `full_bf16`; beyond kohya"),
    R("`no_half_vae` (GUI `sdxl_no_half_vae`)", "`precision.no_half_vae=true\\|false`",
      "null = fp32 VAE for SDXL, the frozen dtype otherwise",
      no_half_vae="precision.no_half_vae", sdxl_no_half_vae="precision.no_half_vae"),
    R("`min_timestep`, `max_timestep`", "`loss.min_timestep`, `loss.max_timestep`",
      "uniform in [min, max); min = max is a constant timestep", min_timestep="@timestep",
      max_timestep="@timestep"),
    R("`loss_type`", "`loss.type=l2\\|l1\\|huber\\|smooth_l1`", "default l2", loss_type="loss.type"),
    R("`huber_c`, `huber_scale`, `huber_schedule`",
      "`loss.huber_c`, `loss.huber_scale`, `loss.huber_schedule=constant\\|exponential\\|snr`",
      "defaults 0.1, 1.0, snr", huber_c="loss.huber_c", huber_scale="loss.huber_scale",
      huber_schedule="loss.huber_schedule"),
    R("`min_snr_gamma`", "`loss.min_snr_gamma`", "the corrected v-prediction form (see below)",
      min_snr_gamma="loss.min_snr_gamma"),
    R("`scale_v_pred_loss_like_noise_pred`", "`loss.scale_v_pred_loss_like_noise_pred`", "v-prediction only",
      scale_v_pred_loss_like_noise_pred="loss.scale_v_pred_loss_like_noise_pred"),
    R("`v_pred_like_loss`", "`loss.v_pred_like_loss`", "ε-prediction only", v_pred_like_loss="loss.v_pred_like_loss"),
    R("`debiased_estimation_loss`", "`loss.debiased_estimation`", "",
      debiased_estimation_loss="loss.debiased_estimation"),
    R("`noise_offset`, `adaptive_noise_scale`, `noise_offset_random_strength`",
      "`loss.noise_offset`, `loss.adaptive_noise_scale`, `loss.noise_offset_random_strength`", "",
      noise_offset="@noise", adaptive_noise_scale="@noise",
      noise_offset_random_strength="loss.noise_offset_random_strength"),
    R("`multires_noise_iterations`, `multires_noise_discount`",
      "`loss.multires_noise_iterations`, `loss.multires_noise_discount`", "discount default 0.3",
      multires_noise_iterations="@noise", multires_noise_discount="@noise"),
    R("GUI `noise_offset_type` (`Original` / `Multires`)", "the noise options of that kind",
      "the other kind's values are left out, as the GUI does", noise_offset_type="@noise"),
    R("`ip_noise_gamma`, `ip_noise_gamma_random_strength`",
      "`loss.ip_noise_gamma`, `loss.ip_noise_gamma_random_strength`", "", ip_noise_gamma="loss.ip_noise_gamma",
      ip_noise_gamma_random_strength="loss.ip_noise_gamma_random_strength"),
    R("`zero_terminal_snr`", "`loss.zero_terminal_snr`", "also rescales the SNR weights (see below)",
      zero_terminal_snr="loss.zero_terminal_snr"),
    R("`masked_loss` (+ `alpha_mask` / mask folder)", "`loss.masked`, `data.mask_dir`",
      "mask file of the same stem, else the alpha channel", masked_loss="loss.masked", alpha_mask="loss.masked"),
    R("`validation_split`, `validate_every_n_steps` (current sd-scripts)",
      "`validation.split` or `validation.dir`, `validation.every_n_steps`", "deterministic `val/loss` (see below)",
      validation_split="validation.split", validate_every_n_steps="validation.every_n_steps"),
    R("`train_data_dir`", "`data.train_dir`", "parent of the `<repeats>_<name>` folders",
      train_data_dir="data.train_dir"),
    R("`reg_data_dir`", "`data.reg_dir`", "balanced as kohya; without v21.8.8's last-folder-settings bug",
      reg_data_dir="data.reg_dir"),
    R("`dataset_config` (subsets)", "`data.subsets`", "a list of `{dir, repeats, class_tokens, is_reg, …}`",
      dataset_config="@dataset_config"),
    R("`prior_loss_weight`", "`loss.prior_loss_weight`", "default 1.0", prior_loss_weight="loss.prior_loss_weight"),
    R("`resolution`", "`data.resolution`", '`512` or `"768,512"` (W,H); the bucket area', resolution="@resolution"),
    R("GUI `max_resolution`", "`data.resolution`", "", max_resolution="@resolution"),
    R("`train_batch_size`", "`data.batch_size`", "", train_batch_size="data.batch_size"),
    R("`caption_extension`", "`data.caption_extension`", "default `.caption` as kohya",
      caption_extension="data.caption_extension"),
    R("`shuffle_caption`, `keep_tokens`, `caption_separator`",
      "`data.shuffle_caption`, `data.keep_tokens`, `data.caption_separator`", "",
      shuffle_caption="data.shuffle_caption", keep_tokens="data.keep_tokens",
      caption_separator="data.caption_separator"),
    R("`caption_dropout_rate`, `caption_tag_dropout_rate`, `caption_dropout_every_n_epochs`",
      "`data.caption_dropout_rate`, `data.caption_tag_dropout_rate`, `data.caption_dropout_every_n_epochs`", "",
      caption_dropout_rate="data.caption_dropout_rate", caption_tag_dropout_rate="data.caption_tag_dropout_rate",
      caption_dropout_every_n_epochs="data.caption_dropout_every_n_epochs"),
    R("`enable_bucket`", "`data.enable_bucket`",
      "default **true** (the kohya_ss GUI's; sd-scripts' CLI default is off)",
      enable_bucket="@enable_bucket"),
    R("`min_bucket_reso`, `max_bucket_reso`", "`data.min_bucket_reso`, `data.max_bucket_reso`",
      "null = 256 / 1024 (tiny models: 64 / 1024)", min_bucket_reso="data.min_bucket_reso",
      max_bucket_reso="data.max_bucket_reso"),
    R("`bucket_reso_steps`, `bucket_no_upscale`", "`data.bucket_reso_steps`, `data.bucket_no_upscale`",
      "64; SDXL needs a multiple of 32", bucket_reso_steps="data.bucket_reso_steps",
      bucket_no_upscale="data.bucket_no_upscale"),
    R("`flip_aug`, `color_aug`, `random_crop`", "`data.flip_aug`, `data.color_aug`, `data.random_crop`", "",
      flip_aug="data.flip_aug", color_aug="data.color_aug", random_crop="data.random_crop"),
    R("`cache_latents` / `cache_latents_to_disk`", "`data.cache_latents=memory` / `disk`",
      "files in `data.cache_dir`, never beside the images", cache_latents="@cache_latents",
      cache_latents_to_disk="@cache_latents"),
    R("`vae_batch_size`", "`data.vae_batch_size`", "", vae_batch_size="data.vae_batch_size"),
    R("`cache_text_encoder_outputs(_to_disk)` (GUI `sdxl_cache_text_encoder_outputs`)",
      "`data.cache_text_encoder_outputs(_to_disk)`",
      "all families; `data.caption_variants` for shuffled captions",
      cache_text_encoder_outputs="data.cache_text_encoder_outputs",
      cache_text_encoder_outputs_to_disk="data.cache_text_encoder_outputs_to_disk",
      sdxl_cache_text_encoder_outputs="data.cache_text_encoder_outputs"),
    R("`max_data_loader_n_workers`", "`data.num_workers`", "also the decoding threads while caching",
      max_data_loader_n_workers="data.num_workers"),
    R("`persistent_data_loader_workers`", "`data.persistent_workers`",
      "default **true** (kohya: off); keeps the `data.num_workers` workers between epochs",
      persistent_data_loader_workers="@persistent_workers"),
    R("`weighted_captions`", "`data.weighted_captions=true`",
      "`(word:1.2)`, `(word)`, `[word]` in captions and sample prompts, SD1/2 and SDXL; tags split outside brackets",
      weighted_captions="data.weighted_captions"),
    R("`max_train_steps`", "`trainer.max_steps`", "default 1600 as kohya; -1 = no step limit",
      max_train_steps="@steps"),
    R("`max_train_epochs`", "`trainer.max_epochs`", "see below", max_train_epochs="@steps"),
    R("GUI `epoch`", "`trainer.max_epochs=N trainer.max_steps=-1`",
      "the GUI turns it into `max_train_steps` when that is empty", epoch="@steps"),
    R("`gradient_accumulation_steps`", "`trainer.accumulate_grad_batches`", "",
      gradient_accumulation_steps="trainer.accumulate_grad_batches"),
    R("`max_grad_norm`", "`trainer.gradient_clip_val`", "default 1.0; LoRA parameters only",
      max_grad_norm="trainer.gradient_clip_val"),
    R("`seed`", "`seed`", "default 42", seed="seed"),
    R("`output_name`", "`save.output_name`", "default `last` as kohya", output_name="save.output_name"),
    R("`save_precision`", "`save.precision=fp32\\|fp16\\|bf16`",
      "null = the trained dtype (fp32); kohya's `float` = `fp32`",
      save_precision="@save_precision"),
    R("`save_model_as`", "`save.format=safetensors\\|ckpt\\|pt`", "ckpt/pt carry no metadata, as kohya",
      save_model_as="@save_model_as"),
    R("`training_comment`", "`save.training_comment`", "`ss_training_comment`",
      training_comment="save.training_comment"),
    R("`metadata_title`, `metadata_author`, `metadata_description`, `metadata_license`, `metadata_tags`",
      "`save.metadata.title`, `author`, `description`, `license`, `tags`",
      "`modelspec.*`; the title defaults to `save.output_name`", metadata_title="save.metadata.title",
      metadata_author="save.metadata.author", metadata_description="save.metadata.description",
      metadata_license="save.metadata.license", metadata_tags="save.metadata.tags"),
    R("`log_with` (tensorboard / wandb), GUI `use_wandb`, `wandb_run_name`, `log_tracker_name`, `wandb_api_key`",
      "`logger=tensorboard\\|wandb`, `logger.name`, `logger.project`",
      "W&B: the `wandb` extra; `logger.offline=true` works without network; the API key: the environment's "
      "`WANDB_API_KEY`", log_with="@logger", use_wandb="@logger", wandb_run_name="@logger",
      log_tracker_name="@logger", wandb_api_key="@logger"),
    R("— (sd-scripts #1321; closed PRs #893, #1100)", "`ema=default`, `ema.decay`, `ema.power`, `ema.every_n_steps`, "
      "`ema.device`, `ema.use_for_eval`", "EMA of the LoRA: `<name>-ema` files, `val/loss_ema`, EMA samples (see "
      "*EMA and the best LoRA*)"),
    R("— (Karras et al. 2024)", "`ema.posthoc=true`, `ema.snapshot_every`; `sdlora-posthoc-ema`",
      "the EMA of any length after training, from snapshots"),
    R("—", "`save.best_by=val/loss\\|val/loss_ema`", "`<name>-best`: the LoRA with the lowest value so far"),
    R("—", "`validation.timestep_bands`", "default 4: also `val/loss_t000-249`, … per band of timesteps"),
    R("(diffusers format, not in kohya)", "`save.also_diffusers=true`",
      "also `<name>.diffusers.safetensors` (see *The LoRA file*)"),
    R("`output_dir`", "`hydra.run.dir`", "default `outputs/<date>/<time>/`", output_dir="hydra.run.dir"),
    R("`save_every_n_steps`, `save_every_n_epochs`", "`save.every_n_steps`, `save.every_n_epochs`",
      "kohya's names `<name>-step00000200`, `<name>-000001`", save_every_n_steps="save.every_n_steps",
      save_every_n_epochs="save.every_n_epochs"),
    R("`save_last_n_steps`, `save_last_n_epochs`", "`save.last_n_steps`, `save.last_n_epochs`",
      "kohya's retention; `last_n_steps` also prunes epoch saves", save_last_n_steps="save.last_n_steps",
      save_last_n_epochs="save.last_n_epochs"),
    R("`save_state`", "`save.state=true`",
      "`<save name>-state/` folders: LoRA, optimizer, scheduler, scaler, RNGs, data position", save_state="save.state"),
    R("`save_last_n_steps_state`, `save_last_n_epochs_state`", "`save.last_n_steps_state`, `save.last_n_epochs_state`",
      "N counts steps (kohya)", save_last_n_steps_state="save.last_n_steps_state",
      save_last_n_epochs_state="save.last_n_epochs_state"),
    R("`resume`", "`resume=<state folder>\\|<run folder>\\|latest\\|auto`",
      "exact: same step, epoch, data order, RNGs, schedule; only intact states (manifest); `auto`: the run's own "
      "folder",
      resume="resume"),
    R("(no kohya option)", "`resume_allow_changes=true`",
      "resume although batch size, data, seed, optimizer or schedule changed"),
    R("(no kohya option)", "`trainer.skip_nonfinite=true`", "skip batches with a NaN/inf loss instead of stopping"),
    R("(no kohya option)", "`trainer.max_skipped_fraction`",
      "default 0.1: a run that skipped more of its batches fails"),
    R("(no kohya option)", "`trainer.check_finite_every_n_steps`",
      "check the LoRA weights are finite every N steps (default: every step with `skip_nonfinite`)"),
    R("(no kohya option)", "`trainer.preemption_signal`",
      "default `SIGUSR1`: save a state, requeue on SLURM (see *Faults and clusters*)"),
    R("(no kohya option)", "`data.max_caption_bytes`", "default 65536: longer caption files are cut (warning)"),
    R("`sample_prompts`", "`sample.prompts`", ".txt with `--n --w --h --s --l --d --ss`, or .toml / .json",
      sample_prompts="@sample_prompts"),
    R("`sample_every_n_steps`, `sample_every_n_epochs`", "`sample.every_n_steps`, `sample.every_n_epochs`",
      "both may be set (kohya: epochs disables steps)", sample_every_n_steps="sample.every_n_steps",
      sample_every_n_epochs="sample.every_n_epochs"),
    R("`sample_at_first`", "`sample.at_start=true`", "", sample_at_first="sample.at_start"),
    R("`sample_sampler`", "`sample.sampler`",
      "`ddim` (default), `pndm`, `lms`, `euler`, `euler_a`, `heun`, `dpm_2`, `dpm_2_a`, `dpmsolver`, `dpmsolver++`, "
      "`dpmsingle`, `k_*`", sample_sampler="sample.sampler"),
    R("—", "`network.alpha_ratio`",
      "alpha = ratio × rank, replacing `network.alpha` (sweeps over rank at a fixed scale)"),
    R("`accelerate launch --multi_gpu --num_processes N`", "`trainer=ddp trainer.devices=N`",
      "`data.batch_size` is per process, as kohya's `train_batch_size`", multi_gpu="@devices",
      num_processes="@devices"),
    R("`accelerate launch --num_machines M`", "`trainer.num_nodes=M`",
      "started by `srun`/`torchrun` or `hydra/launcher=slurm`", num_machines="trainer.num_nodes"),
    R("— (kohya has no FSDP for LoRA)", "`trainer=fsdp trainer.devices=N`, `trainer.fsdp.sharding_strategy`",
      "shards the frozen model by blocks; the LoRA stays whole (see *FSDP*)"),
    R("GUI `additional_parameters`", "read as sd-scripts options", "each one mapped as in this table",
      additional_parameters="@additional"),
    R("`networks/extract_lora_from_models.py` (GUI *Extract LoRA*)", "`sdlora-extract-lora`", "same options"),
    R("LyCORIS `tools/extract_locon.py` (GUI *Extract LyCORIS LoCon*)", "`sdlora-extract-locon`", "same options"),
    R("`networks/extract_lora_from_dylora.py` (GUI *Extract DyLoRA*)", "`sdlora-extract-dylora`", "same options"),
    R("`networks/merge_lora.py`, `sdxl_merge_lora.py` (GUI *Merge LoRA*)", "`sdlora-merge-lora`",
      "checkpoint files or diffusers folders; the ratio applied once (see *LoRA tools*)"),
    R("LyCORIS `tools/merge.py` (GUI *Merge LyCORIS*)", "`sdlora-merge-lycoris`", "every LyCORIS type"),
    R("`networks/svd_merge_lora.py` (GUI *SVD Merge LoRA*)", "`sdlora-svd-merge-lora`", "same options"),
    R("`networks/resize_lora.py` (GUI *Resize LoRA*)", "`sdlora-resize-lora`", "same options"),
    R("`networks/check_lora_weights.py` (GUI *Verify LoRA*)", "`sdlora-verify-lora`",
      "norms, untrained modules, and what keeps a UI from loading the file"),
    R("a saved GUI config (`.json`), an sd-scripts `.toml` or command line", "`sdlora-migrate`",
      "prints the `python train.py …` line or writes `conf/experiment/<name>.yaml`"),
)  # fmt: skip

#: kohya ``optimizer_type`` → sdlora ``optimizer=`` option: (kohya cell, sdlora cell, class cell, {kohya name: option}).
OPTIMIZERS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("`AdamW` (default)", "`optimizer=adamw`", "`torch.optim.AdamW`", {"AdamW": "adamw"}),
    ("`AdamW8bit`, `PagedAdamW8bit`", "`optimizer=adamw8bit`, `paged_adamw8bit`", "bitsandbytes",
     {"AdamW8bit": "adamw8bit", "PagedAdamW8bit": "paged_adamw8bit"}),
    ("`Lion`, `Lion8bit`, `PagedLion8bit`", "`optimizer=lion`, `lion8bit`, `paged_lion8bit`",
     "lion-pytorch, bitsandbytes", {"Lion": "lion", "Lion8bit": "lion8bit", "PagedLion8bit": "paged_lion8bit"}),
    ("`SGDNesterov`, `SGDNesterov8bit`", "`optimizer=sgd_nesterov`, `sgd_nesterov8bit`",
     "torch / bitsandbytes, momentum 0.9", {"SGDNesterov": "sgd_nesterov", "SGDNesterov8bit": "sgd_nesterov8bit"}),
    ("`DAdaptation`/`DAdaptAdamPreprint`, `DAdaptAdam`, `DAdaptAdaGrad`, `DAdaptAdan`, `DAdaptAdanIP`, "
     "`DAdaptLion`, `DAdaptSGD`", "`optimizer=dadapt_adam_preprint`, `dadapt_adam`, `dadapt_adagrad`, "
     "`dadapt_adan`, `dadapt_adan_ip`, `dadapt_lion`, `dadapt_sgd`", "dadaptation",
     {"DAdaptation": "dadapt_adam_preprint", "DAdaptAdamPreprint": "dadapt_adam_preprint",
      "DAdaptAdam": "dadapt_adam", "DAdaptAdaGrad": "dadapt_adagrad", "DAdaptAdan": "dadapt_adan",
      "DAdaptAdanIP": "dadapt_adan_ip", "DAdaptLion": "dadapt_lion", "DAdaptSGD": "dadapt_sgd"}),
    ("`Prodigy`", "`optimizer=prodigy`", "prodigyopt", {"Prodigy": "prodigy"}),
    ("`Adafactor`", "`optimizer=adafactor`", "transformers", {"Adafactor": "adafactor"}),
    ("`AdamWScheduleFree`, `RAdamScheduleFree`, `SGDScheduleFree` (current sd-scripts)",
     "`optimizer=adamw_schedulefree`, `radam_schedulefree`, `sgd_schedulefree`",
     "schedulefree (only `scheduler=constant`)",
     {"AdamWScheduleFree": "adamw_schedulefree", "RAdamScheduleFree": "radam_schedulefree",
      "SGDScheduleFree": "sgd_schedulefree", "schedulefree.AdamWScheduleFree": "adamw_schedulefree",
      "schedulefree.RAdamScheduleFree": "radam_schedulefree", "schedulefree.SGDScheduleFree": "sgd_schedulefree"}),
    ("`prodigyplus.ProdigyPlusScheduleFree`", "`optimizer=prodigy_schedulefree`",
     "prodigy-plus-schedule-free (only `scheduler=constant`)",
     {"prodigyplus.ProdigyPlusScheduleFree": "prodigy_schedulefree"}),
    ("`pytorch_optimizer.CAME`, `pytorch_optimizer.ADOPT`", "`optimizer=came`, `adopt`", "pytorch-optimizer",
     {"pytorch_optimizer.CAME": "came", "pytorch_optimizer.ADOPT": "adopt"}),
    ("— (OneTrainer, SimpleTuner)", "`optimizer=muon`", "pytorch-optimizer's Muon, AdamW for non-matrix parameters",
     {}),
    ("— (bf16 AdamW with Kahan summation)", "`optimizer=adamw_kahan`", "torch-optimi (`kahan_sum`)", {}),
    ("`torch.optim.RAdam`, `pkg.module.Class`", "`optimizer=custom optimizer._target_=torch.optim.RAdam`",
     "any class taking the parameter groups first", {}),
)  # fmt: skip

#: GUI LoRA type → the ``network=`` option (the last four are the kohya_ss GUI's types after v21.8.8).
NETWORK_TYPES: dict[str, str] = {
    "Standard": "lora", "Kohya LoCon": "locon", "LyCORIS/LoCon": "lycoris_locon", "LoCon": "lycoris_locon",
    "LyCORIS/LoHa": "loha", "LyCORIS/LoKr": "lokr", "LyCORIS/iA3": "ia3", "LyCORIS/DyLoRA": "lycoris_dylora",
    "Kohya DyLoRA": "dylora", "LoRA-FA": "lora_fa", "LyCORIS/Diag-OFT": "oft", "LyCORIS/BOFT": "boft",
    "LyCORIS/GLoRA": "glora", "LyCORIS/Native Fine-Tuning": "full",
}  # fmt: skip

#: sd-scripts' ``networks.*`` modules and LyCORIS's ``algo`` (``--network_module lycoris.kohya``) → ``network=``;
#: an algo that is not here is taken as the option of that name (``loha``, ``lokr``, ``ia3``, ``boft``, ``glora``, …).
NETWORK_MODULES: dict[str, str] = {"networks.lora": "lora", "networks.dylora": "dylora", "networks.lora_fa": "lora_fa"}
LYCORIS_ALGOS: dict[str, str] = {
    "lora": "lycoris_locon", "locon": "lycoris_locon", "dylora": "lycoris_dylora", "diag-oft": "oft",
}  # fmt: skip


def option_map() -> dict[str, str]:
    """kohya option → target (dotted sdlora key or ``@rule``) over every row."""
    out: dict[str, str] = {}
    for row in ROWS:
        out |= row.maps
    return out


def optimizer_map() -> dict[str, str]:
    """kohya ``optimizer_type`` (lower case) → sdlora ``optimizer=`` option."""
    return {k.lower(): v for *_, names in OPTIMIZERS for k, v in names.items()}


def _table(header: tuple[str, str, str], rows) -> str:
    lines = [f"| {' | '.join(header)} |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |".replace("|  |", "| |") for a, b, c in rows]
    return "\n".join(lines)


def markdown() -> str:
    """README's kohya table (between its ``kohya-table`` markers)."""
    return _table(("kohya (sd-scripts / kohya_ss)", "sdlora", "notes"), ((r.kohya, r.sdlora, r.notes) for r in ROWS))


def optimizer_markdown() -> str:
    """README's optimizer table (between its ``optimizer-table`` markers)."""
    return _table(("kohya `optimizer_type`", "sdlora", "class"), ((a, b, c) for a, b, c, _ in OPTIMIZERS))
