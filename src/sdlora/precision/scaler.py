"""The gradient scaler of ``precision=full_fp16`` [kohya: --full_fp16, ``patch_accelerator_for_fp16_training``].

With fp16 autocast the loss is scaled before backward so that small fp16 gradients do not flush to zero, and the
gradients are unscaled before the optimizer step. ``torch.amp.GradScaler`` refuses to unscale gradients that are
themselves fp16 ("Attempting to unscale FP16 gradients"), which they are when the LoRA parameters are fp16. kohya
patches accelerate's scaler to allow it; here a subclass does the same. Overflowing steps are skipped and the scale
lowered, as usual.
"""

from __future__ import annotations

import torch


class FP16ParamsGradScaler(torch.amp.GradScaler):
    """``GradScaler`` that also unscales fp16 gradients (of fp16 LoRA parameters)."""

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):
        return super()._unscale_grads_(optimizer, inv_scale, found_inf, True)
