"""On a CUDA GPU, with the latents and text-encoder outputs cached, the VAE and text encoders wait in host memory
while the U-Net trains, come to the GPU for the samples and the validation loss, and go back after
(:mod:`sdlora.models.host_parts`); the rule and the moves themselves are tested on CPU (tests/unit/test_host_parts.py).
"""

from __future__ import annotations

import math

import pytest
import torch

from sdlora.lit.module import LoRATrainingModule
from sdlora.run import train
from tests.helpers.config import ROOT, compose_config, tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _device(module: torch.nn.Module) -> str:
    return next(module.parameters()).device.type


@pytest.mark.parametrize("model", ["tiny", "tiny_sdxl"])
def test_cached_parts_wait_in_host_memory_and_visit_for_samples_and_validation(
    model, small_dataset, tmp_path, monkeypatch
):
    seen: list[tuple[str, str, tuple[str, ...]]] = []

    def record(self, batch, batch_idx):
        seen.append((_device(self.unet), _device(self.components.vae),
                     tuple(_device(e) for e in self.components.text_encoders)))  # fmt: skip

    monkeypatch.setattr(LoRATrainingModule, "on_train_batch_start", record, raising=False)
    overrides = [o for o in tiny_overrides(small_dataset, model=model) if o != "trainer.accelerator=cpu"]
    extra = [
        "trainer.accelerator=gpu", "precision=bf16_mixed", "data.cache_latents=memory",
        "data.cache_text_encoder_outputs=true", "network.train_text_encoder=false", "validation.split=0.25",
        "validation.every_n_steps=2", f"sample.prompts={ROOT / 'examples/prompts.txt'}", "sample.every_n_steps=2",
    ]  # fmt: skip
    summary = train(compose_config(*overrides, *extra), tmp_path / "run")
    assert math.isfinite(summary["loss"]) and math.isfinite(summary["val_loss"])
    encoders = ("cpu",) * (2 if model == "tiny_sdxl" else 1)
    assert seen and all(step == ("cuda", "cpu", encoders) for step in seen), seen
    assert len(list((tmp_path / "run" / "sample").glob("*.png"))) == 6  # steps 2 and 4, three prompts
