"""The training dataset: one entry per image × repeat, each assigned to a bucket resolution.

``dataset[(entry, epoch)]`` returns one sample: the image fitted to its bucket (resize to cover, crop; random crop,
colour augmentation and flip as its folder says) as pixels — or, with a latent cache, the cached VAE posterior of the
centred crop (flipped or not) — the caption after dropout / shuffling / tag dropout (or cached text-encoder outputs of
one caption variant), SDXL's size conditioning (original h, w, crop top, left, target h, w; the crop as actually
taken, mirrored for flipped samples) and the loss weight (``loss.prior_loss_weight`` for regularisation images).

All randomness comes from :func:`sdlora.data.augment.sample_rng` (seed, epoch, entry, purpose).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from sdlora.data import augment
from sdlora.data.buckets import Placement
from sdlora.data.captions import caption_dropped, process_caption
from sdlora.data.images import Fit, ImageProblem, fit_image, load_rgb, plan_fit, to_array
from sdlora.data.masks import MaskSource
from sdlora.data.records import ImageRecord
from sdlora.errors import SdloraError

if TYPE_CHECKING:  # the plan holds the dataset; torch is imported when a model is loaded (docs/design.md §7)
    import torch


@dataclass(frozen=True)
class Entry:
    record: int  # index into the records list
    bucket: tuple[int, int]  # (W, H)


def group_by_bucket(entries: list[Entry]) -> dict[tuple[int, int], list[int]]:
    """Bucket resolution → indices of its entries, buckets in sorted (W, H) order.

    Runs of equal entries (an image's repeats) are added as one range: with the data plan's shared entry objects the
    comparisons are identity checks, and the work is per image rather than per sample."""
    table: dict[tuple[int, int], list[int]] = {}
    for entry, run in groupby(range(len(entries)), key=entries.__getitem__):
        table.setdefault(entry.bucket, []).extend(run)
    return dict(sorted(table.items()))


class LatentSource(Protocol):
    def get(self, record: int, flipped: bool) -> dict[str, torch.Tensor]: ...


class TextSource(Protocol):
    num_variants: int

    def get(self, record: int, variant: int | None) -> tuple[str, dict[str, torch.Tensor]]: ...


def size_condition(fit: Fit, flipped: bool) -> tuple[int, int, int, int, int, int]:
    """SDXL's (original h, w, crop top, crop left, target h, w) for a sample cropped as ``fit`` says.

    For a flipped sample the left offset is that of the crop in the mirrored image (resized_w − crop_right).
    """
    (ow, oh), (left, top), (bw, bh) = fit.original, fit.offset, fit.bucket
    if flipped:
        left = augment.flip_crop_left(fit.resized[0], left, bw)
    return oh, ow, top, left, bh, bw


def bucket_pixels(
    image: Path | Image.Image, fit: Fit, flipped: bool = False, color_rng: np.random.Generator | None = None
) -> np.ndarray:
    """Load (if a path), resize and crop as ``fit`` says, colour-augment (if a generator is given), flip → [3, H, W].

    A file that cannot be decoded is an :class:`SdloraError` naming it (the data plan reads headers and checks that
    files are complete; damage inside a file shows here)."""
    img = decode_rgb(image) if isinstance(image, Path) else image
    array = np.asarray(fit_image(img, fit))  # [H, W, 3] uint8
    if color_rng is not None:
        array = augment.color_aug(array, color_rng)
    if flipped:
        array = array[:, ::-1]
    return to_array(array)


def decode_rgb(path: Path) -> Image.Image:
    """:func:`~sdlora.data.images.load_rgb`, a damaged file being an :class:`SdloraError` that names it."""
    try:
        return load_rgb(path)
    except ImageProblem as exc:
        raise SdloraError(
            f"{exc}. The data plan reads image headers and checks that files are complete; this one is damaged "
            "inside: replace or remove it"
        ) from None


class LoRADataset:
    """A map-style dataset (``__len__``, ``__getitem__``) for ``torch.utils.data.DataLoader``; plain Python, so that
    planning does not import torch."""

    def __init__(
        self,
        records: list[ImageRecord],
        entries: list[Entry],
        seed: int,
        placements: list[Placement] | None = None,
        prior_loss_weight: float = 1.0,
        masks: MaskSource | None = None,
    ) -> None:
        self.records = records
        self.entries = entries
        self.seed = seed
        self.placements = placements  # per record; None: scale every image to cover its entry's bucket
        self.prior_loss_weight = prior_loss_weight
        self.latents: LatentSource | None = None  # set by the latent cache (data.cache_latents)
        self.text: TextSource | None = None  # set by the text-encoder output cache
        self.masks = masks  # loss.masked: the mask of each image

    def __len__(self) -> int:
        return len(self.entries)

    def rng(self, epoch: int, index: int, purpose: int) -> np.random.Generator:
        return augment.sample_rng(self.seed, epoch, index, purpose)

    def fit(self, entry: Entry, crop_fraction: tuple[float, float] | None = None) -> Fit:
        record = self.records[entry.record]
        resized = self.placements[entry.record].resized if self.placements is not None else None
        return plan_fit(record.size, entry.bucket, crop_fraction, resized)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        entry = self.entries[index]
        record = self.records[entry.record]
        options = record.subset.options
        flipped = options.flip_aug and augment.flip_drawn(self.rng(epoch, index, augment.FLIP))
        if self.latents is not None:
            fit = self.fit(entry)
            sample: dict[str, Any] = dict(self.latents.get(entry.record, flipped))
        else:
            crop = tuple(self.rng(epoch, index, augment.CROP).random(2)) if options.random_crop else None
            fit = self.fit(entry, crop)
            color = self.rng(epoch, index, augment.COLOR) if options.color_aug else None
            sample = {"pixels": bucket_pixels(record.path, fit, flipped, color)}
        if self.masks is not None:
            sample["mask"] = self.masks.array(record.path, record.size, fit, flipped)  # [1, H, W]
        sample["caption"] = self._caption(index, entry.record, epoch, sample)
        sample["size_cond"] = size_condition(fit, flipped)
        sample["loss_weight"] = self.prior_loss_weight if record.subset.is_reg else 1.0
        sample["path"] = str(record.path)
        return sample

    def _caption(self, index: int, record_index: int, epoch: int, sample: dict[str, Any]) -> str:
        """The caption of the sample; with a text cache its encoded variant is added to ``sample``."""
        record = self.records[record_index]
        options = record.subset.options
        rng = self.rng(epoch, index, augment.CAPTION)
        if self.text is None:
            return process_caption(record.caption, options, rng, epoch)
        variant = None
        if not caption_dropped(options, rng, epoch):
            count = self.text.num_variants if options.augments_tags else 1
            variant = int(self.rng(epoch, index, augment.VARIANT).integers(count)) if count > 1 else 0
        caption, tensors = self.text.get(record_index, variant)
        sample.update(tensors)
        return caption
