"""Image augmentation (docs/kohya.md §6.3) and the per-sample random streams behind all augmentation.

Every random choice for a sample (flip, crop, colour, caption, caption variant) comes from its own generator seeded
with (seed, epoch, entry, purpose): the same in every DataLoader worker and after a resume, and independent of which
other augmentations are on (turning ``color_aug`` on does not change which samples are flipped).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

FLIP, CROP, COLOR, CAPTION, VARIANT = range(5)  # purposes of the per-sample random streams

HUE_SHIFT_LIMIT = 8.0  # OpenCV hue units (half degrees): ±16°
COLOR_AUG_P = 0.33


def sample_rng(seed: int, epoch: int, entry: int, purpose: int) -> np.random.Generator:
    """The generator of one random purpose of one sample in one epoch."""
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, epoch, entry, purpose])


def flip_drawn(rng: np.random.Generator) -> bool:
    """``flip_aug``: a horizontal flip with p = 0.5 [kohya: random.random() < 0.5]."""
    return bool(rng.random() < 0.5)


def hue_shift(image: np.ndarray, shift: float) -> np.ndarray:
    """Rotate the hue of an RGB uint8 image [H, W, 3] by ``shift`` OpenCV hue units (2° each).

    kohya feeds the RGB array to OpenCV as BGR, which mirrors the hue axis; because the shift is drawn from a
    symmetric range, a shift of the true hue has the same distribution. Saturation and value are kept (PIL's HSV,
    hue in 256 steps per turn).
    """
    hsv = np.array(Image.fromarray(image, "RGB").convert("HSV"))  # [H, W, 3] uint8
    steps = round(shift * 256.0 / 180.0)
    hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + steps) % 256).astype(np.uint8)
    return np.asarray(Image.fromarray(hsv, "HSV").convert("RGB"))


def gamma(image: np.ndarray, value: float) -> np.ndarray:
    """kohya's "random gamma": clip(x^γ, 0, 255) on 0–255 values, truncated to uint8 (a brightness change)."""
    return np.clip(image.astype(np.float64) ** value, 0, 255).astype(np.uint8)


def color_aug(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``color_aug`` [kohya AugHelper.color_aug]: with p = 0.33 one of two changes, 50/50:

    a hue shift of U(−8, 8) OpenCV units (:func:`hue_shift`), or γ ~ U(0.95, 1.05) applied as x^γ (:func:`gamma`).
    ``image`` is RGB uint8 [H, W, 3]; the result too.
    """
    if rng.random() > COLOR_AUG_P:
        return image
    if rng.random() > 0.5:
        return hue_shift(image, rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT))
    return gamma(image, rng.uniform(0.95, 1.05))


def flip_crop_left(resized_width: int, crop_left: int, bucket_width: int) -> int:
    """Left crop offset seen in a horizontally flipped image: resized_w − crop_right (crop_right = left + w_b).

    The SDXL crop conditioning of a flipped sample (kohya: left = target_w − crop_right).
    """
    return resized_width - (crop_left + bucket_width)
