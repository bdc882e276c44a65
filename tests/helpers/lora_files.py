"""Random kohya-format LoRA files on the real target names and shapes of a family (for the tools' tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from sdlora.tools.families import shipped_targets


def random_lora(
    path: Path,
    model: str = "tiny",
    rank: int = 4,
    conv_rank: int | None = None,
    alpha: float | None = 2.0,
    seed: int = 0,
    every: int = 1,
    metadata: dict[str, str] | None = None,
    scale: float = 0.1,
) -> Path:
    """A LoRA on every ``every``-th target of ``model`` (3×3 convs only with ``conv_rank``), random up and down."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    table = shipped_targets(model)
    for i, (name, target) in enumerate(table.items()):
        shape = target.shape
        conv = len(shape) == 4 and shape[2:] != (1, 1)
        if i % every or (conv and conv_rank is None):
            continue
        if conv and target.target.kind == "conv" and conv_rank is None:
            continue
        r = conv_rank if conv else rank
        down_shape = (r, *shape[1:]) if len(shape) == 4 else (r, shape[1])
        up_shape = (shape[0], r, 1, 1) if len(shape) == 4 else (shape[0], r)
        tensors[f"{name}.lora_down.weight"] = torch.randn(down_shape, generator=generator) * scale
        tensors[f"{name}.lora_up.weight"] = torch.randn(up_shape, generator=generator) * scale
        if alpha is not None:
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata or {})
    return path
