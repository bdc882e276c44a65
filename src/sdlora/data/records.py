"""Scanning a dataset into image records: readable images, their sizes and captions, plus the warnings found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from sdlora.data.captions import MAX_CAPTION_BYTES, caption_path, normalise_extension, read_caption
from sdlora.data.folders import Subset, is_utf8_name, list_images, readable_name
from sdlora.data.images import ImageProblem, read_image_info
from sdlora.errors import SdloraError

MIN_SIDE = 8  # smaller images cannot be fitted meaningfully (the VAE downsamples by 8)


@dataclass(frozen=True)
class ImageRecord:
    """One usable image of a subset."""

    path: Path
    size: tuple[int, int]  # (W, H)
    caption: str
    subset: Subset
    has_caption_file: bool
    digest: str = ""  # SHA-256 of the file's bytes (duplicates; cache keys re-hash the bytes they encode)

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


def _probe_all(paths: list[Path], workers: int) -> list[tuple[tuple[int, int], str] | ImageProblem]:
    def probe(path: Path):
        try:
            return read_image_info(path)
        except ImageProblem as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(probe, paths)
        return list(tqdm(results, total=len(paths), desc="Reading images", unit="img", disable=len(paths) < 64))


def scan_records(
    subsets: list[Subset],
    caption_extension: str | None = None,
    strict: bool = False,
    workers: int = 1,
    max_caption_bytes: int = MAX_CAPTION_BYTES,
) -> ScanResult:
    """Read every image once (to catch corrupt files and hash it), pair it with its caption.

    ``caption_extension`` overrides the subsets' own extension (``subset.options.caption_extension``); caption files
    longer than ``max_caption_bytes`` are cut there, with a warning [data.max_caption_bytes].
    """
    result = ScanResult(subsets=list(subsets))
    work = []
    for subset in subsets:
        for path in list_images(subset.directory):
            if is_utf8_name(path):
                work.append((subset, path))
            else:
                result.warnings.append(f"skipped {readable_name(path)}: its file name is not valid UTF-8 (rename it)")
    for subset in subsets:
        result.images_per_subset[subset.directory] = 0
        result.captions_per_subset[subset.directory] = 0
    infos = _probe_all([path for _, path in work], workers)
    for (subset, path), info in zip(work, infos, strict=True):
        problem = info if isinstance(info, ImageProblem) else None
        if problem is None and min(info[0]) < MIN_SIDE:
            w, h = info[0]
            problem = ImageProblem(f"{path}: {w}x{h} px is too small (each side needs ≥ {MIN_SIDE} px)")
        if problem is not None:
            if strict:
                raise SdloraError(f"{problem} (data.strict=true; remove the file or set data.strict=false)")
            result.warnings.append(f"skipped {problem}")
            continue
        caption = read_caption(path, _extension(subset, caption_extension), max_caption_bytes)
        result.images_per_subset[subset.directory] += 1
        result.captions_per_subset[subset.directory] += caption is not None
        text = caption if caption is not None else subset.class_tokens
        result.records.append(ImageRecord(path, info[0], text, subset, caption is not None, info[1]))
    _caption_warnings(result, caption_extension)
    _long_caption_warnings(result, caption_extension, max_caption_bytes)
    _empty_warnings(result, caption_extension)
    _duplicate_warnings(result)
    return result


def _extension(record_or_subset, override: str | None) -> str:
    subset = getattr(record_or_subset, "subset", record_or_subset)
    return normalise_extension(override or subset.options.caption_extension)


def _long_caption_warnings(result: ScanResult, override: str | None, max_bytes: int) -> None:
    long = []
    for record in result.records:
        path = caption_path(record.path, _extension(record, override))
        if record.has_caption_file and path.stat().st_size > max_bytes:
            long.append(f"{path} ({path.stat().st_size:,} bytes)")
    if long:
        more = f" and {len(long) - 5} more" if len(long) > 5 else ""
        result.warnings.append(
            f"{len(long)} caption file(s) are longer than data.max_caption_bytes={max_bytes} and were cut there: "
            f"{', '.join(long[:5])}{more}"
        )


def _duplicate_warnings(result: ScanResult) -> None:
    """Files with identical bytes (the same image twice, perhaps in two folders) are trained twice as often."""
    by_digest: dict[str, list[Path]] = {}
    for record in result.records:
        by_digest.setdefault(record.digest, []).append(record.path)
    groups = [paths for paths in by_digest.values() if len(paths) > 1]
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


def _caption_warnings(result: ScanResult, override: str | None) -> None:
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
            if ext != extension and any(caption_path(r.path, ext).is_file() for r in missing)
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
