"""The ``@rule`` mappings of :mod:`sdlora.tools.kohya_options`: kohya options whose sdlora form depends on other options
or on the kohya_ss GUI's own handling (which sd-scripts flags it passes for a field)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdlora.tools.kohya_optimizers import optimizer_map
from sdlora.tools.kohya_options import LYCORIS_ALGOS, NETWORK_MODULES, NETWORK_TYPES
from sdlora.tools.migrate_input import literal, split_args


@dataclass
class Override:
    """``key=value`` (``group``: a config-group choice such as ``model=sdxl``)."""

    key: str
    value: Any
    group: bool = False


@dataclass
class Context:
    options: dict[str, Any]
    kind: str  # "gui" | "toml" | "cli"
    conf: Path
    model: str | None = None
    network: str = "lora"
    scheduler: str | None = None
    unsupported: dict[str, str] = field(default_factory=dict)
    not_yet: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prompt_text: str | None = None  # the GUI's sample prompts, typed into its box rather than given as a file

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)

    def has_option(self, group: str, option: str) -> bool:
        return (self.conf / group / f"{option}.yaml").is_file()

    def group_keys(self, group: str, option: str) -> set[str]:
        from omegaconf import OmegaConf

        path = self.conf / group / f"{option}.yaml"
        return set(OmegaConf.load(path).keys()) if path.is_file() else set()


def is_set(value: Any) -> bool:
    """Whether an option holds a value (the GUI writes "" / 0 / false for fields left empty)."""
    if value is None or value is False or value == [] or value == {}:
        return False
    return str(value).strip().lower() not in ("", "none", "false", "0", "0.0")


def number(value: Any) -> Any:
    """ "1e-4" → 0.0001, "8" → 8; other values as they are."""
    if isinstance(value, str):
        parsed = literal(value.strip())
        return parsed if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) else value
    return value


def flag(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


RULES: dict[str, Callable[[Context], list[Override]]] = {}


def rule(*names: str):
    def register(func):
        for name in names:
            RULES[name] = func
        return func

    return register


def other_architecture(ctx: Context) -> str | None:
    """The model a config is for when it is none of SD 1.x, 2.x and SDXL (the later kohya_ss GUI trains Flux.1 and
    SD3 too: its checkboxes, LoRA type and network modules say so, and both read a T5-XXL encoder)."""
    module = str(ctx.get("network_module") or "")
    if flag(ctx.get("flux1_checkbox")) or str(ctx.get("LoRA_type") or "").startswith("Flux") or "flux" in module:
        return "Flux.1"
    if flag(ctx.get("sd3_checkbox")) or "sd3" in module:
        return "SD3"
    return "a model with a T5-XXL text encoder (t5xxl)" if is_set(ctx.get("t5xxl")) else None


@rule("family")
def family(ctx: Context) -> list[Override]:
    from sdlora.errors import SdloraError

    other = other_architecture(ctx)
    if other is not None:
        raise SdloraError(f"this config trains {other}; sdlora trains LoRAs for SD 1.x, 2.x and SDXL only")
    v2, sdxl, v_param = flag(ctx.get("v2")), flag(ctx.get("sdxl")), flag(ctx.get("v_parameterization"))
    model = ctx.model or ("sdxl" if sdxl else "sd2_v" if v2 and v_param else "sd2" if v2 else "sd15")
    ctx.model = model
    out = [Override("model", model, group=True)]
    if v_param and model != "sd2_v":
        out.append(Override("model.v_parameterization", True))
    return out


@rule("clip_skip")
def clip_skip(ctx: Context) -> list[Override]:
    value = int(number(ctx.get("clip_skip")) or 1)
    if value > 1 and "xl" in (ctx.model or ("sdxl" if flag(ctx.get("sdxl")) else "")):
        ctx.notes.append(f"clip_skip={value} is ignored for SDXL (as kohya)")
        return []
    return [Override("model.clip_skip", value)] if value > 1 else []


@rule("max_token_length")
def max_token_length(ctx: Context) -> list[Override]:
    value = int(number(ctx.get("max_token_length")) or 75)
    return [Override("model.max_token_length", value)] if value > 75 else []


@rule("attention")
def attention(ctx: Context) -> list[Override]:
    """kohya's priority: mem_eff_attn (torch's SDPA does what it does) > xformers > sdpa; the GUI's "none"."""
    choice = ctx.get("xformers")
    if flag(ctx.get("mem_eff_attn")):
        ctx.notes.append("mem_eff_attn: model.attention=sdpa (torch's fused memory-efficient attention)")
        return [Override("model.attention", "sdpa")]
    if choice is True or str(choice).lower() == "xformers":
        return [Override("model.attention", "xformers")]
    if flag(ctx.get("sdpa")) or str(choice).lower() == "sdpa":
        return [Override("model.attention", "sdpa")]
    if str(choice).lower() == "none":
        return [Override("model.attention", "none")]
    return []


