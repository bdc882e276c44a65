"""``trainer=fsdp`` on CPU: two processes (gloo) started by Lightning from ``python train.py``, the frozen model
sharded over them. The LoRA equals one process with the same global batch (validation, samples, max-norm and
training states included), only rank 0 writes files, and a resumed run continues exactly."""

from __future__ import annotations

import json

import pytest

from sdlora.network.io import load_lora
from sdlora.run import train
from sdlora.sweep.record import read_record
from tests.helpers.cli import run_train_py
from tests.helpers.config import ROOT, compose_config, tiny_overrides
from tests.integration.test_ddp import _relative_difference

# several training processes (a port each): never beside another such test (pyproject: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("processes")

COMMON = [
    "optimizer.lr=1e-2", "trainer.max_steps=4", "data.flip_aug=true", "loss.noise_offset=0.05",
    "validation.split=0.1", "validation.every_n_steps=2", "save.state=true", "save.every_n_steps=2",
    f"sample.prompts={ROOT / 'examples/prompts.txt'}", "sample.every_n_steps=4", "network.scale_weight_norms=1.0",
]  # fmt: skip


def _fsdp_run(data, run_dir, *extra: str) -> str:
    args = tiny_overrides(data, "data.batch_size=1", *COMMON, "trainer=fsdp", "trainer.devices=2", *extra)
    return run_train_py(args, run_dir)


def test_fsdp_on_two_cpu_processes_equals_one_process_and_resumes_exactly(example_data, tmp_path):
    fsdp_dir = tmp_path / "fsdp"
    output = _fsdp_run(example_data, fsdp_dir)
    assert "Starting with 2 processes" in output
    assert "FSDP shards the frozen model over 2 processes (FULL_SHARD)" in output
    plan = json.loads((fsdp_dir / "data_plan.json").read_text())
    assert (plan["world_size"], plan["global_batch_size"]) == (2, 2)
    assert sorted(p.name for p in fsdp_dir.glob("*.safetensors")) == [
        "last-step00000002.safetensors", "last-step00000004.safetensors", "last.safetensors",
    ]  # fmt: skip
    assert len(list((fsdp_dir / "sample").glob("*.png"))) == 3  # 3 prompts at step 4, written once
    record = read_record(fsdp_dir)
    assert record["status"] == "completed" and record["steps"] == 4

    single = train(compose_config(*tiny_overrides(example_data, "data.batch_size=2", *COMMON)), tmp_path / "single")
    fsdp, _ = load_lora(fsdp_dir / "last.safetensors")
    same, _ = load_lora(tmp_path / "single" / "last.safetensors")
    assert max(float(v.abs().max()) for k, v in same.items() if "lora_up" in k) > 1e-3, "training must move it"
    assert _relative_difference(fsdp, same) < 2e-3
    assert abs(record["best_val_loss"] - single["best_val_loss"]) < 1e-4
    assert abs(record["loss"] - single["loss"]) < 1e-3 * single["loss"]  # the global batch's loss, not rank 0's

    # a training state of the FSDP run continues exactly (LoRA, optimizer, scheduler, data position, RNG)
    resumed_dir = tmp_path / "resumed"
    _fsdp_run(example_data, resumed_dir, f"resume={fsdp_dir / 'last-step00000002-state'}")
    resumed, _ = load_lora(resumed_dir / "last.safetensors")
    assert all(bool((resumed[k] == fsdp[k]).all()) for k in fsdp)


def test_fsdp_equals_ddp_with_accumulation_and_module_dropout(example_data, tmp_path):
    """Gradient averaging once per optimizer step, after the last accumulated micro-batch, with LoRA modules that get
    no gradient on one process (module dropout) — as DDP does it. Both use AdamW's foreach kernel (FSDP cannot use the
    fused one DDP would pick), so that the comparison is of the gradients, not of two kernels' rounding. Latents are
    cached: the VAE then waits in host memory, outside what FSDP manages."""
    extra = ["trainer.max_steps=3", "trainer.accumulate_grad_batches=2", "network.module_dropout=0.3",
             "+optimizer.foreach=true", "data.cache_latents=memory"]  # fmt: skip
    runs, outputs = {}, {}
    for strategy in ("fsdp", "ddp"):
        args = tiny_overrides(example_data, "data.batch_size=1", "optimizer.lr=1e-2", *extra, f"trainer={strategy}")
        outputs[strategy] = run_train_py([*args, "trainer.devices=2"], tmp_path / strategy)
        runs[strategy], _ = load_lora(tmp_path / strategy / "last.safetensors")
    assert "parameters) stays whole on every process" in outputs["fsdp"]  # the LoRA alone: no VAE
    assert _relative_difference(runs["fsdp"], runs["ddp"]) < 1e-6
