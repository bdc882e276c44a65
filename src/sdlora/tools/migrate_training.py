"""The ``@rule`` mappings of schedule, precision, loss, data, length, saving and sampling options (the model and
network ones: :mod:`sdlora.tools.migrate_rules`)."""

from __future__ import annotations

from pathlib import Path

from sdlora.tools.migrate_input import split_args
from sdlora.tools.migrate_rules import Context, Override, _plus, flag, is_set, number, rule

SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "cosine_with_min_lr", "warmup_stable_decay", "adafactor")  # fmt: skip


@rule("scheduler")
def scheduler(ctx: Context) -> list[Override]:
    custom = str(ctx.get("lr_scheduler_type") or "").strip()
    if is_set(custom):
        ctx.scheduler = "custom"
        target = custom if "." in custom else f"torch.optim.lr_scheduler.{custom}"  # sd-scripts' module for a bare name
        return [Override("scheduler", "custom", group=True), Override("scheduler._target_", target)]
    name = str(ctx.get("lr_scheduler") or "constant").lower()
    if name.startswith("adafactor"):
        name = "adafactor"
    if name == "constant" and (is_set(ctx.get("lr_warmup_steps")) or _gui_warmup(ctx)):
        ctx.notes.append("lr_scheduler=constant with a warm-up: sdlora uses constant_with_warmup (kohya refuses it)")
        name = "constant_with_warmup"
    if name not in SCHEDULERS or not ctx.has_option("scheduler", name):
        ctx.unsupported["lr_scheduler"] = f"{name} is not a schedule sdlora has"
        return []
    ctx.scheduler = name
    return [Override("scheduler", name, group=True)] if name != "constant" else []


def _gui_warmup(ctx: Context) -> bool:
    adafactor = str(ctx.get("optimizer") or "").lower() == "adafactor"
    return ctx.kind == "gui" and is_set(ctx.get("lr_warmup")) and not adafactor  # the GUI zeroes it for Adafactor


#: sd-scripts' defaults of the schedule options: a value equal to one says nothing, so its leaving out is not noted.
SCHEDULE_DEFAULTS = {"num_cycles": 1, "power": 1.0}


def _scheduler_key(ctx: Context, key: str, value, option: str) -> list[Override]:
    if key in ctx.group_keys("scheduler", ctx.scheduler or "constant"):
        return [Override(f"scheduler.{key}", value)]
    if value != SCHEDULE_DEFAULTS.get(key):
        ctx.notes.append(f"{option} does not apply to lr_scheduler={ctx.scheduler or 'constant'}: left out")
    return []


@rule("warmup")
def warmup(ctx: Context) -> list[Override]:
    if is_set(ctx.get("lr_warmup_steps")):
        return _scheduler_key(ctx, "warmup_steps", number(ctx.get("lr_warmup_steps")), "lr_warmup_steps")
    if _gui_warmup(ctx):  # the GUI's percentage of the steps
        return _scheduler_key(ctx, "warmup_steps", float(number(ctx.get("lr_warmup"))) / 100, "lr_warmup")
    return []


@rule("cycles")
def cycles(ctx: Context) -> list[Override]:
    value = ctx.get("lr_scheduler_num_cycles")
    if not is_set(value) and ctx.kind == "gui" and ctx.scheduler == "cosine_with_restarts":
        value = ctx.get("epoch")  # the GUI passes its epochs when the field is empty
    return _scheduler_key(ctx, "num_cycles", int(number(value)), "lr_scheduler_num_cycles") if is_set(value) else []


@rule("power")
def power(ctx: Context) -> list[Override]:
    value = ctx.get("lr_scheduler_power")
    return _scheduler_key(ctx, "power", float(number(value)), "lr_scheduler_power") if is_set(value) else []


@rule("scheduler_args")
def scheduler_args(ctx: Context) -> list[Override]:
    return _plus("scheduler", split_args(ctx.get("lr_scheduler_args")))


@rule("precision")
def precision(ctx: Context) -> list[Override]:
    if flag(ctx.get("full_bf16")):
        return [Override("precision", "full_bf16", group=True)]
    if flag(ctx.get("full_fp16")):
        return [Override("precision", "full_fp16", group=True)]
    mixed = {"fp16": "fp16_mixed", "bf16": "bf16_mixed"}.get(str(ctx.get("mixed_precision") or "no").lower())
    return [Override("precision", mixed, group=True)] if mixed else []


@rule("timestep")
def timestep(ctx: Context) -> list[Override]:
    out = []
    low, high = int(number(ctx.get("min_timestep") or 0)), int(number(ctx.get("max_timestep") or 1000))
    if low != 0:
        out.append(Override("loss.min_timestep", low))
    if high != 1000:
        out.append(Override("loss.max_timestep", high))
    return out


