"""A test oracle: a module's ΔW computed from its file tensors alone, with ComfyUI's formulas.

ComfyUI's ``comfy/weight_adapter/`` (and ``comfy/lora.py`` for ``diff``/``w_norm``) turns each module of a LoRA/LyCORIS
file into a weight update; these functions are our own writing of those formulas, so the tests can check that a file
means to ComfyUI what the trained network did. Where ComfyUI reads a file differently from LyCORIS, the function
follows ComfyUI and the docstring says so (the tests pin both facts). iA3 has no ComfyUI adapter; its entry is the
iA3 definition (W′ = W · (1 + w) on the output or input channels), as A1111's and LyCORIS's readers apply it.

Every function takes ``t`` (the module's tensors by suffix, e.g. ``{"hada_w1_a": …}``) and the frozen layer's weight
W, and returns (ΔW, Δbias or None) in float32.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Tensors = Mapping[str, torch.Tensor]


def _f(t: Tensors, key: str) -> torch.Tensor:
    return t[key].float()


def _alpha(t: Tensors, rank: int | None) -> float:
    """ComfyUI: alpha/rank when the file has an alpha (and the format a rank), else 1."""
    return float(t["alpha"]) / rank if "alpha" in t and rank else 1.0


def weight_decompose(dora_scale: torch.Tensor, weight: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """ComfyUI's DoRA: W′ = (W + ΔW) · m / n with n the norm of W′ per input channel — or, when the magnitude is per
    output row (``dora_scale.shape[0] == out``), the norm of the *original* W per row (LyCORIS uses W + ΔW there)."""
    merged = weight + diff
    if dora_scale.shape[0] == merged.shape[0]:
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True).reshape(-1, *[1] * (weight.dim() - 1))
    else:
        flat = merged.transpose(0, 1).reshape(merged.shape[1], -1)
        norm = flat.norm(dim=1, keepdim=True).reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1)
    norm = norm + torch.finfo(weight.dtype).eps
    return merged * (dora_scale.float() / norm) - weight


def _finish(t: Tensors, weight: torch.Tensor, diff: torch.Tensor, alpha: float) -> torch.Tensor:
    diff = diff.reshape(weight.shape) * alpha
    return weight_decompose(_f(t, "dora_scale"), weight, diff) if "dora_scale" in t else diff


def lora(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """LoRA/LoCon: ΔW = alpha/rank · up · (mid ∘) down, rank = lora_down's first dimension."""
    up, down = _f(t, "lora_up.weight"), _f(t, "lora_down.weight")
    alpha = _alpha(t, down.shape[0])
    if "lora_mid.weight" in t:  # Tucker: compose down [r, in, 1, 1] with mid [r, r, kh, kw] into [r, in, kh, kw]
        mid = _f(t, "lora_mid.weight")
        shape = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
        down = (down.transpose(0, 1).flatten(1) @ mid.transpose(0, 1).flatten(1)).reshape(shape).transpose(0, 1)
    return _finish(t, weight, up.flatten(1) @ down.flatten(1), alpha), None


