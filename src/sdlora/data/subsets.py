"""The image folders of a run: ``<repeats>_<name>`` folders under ``data.train_dir`` / ``data.reg_dir`` and the
explicit ``data.subsets`` entries, each with its caption and augmentation settings.

``data.subsets`` entries take every option they leave null from ``data.*``. A folder listed twice is used once (the
first time), as sd-scripts does with duplicated subsets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def _get(cfg: Any, name: str, default: Any = None) -> Any:
    return cfg.get(name, default) if hasattr(cfg, "get") else getattr(cfg, name, default)


def subset_options(data_cfg: Any, overrides: Any = None) -> SubsetOptions:
    """Options from ``data.*`` (missing keys: kohya's defaults), with a ``data.subsets`` entry's non-null values."""
    defaults = SubsetOptions()
    values = {name: _get(data_cfg, name, getattr(defaults, name)) for name in OPTION_NAMES}
    if overrides is not None:
        values.update({name: _get(overrides, name) for name in OPTION_NAMES if _get(overrides, name) is not None})
    values["caption_extension"] = normalise_extension(values["caption_extension"])
    return SubsetOptions(**values)


def resolve_subsets(data_cfg: Any) -> tuple[list[Subset], list[str]]:
    """Every subset of the run (training folders first, then regularisation folders) and the folder warnings."""
    options = subset_options(data_cfg)
    subsets: list[Subset] = []
    warnings: list[str] = []
    if _get(data_cfg, "train_dir"):
        found, notes = scan_subsets(_get(data_cfg, "train_dir"), "data.train_dir", False, options)
        subsets += found
        warnings += notes
    for i, entry in enumerate(_get(data_cfg, "subsets") or []):
        subsets.append(_explicit_subset(data_cfg, entry, i))
    if _get(data_cfg, "reg_dir"):
        found, notes = scan_subsets(_get(data_cfg, "reg_dir"), "data.reg_dir", True, options)
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


def _explicit_subset(data_cfg: Any, entry: Any, index: int) -> Subset:
    option = f"data.subsets[{index}].dir"
    directory = Path(str(_get(entry, "dir"))).expanduser()
    if not directory.is_dir():
        raise SdloraError(f"{option}={str(directory)!r} does not exist or is not a folder")
    class_tokens = _get(entry, "class_tokens")
    return Subset(
        directory.resolve(),
        int(_get(entry, "repeats", 1)),
        "" if class_tokens is None else str(class_tokens),
        bool(_get(entry, "is_reg", False)),
        subset_options(data_cfg, entry),
    )
