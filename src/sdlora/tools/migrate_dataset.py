"""sd-scripts' ``--dataset_config`` (a TOML of ``[general]``, ``[[datasets]]`` and ``[[datasets.subsets]]``) →
``data.*`` and ``data.subsets`` (sdlora trains one dataset; its subsets keep their own options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.tools.migrate_rules import Context, Override

#: sd-scripts subset option → key of an sdlora ``data.subsets`` entry.
SUBSET_KEYS = {
    "image_dir": "dir", "num_repeats": "repeats", "class_tokens": "class_tokens", "is_reg": "is_reg",
    "caption_extension": "caption_extension", "shuffle_caption": "shuffle_caption", "keep_tokens": "keep_tokens",
    "caption_separator": "caption_separator", "caption_dropout_rate": "caption_dropout_rate",
    "caption_tag_dropout_rate": "caption_tag_dropout_rate",
    "caption_dropout_every_n_epochs": "caption_dropout_every_n_epochs", "flip_aug": "flip_aug",
    "color_aug": "color_aug", "random_crop": "random_crop",
}  # fmt: skip
#: dataset-level options → ``data.*`` (the subset options above, given in [general] or [[datasets]], too).
DATASET_KEYS = {
    "resolution": "data.resolution", "batch_size": "data.batch_size", "enable_bucket": "data.enable_bucket",
    "min_bucket_reso": "data.min_bucket_reso", "max_bucket_reso": "data.max_bucket_reso",
    "bucket_reso_steps": "data.bucket_reso_steps", "bucket_no_upscale": "data.bucket_no_upscale",
}  # fmt: skip


def _resolution(value: Any) -> str:
    parts = value if isinstance(value, (list, tuple)) else [value]
    return str(parts[0]) if len(set(parts)) == 1 else f"{parts[0]},{parts[1]}"


def dataset_overrides(ctx: Context, path: Path) -> list[Override]:
    """The ``data.*`` overrides of a dataset config; options sdlora lacks go to ``ctx.unsupported``."""
    from sdlora.tools.migrate_input import load_toml

    if not path.is_file():
        ctx.unsupported["dataset_config"] = f"{path} does not exist: set data.subsets yourself (README)"
        return []
    try:
        config = load_toml(path)
    except (SdloraError, OSError) as exc:
        ctx.unsupported["dataset_config"] = f"{path} could not be read ({exc})"
        return []
    datasets = config.get("datasets") or []
    problem = _shape_problem(config, datasets)
    if problem:
        ctx.unsupported["dataset_config"] = (f"{path}: {problem} (sd-scripts' layout: [general], [[datasets]], "
                                             "[[datasets.subsets]]); set data.subsets yourself (README)")  # fmt: skip
        return []
    if len(datasets) > 1:
        ctx.unsupported["dataset_config"] = f"{len(datasets)} datasets: sdlora trains one; the first is converted"
    dataset = datasets[0] if datasets else {}
    out: list[Override] = []
    for key, value in {**config.get("general", {}), **{k: v for k, v in dataset.items() if k != "subsets"}}.items():
        if key in DATASET_KEYS:
            out.append(Override(DATASET_KEYS[key], _resolution(value) if key == "resolution" else value))
        elif key in SUBSET_KEYS and key not in ("image_dir", "num_repeats", "class_tokens", "is_reg"):
            out.append(Override(f"data.{SUBSET_KEYS[key]}", value))
        else:
            ctx.unsupported[f"dataset_config: {key}"] = "not an sdlora data option"
    subsets = []
    for subset in dataset.get("subsets", []):
        entry = {}
        for key, value in subset.items():
            if key in SUBSET_KEYS:
                entry[SUBSET_KEYS[key]] = value
            else:
                ctx.unsupported[f"dataset_config: subsets.{key}"] = "not an sdlora subset option"
        subsets.append(entry)
    if subsets:
        out.append(Override("data.subsets", subsets))
    return out


def _shape_problem(config: dict[str, Any], datasets: Any) -> str | None:
    """What keeps ``config`` from being sd-scripts' dataset layout (tables where tables belong), else None."""
    if not isinstance(config.get("general", {}), dict):
        return "general must be a table ([general])"
    if not isinstance(datasets, list) or not all(isinstance(d, dict) for d in datasets):
        return "datasets must be an array of tables ([[datasets]], not [datasets])"
    for d in datasets:
        subsets = d.get("subsets", [])
        if not isinstance(subsets, list) or not all(isinstance(x, dict) for x in subsets):
            return "each dataset's subsets must be an array of tables ([[datasets.subsets]])"
    return None
