"""LoRA maths as pure functions (kohya-semantics §1.3).

A LoRA module adds a low-rank update to a frozen weight W [out, in, (kh, kw)]:

    y = W·x + multiplier · scale · up(down(x)),       scale = alpha / rank   [kohya: network_alpha, network_dim]

``down`` has the base layer's input side (Linear [r, in]; Conv2d [r, in, kh, kw] with the base's kernel, stride and
padding) and ``up`` maps rank to output (Linear [out, r]; Conv2d [out, r, 1, 1]). The equivalent weight update is one
formula for Linear, 1×1 and k×k convolutions:

    ΔW = scale · reshape(up.flatten(1) @ down.flatten(1), W.shape)

which for a 3×3 conv equals the composition up∘down as a single [out, in, 3, 3] kernel.
"""

from __future__ import annotations

import math

import torch


def lora_scale(alpha: float | None, rank: int) -> float:
    """scale = alpha / rank, where alpha None or 0 means alpha = rank (scale 1), as kohya."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    if alpha is None or alpha == 0:
        alpha = rank
    return float(alpha) / rank


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
