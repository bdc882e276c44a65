"""The new types under ``trainer=fsdp`` on two CPU processes: Kohya DyLoRA (rows trained by per-step draws, rows
without a gradient) and LoHa (LyCORIS's module around a sharded frozen layer) give the LoRA of one process with the
same global batch — every process draws the same rows from the same seeded generator."""

from __future__ import annotations

import pytest

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.cli import run_train_py
from tests.helpers.config import compose_config, tiny_overrides
from tests.integration.test_ddp import _relative_difference

pytestmark = pytest.mark.xdist_group("processes")  # two training processes: one such test at a time

COMMON = ["optimizer.lr=1e-2", "trainer.max_steps=3", "data.flip_aug=true"]


@pytest.mark.parametrize("network", [("network=dylora", "network.unit=2"), ("network=loha", "network.rank=4")])
def test_fsdp_equals_one_process(example_data, tmp_path, network):
    args = [*COMMON, *network]
    run_train_py(tiny_overrides(example_data, "data.batch_size=1", *args, "trainer=fsdp", "trainer.devices=2"),
                 tmp_path / "fsdp", env={"OMP_NUM_THREADS": "1"})  # fmt: skip
    train(compose_config(*tiny_overrides(example_data, "data.batch_size=2", *args)), tmp_path / "single")
    fsdp, _ = load_lora(tmp_path / "fsdp" / "last.safetensors")
    single, _ = load_lora(tmp_path / "single" / "last.safetensors")
    assert fsdp.keys() == single.keys()
    trained = {k: v for k, v in single.items() if k.endswith(("lora_up.weight", "hada_w2_a"))}
    assert max(float(v.abs().max()) for v in trained.values()) > 1e-3, "training must move it"
    assert _relative_difference(fsdp, single) < 2e-3
