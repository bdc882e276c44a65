"""Rank, alpha and ‖ΔW‖ of a LyCORIS module from its file tensors alone, for ``sdlora-verify-lora``.

For three types the file decides ΔW without the base weights (LyCORIS's own definitions, as sdlora trains them):

- LoHa (``hada_w1_a/b``, ``hada_w2_a/b``): ΔW = (w1_a·w1_b) ⊙ (w2_a·w2_b) · alpha/r, r = the rows of ``hada_w1_b``
  (a 3×3 conv's ``*_b`` are flattened to in·k·k columns, which leaves the norm unchanged);
- LoKr (``lokr_w1`` or ``lokr_w1_a·lokr_w1_b``, the same for w2): ΔW = w1 ⊗ w2 · scale, with
  ‖w1 ⊗ w2‖ = ‖w1‖·‖w2‖; scale = alpha/r where a factor is decomposed (r its inner size), 1 when both are full
  matrices (LyCORIS then ignores alpha);
- ``full`` (``diff``, ``diff_b``): ΔW = diff.

The Tucker forms (``hada_t1``, ``lokr_t2``) and the types whose ΔW depends on the base weights — (IA)³, Diag-OFT,
BOFT, GLoRA, DoRA (``dora_scale``) — get no numbers (None).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Numbers:
    rank: int | None  # None: the type has none (full) or both LoKr factors are full matrices
    alpha: float | None
    delta_norm: float


def _scalar(t: torch.Tensor | None) -> float | None:
    return None if t is None else float(t.float().reshape(-1)[0])


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.float().reshape(t.shape[0], -1)


def loha(t: dict[str, torch.Tensor]) -> Numbers:
    """‖(w1_a·w1_b) ⊙ (w2_a·w2_b)‖ · alpha/r (see the module docstring)."""
    rank, alpha = int(t["hada_w1_b"].shape[0]), _scalar(t.get("alpha"))
    scale = (alpha if alpha else rank) / rank
    product = (_flat(t["hada_w1_a"]) @ _flat(t["hada_w1_b"])) * (_flat(t["hada_w2_a"]) @ _flat(t["hada_w2_b"]))
    return Numbers(rank, alpha, float(product.norm()) * scale)


def _factor(t: dict[str, torch.Tensor], i: int) -> tuple[torch.Tensor, int | None]:
    """(w_i, its inner size r or None for a full matrix)."""
    if f"lokr_w{i}" in t:
        return t[f"lokr_w{i}"].float(), None
    a, b = t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"]
    return _flat(a) @ _flat(b), int(a.shape[1])


def lokr(t: dict[str, torch.Tensor]) -> Numbers:
    """‖w1‖·‖w2‖ · scale (see the module docstring)."""
    (w1, r1), (w2, r2) = _factor(t, 1), _factor(t, 2)
    rank, alpha = r1 or r2, _scalar(t.get("alpha"))
    scale = 1.0 if rank is None else (alpha if alpha else rank) / rank
    return Numbers(rank, alpha, float(w1.norm() * w2.norm()) * scale)


def full(t: dict[str, torch.Tensor]) -> Numbers:
    return Numbers(None, None, float(t["diff"].float().norm()))


def lycoris_numbers(tensors: dict[str, torch.Tensor]) -> Numbers | None:
    """The numbers of one module (its tensors by name: ``hada_w1_a``, ``alpha``, …), or None where the file alone does
    not decide ΔW."""
    if "dora_scale" in tensors or "hada_t1" in tensors or "lokr_t2" in tensors:
        return None
    if "hada_w1_a" in tensors:
        return loha(tensors)
    if "lokr_w1" in tensors or "lokr_w1_a" in tensors:
        return lokr(tensors)
    if "diff" in tensors:
        return full(tensors)
    return None
