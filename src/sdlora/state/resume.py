"""``resume``: find the state folder and decide whether the new config may continue it.

``resume=<folder>`` takes a state folder (``<name>-…-state``), or any folder holding state folders — a run folder, or a
folder of run folders such as ``outputs/`` — in which case the newest state below it is used (newest by the time it
was saved; at most four levels deep). ``resume=latest`` is the newest state under ``outputs/``, the default root of
the run folders (relative to the working directory; with another ``hydra.run.dir`` name that root instead).

The new config must keep the data order and the schedule (:mod:`sdlora.state.fingerprint`); otherwise the run stops
with the list of differences, unless ``resume_allow_changes=true``. A larger horizon (``trainer.max_steps`` or
``trainer.max_epochs`` raised, e.g. to continue a finished run) is allowed with a warning: the LR schedule is then
stretched to the new total from the state's step on.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.state.folder import INFO_FILE, is_state_folder, read_info

log = logging.getLogger("sdlora")

LATEST = "latest"
LATEST_ROOT = Path("outputs")
MAX_DEPTH = 4


def _saved_at(folder: Path) -> tuple[float, int]:
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        return float(info.get("saved_at", 0.0)), int(info.get("global_step", 0))
    except (OSError, ValueError):
        return 0.0, 0


def state_folders(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every state folder at most ``max_depth`` levels below ``root`` (hidden temporary folders excluded)."""
    found = []
    for depth in range(1, max_depth + 1):
        pattern = "/".join(["*"] * (depth - 1) + ["*-state"])
        found += [p for p in root.glob(pattern) if not p.name.startswith(".") and is_state_folder(p)]
    return found


def newest_state(root: Path) -> Path | None:
    """The most recently saved state folder under ``root`` (ties: the higher step)."""
    folders = state_folders(root)
    return max(folders, key=_saved_at) if folders else None


def locate(value: str) -> Path:
    """The state folder that ``resume=value`` names (see the module docstring)."""
    path = LATEST_ROOT if value == LATEST else Path(value).expanduser()
    if is_state_folder(path):
        return path.resolve()
    if not path.is_dir():
        if value == LATEST:
            raise SdloraError(
                f"resume=latest: there is no {LATEST_ROOT}/ folder here ({Path.cwd()}); give the state folder or the "
                "folder holding your run folders instead: resume=/path/to/run/<name>-step00000200-state"
            )
        raise SdloraError(f"resume={value!r} does not exist: give a state folder (<name>-…-state) or a run folder")
    newest = newest_state(path)
    if newest is None:
        raise SdloraError(
            f"resume={value!r}: no state folder (<name>-…-state with {INFO_FILE}) under {path}; states are written "
            "with save.state=true"
        )
    return newest.resolve()


@dataclass
class ResumePoint:
    path: Path
    info: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.info["global_step"])

    @property
    def epoch(self) -> int:
        return int(self.info["epoch"])


def resume_point(value: str, current: dict[str, Any], allow_changes: bool) -> ResumePoint:
    """Locate the state and compare its fingerprint with ``current``
    (:func:`sdlora.state.fingerprint.fingerprint` of the new config)."""
    from sdlora.state.fingerprint import compare

    path = locate(value)
    info = read_info(path)
    point = ResumePoint(path, info)
    saved = info["fingerprint"]
    differences = compare(saved, current)
    old_total, new_total = saved["horizon"]["total_steps"], current["horizon"]["total_steps"]
    if new_total < old_total:
        differences.append(
            f"the run's total steps (from trainer.max_steps/trainer.max_epochs): {old_total} (state) → {new_total} "
            "(now); lowering it changes the LR schedule"
        )
    if point.step >= new_total:
        raise SdloraError(
            f"resume: the state {path} is at step {point.step}, and this run ends at step {new_total}: nothing to "
            "train. Raise trainer.max_steps (or trainer.max_epochs) to continue training"
        )
    if differences and not allow_changes:
        raise SdloraError(
            f"resume: this config changes the data order or the schedule of the run saved in {path}. Use the same "
            "settings, or set resume_allow_changes=true to continue anyway. Differences:",
            differences,
        )
    for line in differences:
        log.warning("resume with resume_allow_changes=true: %s", line)
    if new_total > old_total:
        log.warning(
            "resume: the LR schedule horizon changed from %d to %d steps (trainer.max_steps/trainer.max_epochs "
            "raised); the schedule continues from step %d over the new total",
            old_total, new_total, point.step,
        )  # fmt: skip
    log.info("Resuming from %s (step %d, epoch %d)", path, point.step, point.epoch + 1)
    return point
