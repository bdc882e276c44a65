"""Adafactor with kohya's argument rules [kohya: optimizer_type=Adafactor, docs/kohya.md §10.1].

``relative_step`` defaults to True; ``warmup_init=True`` forces it. With a relative step Adafactor computes its own
step size (min(1e-2, 1/√t), times the parameter RMS when ``scale_parameter``), so the configured ``lr`` is only the
initial value the schedule reports, the per-group lrs (``network.unet_lr`` / ``network.text_encoder_lr``) are
removed, and the run switches to ``scheduler=adafactor`` (see :mod:`sdlora.optim.rules`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

OPTIMIZER_CLASS = "transformers.optimization.Adafactor"


def uses_relative_step(relative_step: bool, warmup_init: bool) -> bool:
    """kohya: ``warmup_init`` forces ``relative_step``."""
    return bool(relative_step or warmup_init)


def build_adafactor(
    params: Iterable[Any],
    lr: float,
    relative_step: bool = True,
    warmup_init: bool = False,
    scale_parameter: bool = True,
    eps: tuple[float, float] = (1e-30, 1e-3),
    clip_threshold: float = 1.0,
    decay_rate: float = -0.8,
    beta1: float | None = None,
    weight_decay: float = 0.0,
):
    """``transformers.optimization.Adafactor`` built as kohya builds it: with a relative step the group lrs are
    dropped and ``lr=None`` is passed (the class rejects an lr with ``relative_step``)."""
    from transformers.optimization import Adafactor

    relative = uses_relative_step(relative_step, warmup_init)
    groups = list(params)
    if relative:
        groups = [{k: v for k, v in g.items() if k != "lr"} if isinstance(g, dict) else g for g in groups]
    return Adafactor(
        groups,
        lr=None if relative else lr,
        eps=tuple(eps),
        clip_threshold=clip_threshold,
        decay_rate=decay_rate,
        beta1=beta1,
        weight_decay=weight_decay,
        scale_parameter=scale_parameter,
        relative_step=relative,
        warmup_init=warmup_init,
    )


build_adafactor.optimizer_class = OPTIMIZER_CLASS  # what ss_optimizer names (kohya writes the class it built)
