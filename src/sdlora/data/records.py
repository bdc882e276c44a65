"""Scanning a dataset into image records: readable images, their sizes and captions, plus the warnings found."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from sdlora.data.captions import caption_path, read_caption
from sdlora.data.folders import Subset, list_images
from sdlora.data.images import ImageProblem, probe_image
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

    @property
    def repeats(self) -> int:
        return self.subset.repeats


@dataclass
class ScanResult:
    records: list[ImageRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    images_per_subset: dict[Path, int] = field(default_factory=dict)
    captions_per_subset: dict[Path, int] = field(default_factory=dict)


def _probe_all(paths: list[Path], workers: int) -> list[tuple[int, int] | ImageProblem]:
    def probe(path: Path):
        try:
            return probe_image(path)
        except ImageProblem as exc:
            return exc

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(probe, paths)
        return list(tqdm(results, total=len(paths), desc="Reading images", unit="img", disable=len(paths) < 64))


def scan_records(subsets: list[Subset], caption_extension: str, strict: bool, workers: int = 1) -> ScanResult:
    """Read every image header+pixels once (to catch corrupt files), pair it with its caption."""
    result = ScanResult()
    work = [(subset, path) for subset in subsets for path in list_images(subset.directory)]
    for subset in subsets:
        result.images_per_subset[subset.directory] = 0
        result.captions_per_subset[subset.directory] = 0
    sizes = _probe_all([path for _, path in work], workers)
    for (subset, path), size in zip(work, sizes, strict=True):
        problem = size if isinstance(size, ImageProblem) else None
        if problem is None and min(size) < MIN_SIDE:
            problem = ImageProblem(f"{path}: {size[0]}x{size[1]} px is too small (each side needs ≥ {MIN_SIDE} px)")
        if problem is not None:
            if strict:
                raise SdloraError(f"{problem} (data.strict=true; remove the file or set data.strict=false)")
            result.warnings.append(f"skipped {problem}")
            continue
        caption = read_caption(path, caption_extension)
        result.images_per_subset[subset.directory] += 1
        result.captions_per_subset[subset.directory] += caption is not None
        text = caption if caption is not None else subset.class_tokens
        result.records.append(ImageRecord(path, size, text, subset, caption is not None))
    _caption_warnings(result, caption_extension)
    _empty_warnings(result, caption_extension)
    return result


def _empty_warnings(result: ScanResult, caption_extension: str) -> None:
    """Folders without usable images, and images whose caption file is empty (they train unconditioned)."""
    for directory, count in result.images_per_subset.items():
        if count == 0:
            result.warnings.append(f"folder {directory} has no usable images")
    empty = [
        str(caption_path(r.path, caption_extension)) for r in result.records if r.has_caption_file and not r.caption
    ]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        result.warnings.append(f"{len(empty)} caption file(s) are empty, so those images train uncaptioned: {shown}")


def _caption_warnings(result: ScanResult, extension: str) -> None:
    """Warn about subsets with no caption file, naming another common extension that does exist (kohya pitfall)."""
    for directory, count in result.images_per_subset.items():
        if count == 0 or result.captions_per_subset[directory] > 0:
            continue
        images = [r.path for r in result.records if r.subset.directory == directory]
        others = [ext for ext in (".txt", ".caption", ".cap") if any(caption_path(p, ext).is_file() for p in images)]
        hint = f"; {others[0]} files exist: set data.caption_extension={others[0]}" if others else ""
        result.warnings.append(
            f"no {extension} caption files in {directory}: its images are captioned with the folder's class "
            f"tokens{hint}"
        )
