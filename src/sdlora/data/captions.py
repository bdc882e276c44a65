"""Caption files (docs/kohya.md §6.2): ``<image stem><caption_extension>``, first line, UTF-8.

A missing caption file means the subset's class tokens are the caption (kohya); a caption file replaces them. The
default extension is kohya's ``.caption``; most datasets use ``.txt`` (``data.caption_extension=.txt``).

Per sample, a caption may be dropped (trained empty), and its comma-separated tags shuffled or dropped
(:func:`process_caption`), with randomness from a generator seeded per (seed, epoch, sample).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sdlora.data.folders import SubsetOptions
from sdlora.errors import SdloraError


def normalise_extension(extension: str) -> str:
    """``"txt"`` → ``".txt"`` (kohya appends the extension verbatim; a missing dot is almost always a slip)."""
    extension = extension.strip()
    return extension if extension.startswith(".") else "." + extension


def caption_path(image: Path, extension: str) -> Path:
    return image.with_name(image.stem + normalise_extension(extension))


MAX_CAPTION_BYTES = 64 * 1024  # [data.max_caption_bytes] a caption is a line of tags, not a document


def read_caption(image: Path, extension: str, max_bytes: int = MAX_CAPTION_BYTES) -> str | None:
    """The caption of ``image`` (first line, stripped), or None when it has no caption file. Only the first
    ``max_bytes`` bytes of the file are read (a character cut at the end is dropped)."""
    path = caption_path(image, extension)
    if not path.is_file():
        return None
    return read_caption_file(path, max_bytes)[0]


def read_caption_file(path: str | Path, max_bytes: int = MAX_CAPTION_BYTES) -> tuple[str, bool]:
    """(first line of the caption file ``path``, stripped; whether the file was longer than ``max_bytes`` and cut
    there). A file that is not UTF-8 is an :class:`SdloraError` naming it."""
    fd = os.open(path, os.O_RDONLY)  # os-level reads: a Python file object costs more than a short caption's read
    try:
        data = b""
        while len(data) <= max_bytes and (block := os.read(fd, max_bytes + 1 - len(data))):
            data += block
    finally:
        os.close(fd)
    cut = len(data) > max_bytes
    if cut:
        data = _whole_characters(data[:max_bytes])
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SdloraError(
            f"caption file {path} is not valid UTF-8 ({exc.reason} at byte {exc.start}): re-save it as UTF-8"
        ) from None
    lines = text.splitlines()
    return (lines[0].strip() if lines else ""), cut


def _whole_characters(data: bytes) -> bytes:
    """``data`` without a multi-byte UTF-8 character that a cut at its end left incomplete (other encoding problems
    are left for the caller to report)."""
    for cut in range(4):
        part = data[: len(data) - cut]
        try:
            part.decode("utf-8")
            return part
        except UnicodeDecodeError as exc:
            if exc.reason != "unexpected end of data":
                return data
    return data


# --- per-sample caption processing (kohya ``process_caption``) -------------------------------------------------------


def caption_dropped(options: SubsetOptions, rng: np.random.Generator, epoch: int) -> bool:
    """Whether this sample trains with an empty caption [caption_dropout_rate, caption_dropout_every_n_epochs].

    Dropped if U < ``caption_dropout_rate`` (U ~ U[0, 1) drawn only when the rate is > 0), or if
    n = ``caption_dropout_every_n_epochs`` > 0 and (epoch + 1) % n == 0: kohya counts epochs from 1, sdlora's
    ``epoch`` from 0, so n = 2 drops the captions of the 2nd, 4th, … epoch.
    """
    if options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return True
    n = options.caption_dropout_every_n_epochs
    return n > 0 and (epoch + 1) % n == 0


def augment_tags(caption: str, options: SubsetOptions, rng: np.random.Generator) -> str:
    """Shuffle and drop tags [shuffle_caption, keep_tokens, caption_tag_dropout_rate, caption_separator].

    Without shuffling or tag dropout the caption is returned unchanged. Otherwise it is split on
    ``caption_separator`` (tags stripped, empty ones removed); the first ``keep_tokens`` tags stay first and are
    never dropped; the others are shuffled (``shuffle_caption``), then each is dropped with probability
    ``caption_tag_dropout_rate``; the tags are joined with ", " (kohya). With ``weighted_captions`` the caption is
    split outside brackets only, so ``(red, blue:1.2)`` moves and drops as one tag (kohya splits inside them too).
    """
    if not options.augments_tags:
        return caption
    if options.weighted_captions:
        from sdlora.models.weighted_prompts import split_tags

        tags = [t.strip() for t in split_tags(caption, options.caption_separator)]
    else:
        tags = [t.strip() for t in caption.split(options.caption_separator)]
    tags = [t for t in tags if t]
    fixed, flexible = tags[: options.keep_tokens], tags[options.keep_tokens :]
    if options.shuffle_caption:
        flexible = [flexible[i] for i in rng.permutation(len(flexible))]
    if options.caption_tag_dropout_rate > 0:
        keep = rng.random(len(flexible)) >= options.caption_tag_dropout_rate
        flexible = [t for t, k in zip(flexible, keep, strict=True) if k]
    return ", ".join(fixed + flexible)


def process_caption(caption: str, options: SubsetOptions, rng: np.random.Generator, epoch: int) -> str:
    """The caption one sample trains with: empty when dropped (:func:`caption_dropped`), else :func:`augment_tags`."""
    if caption_dropped(options, rng, epoch):
        return ""
    return augment_tags(caption, options, rng)
