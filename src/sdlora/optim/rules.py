"""kohya's optimizer-dependent rules (docs/kohya.md §10.1).

Applied once, where the config is resolved (:mod:`sdlora.config.resolve`):

- :func:`resolve_schedule` — Adafactor with ``relative_step`` (its default; ``warmup_init`` forces it) sets its own
  step size: the schedule becomes ``scheduler=adafactor`` (with a warning when another one was chosen) whose
  ``initial_lr`` is ``optimizer.lr``, and ``network.unet_lr`` / ``network.text_encoder_lr`` are ignored.
- :func:`optimizer_notes` — warnings only: Adafactor with a fixed lr (kohya's hints: no gradient clipping,
  constant_with_warmup, clip_threshold 1.0); D-Adaptation and Prodigy with ``optimizer.lr`` ≤ 0.1 (use about 1.0),
  Prodigy with 16-bit LoRA parameters (docs/design.md §5.3); a torch optimizer's ``eps`` that is 0 in float16
  (full_fp16); paged bitsandbytes optimizers without CUDA.
- :func:`adaptive_lr_problems` — a config error: D-Adaptation/Prodigy with different lrs in their groups.
- :func:`combination_problems` — config errors: a schedule-free optimizer with a scheduler other than ``constant``
  (it replaces the schedule), or with EMA (its evaluation point is already an average); Kahan summation
  (``optimizer=adamw_kahan``) together with ``precision.stochastic_rounding`` (both keep small bf16 updates; the
  latter runs the step on float32 copies, where Kahan summation does nothing).

:func:`check_optimizer_runs` tries one step of a bitsandbytes optimizer on the training device before the model is
loaded, so that a build without support for it stops with a message naming the option instead of a traceback from
the first training step.

The open ``optimizer`` / ``scheduler`` nodes are read by key (``node["lr"]``), so these functions take the composed
node as well as the resolved (plain) one.
"""

from __future__ import annotations

import warnings
from typing import Any

from sdlora.errors import SdloraError
from sdlora.optim.adafactor import uses_relative_step
from sdlora.optim.factory import instantiate_partial, rule_name

ADAPTIVE_PACKAGES = ("dadaptation", "prodigyopt")
#: Prodigy variants whose lr is a multiplier too, but that adapt each group on its own (different lrs are fine).
MULTIPLIER_PACKAGES = ("prodigyplus",)
ADAFACTOR_SCHEDULER = "sdlora.optim.schedulers.adafactor"
CONSTANT_SCHEDULER = "sdlora.optim.schedulers.constant"


def is_adaptive(class_name: str) -> bool:
    """D-Adaptation or Prodigy (they keep the adapted step size ``d`` in their param groups)."""
    return class_name.split(".", 1)[0] in ADAPTIVE_PACKAGES


def is_adafactor(class_name: str) -> bool:
    return class_name.startswith("transformers.") and class_name.endswith(".Adafactor")


def is_bitsandbytes(class_name: str) -> bool:
    return class_name.startswith("bitsandbytes.")


def adafactor_relative_step(node: Any) -> bool:
    """Whether an Adafactor node computes its own step size (relative_step, or warmup_init which forces it)."""
    return uses_relative_step(node.get("relative_step", True), node.get("warmup_init", False))


def uses_relative_step_schedule(optimizer: Any) -> bool:
    """Adafactor with a relative step: the run uses ``scheduler=adafactor`` whatever was chosen."""
    return is_adafactor(rule_name(optimizer)) and adafactor_relative_step(optimizer)


def resolve_schedule(optimizer: Any, scheduler: Any) -> tuple[dict[str, Any] | None, list[str]]:
    """The scheduler node the run uses instead of ``scheduler`` (None: keep it), and the warning saying so."""
    if not uses_relative_step_schedule(optimizer):
        return None, []
    notes = []
    if scheduler["_target_"] != ADAFACTOR_SCHEDULER:
        notes.append(
            f"optimizer=adafactor with relative_step=true computes its own step size: scheduler "
            f"{scheduler['_target_']} is replaced by scheduler=adafactor, as kohya does (set "
            "optimizer.relative_step=false to use a schedule)"
        )
    initial = scheduler.get("initial_lr") if scheduler["_target_"] == ADAFACTOR_SCHEDULER else None
    replacement = {"_target_": ADAFACTOR_SCHEDULER, "_partial_": True,
                   "initial_lr": optimizer["lr"] if initial is None else initial}  # fmt: skip
    return replacement, notes


