"""Max-norm regularisation of a LoRA network [kohya: scale_weight_norms] (kohya-semantics §3).

For every module, ΔW = (alpha/rank) · up∘down (Linear, 1×1 and 3×3 alike, see :mod:`sdlora.network.functional`).
If ‖ΔW‖_F exceeds ``max_norm``, ``up`` and ``down`` are both multiplied in place by √(max_norm/‖ΔW‖), so the
module's ΔW lands exactly on the cap. Returns kohya's statistics: how many modules were scaled, and the mean and
maximum of the norms after scaling. Optimizer moments are not touched (as kohya).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from sdlora.network.functional import delta_weight_norm, max_norm_ratio
from sdlora.network.lora import LoRAModule


@torch.no_grad()
def apply_max_norm(modules: Iterable[LoRAModule], max_norm: float) -> tuple[int, float, float]:
    """Scale every module whose ‖ΔW‖ exceeds ``max_norm``; (keys_scaled, average_key_norm, max_key_norm)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    keys_scaled, norms = 0, []
    for module in modules:
        up, down = module.lora_up.weight, module.lora_down.weight
        norm = float(delta_weight_norm(up, down, float(module.alpha) / module.rank))
        ratio = max_norm_ratio(norm, max_norm)
        if ratio != 1.0:
            keys_scaled += 1
            factor = math.sqrt(ratio)
            up.mul_(factor)
            down.mul_(factor)
        norms.append(norm * ratio)
    if not norms:
        return 0, 0.0, 0.0
    return keys_scaled, sum(norms) / len(norms), max(norms)
