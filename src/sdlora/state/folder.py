"""The state folder: ``<name>-step00000200-state/`` holds everything a run needs to continue exactly.

    state.json          what the state is: step, epoch, when, sdlora version, the run's session, and the schedule
                        fingerprint (:mod:`sdlora.state.fingerprint`) that ``resume`` compares with the new config
    lora.safetensors    the LoRA weights in kohya's format, in the trained dtype (usable as a LoRA file)
    training_state.pt   Lightning's checkpoint without model weights: optimizer, LR scheduler, grad scaler, loop
                        progress and the data position (sampler epoch and batches consumed), callback states, and
                        sdlora's extras (every RNG stream, the running loss average, skipped-batch count)
    manifest.json       the SHA-256 and size of each of the three files, written last

Never the frozen base model. The folder is written under a temporary name and renamed into place, so an interrupted
save leaves the previous states as they were; a state is *valid* only if its manifest matches its files
(:func:`state_problem`), so a truncated, emptied or bit-flipped file is found before anything is loaded. A state with
non-finite LoRA weights is never written. :class:`sdlora.state.checkpoint_io.StateFolderIO` is the Lightning
``CheckpointIO`` that writes and reads this layout: ``trainer.save_checkpoint(folder)``, ``trainer.fit(ckpt_path=…)``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.utils.atomic import atomic_folder
from sdlora.utils.hashing import file_sha256

INFO_FILE = "state.json"
LORA_FILE = "lora.safetensors"
TRAINING_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"
FILES = (INFO_FILE, LORA_FILE, TRAINING_FILE)
FORMAT = "sdlora-state"
VERSION = 2  # 2: manifest.json
LORA_KEY = "sdlora_lora"  # checkpoint key of the LoRA tensors once loaded (the model state_dict stays empty)
INFO_KEY = "sdlora_info"  # checkpoint key of state.json's content


def is_state_folder(path: Path) -> bool:
    """Whether ``path`` looks like a state folder (its state.json and training_state.pt exist; see
    :func:`state_problem` for whether it is intact)."""
    return (Path(path) / INFO_FILE).is_file() and (Path(path) / TRAINING_FILE).is_file()


def _manifest(folder: Path) -> dict[str, Any]:
    files = {name: {"sha256": file_sha256(folder / name), "bytes": (folder / name).stat().st_size} for name in FILES}
    return {"format": FORMAT, "version": VERSION, "files": files}


def state_problem(path: str | Path) -> str | None:
    """Why the state folder ``path`` cannot be used (a missing, truncated or changed file, a manifest that does not
    match), or None when it is intact. Cached per folder and modification time."""
    path = Path(path).expanduser()
    stamps = tuple((path / n).stat().st_mtime_ns if (path / n).exists() else 0 for n in (*FILES, MANIFEST_FILE))
    return _state_problem(str(path.resolve()), stamps)


@functools.lru_cache(maxsize=64)
def _state_problem(location: str, stamps: tuple[int, ...]) -> str | None:
    path = Path(location)
    missing = [name for name in FILES if not (path / name).is_file()]
    if missing:
        return f"{path / missing[0]} is missing"
    if not (path / MANIFEST_FILE).is_file():
        return _legacy_problem(path)
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
        expected = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"{path / MANIFEST_FILE} is damaged (not the manifest sdlora writes)"
    for name in FILES:
        entry = expected.get(name, {}) if isinstance(expected, dict) else {}
        size = (path / name).stat().st_size
        if entry.get("bytes") != size:
            return f"{path / name} has {size} bytes, the manifest says {entry.get('bytes')} (truncated or replaced)"
        if entry.get("sha256") != file_sha256(path / name):
            return f"{path / name} does not match its SHA-256 in {MANIFEST_FILE} (the file was changed or damaged)"
    return None


def _legacy_problem(path: Path) -> str | None:
    """A state written before manifests (version 1): only its state.json can be checked."""
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{path / INFO_FILE} is damaged (not valid JSON) and the state has no {MANIFEST_FILE}"
    return None if info.get("version") == 1 else f"{path / MANIFEST_FILE} is missing (the save did not finish)"


def read_info(path: str | Path) -> dict[str, Any]:
    """state.json of an intact state folder; one readable error naming the file otherwise."""
    path = Path(path).expanduser()
    if not is_state_folder(path):
        raise SdloraError(
            f"resume={str(path)!r} is not a training state folder (no {INFO_FILE} and {TRAINING_FILE}); state "
            "folders are written with save.state=true and are named <output_name>-…-state"
        )
    problem = state_problem(path)
    if problem is not None:
        raise SdloraError(f"resume={str(path)!r} cannot be used: {problem}. Resume from an older state of the run")
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    if info.get("format") != FORMAT or int(info.get("version", 0)) > VERSION:
        raise SdloraError(f"{path / INFO_FILE} is not a state of this sdlora version (format {info.get('format')!r})")
    return info


def write_state(path: str | Path, lora: dict[str, Any], training: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write a state folder atomically: ``lora`` (kohya tensors), ``training`` (torch-saveable), ``info`` (JSON),
    then the manifest. Non-finite LoRA weights are refused (:class:`~sdlora.network.io.NonFiniteWeights`)."""
    import torch
    from safetensors.torch import save_file

    from sdlora.network.io import check_finite

    lora = {k: v.detach().cpu().contiguous() for k, v in lora.items()}
    check_finite(lora, Path(path) / LORA_FILE)
    info = {"format": FORMAT, "version": VERSION, **info}
    with atomic_folder(path) as tmp:
        save_file(lora, str(tmp / LORA_FILE), metadata={"sdlora_state_step": str(info.get("global_step", ""))})
        torch.save(training, tmp / TRAINING_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / MANIFEST_FILE).write_text(json.dumps(_manifest(tmp), indent=2) + "\n", encoding="utf-8")
    return Path(path)


def read_state(path: str | Path, map_location: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(LoRA tensors, training state, info) of an intact state folder. The training state is read with
    ``weights_only=True``: a state folder cannot run code."""
    import torch
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    info = read_info(path)
    try:
        training = torch.load(path / TRAINING_FILE, map_location=map_location, weights_only=True)
        lora = load_file(str(path / LORA_FILE))
    except Exception as exc:  # a legacy state without a manifest can still be damaged
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SdloraError(f"resume={str(path)!r} cannot be read ({reason}): resume from an older state") from None
    return lora, training, info


def remove_state(path: str | Path) -> None:
    """Delete a state folder: renamed to a hidden name first, so that a kill during the deletion leaves no visible,
    partial state (the hidden leftover is removed by the next run in that folder: :func:`clean_leftovers`)."""
    path = Path(path)
    if not path.exists():
        return
    hidden = path.with_name(f".{path.name}.removing-{os.getpid()}")
    os.replace(path, hidden)
    shutil.rmtree(hidden, ignore_errors=True)
