"""Scanning a dataset into image records: usable images, their sizes and captions, plus the warnings found.

One listing per folder (``os.scandir``), then per image, in chunks (on a thread pool when reads wait on the disk:
:func:`map_chunks`): its header (size, file length, and that the file is complete: :mod:`sdlora.data.headers`; files
the header cannot vouch for are decoded fully) and its caption file, when the listing holds one. Nothing else is read
per image. Duplicate files are found by their length, size and the CRC-32 of their first bytes (read with the header)
first; only files sharing all three are hashed (SHA-256) to confirm.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from PIL import Image
from tqdm.auto import tqdm

from sdlora.data.captions import MAX_CAPTION_BYTES, caption_path, normalise_extension, read_caption_file
from sdlora.data.folders import Subset, is_utf8_name, list_folder, readable_name
from sdlora.data.headers import read_header
from sdlora.data.images import ImageProblem, probe_image
from sdlora.errors import SdloraError

MIN_SIDE = 8  # smaller images cannot be fitted meaningfully (the VAE downsamples by 8)
CHUNK = 256  # images per task of the thread pool (one future per image costs more than reading a header)
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class ImageRecord:
    """One usable image of a subset."""

    path: Path
    size: tuple[int, int]  # (W, H)
    caption: str
    subset: Subset
    has_caption_file: bool
    file_bytes: int = 0  # the file's length (duplicate candidates share it)
    head_crc: int = 0  # CRC-32 of the file's first bytes, 0 when it was decoded to be read (duplicates share it)

    @property
    def repeats(self) -> int:
        return self.subset.repeats


@dataclass
class ScanResult:
    records: list[ImageRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images_per_subset: dict[Path, int] = field(default_factory=dict)
    captions_per_subset: dict[Path, int] = field(default_factory=dict)
    subsets: list[Subset] = field(default_factory=list)

    def without(self, removed: list[ImageRecord]) -> ScanResult:
        """A copy without ``removed`` (skipped or held-out images), its per-folder counts lowered to match."""
        gone = {id(r) for r in removed}
        images, captions = dict(self.images_per_subset), dict(self.captions_per_subset)
        for record in removed:
            images[record.subset.directory] -= 1
            captions[record.subset.directory] -= record.has_caption_file
        records = [r for r in self.records if id(r) not in gone]
        return ScanResult(records, list(self.warnings), images, captions, list(self.subsets))


@dataclass(frozen=True)
class _Read:
    """What was read of one image: (W, H) and file length, or the problem; its caption (None: no caption file) and
    whether the caption was cut at ``max_caption_bytes``, or the caption file's error."""

    size: tuple[int, int] | None
    file_bytes: int
    problem: ImageProblem | None
    head_crc: int = 0
    caption: str | None = None
    cut: bool = False
    caption_error: SdloraError | None = None


def _read_image(path: Path, caption: str | None, max_bytes: int) -> _Read:
    header = read_header(path, Image.MAX_IMAGE_PIXELS and 2 * Image.MAX_IMAGE_PIXELS)
    size, length, problem, crc = None, 0, None, 0
    if header is not None:
        size, length, crc = header.size, header.file_bytes, header.head_crc
    else:  # the slow path: decode the file to decide
        try:
            size, length = probe_image(path), os.stat(path).st_size
        except ImageProblem as exc:
            problem = exc
    if caption is None:
        return _Read(size, length, problem, crc)
    try:
        text, cut = read_caption_file(caption, max_bytes)
    except SdloraError as exc:
        return _Read(size, length, problem, crc, caption_error=exc)
    return _Read(size, length, problem, crc, text, cut)


#: Per item, the time under which a chunk counts as fast: its files came from memory (the page cache).
FAST_ITEM_SECONDS = 100e-6