@rule("persistent_workers")
def persistent_workers(ctx: Context) -> list[Override]:
    return [Override("data.persistent_workers", flag(ctx.get("persistent_data_loader_workers")))]


@rule("logger")
def logger(ctx: Context) -> list[Override]:
    """log_with / use_wandb → logger=wandb with its run name and project; one logger at a time in sdlora."""
    log_with = str(ctx.get("log_with") or "").lower()
    if is_set(ctx.get("wandb_api_key")):
        ctx.notes.append("wandb_api_key: set WANDB_API_KEY in the environment (sdlora writes no keys into configs)")
    if not (flag(ctx.get("use_wandb")) or log_with in ("wandb", "all")):
        return []
    if log_with == "all":
        ctx.notes.append("log_with=all: sdlora logs to one logger; logger=wandb is chosen")
    out = [Override("logger", "wandb", group=True)]
    if is_set(ctx.get("wandb_run_name")):
        out.append(Override("logger.name", str(ctx.get("wandb_run_name"))))
    if is_set(ctx.get("log_tracker_name")):
        out.append(Override("logger.project", str(ctx.get("log_tracker_name"))))
    return out


@rule("dynamo_backend")
def dynamo_backend(ctx: Context) -> list[Override]:
    """accelerate's ``no`` (the GUI's default) means no compilation: nothing to set."""
    backend = str(ctx.get("dynamo_backend")).lower()
    return [Override("model.compile_backend", backend)] if backend not in ("no", "none", "") else []


def network_type(ctx: Context) -> str:
    """The sdlora network option of the GUI's LoRA type or sd-scripts' network module (+ algo)."""
    if is_set(ctx.get("LoRA_type")):
        return NETWORK_TYPES.get(str(ctx.get("LoRA_type")), str(ctx.get("LoRA_type")))
    module = str(ctx.get("network_module") or "networks.lora")
    if module == "lycoris.kohya":
        algo = str(ctx.get("algo") or "lora").lower()
        return LYCORIS_ALGOS.get(algo, algo)
    base = NETWORK_MODULES.get(module, module)
    return "locon" if base == "lora" and is_set(ctx.get("conv_dim")) else base


@rule("network_type")
def network(ctx: Context) -> list[Override]:
    wanted = network_type(ctx)
    if ctx.has_option("network", wanted):
        ctx.network = wanted
    else:
        source = (
            f"LoRA type {ctx.get('LoRA_type')}"
            if is_set(ctx.get("LoRA_type"))
            else (
                f"network_module {ctx.get('network_module')}" + (f", algo {ctx.get('algo')}" if ctx.get("algo") else "")
            )
        )
        ctx.not_yet.append(f"network={wanted} ({source}): the command trains network=lora meanwhile")
    return [Override("network", ctx.network, group=True)] if ctx.network != "lora" else []


def network_info(ctx: Context):
    """The network type's facts (:mod:`sdlora.network.types`), or None for a type sdlora does not have."""
    from sdlora.config.schema import NetworkType
    from sdlora.network.types import TYPES

    return TYPES[NetworkType(ctx.network)] if ctx.network in {t.value for t in NetworkType} else None


@rule("conv")
def conv(ctx: Context) -> list[Override]:
    """``conv_dim``/``conv_alpha``: Kohya LoCon's (default 4 and 1), or the optional conv rank of the other types that
    train 3×3 convs (Kohya DyLoRA, LoRA-FA, the LyCORIS types)."""
    info = network_info(ctx)
    if info is None or info.conv == "never" or (ctx.network != "locon" and not is_set(ctx.get("conv_dim"))):
        return []
    out = [Override("network.conv_rank", int(number(ctx.get("conv_dim") or 4)))]
    if is_set(ctx.get("conv_alpha")) or (ctx.network == "locon" and ctx.get("conv_alpha") is not None):
        out.append(Override("network.conv_alpha", float(number(ctx.get("conv_alpha")))))
    return out


#: kohya (network_args) and kohya_ss GUI names of the per-type network options → sdlora's ``network.`` keys.
NETWORK_OPTIONS = {
    "unit": "unit", "block_size": "block_size", "use_cp": "use_tucker", "use_tucker": "use_tucker",
    "LyCORIS_preset": "preset", "preset": "preset", "use_scalar": "use_scalar",
    "rank_dropout_scale": "rank_dropout_scale", "train_norm": "train_norm", "bypass_mode": "bypass_mode",
    "rs_lora": "rs_lora", "dora_wd": "weight_decompose", "wd_on_output": "wd_on_output", "factor": "factor",
    "decompose_both": "decompose_both", "constrain": "constraint", "constraint": "constraint",
    "rescaled": "rescaled", "train_on_input": "train_on_input",
}  # fmt: skip