def scheduler_in_effect(optimizer: Any, scheduler: Any) -> Any:
    """The schedule the run will use (see :func:`resolve_schedule`)."""
    replacement, _ = resolve_schedule(optimizer, scheduler)
    return scheduler if replacement is None else replacement


def optimizer_notes(cfg: Any, device_type: str) -> list[str]:
    """The warnings of kohya's optimizer rules for a (composed or resolved) config on ``device_type``."""
    name = rule_name(cfg.optimizer)
    lora_dtype = cfg.precision.lora_dtype
    notes: list[str] = []
    if is_adafactor(name):
        notes += _adafactor_notes(cfg)
    if is_adaptive(name) or name.split(".", 1)[0] in MULTIPLIER_PACKAGES:
        notes += _adaptive_notes(cfg, name, lora_dtype)
    notes += _kahan_notes(cfg.optimizer, name, lora_dtype)
    short = name.rsplit(".", 1)[-1]
    if is_bitsandbytes(name) and short.startswith("Paged") and device_type != "cuda":
        notes.append(
            f"{short} keeps its state in paged memory, which needs a CUDA GPU: on {device_type} bitsandbytes uses the "
            f"non-paged {short.removeprefix('Paged')} instead"
        )
    notes += float16_eps_notes(cfg.optimizer, name, lora_dtype)
    return notes


FLOAT16_TINY = 2.0**-24  # the smallest positive float16 (subnormal): smaller values round to 0


def float16_eps_notes(node: Any, name: str, lora_dtype: str) -> list[str]:
    """A torch optimizer keeps its state in the parameters' dtype: with float16 LoRA parameters (full_fp16) an
    ``eps`` below 2⁻²⁴ is 0 there, so Adam's ``m / (√v + eps)`` divides by 0 wherever a gradient's square underflows
    (|g| < 2⁻¹²), and the weights become inf/NaN. bitsandbytes computes in float32 and is not affected."""
    eps = node.get("eps")
    if lora_dtype != "float16" or is_bitsandbytes(name) or not isinstance(eps, float) or eps >= FLOAT16_TINY:
        return []
    short = name.rsplit(".", 1)[-1]
    return [
        f"{short} with float16 LoRA parameters (precision=full_fp16): optimizer.eps={eps:g} is 0 in float16, so "
        "steps on gradients smaller than about 2.4e-4 divide by zero and the LoRA becomes NaN. Use optimizer=adamw8bit "
        "(kohya's usual choice with full_fp16), precision=fp16_mixed, or optimizer.eps=1e-4"
    ]


def _adafactor_notes(cfg: Any) -> list[str]:
    optimizer, scheduler = cfg.optimizer, cfg.scheduler
    if adafactor_relative_step(optimizer):
        ignored = [k for k in ("unet_lr", "text_encoder_lr") if getattr(cfg.network, k) is not None]
        if not ignored:
            return []
        return [
            f"optimizer=adafactor with relative_step=true uses one step size for all parameters: "
            f"{', '.join('network.' + k for k in ignored)} ignored (kohya)"
        ]
    notes = []
    if (cfg.trainer.gradient_clip_val or 0) > 0:
        notes.append(
            "optimizer=adafactor with a fixed lr: trainer.gradient_clip_val is set, so gradients are clipped "
            "(kohya suggests trainer.gradient_clip_val=0)"
        )
    if not str(scheduler["_target_"]).endswith(".constant_with_warmup"):
        notes.append("optimizer=adafactor with a fixed lr: kohya suggests scheduler=constant_with_warmup")
    if optimizer.get("clip_threshold", 1.0) != 1.0:
        notes.append("optimizer=adafactor: kohya suggests optimizer.clip_threshold=1.0")
    return notes


def first_group_lr(cfg: Any) -> float:
    """The lr of the first optimizer group: the text encoder's when it is trained, else the U-Net's."""
    network, default = cfg.network, cfg.optimizer["lr"]
    if network.train_text_encoder and network.text_encoder_lr != 0:
        return default if network.text_encoder_lr is None else network.text_encoder_lr
    return default if network.unet_lr is None else network.unet_lr