def loha(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """LoHa: ΔW = alpha/rank · (w1_a w1_b) ⊙ (w2_a w2_b), rank = hada_w1_b's first dimension (Tucker: each factor
    is t contracted with w_a over its first and w_b over its second index)."""
    alpha = _alpha(t, t["hada_w1_b"].shape[0])
    if "hada_t1" in t:
        m1 = torch.einsum("ijkl,jr,ip->prkl", _f(t, "hada_t1"), _f(t, "hada_w1_b"), _f(t, "hada_w1_a"))
        m2 = torch.einsum("ijkl,jr,ip->prkl", _f(t, "hada_t2"), _f(t, "hada_w2_b"), _f(t, "hada_w2_a"))
    else:
        m1 = _f(t, "hada_w1_a") @ _f(t, "hada_w1_b")
        m2 = _f(t, "hada_w2_a") @ _f(t, "hada_w2_b")
    return _finish(t, weight, m1 * m2, alpha), None


def lokr(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """LoKr: ΔW = alpha/dim · w1 ⊗ w2, each factor whole or a product (w2 Tucker with t2); dim = the rank of the
    decomposed factor (w2's if both are), alpha 1 when neither is decomposed."""
    dim = None
    if "lokr_w1" in t:
        w1 = _f(t, "lokr_w1")
    else:
        dim, w1 = t["lokr_w1_b"].shape[0], _f(t, "lokr_w1_a") @ _f(t, "lokr_w1_b")
    if "lokr_w2" in t:
        w2 = _f(t, "lokr_w2")
    elif "lokr_t2" in t:
        dim = t["lokr_w2_b"].shape[0]
        w2 = torch.einsum("ijkl,jr,ip->prkl", _f(t, "lokr_t2"), _f(t, "lokr_w2_b"), _f(t, "lokr_w2_a"))
    else:
        dim, w2 = t["lokr_w2_b"].shape[0], _f(t, "lokr_w2_a") @ _f(t, "lokr_w2_b")
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return _finish(t, weight, torch.kron(w1.contiguous(), w2.contiguous()), _alpha(t, dim)), None


def _cayley(blocks: torch.Tensor, constraint: float) -> torch.Tensor:
    """R = (I + Q)(I − Q)⁻¹ with Q = B − Bᵀ, ‖Q‖ capped at the file's alpha when it is > 0 (ComfyUI uses the stored
    alpha as the cap; LyCORIS caps at alpha × out_features — the two agree for the default alpha 0)."""
    eye = torch.eye(blocks.shape[-1])
    q = blocks - blocks.transpose(-1, -2)
    if constraint > 0 and torch.norm(q) + 1e-8 > constraint:
        q = q * constraint / (torch.norm(q) + 1e-8)
    return (eye + q) @ torch.linalg.inv(eye - q)


def oft(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """Diag-OFT: ΔW = (Rᵀ − I) W per block of rows (ComfyUI ignores ``rescale``)."""
    blocks = _f(t, "oft_blocks")
    n, s = blocks.shape[0], blocks.shape[1]
    r = _cayley(blocks, float(t.get("alpha", torch.tensor(0.0))))
    diff = torch.einsum("knm,kn...->km...", r - torch.eye(s), weight.reshape(n, s, *weight.shape[1:]))
    return diff.reshape(weight.shape), None


def boft(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """BOFT: W′ = the butterfly stages R_m … R_1 applied to W's rows (stage i pairs rows 2ⁱ·b/2 apart), × rescale."""
    blocks = _f(t, "oft_blocks")
    stages, size = blocks.shape[0], blocks.shape[2]
    r, out = _cayley(blocks, float(t.get("alpha", torch.tensor(0.0)))), weight
    for i in range(stages):
        k = 2**i * (size // 2)
        out = out.unflatten(0, (-1, 2, k)).transpose(1, 2).flatten(0, 2).unflatten(0, (-1, size))
        out = torch.einsum("bij,bj...->bi...", r[i], out)
        out = out.flatten(0, 1).unflatten(0, (-1, k, 2)).transpose(1, 2).flatten(0, 2)
    if "rescale" in t:
        out = out * _f(t, "rescale")
    return out - weight, None


def glora(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """GLoRA (LyCORIS ≥ 2 layout): ΔW = alpha/rank · (W a1 a2 + b1 b2), rank = a2's first dimension."""
    a1, a2 = _f(t, "a1.weight").flatten(1), _f(t, "a2.weight").flatten(1)
    b1, b2 = _f(t, "b1.weight").flatten(1), _f(t, "b2.weight").flatten(1)
    w_a = torch.einsum("oi...,ij->oj...", torch.einsum("oi...,ij->oj...", weight, a1), a2)
    return _finish(t, weight, w_a.reshape(weight.shape) + (b1 @ b2).reshape(weight.shape), _alpha(t, a2.shape[0])), None


def full(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """full: ΔW = diff, Δb = diff_b."""
    return _f(t, "diff").reshape(weight.shape), (_f(t, "diff_b") if "diff_b" in t else None)


def norm(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Norm layers: ΔW = w_norm, Δb = b_norm."""
    return _f(t, "w_norm").reshape(weight.shape), (_f(t, "b_norm") if "b_norm" in t else None)


def ia3(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, None]:
    """iA3 (not a ComfyUI adapter): ΔW = W · w, w per output channel (``on_input`` 0) or per input channel."""
    w = _f(t, "weight").flatten()
    shape = [1] * weight.dim()
    shape[1 if int(t["on_input"]) else 0] = -1
    return weight * w.reshape(shape), None


ORACLES = {"lora": lora, "loha": loha, "lokr": lokr, "oft": oft, "boft": boft, "glora": glora, "full": full,
           "norm": norm, "ia3": ia3}  # fmt: skip
#: Formats ComfyUI's weight adapters read (iA3 is not among them).
COMFYUI_FORMATS = frozenset(ORACLES) - {"ia3"}


def delta(t: Tensors, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ΔW, Δb) of one module's file tensors, dispatched on the tensors it has."""
    from sdlora.network.weights import module_format

    fmt = module_format({k: tuple(v.shape) for k, v in t.items()})
    return ORACLES[fmt](t, weight.detach().float())
