"""Max-norm regularisation of a network [kohya: scale_weight_norms] (docs/kohya.md §3).

Every module caps its own ‖ΔW‖_F at ``max_norm`` (:meth:`~sdlora.network.module.NetworkModule.cap_norm_`; for LoRA,
ΔW = (alpha/rank) · up∘down and both factors are multiplied by √(max_norm/‖ΔW‖), so ΔW lands exactly on the cap).
Other types use their own rule (LyCORIS's ``apply_max_norm`` for its modules, docs/network-types.md §4).
Returns kohya's statistics: how many modules were scaled, and the mean and maximum of the norms after scaling.
Optimizer moments are not touched (as kohya).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sdlora.network.module import NetworkModule


@torch.no_grad()
def apply_max_norm(modules: Iterable[NetworkModule], max_norm: float) -> tuple[int, float, float]:
    """Cap every module at ``max_norm``; (keys_scaled, average_key_norm, max_key_norm)."""
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    keys_scaled, norms = 0, []
    for module in modules:
        capped = module.cap_norm_(max_norm)
        if capped is None:  # a module without max-norm (LyCORIS's norm layers): not counted, as LyCORIS
            continue
        keys_scaled += capped[0]
        norms.append(capped[1])
    if not norms:
        return 0, 0.0, 0.0
    return keys_scaled, sum(norms) / len(norms), max(norms)
