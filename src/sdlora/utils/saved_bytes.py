"""The bytes autograd keeps for backward in one forward pass: what :mod:`sdlora.memory`'s activation coefficients
were fitted to, measured by its test and by ``benchmarks/memory_estimate.py``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any


@contextmanager
def saved_bytes(module: Any):
    """Within the block, count the storages autograd saves that are not ``module``'s own parameters (each storage
    once, at its largest size); yields a one-element list that holds the total after the block."""
    import torch

    own = {p.untyped_storage().data_ptr() for p in module.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own:
            seen[storage.data_ptr()] = max(seen.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    total = [0]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total
    total[0] = sum(seen.values())
