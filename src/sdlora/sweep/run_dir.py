"""sdlora never writes into a dataset folder — not even when ``hydra.run.dir`` points inside one.

Hydra creates the run folder and writes ``.hydra/`` and the job's log there before sdlora's code runs. When that
folder lies inside a training, regularisation or validation image folder, the job is refused before anything else is
written, and what Hydra created there is removed again (its files, and the folders it made for them), so that the
dataset folder is byte-identical afterwards.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

log = logging.getLogger("sdlora")


def process_started_at() -> float:
    """When this process started (Linux: its /proc entry), else now: folders newer than it were made by it."""
    try:
        return os.stat(f"/proc/{os.getpid()}").st_ctime
    except OSError:
        return time.time()


def dataset_folders(cfg: Any) -> list[tuple[str, Path]]:
    """(option, folder) of every image folder the composed config names."""
    folders = []
    for option in ("data.train_dir", "data.reg_dir", "validation.dir"):
        value = OmegaConf.select(cfg, option, default=None, throw_on_missing=False)
        if value:
            folders.append((option, Path(str(value)).expanduser()))
    for i, subset in enumerate(OmegaConf.select(cfg, "data.subsets", default=None) or []):
        value = subset.get("dir") if hasattr(subset, "get") else None
        if value and not OmegaConf.is_missing(subset, "dir"):
            folders.append((f"data.subsets[{i}].dir", Path(str(value)).expanduser()))
    return folders


def inside_dataset(cfg: Any, run_dir: Path) -> tuple[str, Path] | None:
    """The (option, folder) of the image folder ``run_dir`` lies in, if any."""
    run = run_dir.resolve()
    for option, folder in dataset_folders(cfg):
        folder = folder.resolve()
        if run == folder or folder in run.parents:
            return option, folder
    return None


def undo_hydra_files(run_dir: Path, stop_at: Path) -> None:
    """Remove what Hydra wrote into ``run_dir`` (``.hydra/`` and its log file, whose handlers are closed first) and the
    folders it created for them, up to ``stop_at``."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        filename = getattr(handler, "baseFilename", None)
        if filename and Path(filename).resolve().parent == run_dir.resolve():
            root.removeHandler(handler)
            handler.close()
            Path(filename).unlink(missing_ok=True)
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    folder, stop_at, started = run_dir.resolve(), stop_at.resolve(), process_started_at()
    while folder != stop_at and stop_at in folder.parents:
        if any(folder.iterdir()) or folder.stat().st_ctime < started - 1:
            break
        folder.rmdir()
        folder = folder.parent


def refuse_run_dir_in_dataset(cfg: Any, run_dir: Path) -> str | None:
    """The message refusing a run folder inside an image folder (after undoing Hydra's files), or None."""
    found = inside_dataset(cfg, run_dir)
    if found is None:
        return None
    option, folder = found
    undo_hydra_files(run_dir, folder)
    return (f"hydra.run.dir={run_dir} is inside the image folder {option}={folder}: sdlora never writes into a "
            "dataset; choose a run folder outside it (the default is outputs/<date>/<time>/)")  # fmt: skip
