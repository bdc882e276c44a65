"""``trainer=fsdp`` on one CUDA GPU (NCCL, bf16 autocast, the VAE and LoRA moved to the GPU beside the FSDP-managed
frozen model): the same LoRA as the plain single-GPU run, with samples, validation and a training state. Sharding over
several processes is tested on CPU (tests/integration/test_fsdp.py); one process runs FSDP unsharded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import ROOT, compose_config, tiny_overrides

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _gpu_run(train_dir: Path, run_dir: Path, *extra: str, model: str) -> dict:
    overrides = [o for o in tiny_overrides(train_dir, *extra, model=model) if o != "trainer.accelerator=cpu"]
    summary = train(compose_config(*overrides, "trainer.accelerator=gpu"), run_dir)
    assert math.isfinite(summary["loss"])
    return summary


@pytest.mark.parametrize("model", ["tiny", "tiny_sdxl"])  # SDXL: a float32 VAE beside the bfloat16 frozen model
def test_fsdp_on_one_gpu_equals_the_plain_run(model, small_dataset, tmp_path):
    common = [
        "trainer.max_steps=4", "data.batch_size=1", "optimizer.lr=1e-2", "precision=bf16_mixed",
        "validation.split=0.25", "validation.every_n_steps=2", f"sample.prompts={ROOT / 'examples/prompts.txt'}",
        "sample.every_n_steps=4", "save.state=true", "network.scale_weight_norms=1.0",
    ]  # fmt: skip
    plain = _gpu_run(small_dataset, tmp_path / "plain", *common, model=model)
    fsdp = _gpu_run(small_dataset, tmp_path / "fsdp", *common, "trainer=fsdp", "trainer.devices=1", model=model)
    assert fsdp["steps"] == plain["steps"] == 4
    assert abs(fsdp["val_loss"] - plain["val_loss"]) < 1e-3 * abs(plain["val_loss"])
    a, _ = load_lora(tmp_path / "fsdp" / "last.safetensors")
    b, _ = load_lora(tmp_path / "plain" / "last.safetensors")
    keys = [k for k in b if "lora_" in k]
    difference = (
        torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm() / torch.cat([b[k].flatten() for k in keys]).norm()
    )
    assert float(difference) < 1e-2, float(difference)
    assert len(list((tmp_path / "fsdp" / "sample").glob("*.png"))) == 3
    assert (tmp_path / "fsdp" / "last-state" / "lora.safetensors").is_file()
