"""Aspect-ratio buckets (docs/kohya.md §5.1–5.2; docs/design.md §3 pinned behaviour).

Every image goes to one bucket (W, H); a batch only holds images of one bucket. Three modes, as sd-scripts:

* **buckets** (``data.enable_bucket``, the default): a fixed list of resolutions of about the area of
  ``data.resolution`` (:func:`make_bucket_resolutions`). An image goes to the bucket whose aspect ratio is nearest
  (minimal |w_b/h_b − w/h|; an exact size match wins first; ties go to the first bucket of the sorted list), is
  scaled so that it *covers* the bucket (upscaling small images) and cropped to it.
* **no upscale** (``data.bucket_no_upscale``): buckets come from the image sizes. An image larger than the area is
  scaled down to about that area, keeping its aspect ratio; then the bucket is its size floored to multiples of
  ``bucket_reso_steps`` and the remainder is cropped. Images are never upscaled; min/max_bucket_reso are ignored.
* **no buckets**: a single bucket, ``data.resolution``; images are scaled to cover it and cropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BucketSpec:
    """The bucket options of a run, resolved (min/max from the model family when ``data.*`` leaves them null)."""

    enabled: bool
    resolution: tuple[int, int]  # (W, H): the bucket area when enabled, the only bucket otherwise
    min_reso: int = 256
    max_reso: int = 1024
    steps: int = 64
    no_upscale: bool = False

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


@dataclass(frozen=True)
class Placement:
    """Where an image of a given size goes: its bucket, the size it is scaled to before cropping, the AR error."""

    bucket: tuple[int, int]  # (W, H)
    resized: tuple[int, int]  # (W, H), covers the bucket
    ar_error: float  # w_b/h_b − w/h (kohya's ar_error; the mean |ar_error| goes to ss_bucket_info)


def make_bucket_resolutions(
    max_reso: tuple[int, int], min_size: int = 256, max_size: int = 1024, divisible: int = 64
) -> list[tuple[int, int]]:
    """kohya's bucket list (current sd-scripts ``make_bucket_resolutions``), sorted by (W, H).

    With area A = W·H and step s: the square ⌊√A / s⌋·s; then for w = min, min+s, …, ≤ max:
    h = min(max, ⌊(A / w) / s⌋·s), and (w, h), (h, w) are added when h ≥ min.
    512² with min 256 / max 1024 gives 17 buckets; 1024² with 256 / 2048 gives 41.
    """
    max_area = max_reso[0] * max_reso[1]
    square = int(math.sqrt(max_area) // divisible) * divisible
    resos = {(square, square)}
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def cover_resize(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """The size that covers ``bucket`` with the aspect ratio kept (kohya ``select_bucket``).

    If w/h > w_b/h_b the heights match (s = h_b/h), else the widths (s = w_b/w); resized = (⌊w·s + ½⌋, ⌊h·s + ½⌋),
    never smaller than the bucket (float rounding).
    """
    (w, h), (bw, bh) = size, bucket
    scale = bh / h if w / h > bw / bh else bw / w
    return max(bw, int(w * scale + 0.5)), max(bh, int(h * scale + 0.5))


def _round_to_steps(x: float, steps: int) -> int:
    """kohya ``round_to_steps``: round to an integer, then floor to a multiple of ``steps``."""
    value = int(x + 0.5)
    return value - value % steps


def no_upscale_resize(size: tuple[int, int], max_area: int, steps: int) -> tuple[int, int]:
    """kohya ``bucket_no_upscale``: the size an image is scaled to (never up), before the bucket floors it.

    If w·h > A: W′ = √(A·r), H′ = A/W′ (r = w/h). Candidate 1 rounds W′ to steps and derives the height,
    candidate 2 rounds H′ and derives the width; the one whose aspect ratio is closer to r wins:
    (b_w, ⌊b_w/r + ½⌋) or (⌊b_h·r + ½⌋, b_h). Otherwise the image keeps its size.
    """
    w, h = size
    if w * h <= max_area:
        return w, h
    ratio = w / h
    width = math.sqrt(max_area * ratio)
    height = max_area / width
    w_rounded = _round_to_steps(width, steps)
    h_for_w = _round_to_steps(w_rounded / ratio, steps)
    h_rounded = _round_to_steps(height, steps)
    w_for_h = _round_to_steps(h_rounded * ratio, steps)
    error_w = abs(w_rounded / h_for_w - ratio) if h_for_w else math.inf
    error_h = abs(w_for_h / h_rounded - ratio) if h_rounded else math.inf
    if error_w < error_h:
        return w_rounded, int(w_rounded / ratio + 0.5)
    return int(h_rounded * ratio + 0.5), h_rounded


class BucketAssigner:
    """Places images into buckets as :class:`BucketSpec` says (see the module docstring)."""

    def __init__(self, spec: BucketSpec) -> None:
        self.spec = spec
        self._placed: dict[tuple[int, int], Placement | None] = {}
        if not spec.enabled:
            self.resolutions: list[tuple[int, int]] | None = [spec.resolution]
        elif spec.no_upscale:
            self.resolutions = None  # made on the fly from the image sizes
        else:
            self.resolutions = make_bucket_resolutions(spec.resolution, spec.min_reso, spec.max_reso, spec.steps)
        if self.resolutions is not None:
            self._known = set(self.resolutions)
            self._ratios = np.array([w / h for w, h in self.resolutions])

    def select(self, size: tuple[int, int]) -> Placement | None:
        """The placement of an image of ``size`` (W, H); None when it is too small for any bucket (no upscale).
        Placements are immutable and depend on the size alone: each size is computed once."""
        size = (int(size[0]), int(size[1]))
        if size not in self._placed:
            self._placed[size] = self._select(size)
        return self._placed[size]

    def _select(self, size: tuple[int, int]) -> Placement | None:
        w, h = size
        ratio = w / h
        if self.resolutions is None:
            resized = no_upscale_resize(size, self.spec.max_area, self.spec.steps)
            steps = self.spec.steps
            bucket = (resized[0] - resized[0] % steps, resized[1] - resized[1] % steps)
            if min(bucket) < steps:
                return None
        else:
            exact = (w, h) in self._known
            # an exact size wins; else the nearest aspect ratio, the first of the sorted list on ties (argmin)
            bucket = (w, h) if exact else self.resolutions[int(np.abs(self._ratios - ratio).argmin())]
            resized = cover_resize(size, bucket)
        return Placement(bucket, resized, bucket[0] / bucket[1] - ratio)


def is_upscaled(size: tuple[int, int], placement: Placement) -> bool:
    """Whether the image is enlarged to fit its bucket (its resized width exceeds the original width)."""
    return placement.resized[0] > size[0]
