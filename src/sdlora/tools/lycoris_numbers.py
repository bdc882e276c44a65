"""Rank, alpha and ‖ΔW‖ of a LyCORIS module from its file tensors alone, for ``sdlora-verify-lora``.

For three types the file decides ΔW without the base weights; ΔW is lycoris-lora's own (``lycoris.functional``), with
the scale its modules use — the one sdlora's forward applies once (:data:`sdlora.tools.merge_lycoris.FORWARD_RULE`):

- LoHa (``hada_w1_a/b``, ``hada_w2_a/b``): ΔW = (w1_a·w1_b) ⊙ (w2_a·w2_b) · alpha/r, r = the
  rows of ``hada_w1_b``;
- LoKr (``lokr_w1`` or ``lokr_w1_a/b``, the same for w2): ΔW = w1 ⊗ w2 · scale, scale = alpha/r
  where a factor is decomposed (r its inner size) and 1 when both are full matrices (LyCORIS then ignores alpha);
- ``full`` (``diff``, ``diff_b``): ΔW = diff.

A 3×3 conv's flattened factors give ΔW flattened to in·k·k columns, which leaves the norm unchanged. The types whose
ΔW depends on the base weights — (IA)³, Diag-OFT, BOFT, GLoRA, DoRA (``dora_scale``) — and the Tucker forms
(``hada_t1``, ``lokr_t2``) get no numbers (None).
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


def _scale(alpha: float | None, rank: int) -> float:
    """LyCORIS's alpha/r, alpha 0 or missing meaning r."""
    return (alpha if alpha else rank) / rank


def loha(t: dict[str, torch.Tensor]) -> Numbers:
    from lycoris.functional.loha import diff_weight

    f = {k: v.float() for k, v in t.items()}
    rank, alpha = int(f["hada_w1_b"].shape[0]), _scalar(t.get("alpha"))
    delta = diff_weight(f["hada_w1_b"], f["hada_w1_a"], f["hada_w2_b"], f["hada_w2_a"], None, None,
                        gamma=_scale(alpha, rank))  # fmt: skip
    return Numbers(rank, alpha, float(delta.norm()))


def lokr(t: dict[str, torch.Tensor]) -> Numbers:
    from lycoris.functional.lokr import kron_weight

    f = {k: v.float() for k, v in t.items()}
    decomposed = f.get("lokr_w1_a", f.get("lokr_w2_a"))
    rank, alpha = (None if decomposed is None else int(decomposed.shape[1])), _scalar(t.get("alpha"))
    names = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")
    delta = kron_weight(*(f.get(n) for n in names), None, scale=1.0 if rank is None else _scale(alpha, rank))
    return Numbers(rank, alpha, float(delta.norm()))


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
