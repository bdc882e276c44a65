"""``trainer.memory_budget_gb``: whether the memory estimate (:mod:`sdlora.memory`) fits the budget, and when it does
not, which options would make it fit — each alone (16-bit frozen weights, gradient checkpointing, LyCORIS's bypass
mode, an 8-bit optimizer, a latent cache, cached text-encoder outputs, the largest smaller batch) or else the shortest
combination, re-estimated for each variant of the run's shape."""

from __future__ import annotations

import dataclasses
from typing import Any

from sdlora.memory import GB, MemoryEstimate, RunShape, estimate, human
from sdlora.models.sizes import ModelSize
from sdlora.network.types import type_info


def fitting_options(size: ModelSize, shape: RunShape, budget: float) -> list[str]:
    """Changes that bring the estimate within ``budget`` bytes: each that fits alone (bf16 mixed precision — the
    frozen weights in 16 bits —, gradient checkpointing, LyCORIS's bypass mode — no rebuilt weights kept for
    backward —, an 8-bit optimizer, a latent cache — the VAE then waits in host memory —, cached text-encoder outputs
    — the text encoders too —, the largest smaller batch); else the shortest combination, added in that order."""
    steps: list[tuple[str, dict[str, Any]]] = []
    if shape.weight_dtype == "float32":
        steps.append(("precision=bf16_mixed", {"weight_dtype": "bfloat16", "autocast": True}))
    if not shape.gradient_checkpointing:
        steps.append(("model.gradient_checkpointing=true", {"gradient_checkpointing": True}))
    if not shape.bypass_mode and "bypass_mode" in type_info(shape.network).options:
        steps.append(("network.bypass_mode=true", {"bypass_mode": True}))
    if "8bit" not in shape.optimizer:
        steps.append(("optimizer=adamw8bit", {"optimizer": "bitsandbytes.optim.AdamW8bit"}))
    if shape.cache_latents == "none":
        steps.append(("data.cache_latents=disk", {"cache_latents": "disk"}))
    if not shape.cache_text and not shape.train_text_encoder:
        steps.append(("data.cache_text_encoder_outputs=true", {"cache_text": True}))
    batches = []
    batch = shape.batch_size
    while batch > 1:
        batch //= 2
        batches.append((f"data.batch_size={batch}", {"batch_size": batch}))

    def fits(change: dict[str, Any]) -> bool:
        return estimate(size, dataclasses.replace(shape, **change)).peak <= budget

    alone = [text for text, change in steps if fits(change)]
    alone += [text for text, change in batches if fits(change)][:1]  # the largest batch that fits
    if alone:
        return alone
    applied: list[str] = []
    change: dict[str, Any] = {}
    for text, step in steps + batches:
        applied = [t for t in applied if not (t.startswith("data.batch_size=") and "batch_size" in step)] + [text]
        change |= step
        if fits(change):
            return [" ".join(applied)]
    return []


def budget_message(estimate_: MemoryEstimate, budget_gb: float, size: ModelSize, shape: RunShape) -> str | None:
    """None when the estimate fits ``trainer.memory_budget_gb``; else the error, naming options that would fit."""
    if estimate_.peak <= budget_gb * GB:
        return None
    fits = fitting_options(size, shape, budget_gb * GB)
    if estimate_.training_peak <= budget_gb * GB < estimate_.visiting_peak:
        advice = f"; the training steps fit ({human(estimate_.training_peak)}), but {_visitors(estimate_)} do not"
        advice += f"; or: {', '.join(fits)}" if fits else ""
    elif not fits:
        advice = ("; nothing among bf16 mixed precision, gradient checkpointing, a smaller batch, an 8-bit optimizer, "
                  "cached latents or cached text-encoder outputs fits")  # fmt: skip
    elif len(fits) == 1 and " " in fits[0]:
        advice = f"; together these would fit: {fits[0]}"
    else:
        advice = f"; each of these would fit: {', '.join(fits)}"
    return (
        f"the estimated peak memory {human(estimate_.peak)} exceeds trainer.memory_budget_gb={budget_gb:g}"
        f"{advice} (the estimate is printed above; trainer.memory_budget_gb=null turns the check off)"
    )


def _visitors(estimate_: MemoryEstimate) -> str:
    """What needs every weight on the accelerator at once, and how to do without it."""
    found = []
    if estimate_.sampling_peak:
        found.append("the sample images (smaller ones: --w/--h in sample.prompts; none: sample.prompts=null)")
    if estimate_.visits:
        found.append("the validation loss (none: validation.split=0 and validation.dir=null)")
    return " and ".join(found) + ", which bring the VAE and text encoders over,"
