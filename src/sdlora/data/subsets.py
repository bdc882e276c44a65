"""The image folders of a run: ``<repeats>_<name>`` folders under ``data.train_dir`` / ``data.reg_dir`` and the
explicit ``data.subsets`` entries, each with its caption and augmentation settings.

``data.subsets`` entries take every option they leave null from ``data.*``. A folder listed twice is used once (the
first time), as sd-scripts does with duplicated subsets.
"""

from __future__ import annotations

from pathlib import Path

from sdlora.config.schema import DataConfig, SubsetConfig
from sdlora.data.captions import normalise_extension
from sdlora.data.folders import Subset, SubsetOptions, scan_subsets
from sdlora.errors import SdloraError

OPTION_NAMES = (
    "caption_extension",
    "shuffle_caption",
    "keep_tokens",
    "caption_separator",
    "caption_dropout_rate",
    "caption_tag_dropout_rate",
    "caption_dropout_every_n_epochs",
    "flip_aug",
    "color_aug",
    "random_crop",
)


def subset_options(data: DataConfig, entry: SubsetConfig | None = None) -> SubsetOptions:
    """Options from ``data.*``, with a ``data.subsets`` entry's non-null values."""
    values = {name: getattr(data, name) for name in OPTION_NAMES}
    if entry is not None:
        values.update({name: getattr(entry, name) for name in OPTION_NAMES if getattr(entry, name) is not None})
    values["caption_extension"] = normalise_extension(values["caption_extension"])
    return SubsetOptions(**values, weighted_captions=data.weighted_captions)


def resolve_subsets(data: DataConfig) -> tuple[list[Subset], list[str]]:
    """Every subset of the run (training folders first, then regularisation folders) and the folder warnings."""
    options = subset_options(data)
    subsets: list[Subset] = []
    warnings: list[str] = []
    if data.train_dir:
        found, notes = scan_subsets(data.train_dir, "data.train_dir", False, options)
        subsets += found
        warnings += notes
    for i, entry in enumerate(data.subsets):
        subsets.append(_explicit_subset(data, entry, i))
    if data.reg_dir:
        found, notes = scan_subsets(data.reg_dir, "data.reg_dir", True, options)
        subsets += found
        warnings += notes
    if not subsets:
        raise SdloraError(
            "no image folders: set data.train_dir (the parent of '<repeats>_<name>' folders) or data.subsets"
        )
    unique: dict[Path, Subset] = {}
    for subset in subsets:
        if subset.directory in unique:
            warnings.append(f"ignored folder {subset.directory}: it is listed twice (its first entry is used)")
            continue
        unique[subset.directory] = subset
    ordered = sorted(unique.values(), key=lambda s: s.is_reg)  # stable: training subsets first, as kohya
    if all(s.is_reg for s in ordered):
        raise SdloraError(
            "only regularisation folders were found: training needs at least one training image folder "
            "(data.train_dir or a data.subsets entry without is_reg)"
        )
    return ordered, warnings


def _explicit_subset(data: DataConfig, entry: SubsetConfig, index: int) -> Subset:
    option = f"data.subsets[{index}].dir"
    directory = Path(str(entry.dir)).expanduser()
    if not directory.is_dir():
        raise SdloraError(f"{option}={str(directory)!r} does not exist or is not a folder")
    class_tokens = "" if entry.class_tokens is None else str(entry.class_tokens)
    options = subset_options(data, entry)
    return Subset(directory.resolve(), int(entry.repeats), class_tokens, bool(entry.is_reg), options)
