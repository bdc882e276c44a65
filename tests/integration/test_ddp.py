"""``trainer=ddp`` on CPU: two processes (gloo) started by Lightning from ``python train.py`` give the LoRA of one
process with the same global batch; only rank 0 writes files."""

from __future__ import annotations

import json

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from sdlora.sweep.record import read_record
from tests.helpers.cli import run_train_py
from tests.helpers.config import compose_config, tiny_overrides

# several training processes (a port each): never beside another such test (pyproject: --dist loadgroup)
pytestmark = pytest.mark.xdist_group("processes")


def _relative_difference(a: dict, b: dict) -> float:
    """‖a − b‖ / ‖b‖ over every trained tensor (Adam turns float summation-order noise in near-zero gradients into
    small update differences, so single elements are a poor measure)."""
    assert a.keys() == b.keys()
    keys = [k for k in a if "lora_" in k]
    difference = torch.cat([(a[k] - b[k]).flatten() for k in keys]).norm()
    return float(difference / torch.cat([b[k].flatten() for k in keys]).norm())


def test_ddp_on_two_cpu_processes_equals_one_process_with_the_global_batch(example_data, tmp_path):
    common = ["optimizer.lr=1e-2", "trainer.max_steps=4", "data.flip_aug=true", "loss.noise_offset=0.05"]
    ddp_dir = tmp_path / "ddp"
    args = tiny_overrides(example_data, "data.batch_size=1", *common, "trainer=ddp", "trainer.devices=2")
    output = run_train_py(args, ddp_dir)
    assert "Starting with 2 processes" in output
    plan = json.loads((ddp_dir / "data_plan.json").read_text())
    assert (plan["world_size"], plan["global_batch_size"], plan["steps_per_epoch"]) == (2, 2, 60)  # 120 samples / 2
    assert (ddp_dir / "train_ddp_process_1.log").is_file()  # the second process ran in the same run folder
    assert sorted(p.name for p in ddp_dir.glob("*.safetensors")) == ["last.safetensors"]
    record = read_record(ddp_dir)
    assert record["status"] == "completed" and record["steps"] == 4

    # one process, global batch 2: the same LoRA up to float summation order
    single = train(compose_config(*tiny_overrides(example_data, "data.batch_size=2", *common)), tmp_path / "single")
    # one process with batch 1 (another global batch): clearly another LoRA, which the tolerance must tell apart
    other = train(compose_config(*tiny_overrides(example_data, "data.batch_size=1", *common)), tmp_path / "other")
    ddp, _ = load_lora(ddp_dir / "last.safetensors")
    same, _ = load_lora(single["files"][0])
    different, _ = load_lora(other["files"][0])
    assert max(float(v.abs().max()) for k, v in same.items() if "lora_up" in k) > 1e-3, "training must move it"
    close, far = _relative_difference(ddp, same), _relative_difference(different, same)
    assert close < 2e-3 and far > 20 * close, (close, far)


def test_ema_under_ddp_equals_one_process(example_data, tmp_path):
    """The EMA (its post-hoc snapshots, val/loss_ema) of a two-process run is the one-process EMA with the same global
    batch; rank 0 alone writes the -ema files and snapshots. Both with disk caches of latents and text-encoder outputs:
    rank 0 fills them, rank 1 reads its files, and the VAE and text encoders wait in host memory between
    validations."""
    common = ["optimizer.lr=1e-2", "trainer.max_steps=4", "ema=default", "ema.decay=0.5", "ema.posthoc=true",
              "ema.snapshot_every=2", "validation.split=0.25", "validation.every_n_steps=2", "data.cache_latents=disk",
              "data.cache_text_encoder_outputs_to_disk=true", "network.train_text_encoder=false"]  # fmt: skip
    ddp_dir = tmp_path / "ddp"
    run_train_py(
        tiny_overrides(example_data, "data.batch_size=1", *common, "trainer=ddp", "trainer.devices=2"), ddp_dir
    )
    assert sorted(p.name for p in ddp_dir.glob("*.safetensors")) == ["last-ema.safetensors", "last.safetensors"]
    for log, counts in (("train.log", "9 computed, 0 reused"), ("train_ddp_process_1.log", "0 computed, 9 reused")):
        cached = [line for line in (ddp_dir / log).read_text().splitlines() if "Cached" in line]
        assert len(cached) == 2 and all(counts in line for line in cached), cached
    snapshots = sorted(p.name for p in (ddp_dir / "posthoc_ema").iterdir())
    assert snapshots == [f"sigma{s}-step0000000{n}.safetensors" for s in ("0.050", "0.100") for n in (2, 4)]
    single = train(compose_config(*tiny_overrides(example_data, "data.batch_size=2", *common)), tmp_path / "single")
    assert single["steps"] == 4
    ddp, _ = load_lora(ddp_dir / "last-ema.safetensors")
    same, _ = load_lora(tmp_path / "single" / "last-ema.safetensors")
    trained, _ = load_lora(tmp_path / "single" / "last.safetensors")
    close = _relative_difference(ddp, same)
    assert close < 2e-3 and _relative_difference(trained, same) > 20 * close  # an EMA, not the trained weights
    assert read_record(ddp_dir)["val_loss_ema"] == pytest.approx(single["val_loss_ema"], rel=1e-3)  # every rank's
