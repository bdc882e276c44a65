"""Every random stream of a training run, captured and restored as plain data (a state folder, sampling).

Streams: Python's ``random``, NumPy's legacy global generator, torch's CPU generator (LoRA dropouts), the CUDA
generators when CUDA is in use, and any named ``torch.Generator`` (the LightningModule's noise/timestep/VAE generator,
the stochastic-rounding generator). States are stored as lists and tensors, so ``torch.load(weights_only=True)`` reads
them back.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture_rng(generators: dict[str, torch.Generator | None] | None = None) -> dict[str, Any]:
    """The state of every global stream and of the named ``generators`` (None entries are skipped)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss_next],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in (generators or {}).items() if g is not None},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator | None] | None = None) -> None:
    """Put every stream of ``state`` back (those captured by :func:`capture_rng`); named generators that are None or
    absent from ``state`` are left alone."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if generator is not None and name in saved:
            generator.set_state(saved[name])


class preserved_rng:
    """Context manager: every stream (and the named generators) is as before when the block ends."""

    def __init__(self, generators: dict[str, torch.Generator | None] | None = None) -> None:
        self.generators = generators or {}

    def __enter__(self) -> None:
        self.state = capture_rng(self.generators)

    def __exit__(self, *exc: object) -> None:
        restore_rng(self.state, self.generators)
