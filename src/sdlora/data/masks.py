"""Loss masks for ``loss.masked`` [kohya: --masked_loss with --alpha_mask or a conditioning/mask folder].

An image's mask is, in this order: a file of the same stem in ``data.mask_dir`` (any image format, read as greyscale,
white = learn, black = ignore), else the image's own alpha channel, else all ones. It is resized and cropped exactly
like the image (same :class:`~sdlora.data.images.Fit`), flipped with it, and given to the loss as [1, H, W] in [0, 1];
the objective resizes it to the latent size by area averaging and multiplies the elementwise loss by it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from sdlora.data.folders import IMAGE_EXTENSIONS
from sdlora.data.images import Fit, fit_image


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)


class MaskSource:
    """Where each image's mask comes from (a mask folder, the alpha channel, or nothing)."""

    def __init__(self, mask_dir: str | Path | None = None) -> None:
        self.mask_dir = Path(mask_dir).expanduser() if mask_dir else None
        self._files: dict[str, Path] = {}
        if self.mask_dir is not None:
            for path in sorted(self.mask_dir.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS:
                    self._files.setdefault(path.stem, path)

    def mask_file(self, image: Path) -> Path | None:
        return self._files.get(image.stem)

    def describe(self, image: Path) -> str:
        """ "file", "alpha" or "none": where ``image``'s mask comes from (reads only the image header)."""
        if self.mask_file(image) is not None:
            return "file"
        with Image.open(image) as img:
            return "alpha" if _has_alpha(img) else "none"

    def load(self, image: Path, size: tuple[int, int]) -> Image.Image:
        """The mask of ``image`` as a greyscale image of the image's ``size`` (W, H)."""
        path = self.mask_file(image)
        if path is not None:
            with Image.open(path) as mask:
                mask = mask.convert("L")
                return mask if mask.size == size else mask.resize(size, Image.Resampling.BILINEAR)
        with Image.open(image) as img:
            if _has_alpha(img):
                return img.convert("RGBA").getchannel("A")
        return Image.new("L", size, 255)

    def array(self, image: Path, size: tuple[int, int], fit: Fit, flipped: bool) -> np.ndarray:
        """The mask fitted like the image: float32 [1, H, W] in [0, 1]."""
        mask = np.asarray(fit_image(self.load(image, size), fit), dtype=np.float32) / 255.0  # [H, W]
        if flipped:
            mask = mask[:, ::-1]
        return np.ascontiguousarray(mask[None])


def mask_warnings(source: MaskSource, images: list[Path]) -> list[str]:
    """A warning naming images that get no mask at all (trained on every pixel) when ``loss.masked`` is on."""
    unmasked = [p for p in images if source.describe(p) == "none"]
    if not unmasked:
        return []
    shown = ", ".join(p.name for p in unmasked[:5]) + (f" and {len(unmasked) - 5} more" if len(unmasked) > 5 else "")
    where = f"no file in data.mask_dir={str(source.mask_dir)!r} and " if source.mask_dir else ""
    return [f"loss.masked: {len(unmasked)} image(s) have {where}no alpha channel, so every pixel counts: {shown}"]