@rule("noise")
def noise(ctx: Context) -> list[Override]:
    """The GUI's ``noise_offset_type`` picks which kind it passes (Original: offset and adaptive scale; Multires)."""
    kind = str(ctx.get("noise_offset_type") or "").lower()
    keys = {"noise_offset": "loss.noise_offset", "adaptive_noise_scale": "loss.adaptive_noise_scale",
            "multires_noise_iterations": "loss.multires_noise_iterations",
            "multires_noise_discount": "loss.multires_noise_discount"}  # fmt: skip
    if ctx.kind == "gui" and kind:
        keep = (
            ("noise_offset", "adaptive_noise_scale")
            if kind == "original"
            else ("multires_noise_iterations", "multires_noise_discount")
        )
        keys = {k: v for k, v in keys.items() if k in keep}
    out = [Override(target, number(ctx.get(key))) for key, target in keys.items() if is_set(ctx.get(key))]
    if not any(o.key == "loss.multires_noise_iterations" for o in out):
        out = [o for o in out if o.key != "loss.multires_noise_discount"]
    return [Override(o.key, int(o.value) if o.key.endswith("iterations") else o.value) for o in out]


@rule("resolution")
def resolution(ctx: Context) -> list[Override]:
    value = ctx.get("resolution") if is_set(ctx.get("resolution")) else ctx.get("max_resolution")
    if not is_set(value):
        return []
    parts = [p.strip() for p in str(value).strip("()[] ").split(",") if p.strip()]
    text = parts[0] if len(parts) == 1 or len(set(parts)) == 1 else f"{parts[0]},{parts[1]}"
    return [Override("data.resolution", text)]


@rule("cache_latents")
def cache_latents(ctx: Context) -> list[Override]:
    if flag(ctx.get("cache_latents_to_disk")):
        return [Override("data.cache_latents", "disk")]
    return [Override("data.cache_latents", "memory")] if flag(ctx.get("cache_latents")) else []


@rule("steps")
def steps(ctx: Context) -> list[Override]:
    """``max_train_epochs`` replaces ``max_train_steps`` (kohya's CLI); the GUI's ``epoch`` counts when both are
    empty (the GUI computes the steps of that many epochs)."""
    epochs = ctx.get("max_train_epochs")
    if is_set(epochs):
        return [Override("trainer.max_epochs", int(number(epochs))), Override("trainer.max_steps", -1)]
    if is_set(ctx.get("max_train_steps")):
        return [Override("trainer.max_steps", int(number(ctx.get("max_train_steps"))))]
    if ctx.kind == "gui" and is_set(ctx.get("epoch")):
        return [Override("trainer.max_epochs", int(number(ctx.get("epoch")))), Override("trainer.max_steps", -1)]
    return []


@rule("save_precision")
def save_precision(ctx: Context) -> list[Override]:
    value = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}.get(str(ctx.get("save_precision")))
    if ctx.get("save_precision") and not value:
        ctx.unsupported["save_precision"] = f"{ctx.get('save_precision')} is none of float, fp16, bf16"
    return [Override("save.precision", value)] if value else []


@rule("save_model_as")
def save_model_as(ctx: Context) -> list[Override]:
    value = str(ctx.get("save_model_as") or "")
    if not value:
        return []
    if value in ("safetensors", "ckpt", "pt"):
        return [Override("save.format", value)]
    if value != "same as source model":
        ctx.unsupported["save_model_as"] = (f"{value}: sdlora saves safetensors, ckpt or pt (save.also_diffusers=true "
                                            "adds a diffusers-format copy)")  # fmt: skip
    return []


@rule("sample_prompts")
def sample_prompts(ctx: Context) -> list[Override]:
    raw = ctx.get("sample_prompts") or ""
    value = ("\n".join(map(str, raw)) if isinstance(raw, (list, tuple)) else str(raw)).strip()  # a TOML list: lines
    if not value:
        return []
    if Path(value).expanduser().is_file() or Path(value).suffix in (".txt", ".toml", ".json"):
        return [Override("sample.prompts", value)]
    ctx.prompt_text = value  # the GUI's text box (it writes it to <output_dir>/sample/prompt.txt): see migrate()
    return []


@rule("devices")
def devices(ctx: Context) -> list[Override]:
    count = int(number(ctx.get("num_processes")) or 1) if is_set(ctx.get("num_processes")) else 1
    if count > 1 or flag(ctx.get("multi_gpu")):
        return [Override("trainer", "ddp", group=True), Override("trainer.devices", max(count, 1))]
    return []


@rule("enable_bucket")
def enable_bucket(ctx: Context) -> list[Override]:
    """Buckets are on in sdlora (the GUI's default) but off in sd-scripts unless ``--enable_bucket`` is given."""
    return [Override("data.enable_bucket", flag(ctx.get("enable_bucket")))]


@rule("dataset_config")
def dataset_config(ctx: Context) -> list[Override]:
    from sdlora.tools.migrate_dataset import dataset_overrides

    if not is_set(ctx.get("dataset_config")):
        return []
    return dataset_overrides(ctx, Path(str(ctx.get("dataset_config"))).expanduser())


@rule("additional")
def additional(ctx: Context) -> list[Override]:
    return []  # read into the options before the rules run (sdlora.tools.migrate.collect)
