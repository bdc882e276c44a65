"""LoRA maths as pure functions (docs/kohya.md §1.3).

A LoRA module adds a low-rank update to a frozen weight W [out, in, (kh, kw)]:

    y = W·x + scale · up(down(x)),       scale = alpha / rank   [kohya: network_alpha, network_dim]

``down`` has the base layer's input side (Linear [r, in]; Conv2d [r, in, kh, kw] with the base's kernel, stride and
padding) and ``up`` maps rank to output (Linear [out, r]; Conv2d [out, r, 1, 1]). The equivalent weight update is one
formula for Linear, 1×1 and k×k convolutions:

    ΔW = scale · reshape(up.flatten(1) @ down.flatten(1), W.shape)

which for a 3×3 conv equals the composition up∘down as a single [out, in, 3, 3] kernel.
"""

from __future__ import annotations

import math

import torch


def effective_alpha(alpha: float | None, rank: int) -> float:
    """[network_alpha] None or 0 means alpha = rank (scale 1), as kohya."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    return float(rank) if alpha is None or alpha == 0 else float(alpha)


def lora_scale(alpha: float | None, rank: int) -> float:
    """scale = alpha / rank with :func:`effective_alpha` (the one place this rule lives)."""
    return effective_alpha(alpha, rank) / rank


def delta_weight(up: torch.Tensor, down: torch.Tensor, scale: float, weight_shape: torch.Size | tuple) -> torch.Tensor:
    """ΔW = scale · (up.flatten(1) @ down.flatten(1)) reshaped to the base weight's shape.

    Linear: up [out, r], down [r, in]. Conv: up [out, r, 1, 1], down [r, in, kh, kw] → ΔW [out, in, kh, kw].
    """
    product = up.flatten(1) @ down.flatten(1)  # [out, in·kh·kw]
    return (scale * product).reshape(weight_shape)


def init_down_(weight: torch.Tensor) -> None:
    """Kaiming-uniform with a = √5 (torch's Linear/Conv default): U(−1/√fan_in, 1/√fan_in), fan_in = in·kh·kw."""
    torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))


def init_up_(weight: torch.Tensor) -> None:
    """Zeros, so that ΔW = 0 and the model is unchanged before the first optimizer step."""
    torch.nn.init.zeros_(weight)


# ------------------------------------------------------------------------------------------------ dropouts (§2)
def branch_input(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The layer's input ``x`` as the LoRA branch takes it: in the branch weights' ``dtype`` (float32 LoRA weights
    beside 16-bit frozen layers) — unless autocast is on for ``x``'s device. Autocast then runs the branch's matmuls
    in its own 16-bit dtype whatever ``x`` is, and a 16-bit ``x`` cast to float32 and back is the same ``x``: the
    cast would only cost a kernel and a float32 copy per module, in forward and backward (as kohya, which never
    casts)."""
    if x.dtype == dtype or _autocast_on(x.device.type):
        return x
    return x.to(dtype)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one flag per device kind
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def module_dropout_skips(p: float) -> bool:
    """[kohya: module_dropout] True with probability ``p``: the whole LoRA branch is skipped for this forward call.

    One draw ``U ~ U(0, 1)`` per call and module (on the CPU generator, as kohya); skip iff ``U < p``. No rescaling.
    """
    return p > 0 and bool(torch.rand(1) < p)


def neuron_dropout(lx: torch.Tensor, p: float) -> torch.Tensor:
    """[kohya: network_dropout] Inverted dropout on the rank activations ``lx = down(x)``.

    Every element (sample, token/pixel, rank channel) is zeroed independently with probability ``p``; survivors are
    scaled by 1/(1−p), so E[output] = lx.
    """
    return torch.nn.functional.dropout(lx, p=p, training=True) if p > 0 else lx


def rank_dropout(lx: torch.Tensor, p: float) -> tuple[torch.Tensor, float]:
    """[kohya: rank_dropout] Drop whole rank channels per sample; returns (masked lx, factor for the LoRA scale).

    keep[b, r] = U(0, 1) > p, one mask of shape [B, rank] broadcast over tokens ([B, 1, r] for 3-D inputs) or over
    pixels ([B, r, 1, 1] for convolutions). The scale is multiplied by the fixed factor 1/(1−p), not by the realised
    keep fraction ("as if the rank were smaller").
    """
    if p <= 0:
        return lx, 1.0
    channel_dim = 1 if lx.dim() == 4 else -1
    keep = torch.rand((lx.shape[0], lx.shape[channel_dim]), device=lx.device) > p  # [B, r]
    if lx.dim() == 3:
        keep = keep.unsqueeze(1)  # [B, 1, r]
    elif lx.dim() == 4:
        keep = keep[:, :, None, None]  # [B, r, 1, 1]
    return lx * keep, 1.0 / (1.0 - p)


# ------------------------------------------------------------------------------------------------- max-norm (§3)
def delta_weight_norm(up: torch.Tensor, down: torch.Tensor, scale: float) -> torch.Tensor:
    """‖ΔW‖_F with ΔW = scale · up.flatten(1) @ down.flatten(1), without forming ΔW.

    ‖U·D‖_F² = Σ_ij (UᵀU)_ij (D·Dᵀ)_ij, two [r, r] Gram matrices (for a 3×3 conv this equals the norm of the composed
    [out, in, 3, 3] kernel, which is the flattened product). Computed in float32; a 0-dim tensor.
    """
    u, d = up.flatten(1).float(), down.flatten(1).float()  # [out, r], [r, in·kh·kw]
    squared = ((u.T @ u) * (d @ d.T)).sum().clamp_min(0.0)
    return squared.sqrt() * abs(scale)


def max_norm_ratio(norm: float, max_norm: float) -> float:
    """[kohya: scale_weight_norms] min(‖ΔW‖, max_norm) / ‖ΔW‖: 1 unless the norm exceeds the cap.

    kohya clamps the norm from below at max_norm/2 before dividing; that only avoids dividing by tiny numbers and
    never changes the result, which is what this returns.
    """
    return max_norm / norm if norm > max_norm else 1.0
