"""The state folder: ``<name>-step00000200-state/`` holds everything a run needs to continue exactly.

    state.json          what the state is: step, epoch, when, sdlora version, and the schedule fingerprint
                        (:mod:`sdlora.state.fingerprint`) that ``resume`` compares with the new config
    lora.safetensors    the LoRA weights in kohya's format, in the trained dtype (usable as a LoRA file)
    training_state.pt   Lightning's checkpoint without model weights: optimizer, LR scheduler, grad scaler, loop
                        progress and the data position (sampler epoch and batches consumed), callback states, and
                        sdlora's extras (every RNG stream, the running loss average, skipped-batch count)

Never the frozen base model. The folder is written under a temporary name and renamed into place, so an interrupted
save leaves the previous states as they were. :class:`sdlora.state.checkpoint_io.StateFolderIO` is the Lightning
``CheckpointIO`` that writes and reads this layout: ``trainer.save_checkpoint(folder)``, ``trainer.fit(ckpt_path=…)``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from sdlora.errors import SdloraError
from sdlora.utils.atomic import atomic_folder

INFO_FILE = "state.json"
LORA_FILE = "lora.safetensors"
TRAINING_FILE = "training_state.pt"
FORMAT = "sdlora-state"
VERSION = 1
LORA_KEY = "sdlora_lora"  # checkpoint key of the LoRA tensors once loaded (the model state_dict stays empty)
INFO_KEY = "sdlora_info"  # checkpoint key of state.json's content


def is_state_folder(path: Path) -> bool:
    return (Path(path) / INFO_FILE).is_file() and (Path(path) / TRAINING_FILE).is_file()


def read_info(path: str | Path) -> dict[str, Any]:
    """state.json of a state folder; a readable error when ``path`` is not one."""
    path = Path(path).expanduser()
    if not is_state_folder(path):
        raise SdloraError(
            f"resume={str(path)!r} is not a training state folder (no {INFO_FILE} and {TRAINING_FILE}); state "
            "folders are written with save.state=true and are named <output_name>-…-state"
        )
    info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    if info.get("format") != FORMAT or int(info.get("version", 0)) > VERSION:
        raise SdloraError(f"{path / INFO_FILE} is not a state of this sdlora version (format {info.get('format')!r})")
    return info


def write_state(path: str | Path, lora: dict[str, Any], training: dict[str, Any], info: dict[str, Any]) -> Path:
    """Write a state folder atomically: ``lora`` (kohya tensors), ``training`` (torch-saveable), ``info`` (JSON)."""
    import torch
    from safetensors.torch import save_file

    lora = {k: v.detach().cpu().contiguous() for k, v in lora.items()}
    info = {"format": FORMAT, "version": VERSION, **info}
    with atomic_folder(path) as tmp:
        save_file(lora, str(tmp / LORA_FILE), metadata={"sdlora_state_step": str(info.get("global_step", ""))})
        torch.save(training, tmp / TRAINING_FILE)
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Path(path)


def read_state(path: str | Path, map_location: Any = "cpu") -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(LoRA tensors, training state, info) of a state folder. The training state is read with
    ``weights_only=True``: a state folder cannot run code."""
    import torch
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    info = read_info(path)
    training = torch.load(path / TRAINING_FILE, map_location=map_location, weights_only=True)
    return load_file(str(path / LORA_FILE)), training, info


def remove_state(path: str | Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
