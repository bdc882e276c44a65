"""Regularisation-image balancing (docs/kohya.md §6.1, sd-scripts ``DreamBoothDataset``).

Regularisation images are used until their count with repeats reaches the number of training images with repeats
(target T = Σ images × repeats of the training folders):

1. First pass, in folder and file order: register each regularisation image with its folder's repeats until the
   running sum reaches T; the images after that are not used at all.
2. If every image was registered and the sum is still below T, add one repeat per image, round robin, until it is.

So an epoch holds about 2·T samples when regularisation images exist. Each image keeps its own folder's settings
(sd-scripts v21.8.8 registered all of them with the last folder's settings; that bug is not reproduced here).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def balance_regularisation(target: int, repeats: Sequence[int]) -> list[int]:
    """Repeats of each regularisation image (0 = unused) so that their sum reaches ``target`` as kohya does.

    >>> balance_regularisation(10, [3, 3, 3, 3, 3])
    [3, 3, 3, 3, 0]
    >>> balance_regularisation(10, [1, 1, 1])
    [4, 3, 3]
    """
    result = [0] * len(repeats)
    if target <= 0 or not repeats:
        return result
    total = 0
    for i, r in enumerate(repeats):
        result[i] = r
        total += r
        if total >= target:
            return result
    while total < target:
        for i in range(len(result)):
            result[i] += 1
            total += 1
            if total >= target:
                break
    return result


@dataclass(frozen=True)
class RegBalance:
    """What balancing did, for the data plan."""

    target: int  # training images × repeats
    images: int  # usable regularisation images
    images_used: int
    requested: int  # Σ images × folder repeats before balancing (kohya's num_reg_images)
    count_with_repeats: int  # after balancing

    def describe(self) -> str:
        if not self.images:
            return "no regularisation images"
        line = (
            f"{self.images_used} of {self.images} regularisation images used, {self.count_with_repeats} samples with "
            f"repeats to balance {self.target} training samples"
        )
        if self.images_used < self.images:
            line += f" ({self.images - self.images_used} unused: more regularisation than training samples)"
        elif self.count_with_repeats > self.requested:
            line += f" (repeats raised from {self.requested} in total)"
        return line

    def to_json(self) -> dict:
        return {
            "target": self.target,
            "images": self.images,
            "images_used": self.images_used,
            "requested_with_repeats": self.requested,
            "count_with_repeats": self.count_with_repeats,
        }
