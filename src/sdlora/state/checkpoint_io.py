"""Lightning's ``CheckpointIO`` for state folders (:mod:`sdlora.state.folder`).

Lightning builds the checkpoint (optimizer, schedulers, precision plugin, loops with the data position, callbacks);
:class:`sdlora.callbacks.save_state.TrainingStates` replaces its model ``state_dict`` with the LoRA alone and adds the
RNG streams and the ``state.json`` information. This class splits that dict into the folder's three files and joins them
again on load, leaving the model ``state_dict`` empty: the LoRA goes back into the network through the callback.
"""

from __future__ import annotations

from typing import Any

from lightning.fabric.plugins import CheckpointIO

from sdlora.state.folder import INFO_KEY, LORA_KEY, read_state, remove_state, write_state


class StateFolderIO(CheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        training = dict(checkpoint)
        lora = training.pop("state_dict", {})
        info = training.pop(INFO_KEY, {})
        write_state(path, lora, training, info)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        lora, checkpoint, info = read_state(path, map_location or "cpu")
        checkpoint["state_dict"] = {}
        checkpoint[LORA_KEY] = lora
        checkpoint[INFO_KEY] = info
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        remove_state(path)
