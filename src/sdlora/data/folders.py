"""kohya's folder convention (docs/kohya.md §6.1).

``data.train_dir`` is the *parent* folder; each subfolder named ``<repeats>_<class tokens>`` (``10_sks dog``) is a
subset whose images are seen ``repeats`` times per epoch and whose class tokens are the caption of images without a
caption file. Other subfolders (no leading integer, or repeats < 1) are ignored and reported. Image search is not
recursive; extensions png/jpg/jpeg/webp/bmp in any case.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sdlora.errors import SdloraError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})


@dataclass(frozen=True)
class SubsetOptions:
    """Caption and augmentation settings of a subset (``data.*``, or per folder in ``data.subsets``)."""

    caption_extension: str = ".caption"
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_separator: str = ","
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    caption_dropout_every_n_epochs: int = 0
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False
    weighted_captions: bool = False  # [data.weighted_captions]: tags are split outside ( ) and [ ] only

    @property
    def augments_tags(self) -> bool:
        """Whether a caption's tags change from sample to sample (shuffle or tag dropout)."""
        return self.shuffle_caption or self.caption_tag_dropout_rate > 0

    @property
    def drops_captions(self) -> bool:
        return self.caption_dropout_rate > 0 or self.caption_dropout_every_n_epochs > 0


@dataclass(frozen=True)
class Subset:
    """One image folder: a ``<repeats>_<class tokens>`` folder, or an entry of ``data.subsets``."""

    directory: Path
    repeats: int
    class_tokens: str
    is_reg: bool = False
    options: SubsetOptions = SubsetOptions()

    @property
    def name(self) -> str:
        return self.directory.name


def parse_folder_name(name: str) -> tuple[int, str] | None:
    """``"10_sks dog"`` → ``(10, "sks dog")``; None when the name has no ``<int>_`` prefix or repeats < 1."""
    head, sep, rest = name.partition("_")
    if not sep or not head.isdecimal():  # isdigit() also accepts '²', which int() rejects
        return None
    repeats = int(head)
    return (repeats, rest) if repeats >= 1 else None


def readable_name(path: str | Path) -> str:
    """A path as text that can be printed and written to JSON: bytes that are not UTF-8 (Python keeps them as
    surrogates) shown as ``\\xNN`` escapes."""
    return os.fsencode(str(path)).decode("utf-8", errors="backslashreplace")


def is_utf8_name(path: Path) -> bool:
    """Whether a file or folder name is valid UTF-8 (names of other encodings cannot go into logs, JSON or the LoRA
    metadata)."""
    return readable_name(path.name) == path.name


@dataclass(frozen=True)
class FolderListing:
    """One read of a folder: its image files sorted by name, and the names of all its files (caption look-ups)."""

    images: list[Path]
    files: frozenset[str]


def list_folder(directory: Path) -> FolderListing:
    """The files directly inside ``directory`` (not recursive), from one ``os.scandir`` (no ``stat`` per file where
    the file system reports entry types)."""
    with os.scandir(directory) as entries:
        names = sorted(entry.name for entry in entries if entry.is_file())
    images = [directory / name for name in names if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS]
    return FolderListing(images, frozenset(names))


def list_images(directory: Path) -> list[Path]:
    """Image files directly inside ``directory`` (not recursive), sorted by name."""
    return list_folder(Path(directory)).images


def scan_subsets(
    root: str | Path, option: str = "data.train_dir", is_reg: bool = False, options: SubsetOptions = SubsetOptions()
) -> tuple[list[Subset], list]:
    """The subsets under ``root`` and a warning per ignored subfolder; a missing or empty root is an error."""
    root = Path(root).expanduser()
    if not root.exists():
        raise SdloraError(f"{option}={str(root)!r} does not exist")
    if not root.is_dir():
        raise SdloraError(f"{option}={str(root)!r} is not a folder")
    subsets, warnings = [], []
    for child in sorted(p for p in root.iterdir() if p.is_dir()):
        if not is_utf8_name(child):
            warnings.append(f"ignored folder {readable_name(child)} (its name is not valid UTF-8: rename it)")
            continue
        parsed = parse_folder_name(child.name)
        if parsed is None:
            head = child.name.partition("_")[0]
            reason = (
                "its repeats are 0; use at least 1"
                if head.isdecimal() and "_" in child.name
                else f"its name does not start with '<repeats>_', e.g. 10_{child.name}"
            )
            warnings.append(f"ignored folder {child} ({reason})")
            continue
        subsets.append(Subset(child.resolve(), parsed[0], parsed[1], is_reg, options))
    if not subsets:
        loose = list_images(root)
        hint = (
            f" It holds {len(loose)} images directly: move them into a subfolder such as {root / '10_mysubject'}."
            if loose
            else ""
        )
        if loose and parse_folder_name(root.name) is not None:  # the classic mistake: the image folder itself
            hint = (
                f" {root.name!r} is itself a '<repeats>_<name>' image folder: give its parent folder, "
                f"{option}={str(root.parent)!r}."
            )
        raise SdloraError(
            f"{option}={str(root)!r} has no '<repeats>_<name>' subfolders (kohya's convention).{hint} Expected "
            f"layout:\n  {root}/\n    10_mysubject/      <- seen 10 times per epoch; caption fallback 'mysubject'\n"
            "      001.png  001.txt\n      002.jpg  002.txt"
        )
    return subsets, warnings
