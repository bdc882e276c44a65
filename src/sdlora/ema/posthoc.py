"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", §3): the
EMA of any length, reconstructed after training from snapshots of two power-function EMAs.

During training (``ema.posthoc=true``) two power-function EMAs (:func:`sdlora.ema.decay.power_beta`, σ_rel 0.05 and
0.10 by default) are tracked and both are written every ``ema.snapshot_every`` steps. A snapshot i taken after t_i
EMA updates with exponent γ_i is Σ_τ w_i(τ)·θ_τ, a weighted sum of the weights after each update τ, with the exact
discrete weights

    w_i(τ) = ((τ/t_i)^(γ_i+1) − ((τ−1)/t_i)^(γ_i+1))   for 1 ≤ τ ≤ t_i,  0 after.

The EMA wanted — exponent γ (from σ_rel) at t updates — has weights w(τ) of the same form. Choosing coefficients x
that make Σ_i x_i·w_i as close as possible to w in the least-squares sense (over τ: the normal equations
A·x = b with A_ij = Σ_τ w_i(τ)·w_j(τ) and b_i = Σ_τ w_i(τ)·w(τ)) gives the reconstruction Σ_i x_i·snapshot_i; it
equals that EMA for any trajectory θ wherever the profile is matched. Karras et al. use the continuous profiles;
the sums here are the discrete EMA's own weights, so nothing but the fit is approximate. Only snapshots taken up to t
are used. :func:`fit` also returns the relative error of the profile fit, ‖Σ x_i w_i − w‖ / ‖w‖.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

#: τ values per block when the Gram matrix is summed (memory: snapshots × CHUNK float64 numbers).
CHUNK = 1 << 16


def profile_weights(updates: int, gamma: float, taus: np.ndarray) -> np.ndarray:
    """w(τ) of the power-function EMA with exponent ``gamma`` after ``updates`` updates, at the (1-based) ``taus``."""
    a = gamma + 1.0
    tau = np.asarray(taus, dtype=np.float64)
    return (np.minimum(tau, updates) / updates) ** a - (np.minimum(tau - 1.0, updates) / updates) ** a


@dataclass(frozen=True)
class Fit:
    coefficients: np.ndarray  # x_i, one per snapshot used
    used: list[int]  # indices of the snapshots used (those taken after at most the target's updates)
    relative_error: float  # ‖Σ x_i w_i − w‖ / ‖w‖ of the profiles


def fit(snapshots: Sequence[tuple[int, float]], updates: int, gamma: float) -> Fit:
    """Least-squares coefficients of ``snapshots`` ((updates t_i, exponent γ_i) each) for the power-function EMA with
    exponent ``gamma`` after ``updates`` updates (see the module docstring)."""
    used = [i for i, (t, _) in enumerate(snapshots) if 1 <= t <= updates]
    if not used:
        raise ValueError(f"no snapshot was taken within the first {updates} EMA updates")
    chosen = [snapshots[i] for i in used]
    k = len(chosen)
    gram, rhs, norm = np.zeros((k, k)), np.zeros(k), 0.0
    for start in range(1, updates + 1, CHUNK):
        taus = np.arange(start, min(start + CHUNK, updates + 1))
        block = np.stack([profile_weights(t, g, taus) for t, g in chosen])  # [k, n]
        target = profile_weights(updates, gamma, taus)  # [n]
        gram += block @ block.T
        rhs += block @ target
        norm += float(target @ target)
    x = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    squared = max(0.0, norm - 2.0 * float(x @ rhs) + float(x @ gram @ x))
    return Fit(x, used, float(np.sqrt(squared / norm)))


def combine(weighted: Iterable[tuple[float, Mapping[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Σ_i x_i·tensors_i per key over ``(x_i, tensors_i)`` pairs, one snapshot in memory at a time (summed in float64,
    returned as float32); a tensor equal in every snapshot (a LoRA's ``alpha``) is kept as it is."""
    first: dict[str, torch.Tensor] | None = None
    totals: dict[str, torch.Tensor] = {}
    constant: dict[str, bool] = {}
    for x, tensors in weighted:
        if first is None:
            first = {k: v.clone() for k, v in tensors.items()}
            constant = dict.fromkeys(first, True)
            totals = {k: torch.zeros(v.shape, dtype=torch.float64) for k, v in first.items() if v.is_floating_point()}
        if tensors.keys() != first.keys():
            raise ValueError("the snapshots hold different tensors (another network?)")
        for key, value in tensors.items():
            constant[key] = constant[key] and torch.equal(value, first[key])
            if key in totals:
                totals[key] += float(x) * value.to(torch.float64)
    if first is None:
        raise ValueError("no snapshots to combine")
    return {k: first[k] if constant[k] or k not in totals else totals[k].to(torch.float32) for k in first}
