"""Write the trained LoRA to the run folder in kohya's format (``<output_name>.safetensors`` at the end).

With ``save.also_diffusers`` every save also writes ``<name>.diffusers.safetensors``: the same network in
diffusers/PEFT key format (:mod:`sdlora.network.export`), with the same metadata.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch

from sdlora.network.io import SUFFIXES, save_lora
from sdlora.network.metadata import save_time_metadata
from sdlora.network.network import LoRANetwork


class SaveLoRA(L.Callback):
    """Saves the final LoRA file when training ends (kohya: ``{output_name}.{ext}``, ``ss_epoch`` = epochs run)."""

    def __init__(
        self,
        run_dir: Path,
        output_name: str,
        metadata: Callable[[str], dict[str, str]],
        steps_per_epoch: int,
        save_format: str = "safetensors",
        dtype: torch.dtype | None = None,
        also_diffusers: bool = False,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.output_name = output_name
        self.metadata = metadata
        self.suffix = SUFFIXES[save_format]
        self.dtype = dtype
        self.steps_per_epoch = steps_per_epoch
        self.also_diffusers = also_diffusers
        self.saved: list[Path] = []

    def save(self, network: LoRANetwork, prediction_type: str, name: str, steps: int, epoch: int) -> Path:
        """Write ``network`` as ``<run_dir>/<name><suffix>`` with the run's metadata and this save's step/epoch."""
        metadata = {**self.metadata(prediction_type), **save_time_metadata(steps, epoch)}
        path = save_lora(self.run_dir / f"{name}{self.suffix}", network.state_dict(self.dtype), metadata)
        self.saved.append(path)
        if self.also_diffusers:
            from sdlora.network.export import peft_state_dict

            export = save_lora(
                self.run_dir / f"{name}.diffusers.safetensors", peft_state_dict(network, self.dtype), metadata
            )
            self.saved.append(export)
        return path

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.fast_dev_run:
            epochs_run = math.ceil(trainer.global_step / self.steps_per_epoch)
            network, prediction = pl_module.network, pl_module.components.prediction_type
            self.save(network, prediction, self.output_name, trainer.global_step, epochs_run)
