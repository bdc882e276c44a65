"""Muon for a LoRA (``optimizer=muon``; no kohya option — OneTrainer and SimpleTuner ship it).

Muon (Jordan et al., 2024) replaces Adam's elementwise step for a weight *matrix* W by the orthogonalised momentum:
M ← μM + G (Nesterov: G + μM), W ← W − lr · s · NS₅(M), where NS₅ runs five Newton–Schulz iterations towards the
nearest semi-orthogonal matrix U·Vᵀ of M = U·Σ·Vᵀ (a 4-D conv kernel is flattened to [out, in·k·k]); with
``use_adjusted_lr`` s = 0.2·√max(rows, columns) (Moonlight), which gives the update AdamW's RMS, so AdamW's learning
rates carry over. It is defined for matrices only: its authors prescribe AdamW for every other parameter. Here that is
each tensor that is not a real matrix — ``ndim < 2`` or a single row or column (DoRA magnitudes, iA3 scales, norm
weights, rank-1 factors).

:func:`muon` splits each of the run's parameter groups (``unet``, ``textencoder``, block and LoRA+ groups) in two:
the matrices (``use_muon=True``, the group's lr) and the rest (``use_muon=False``, named ``<group>_adamw``, lr
``adamw_lr`` or the group's), and builds pytorch-optimizer's ``Muon`` from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch

MUON_CLASS = "pytorch_optimizer.optimizer.muon.muon.Muon"


def is_matrix(param: torch.Tensor) -> bool:
    """Whether Muon's orthogonalised step applies: at least 2-D with more than one row and more than one column."""
    return param.ndim >= 2 and param.shape[0] > 1 and param[0].numel() > 1


def split_groups(groups: Iterable[dict[str, Any]], adamw_lr: float | None) -> list[dict[str, Any]]:
    """Each group → its matrices (``use_muon=True``) and its other parameters (``use_muon=False``,
    ``<name>_adamw``, lr ``adamw_lr`` or the group's); empty halves are left out."""
    out: list[dict[str, Any]] = []
    for group in groups:
        params = list(group["params"])
        matrices = [p for p in params if is_matrix(p)]
        others = [p for p in params if not is_matrix(p)]
        if matrices:
            out.append({**group, "params": matrices, "use_muon": True})
        if others:
            name = f"{group.get('name', 'group')}_adamw"
            lr = group["lr"] if adamw_lr is None else adamw_lr
            out.append({**group, "params": others, "use_muon": False, "name": name, "lr": lr})
    return out


def muon(
    params: Iterable[dict[str, Any]],
    lr: float = 1e-4,
    momentum: float = 0.95,
    weight_decay: float = 0.0,
    nesterov: bool = True,
    ns_steps: int = 5,
    use_adjusted_lr: bool = True,
    adamw_lr: float | None = None,
    adamw_betas: Sequence[float] = (0.9, 0.999),
    adamw_wd: float = 0.0,
    adamw_eps: float = 1e-8,
) -> torch.optim.Optimizer:
    """pytorch-optimizer's ``Muon`` over the run's parameter groups (see the module docstring)."""
    from pytorch_optimizer import Muon

    groups = split_groups([g if isinstance(g, dict) else {"params": [g], "lr": lr} for g in params], adamw_lr)
    return Muon(
        groups,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        ns_steps=ns_steps,
        use_adjusted_lr=use_adjusted_lr,
        adamw_lr=lr if adamw_lr is None else adamw_lr,
        adamw_betas=tuple(adamw_betas),
        adamw_wd=adamw_wd,
        adamw_eps=adamw_eps,
    )


muon.optimizer_class = MUON_CLASS  # what ss_optimizer names (sdlora.optim.factory.target_class_name)
