"""Combining several LoRAs into one, module by module (pure functions; formulas in docs/tools.md).

For LoRA i with ratio ρᵢ, a module's update is ρᵢ·ΔWᵢ = cᵢ·upᵢ·downᵢ with cᵢ = ρᵢ·alphaᵢ/rankᵢ.

- :func:`concat`: ranks concatenated, up = [sᵢ·√|cᵢ|·upᵢ], down = [√|cᵢ|·downᵢ] (sᵢ the sign of cᵢ), alpha = Σrankᵢ
  (scale 1): exactly Σ ρᵢ·ΔWᵢ [kohya: merge_lora.py --concat, which keeps the first alpha and so is not exact].
- :func:`weighted_sum`: kohya's same-rank merge, up and down summed separately with factors from the first file's
  alpha α₀: aᵢ = √(|ρᵢ|·αᵢ/α₀), up = Σ sᵢ·aᵢ·upᵢ, down = Σ aᵢ·downᵢ, alpha = α₀. One LoRA merged alone gives exactly
  ρ·ΔW; several give Σρᵢ·ΔWᵢ plus cross terms (kohya's behaviour). kohya v21.8.8 multiplied both tensors by
  ρ·√(αᵢ/α₀), so ρ entered squared and a negative ratio cancelled; current sd-scripts keeps the sign but still applies
  |ρ|·ρ. sdlora applies the ratio once, with its sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sdlora.errors import SdloraError
from sdlora.tools.lora_file import LoraFile, LoraModule


def module_names(loras: Sequence[LoraFile]) -> list[str]:
    """Every module name of ``loras``, in first-seen order."""
    return list(dict.fromkeys(name for lora in loras for name in lora.modules))


def module_parts(name: str, loras: Sequence[LoraFile], ratios: Sequence[float]) -> list[tuple[LoraModule, float, Path]]:
    """(module, ratio, file) of ``name`` in each LoRA that has it; different layer shapes are an error."""
    parts = [(lora.modules[name], ratio, lora.path) for lora, ratio in zip(loras, ratios, strict=True)
             if name in lora.modules]  # fmt: skip
    shapes = {m.weight_shape for m, _, _ in parts}
    if len(shapes) > 1:
        files = ", ".join(f"{p.name} {m.weight_shape}" for m, _, p in parts)
        raise SdloraError(f"module {name} has different layer shapes in the LoRAs ({files}): they are for different "
                          "models and cannot be merged")  # fmt: skip
    return parts


def concat_factors(name: str, loras: Sequence[LoraFile], ratios: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [out, R], down [R, in·kh·kw]) in float32 with up·down = Σ ρᵢ·ΔWᵢ of module ``name`` (R = Σ rankᵢ)."""
    ups, downs = [], []
    for module, ratio, _ in module_parts(name, loras, ratios):
        c = ratio * module.scale
        root = abs(c) ** 0.5
        ups.append(module.up.float().flatten(1) * (root if c >= 0 else -root))
        downs.append(module.down.float().flatten(1) * root)
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0)


def concat(loras: Sequence[LoraFile], ratios: Sequence[float]) -> dict[str, LoraModule]:
    """Ranks concatenated: exact Σ ρᵢ·ΔWᵢ per module, alpha = total rank (scale 1)."""
    out: dict[str, LoraModule] = {}
    for name in module_names(loras):
        up, down = concat_factors(name, loras, ratios)
        module = next(lora.modules[name] for lora in loras if name in lora.modules)
        rank = down.shape[0]
        shape = module.weight_shape
        if len(shape) == 4:
            up, down = up.reshape(shape[0], rank, 1, 1), down.reshape(rank, *shape[1:])
        out[name] = LoraModule(down.contiguous(), up.contiguous(), float(rank))
    return out


def weighted_sum(loras: Sequence[LoraFile], ratios: Sequence[float]) -> dict[str, LoraModule]:
    """kohya's same-rank merge with the ratio applied once (module docstring); different ranks are an error."""
    out: dict[str, LoraModule] = {}
    for name in module_names(loras):
        parts = module_parts(name, loras, ratios)
        ranks = {m.rank for m, _, _ in parts}
        if len(ranks) > 1:
            files = ", ".join(f"{p.name} rank {m.rank}" for m, _, p in parts)
            raise SdloraError(f"module {name} has different ranks ({files}): merge them with --concat (exact) or "
                              "sdlora-svd-merge-lora")  # fmt: skip
        base_alpha = parts[0][0].effective_alpha
        up = torch.zeros_like(parts[0][0].up, dtype=torch.float32)
        down = torch.zeros_like(parts[0][0].down, dtype=torch.float32)
        for module, ratio, _ in parts:
            factor = (abs(ratio) * module.effective_alpha / base_alpha) ** 0.5
            up += module.up.float() * (factor if ratio >= 0 else -factor)
            down += module.down.float() * factor
        out[name] = LoraModule(down, up, base_alpha)
    return out
