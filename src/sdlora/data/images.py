"""Image reading and fitting to a bucket resolution (docs/kohya.md §5.2–5.3).

An image is scaled so that it *covers* the bucket (the side with the larger relative excess is cropped) and then
cropped to the bucket size: centred, or at a random offset with ``random_crop``. Downscaling uses area averaging (box
filter, like cv2's INTER_AREA); upscaling uses Lanczos (current sd-scripts). Pixels are RGB in [−1, 1]; an alpha
channel is dropped, not composited (kohya).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


class ImageProblem(Exception):
    """An image that cannot be used (unreadable, corrupt); the caller skips it with a warning or raises."""


def probe_image(path: Path) -> tuple[int, int]:
    """(width, height) of a readable image, decoded fully so that a corrupt file is caught (the data plan reads
    headers instead, :func:`sdlora.data.headers.read_header`, and decodes only files the header cannot vouch for).

    A corrupt or truncated file raises :class:`ImageProblem`. JPEGs decode at 1/8 scale (the whole stream is still
    read, about 10× faster).
    """
    try:
        with Image.open(path) as img:
            size = img.size
            if img.format == "JPEG":
                img.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            img.load()
        return size
    except Exception as exc:
        raise ImageProblem(unreadable_image(path, exc)) from exc


def unreadable_image(path: Path, exc: Exception) -> str:
    """Why ``path`` could not be decoded, for a warning: an empty file says so; otherwise the decoder's reason,
    without the in-memory stream it was read from (``<_io.BytesIO object at 0x…>``)."""
    try:
        if path.stat().st_size == 0:
            return f"{path}: empty file (0 bytes)"
    except OSError:
        pass
    reason = re.sub(r"\s*<_io\.\w+ object at 0x[0-9a-f]+>", "", str(exc)).strip() or type(exc).__name__
    return f"{path}: cannot be read as an image ({type(exc).__name__}: {reason})"


def load_rgb(path: Path) -> Image.Image:
    """The image as RGB (alpha dropped, palette/greyscale converted). A file that cannot be decoded (damaged inside,
    which the data plan's header check cannot see) is an :class:`ImageProblem` naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as exc:
        raise ImageProblem(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc})") from exc


@dataclass(frozen=True)
class Fit:
    """How an image of ``original`` size becomes a ``bucket``-sized crop: resize to ``resized``, crop at ``offset``."""

    original: tuple[int, int]  # (W, H)
    resized: tuple[int, int]  # (W, H) after scaling, covers the bucket
    bucket: tuple[int, int]  # (W, H)
    offset: tuple[int, int]  # (left, top) of the crop in the resized image


def cover_size(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """Scale (W, H) so it covers the bucket with the aspect ratio kept: s = h_b/h if W/H > w_b/h_b else w_b/w."""
    from sdlora.data.buckets import cover_resize

    return cover_resize(size, bucket)


def plan_fit(
    size: tuple[int, int],
    bucket: tuple[int, int],
    crop_fraction: tuple[float, float] | None = None,
    resized: tuple[int, int] | None = None,
) -> Fit:
    """Resize-then-crop plan; ``crop_fraction`` in [0, 1]² picks a random crop, None the centred one.

    ``resized`` is the size chosen with the bucket (``bucket_no_upscale`` keeps small images at their size); by
    default the image is scaled to cover the bucket. A random crop offset is uniform over the excess + 1 positions,
    as kohya's ``random.randint(0, excess)``.
    """
    resized = resized or cover_size(size, bucket)
    excess_w, excess_h = resized[0] - bucket[0], resized[1] - bucket[1]
    if crop_fraction is None:
        offset = (excess_w // 2, excess_h // 2)
    else:
        offset = (
            int(crop_fraction[0] * (excess_w + 1)) % (excess_w + 1),
            int(crop_fraction[1] * (excess_h + 1)) % (excess_h + 1),
        )
    return Fit(size, resized, bucket, offset)


def fit_image(img: Image.Image, fit: Fit) -> Image.Image:
    """Resize (area averaging down, Lanczos up) and crop ``img`` as ``fit`` says → a bucket-sized RGB image."""
    if img.size != fit.resized:
        downscale = fit.resized[0] < img.size[0]
        method = Image.Resampling.BOX if downscale else Image.Resampling.LANCZOS
        img = img.resize(fit.resized, method)
    left, top = fit.offset
    return img.crop((left, top, left + fit.bucket[0], top + fit.bucket[1]))


def to_array(img: np.ndarray | Image.Image) -> np.ndarray:
    """RGB uint8 [H, W, 3] (or a PIL image) → float32 [3, H, W] in [−1, 1] (x / 127.5 − 1)."""
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0  # [H, W, 3]
    return np.ascontiguousarray(array.transpose(2, 0, 1))  # [3, H, W]


def apply_fit(img: Image.Image, fit: Fit) -> np.ndarray:
    """Resize and crop ``img`` as ``fit`` says → float32 [3, H, W] in [−1, 1]."""
    return to_array(fit_image(img, fit))
