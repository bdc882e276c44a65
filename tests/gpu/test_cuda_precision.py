"""CUDA-only paths (skipped without a GPU): fp16 autocast with the fp16-gradient scaler of full_fp16, fp16_mixed,
paged bitsandbytes optimizers without the CPU fallback, xformers, and an inductor-compiled U-Net."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides
from tests.integration.test_optimization import Probe

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def cuda_run(tmp_path: Path, train_dir: Path, *extra: str, callbacks=()):
    overrides = [o for o in tiny_overrides(train_dir, "trainer.max_steps=3", *extra) if o != "trainer.accelerator=cpu"]
    summary = train(compose_config(*overrides, "trainer.accelerator=gpu"), tmp_path / "run", callbacks=list(callbacks))
    assert math.isfinite(summary["loss"])
    return summary


def test_full_fp16_uses_the_fp16_gradient_scaler(small_dataset, tmp_path):
    from sdlora.precision.scaler import FP16ParamsGradScaler

    probe = Probe()
    # AdamW8bit: kohya's usual optimizer with full_fp16 (torch AdamW's eps=1e-8 is 0 in float16: optim/rules.py)
    summary = cuda_run(
        tmp_path, small_dataset, "precision=full_fp16", "optimizer=adamw8bit", "optimizer.lr=1e-2", callbacks=[probe]
    )
    module = probe.module
    assert {p.dtype for p in module.network.trainable_parameters()} == {torch.float16}
    assert probe.grad_dtypes == {torch.float16}
    assert isinstance(module.trainer.precision_plugin.scaler, FP16ParamsGradScaler)
    assert next(module.unet.parameters()).dtype == torch.float16
    tensors, meta = load_lora(summary["files"][0])
    assert meta["ss_full_fp16"] == "True" and meta["ss_mixed_precision"] == "fp16"
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))


def test_fp16_mixed_keeps_lora_in_float32(small_dataset, tmp_path):
    probe = Probe()
    cuda_run(tmp_path, small_dataset, "precision=fp16_mixed", callbacks=[probe])
    assert {p.dtype for p in probe.module.network.trainable_parameters()} == {torch.float32}
    assert next(probe.module.unet.parameters()).dtype == torch.float16


@pytest.mark.parametrize("option", ["paged_adamw8bit", "paged_lion8bit"])
def test_paged_optimizers_run_paged_on_cuda(option, small_dataset, tmp_path, caplog):
    cuda_run(tmp_path, small_dataset, f"optimizer={option}")
    assert "paged memory, which needs a CUDA GPU" not in caplog.text


@pytest.mark.skipif(importlib.util.find_spec("xformers") is None, reason="needs xformers")
def test_xformers_attention(small_dataset, tmp_path):
    cuda_run(tmp_path, small_dataset, "model.attention=xformers")


def test_inductor_compiled_unet(small_dataset, tmp_path):
    cuda_run(tmp_path, small_dataset, "model.compile=true", "model.channels_last=true", "precision=bf16_mixed")