@rule("network_options")
def network_options(ctx: Context) -> list[Override]:
    """The options of the chosen type (LyCORIS's network_args, Kohya DyLoRA's unit) that differ from sdlora's
    defaults; the GUI keeps every type's fields in its file, so only those the type reads are carried over (the
    GUI's "unit" is LyCORIS DyLoRA's ``block_size``)."""
    from sdlora.config.frozen import thaw
    from sdlora.config.schema import NetworkConfig

    info = network_info(ctx)
    if info is None:
        return []
    defaults, out = NetworkConfig(), {}
    for name, key in NETWORK_OPTIONS.items():
        if name == "unit" and ctx.network == "lycoris_dylora":
            key = "block_size"
        value = ctx.get(name)
        if key not in info.options or value is None or str(value).strip() == "":
            continue
        value = number(value)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if value != thaw(getattr(defaults, key)):
            out[key] = Override(f"network.{key}", value)
    return list(out.values())


@rule("unet_only")
def unet_only(ctx: Context) -> list[Override]:
    return [Override("network.train_text_encoder", False)] if flag(ctx.get("network_train_unet_only")) else []


@rule("text_encoder_only")
def text_encoder_only(ctx: Context) -> list[Override]:
    return [Override("network.train_unet", False)] if flag(ctx.get("network_train_text_encoder_only")) else []


@rule("lrs")
def lrs(ctx: Context) -> list[Override]:
    """sd-scripts: each lr as given (0 drops the group). The GUI: both set → both; one of them 0 → that side is not
    trained at all (it passes --network_train_*_only); both 0 → learning_rate only."""
    te, unet = ctx.get("text_encoder_lr"), ctx.get("unet_lr")
    if ctx.kind != "gui":
        out = [] if unet in (None, "") else [Override("network.unet_lr", number(unet))]
        if te not in (None, ""):
            value = [number(v) for v in te] if isinstance(te, list) else number(te)
            out.append(Override("network.text_encoder_lr", value[0] if isinstance(value, list) and len(value) == 1
                                else value))  # fmt: skip
        return out
    te_v, unet_v = float(number(te) or 0), float(number(unet) or 0)
    if te_v and unet_v:
        return [Override("network.text_encoder_lr", te_v), Override("network.unet_lr", unet_v)]
    if te_v:
        return [Override("network.text_encoder_lr", te_v), Override("network.train_unet", False)]
    if unet_v:
        return [Override("network.unet_lr", unet_v), Override("network.train_text_encoder", False)]
    return []


@rule("always")
def always(ctx: Context) -> list[Override]:
    if flag(ctx.get("dim_from_weights")):
        ctx.notes.append("dim_from_weights: sdlora always takes ranks and alphas from network.weights")
    return []


@rule("block_lr")
def block_lr(ctx: Context) -> list[Override]:
    from sdlora.network.blocks import kohya_block_lr_weight

    def values(key: str):
        value = ctx.get(key)
        if not is_set(value):
            return None
        text = str(value).strip()
        return text if text[0].isalpha() else [float(v) for v in text.strip("[]()").split(",") if v.strip()]

    sdxl = "xl" in (ctx.model or ("sdxl" if flag(ctx.get("sdxl")) else ""))
    threshold = float(number(ctx.get("block_lr_zero_threshold")) or 0.0) if is_set(ctx.get("block_lr_zero_threshold")) \
        else 0.0  # fmt: skip
    weights = kohya_block_lr_weight(values("down_lr_weight"), values("mid_lr_weight"), values("up_lr_weight"),
                                    threshold, sdxl)  # fmt: skip
    return [Override("network.block_lr_weight", weights)] if weights is not None else []


@rule("list")
def block_lists(ctx: Context) -> list[Override]:
    out = []
    for key in ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas"):
        if is_set(ctx.get(key)):
            kind = int if key.endswith("dims") else float
            out.append(Override(f"network.{key}", [kind(number(v)) for v in str(ctx.get(key)).strip("[]").split(",")]))
    return out


@rule("optimizer")
def optimizer(ctx: Context) -> list[Override]:
    name = ctx.get("optimizer_type") or ctx.get("optimizer")
    if flag(ctx.get("use_8bit_adam")):
        name = name or "AdamW8bit"
    if flag(ctx.get("use_lion_optimizer")):
        name = name or "Lion"
    if not is_set(name):
        return []
    option = optimizer_map().get(str(name).lower())
    if option:
        return [Override("optimizer", option, group=True)]
    if "." in str(name):
        return [Override("optimizer", "custom", group=True), Override("optimizer._target_", str(name))]
    ctx.unsupported["optimizer_type"] = f"{name} is not an optimizer sdlora knows"
    return []


def _plus(prefix: str, args: dict[str, Any]) -> list[Override]:
    return [Override(f"++{prefix}.{k}", list(v) if isinstance(v, tuple) else v) for k, v in args.items()]


@rule("optimizer_args")
def optimizer_args(ctx: Context) -> list[Override]:
    return _plus("optimizer", split_args(ctx.get("optimizer_args")))