def adaptive_lr_problems(cfg: Any) -> list[str]:
    """D-Adaptation and Prodigy refuse different lrs in their groups (0 excepted): a config error, found early."""
    if not is_adaptive(rule_name(cfg.optimizer)):
        return []
    network, default = cfg.network, cfg.optimizer["lr"]
    lrs = {}
    if network.train_unet:
        lrs["network.unet_lr"] = default if network.unet_lr is None else network.unet_lr
    if network.train_text_encoder:
        lrs["network.text_encoder_lr"] = default if network.text_encoder_lr is None else network.text_encoder_lr
    used = {lr for lr in lrs.values() if lr > 0}
    if len(used) > 1:
        values = ", ".join(f"{k}={v}" for k, v in lrs.items())
        return [
            f"optimizer {cfg.optimizer['_target_']} adapts one step size for all parameters and needs the same lr in "
            f"every group, but {values} (set only optimizer.lr, or 0 to freeze a side)"
        ]
    return []


def uses_kahan_sum(node: Any, name: str | None = None) -> bool:
    """torch-optimi's optimizers with ``kahan_sum`` set (``optimizer=adamw_kahan``)."""
    name = name or rule_name(node)
    return name.startswith("optimi.") and bool(node.get("kahan_sum"))


def _kahan_notes(node: Any, name: str, lora_dtype: str) -> list[str]:
    if not uses_kahan_sum(node, name) or lora_dtype not in ("float32", "float64"):
        return []
    return [f"optimizer.kahan_sum acts on 16-bit LoRA parameters only (precision=full_bf16); with {lora_dtype} LoRA "
            "parameters it is a plain AdamW"]  # fmt: skip


def combination_problems(cfg: Any) -> list[str]:
    """Optimizer options that cannot be combined with the scheduler, EMA or the precision (see the module
    docstring)."""
    from sdlora.optim.schedule_free import is_schedule_free_class

    name = rule_name(cfg.optimizer)
    problems = []
    if is_schedule_free_class(name):
        short = name.rsplit(".", 1)[-1]
        if str(cfg.scheduler["_target_"]) != CONSTANT_SCHEDULER:
            problems.append(
                f"{short} is schedule-free: it replaces the learning-rate schedule, so scheduler="
                f"{str(cfg.scheduler['_target_']).rsplit('.', 1)[-1]} cannot be used with it; use scheduler=constant "
                "(warm up with optimizer.warmup_steps)"
            )
        if cfg.ema.enabled:
            problems.append(
                f"{short} is schedule-free: the weights it evaluates and saves are already an average of its "
                "iterates; ema=… cannot be combined with it (choose one)"
            )
    if uses_kahan_sum(cfg.optimizer, name) and cfg.precision.stochastic_rounding:
        problems.append(
            "optimizer.kahan_sum and precision.stochastic_rounding both keep small bf16 updates and cannot be "
            "combined (stochastic rounding runs the step on float32 copies, where Kahan summation does nothing); "
            "choose one"
        )
    return problems


def _adaptive_notes(cfg: Any, name: str, lora_dtype: str) -> list[str]:
    notes = []
    short = name.rsplit(".", 1)[-1]
    lr = first_group_lr(cfg)
    if lr <= 0.1:
        notes.append(
            f"{short} adapts its step size: the learning rate is a multiplier, set optimizer.lr around 1.0 "
            f"(got lr={lr})"
        )
    if name.startswith("prodigyopt.") and lora_dtype != "float32":
        notes.append(
            f"{short} with {lora_dtype} LoRA parameters is slow and its step-size estimate warms up badly; "
            "precision=bf16_mixed keeps the LoRA parameters in float32"
        )
    return notes


def check_optimizer_runs(node: Any, device_type: str) -> None:
    """A bitsandbytes optimizer: one step on a stand-in parameter large enough for 8-bit state (≥ 4096 elements) on
    the training device; a build that cannot run it is an :class:`SdloraError` naming the option."""
    name = rule_name(node)
    if not is_bitsandbytes(name):
        return
    import torch

    short = name.rsplit(".", 1)[-1]
    param = torch.nn.Parameter(torch.ones(64, 128, device=device_type))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer = instantiate_partial(node)([{"params": [param], "lr": node["lr"]}])
            param.grad = torch.full_like(param, 1e-3)
            optimizer.step()
    except Exception as exc:
        import bitsandbytes

        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdloraError(
            f"optimizer {node['_target_']} ({short}) cannot run on {device_type} with bitsandbytes "
            f"{bitsandbytes.__version__}: {reason}. Update bitsandbytes or choose an optimizer without it "
            "(optimizer=adamw, optimizer=lion, …)"
        ) from exc