def map_chunks(fn: Callable[[T], R], items: list[T], workers: int, desc: str | None = None) -> list[R]:
    """``[fn(item) for item in items]``, :data:`CHUNK` items at a time; a progress bar named ``desc`` for long lists.

    Chunks run on the calling thread while each takes under :data:`FAST_ITEM_SECONDS` an item: reads served from the
    page cache are pure Python work, and threads would only take turns at the GIL (2 threads were 1.6× slower than
    one on 100k cached images). The first slower chunk — reads that wait on the disk, or work that releases the GIL,
    such as hashing large files — sends the rest to ``workers`` threads, where the waits overlap (2× faster than one
    thread on 100k uncached images; docs/performance.md)."""
    chunks = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
    results: list[R] = []
    hidden = desc is None or len(items) < 4 * CHUNK
    with tqdm(total=len(items), desc=desc, unit="img", disable=hidden) as progress:
        done = 0
        for part in chunks:
            start = time.perf_counter()
            results += [fn(item) for item in part]
            done += 1
            progress.update(len(part))
            if workers > 1 and time.perf_counter() - start > FAST_ITEM_SECONDS * len(part):
                break
        if done < len(chunks):
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(lambda part: [fn(item) for item in part], chunks[done:]):
                    results += part
                    progress.update(len(part))
    return results


def _read_all(work: list[tuple[Subset, Path, str | None]], workers: int, max_bytes: int) -> list[_Read]:
    """:func:`_read_image` of every item, in order."""
    return map_chunks(lambda item: _read_image(item[1], item[2], max_bytes), work, workers, "Reading images")


def scan_records(
    subsets: list[Subset],
    caption_extension: str | None = None,
    strict: bool = False,
    workers: int = 1,
    max_caption_bytes: int = MAX_CAPTION_BYTES,
) -> ScanResult:
    """Read every image's header and caption once (see the module docstring) and pair them.

    ``caption_extension`` overrides the subsets' own extension (``subset.options.caption_extension``); caption files
    longer than ``max_caption_bytes`` are cut there, with a warning [data.max_caption_bytes].
    """
    result = ScanResult(subsets=list(subsets))
    work: list[tuple[Subset, Path, str | None]] = []
    listings: dict[Path, frozenset[str]] = {}
    for subset in subsets:
        listing = list_folder(subset.directory)
        listings[subset.directory] = listing.files
        extension, folder = _extension(subset, caption_extension), str(subset.directory)
        for path in listing.images:
            name = path.name
            if not is_utf8_name(path):
                result.warnings.append(f"skipped {readable_name(path)}: its file name is not valid UTF-8 (rename it)")
                continue
            caption = os.path.splitext(name)[0] + extension  # caption_path(), as strings (pathlib costs µs a call)
            work.append((subset, path, os.path.join(folder, caption) if caption in listing.files else None))
    for subset in subsets:
        result.images_per_subset[subset.directory] = 0
        result.captions_per_subset[subset.directory] = 0
    cut: list[str] = []
    for (subset, path, caption), read in zip(work, _read_all(work, workers, max_caption_bytes), strict=True):
        problem = read.problem
        if problem is None and min(read.size) < MIN_SIDE:
            w, h = read.size
            problem = ImageProblem(f"{path}: {w}x{h} px is too small (each side needs ≥ {MIN_SIDE} px)")
        if problem is not None:
            if strict:
                raise SdloraError(f"{problem} (data.strict=true; remove the file or set data.strict=false)")
            result.warnings.append(f"skipped {problem}")
            continue
        if read.caption_error is not None:
            raise read.caption_error
        if read.cut:
            cut.append(caption)
        has_caption = caption is not None
        result.images_per_subset[subset.directory] += 1
        result.captions_per_subset[subset.directory] += has_caption
        text = read.caption if has_caption else subset.class_tokens
        result.records.append(ImageRecord(path, read.size, text, subset, has_caption, read.file_bytes, read.head_crc))
    _caption_warnings(result, caption_extension, listings)
    _long_caption_warnings(result, cut, max_caption_bytes)
    _empty_warnings(result, caption_extension)
    _duplicate_warnings(result, workers)
    return result


def _extension(record_or_subset, override: str | None) -> str:
    subset = getattr(record_or_subset, "subset", record_or_subset)
    return normalise_extension(override or subset.options.caption_extension)


