"""Value and combination checks of ``ema.*`` and ``save.best_by`` (part of the one validation pass)."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from sdlora.config.schema import EMAConfig

BEST_METRICS = ("val/loss", "val/loss_ema")
MAX_SIGMA_REL = (1 / 12) ** 0.5  # σ_rel of the flattest power-function profile (γ → −1)


def check_ema(cfg: DictConfig, problems: list[str]) -> None:
    ema = cfg.ema
    if not ema.enabled:
        values, defaults = (OmegaConf.to_container(c) for c in (ema, OmegaConf.structured(EMAConfig)))
        changed = [key for key, value in values.items() if key != "enabled" and value != defaults[key]]
        if changed:
            problems.append(f"ema.{changed[0]} is set but the EMA is off: add ema=default (the EMA's config group)")
        return
    if not 0 <= ema.decay < 1:
        problems.append(f"ema.decay must be in [0, 1) (e.g. 0.999), got {ema.decay}")
    if ema.power is not None and ema.power <= 0:
        problems.append(f"ema.power must be > 0 (e.g. 0.75) or null for a constant decay, got {ema.power}")
    if ema.inv_gamma <= 0:
        problems.append(f"ema.inv_gamma must be > 0, got {ema.inv_gamma}")
    for key in ("every_n_steps", "snapshot_every"):
        if ema[key] < 1:
            problems.append(f"ema.{key} must be ≥ 1, got {ema[key]}")
    if ema.posthoc:
        sigmas = list(ema.posthoc_sigma_rels)
        if len(sigmas) < 1 or any(not 0 < s < MAX_SIGMA_REL for s in sigmas):
            problems.append(f"ema.posthoc_sigma_rels must be one or more values in (0, {MAX_SIGMA_REL:.3f}) (e.g. "
                            f"[0.05, 0.10]), got {sigmas}")  # fmt: skip
        elif len(set(sigmas)) != len(sigmas):
            problems.append(f"ema.posthoc_sigma_rels must differ from each other, got {sigmas}")


def check_best(cfg: DictConfig, problems: list[str]) -> None:
    best = cfg.save.best_by
    if best is None:
        return
    if best not in BEST_METRICS:
        problems.append(f"save.best_by must be one of {', '.join(BEST_METRICS)} (or null), got {best!r}")
        return
    if not (cfg.validation.dir or cfg.validation.split):
        problems.append(f"save.best_by={best} needs validation images: set validation.dir or validation.split (and "
                        "validation.every_n_steps to compare during training)")  # fmt: skip
    ema = cfg.ema
    if best == "val/loss_ema" and not (ema.enabled and ema.use_for_eval):
        problems.append("save.best_by=val/loss_ema needs ema=default with ema.use_for_eval=true (which logs it)")
