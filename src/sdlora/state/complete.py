"""Completing a run whose last state was written but whose final LoRA file was not (a kill in between).

``resume=<state at the run's last step>`` has nothing left to train: the final ``<name>.<ext>`` is written beside the
state from its LoRA (with the run's metadata) when it is missing, and the run ends as completed.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from sdlora.assemble import Run

log = logging.getLogger("sdlora")


def complete_finished_run(run: Run) -> dict[str, Any]:
    """Write the missing final LoRA of a finished run from its last state; the summary of the run."""
    from safetensors.torch import load_file

    from sdlora.network.io import SAVE_DTYPES, SUFFIXES, save_lora
    from sdlora.network.metadata import LoRAMetadata
    from sdlora.state.folder import LORA_FILE

    config, point = run.config, run.resume
    save = config.save
    target = Path(point.path).parent / f"{save.output_name}{SUFFIXES[save.format.value]}"
    if target.exists():
        log.info("already complete: %s exists (the state %s is the run's last step)", target, point.path)
        return {"steps": point.step, "files": [str(target)], "completed_from": str(point.path)}
    dtype = SAVE_DTYPES[save.precision.value if save.precision else None]
    tensors = {k: (v.to(dtype) if dtype is not None else v) for k, v in load_file(str(point.path / LORA_FILE)).items()}
    prediction = "v_prediction" if config.model.v_parameterization else "epsilon"
    epochs = math.ceil(point.step / run.data.plan.length.steps_per_epoch)
    metadata = LoRAMetadata(run).for_save(None, prediction, point.step, epochs)
    save_lora(target, tensors, metadata if target.suffix == ".safetensors" else None)
    log.info("already complete: wrote %s from the run's last state %s", target, point.path)
    return {"steps": point.step, "files": [str(target)], "completed_from": str(point.path)}