def _long_caption_warnings(result: ScanResult, cut: list[str], max_bytes: int) -> None:
    if cut:
        long = [f"{path} ({os.stat(path).st_size:,} bytes)" for path in cut[:5]]
        more = f" and {len(cut) - 5} more" if len(cut) > 5 else ""
        result.warnings.append(
            f"{len(cut)} caption file(s) are longer than data.max_caption_bytes={max_bytes} and were cut there: "
            f"{', '.join(long)}{more}"
        )


def duplicate_groups(records: list[ImageRecord], workers: int = 1) -> list[list[Path]]:
    """Groups of records whose files have identical bytes, in record order. Only files that share their length, (W, H)
    and first bytes' CRC-32 with another are hashed (SHA-256): identical files share all three."""
    from sdlora.utils.hashing import file_sha256

    by_shape: dict[tuple[int, tuple[int, int], int], list[ImageRecord]] = {}
    for record in records:
        by_shape.setdefault((record.file_bytes, record.size, record.head_crc), []).append(record)
    candidates = [r for group in by_shape.values() if len(group) > 1 for r in group]
    if not candidates:
        return []
    digests = map_chunks(lambda r: file_sha256(r.path), candidates, workers, "Checking duplicates")
    by_digest: dict[str, list[ImageRecord]] = {}
    for record, digest in zip(candidates, digests, strict=True):
        by_digest.setdefault(digest, []).append(record)
    order = {id(r): i for i, r in enumerate(records)}
    groups = [sorted(g, key=lambda r: order[id(r)]) for g in by_digest.values() if len(g) > 1]
    return [[r.path for r in group] for group in sorted(groups, key=lambda g: order[id(g[0])])]


def _duplicate_warnings(result: ScanResult, workers: int = 1) -> None:
    """Files with identical bytes (the same image twice, perhaps in two folders) are trained twice as often."""
    groups = duplicate_groups(result.records, workers)
    for paths in groups[:10]:
        result.warnings.append(f"duplicate images (identical files): {', '.join(str(p) for p in paths)}")
    if len(groups) > 10:
        result.warnings.append(f"{len(groups) - 10} more groups of duplicate images")


def _empty_warnings(result: ScanResult, override: str | None) -> None:
    """Folders without usable images, and images whose caption file is empty (they train unconditioned)."""
    for directory, count in result.images_per_subset.items():
        if count == 0:
            result.warnings.append(f"folder {directory} has no usable images")
    empty = [
        str(caption_path(r.path, _extension(r, override)))
        for r in result.records
        if r.has_caption_file and not r.caption
    ]
    if empty:
        result.warnings.append(
            f"{len(empty)} caption file(s) are empty, so those images train uncaptioned: {_some(empty)}"
        )


def _some(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


def _caption_warnings(result: ScanResult, override: str | None, listings: dict[Path, frozenset[str]]) -> None:
    """Folders with no (or some missing) caption files; names another common extension that exists (kohya pitfall).

    Regularisation folders are usually captioned by their class tokens: they are only warned about when caption
    files with another extension exist.
    """
    by_directory: dict[Path, list[ImageRecord]] = {}
    for record in result.records:
        by_directory.setdefault(record.subset.directory, []).append(record)
    for directory, records in by_directory.items():
        subset = records[0].subset
        extension = _extension(subset, override)
        missing = [r for r in records if not r.has_caption_file]
        if not missing:
            continue
        others = [
            ext
            for ext in (".txt", ".caption", ".cap")
            if ext != extension and any(os.path.splitext(r.path.name)[0] + ext in listings[directory] for r in missing)
        ]
        hint = f"; {others[0]} files exist: set data.caption_extension={others[0]}" if others else ""
        fallback = f"the folder's class tokens {subset.class_tokens!r}" if subset.class_tokens else "an empty caption"
        if len(missing) == len(records):
            if subset.is_reg and not others:
                continue
            result.warnings.append(
                f"no {extension} caption files in {directory}: its images are captioned with {fallback}{hint}"
            )
        else:
            names = _some([r.path.name for r in missing])
            result.warnings.append(
                f"{len(missing)} image(s) in {directory} have no {extension} caption file and are captioned with "
                f"{fallback}: {names}{hint}"
            )
