"""Low-rank factorisation for the LoRA tools, as pure functions (formulas in docs/tools.md).

- :func:`low_rank`: ΔW [out, in, (kh, kw)] → (up, down) of rank r by SVD, ``up = U_r·diag(S_r)``, ``down = Vh_r``,
  optionally clamped at a quantile of their values [kohya: --clamp_quantile] (extraction, SVD merge).
- :func:`product_svd`: the SVD of ``up @ down`` from the factors (QR of each, then the SVD of the small r×r core), so
  resizing and merging LoRAs never form or decompose an [out, in] matrix.
- :func:`dynamic_rank`: the rank current sd-scripts' ``resize_lora.py`` picks for ``--dynamic_method``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MIN_SV = 1e-6  # kohya: a module whose largest singular value is below this is a zero matrix (rank 1)
_QUANTILE_LIMIT = 2**24  # torch.quantile's input size limit


def quantile(values: torch.Tensor, q: float) -> float:
    """The ``q`` quantile (linear interpolation, as ``torch.quantile``) of a tensor of any size."""
    flat = values.flatten().float()
    if flat.numel() <= _QUANTILE_LIMIT:
        return float(torch.quantile(flat, q))
    import numpy as np

    return float(np.quantile(flat.cpu().numpy(), q))


def _shape_factors(up: torch.Tensor, down: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """up [out, r] / down [r, in·kh·kw] → kohya's tensor shapes for a weight of ``shape``."""
    r = down.shape[0]
    if len(shape) == 4:
        return up.reshape(shape[0], r, 1, 1), down.reshape(r, *shape[1:])
    return up, down


def low_rank(delta: torch.Tensor, rank: int, clamp_quantile: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) with up·down ≈ ΔW: the truncated SVD at r = min(rank, out, in·kh·kw) [kohya: --dim, --conv_dim].

    up = U[:, :r]·diag(S[:r]), down = Vh[:r]; with ``clamp_quantile`` q < 1, hi = the q-quantile of the signed values
    of [up, down] and both are clamped to [−hi, hi] (kohya's extraction and SVD merge). Computed in float32.
    """
    mat = delta.float().flatten(1)  # [out, in·kh·kw]
    r = max(1, min(rank, *mat.shape))
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    up, down = clamp_pair(u[:, :r] * s[:r], vh[:r], clamp_quantile)
    return _shape_factors(up.contiguous(), down.contiguous(), tuple(delta.shape))


def clamp_pair(up: torch.Tensor, down: torch.Tensor, clamp_quantile: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Both clamped to [−hi, hi], hi = the ``clamp_quantile`` quantile of their signed values (None or ≥ 1: as is)."""
    if clamp_quantile is None or clamp_quantile >= 1:
        return up, down
    hi = quantile(torch.cat([up.flatten(), down.flatten()]), clamp_quantile)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)


@dataclass(frozen=True)
class FactorSVD:
    """up @ down = u · diag(s) · vh with u [out, k], s [k] (descending), vh [k, in·kh·kw], k = inner rank."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor


def product_svd(up: torch.Tensor, down: torch.Tensor) -> FactorSVD:
    """SVD of up.flatten(1) @ down.flatten(1) without forming it: up = Q₁R₁, downᵀ = Q₂R₂, R₁R₂ᵀ = U'SVh',
    so up @ down = (Q₁U')·S·(Q₂Vh'ᵀ)ᵀ."""
    u_mat, d_mat = up.float().flatten(1), down.float().flatten(1)  # [out, r], [r, in·kh·kw]
    q1, r1 = torch.linalg.qr(u_mat)
    q2, r2 = torch.linalg.qr(d_mat.T)
    u, s, vh = torch.linalg.svd(r1 @ r2.T)
    return FactorSVD(q1 @ u, s, vh @ q2.T)


def dynamic_rank(s: torch.Tensor, cap: int, method: str | None = None, param: float | None = None) -> int:
    """The new rank for singular values ``s`` (descending) [kohya: resize_lora.py --dynamic_method/--dynamic_param]:

    - none: ``cap`` (kohya's --new_rank / --new_conv_rank);
    - ``sv_ratio``: #{i : s_i > s_0 / param}, at least 1;
    - ``sv_cumulative``: searchsorted(cumsum(s)/Σs, param) + 1;
    - ``sv_fro``: searchsorted(cumsum(s²)/Σs², param²) + 1;

    indices clamped to [0, n−1], the result capped at ``cap``; a zero matrix (s_0 ≤ 1e-6) gets rank 1.
    """
    n = len(s)
    if method is None:
        rank = cap
    elif method == "sv_ratio":
        rank = min(max(int((s > s[0] / param).sum()), 1), n)
    elif method in ("sv_cumulative", "sv_fro"):
        values, target = (s, param) if method == "sv_cumulative" else (s.pow(2), param**2)
        cumulative = torch.cumsum(values, dim=0) / values.sum()
        index = int(torch.searchsorted(cumulative, torch.tensor(float(target), dtype=cumulative.dtype)))
        rank = min(max(index, 0), n - 1) + 1
    else:
        raise ValueError(f"unknown dynamic method {method!r}")
    if float(s[0]) <= MIN_SV:
        return 1
    return min(rank, cap)


@dataclass(frozen=True)
class Retained:
    """What a truncation to rank r keeps [kohya: resize_lora.py --verbose]: Σs_{<r}/Σs, √(Σs²_{<r}/Σs²),
    s_0/s_{r−1}."""

    sum: float
    fro: float
    max_ratio: float


def retained(s: torch.Tensor, rank: int) -> Retained:
    total, squares = float(s.sum()), float(s.pow(2).sum())
    fro = (float(s[:rank].pow(2).sum()) / squares) ** 0.5 if squares > 0 else float("nan")
    ratio = float(s[0] / s[rank - 1]) if float(s[rank - 1]) > 0 else float("inf")
    return Retained(float(s[:rank].sum()) / total if total > 0 else float("nan"), fro, ratio)


def truncate(svd: FactorSVD, rank: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) of the rank-``rank`` truncation of ``svd``, up = U_r·diag(S_r), down = Vh_r, in kohya's shapes."""
    r = max(1, min(rank, len(svd.s)))
    up = (svd.u[:, :r] * svd.s[:r]).contiguous()
    return _shape_factors(up, svd.vh[:r].contiguous(), shape)
