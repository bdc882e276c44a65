"""``resume``: find the state folder and decide whether the new config may continue it.

``resume=<folder>`` takes a state folder (``<name>-…-state``), or any folder holding state folders — a run folder, or a
folder of run folders such as ``outputs/`` — in which case the newest state below it is used (newest by the time it
was saved; at most four levels deep). ``resume=latest`` is the newest state under ``outputs/``, the default root of
the run folders (relative to the working directory; with another ``hydra.run.dir`` name that root instead).
``resume=auto`` is the newest state in the run's own folder when there is one, else a fresh start: what a job that a
cluster requeued needs (a requeued SLURM job does it without being told: :func:`sdlora.signals.requeued_by_slurm`).
Only intact states are used (their manifest matches their files); newer damaged ones are skipped with a warning
saying why, and a damaged state named directly is an error naming the file.

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
from sdlora.state.folder import INFO_FILE, is_state_folder, read_info, state_problem

log = logging.getLogger("sdlora")

LATEST = "latest"
AUTO = "auto"
LATEST_ROOT = Path("outputs")
MAX_DEPTH = 4


def _saved_at(folder: Path) -> tuple[float, int] | None:
    """(time saved, step) from state.json; None when it cannot be read (a damaged state)."""
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        return float(info.get("saved_at", 0.0)), int(info.get("global_step", 0))
    except (OSError, ValueError, AttributeError):
        return None


def state_folders(root: Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Every state folder at most ``max_depth`` levels below ``root`` (hidden temporary folders excluded)."""
    found = []
    for depth in range(1, max_depth + 1):
        pattern = "/".join(["*"] * (depth - 1) + ["*-state"])
        found += [p for p in root.glob(pattern) if not p.name.startswith(".") and is_state_folder(p)]
    return found


def newest_state(root: Path) -> tuple[Path | None, list[str]]:
    """The most recently saved *intact* state folder under ``root`` (ties: the higher step), and one line for each
    newer state that was skipped because it is damaged (:func:`sdlora.state.folder.state_problem`)."""
    dated = {folder: _saved_at(folder) for folder in state_folders(root)}
    skipped = [
        f"{f.name}: {state_problem(f) or 'its state.json cannot be read'}" for f, at in dated.items() if at is None
    ]
    for folder in sorted((f for f, at in dated.items() if at is not None), key=dated.get, reverse=True):
        problem = state_problem(folder)
        if problem is None:
            return folder, skipped
        skipped.append(f"{folder.name}: {problem}")
    return None, skipped


def locate(value: str, run_dir: Path | None = None) -> Path | None:
    """The state folder that ``resume=value`` names (see the module docstring). ``auto`` looks in ``run_dir`` and
    returns None when it holds no intact state."""
    if value == AUTO:
        if run_dir is None or not Path(run_dir).is_dir():
            return None
        newest, skipped = newest_state(Path(run_dir))
        _report_skipped(value, skipped)
        return newest.resolve() if newest is not None else None
    path = LATEST_ROOT if value == LATEST else Path(value).expanduser()
    if is_state_folder(path):
        problem = state_problem(path)
        if problem is not None:
            raise SdloraError(f"resume={value!r} cannot be used: {problem}. Resume from an older state of the run")
        return path.resolve()
    if not path.is_dir():
        if value == LATEST:
            raise SdloraError(
                f"resume=latest: there is no {LATEST_ROOT}/ folder here ({Path.cwd()}); give the state folder or the "
                "folder holding your run folders instead: resume=/path/to/run/<name>-step00000200-state"
            )
        raise SdloraError(f"resume={value!r} does not exist: give a state folder (<name>-…-state) or a run folder")
    newest, skipped = newest_state(path)
    _report_skipped(value, skipped)
    if newest is None and skipped:
        raise SdloraError(
            f"resume={value!r}: the state folder(s) under {path} are damaged, none can be used ({len(skipped)}: "
            f"{'; '.join(skipped[:3])}); resume from another run's state"
        )
    if newest is None:
        raise SdloraError(
            f"resume={value!r}: there is no state folder (<name>-…-state with {INFO_FILE}) under {path}; states are "
            "written with save.state=true"
        )
    return newest.resolve()


def _report_skipped(value: str, skipped: list[str]) -> None:
    for line in skipped:
        log.warning("resume=%s: skipped the damaged state %s", value, line)


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

    finished: bool = False  # the state is at the run's last step: nothing to train, only final files to complete


def resume_point(path: Path, current: dict[str, Any], allow_changes: bool) -> ResumePoint:
    """Compare the fingerprint of the state folder ``path`` (found by :func:`locate`) with ``current``
    (:func:`sdlora.state.fingerprint.fingerprint` of the new config)."""
    from sdlora.state.fingerprint import compare

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
    if point.step > new_total or (point.step == new_total and new_total != old_total):
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
    if point.step == new_total:
        return ResumePoint(path, info, finished=True)
    log.info("Resuming from %s (step %d, epoch %d)", path, point.step, point.epoch + 1)
    return point
