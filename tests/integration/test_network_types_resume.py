"""Training states for the new types: an interrupted-and-resumed run gives the same file bit for bit (a LyCORIS type
with its dropouts and max-norm, Kohya DyLoRA with its per-step draws); ``network.weights`` continues a LoHa file and
refuses a file of another type, naming both."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides
from tests.integration.test_resume import scalars

STEPS = ("trainer.max_steps=6", "save.state=true", "save.every_n_steps=3", "optimizer.lr=1e-2", "data.flip_aug=true")


def run(tmp_path: Path, data: Path, name: str, *extra: str, callbacks=None) -> dict:
    return train(compose_config(*tiny_overrides(data, *extra)), tmp_path / name, callbacks=callbacks)


def same_file(a: Path, b: Path) -> bool:
    ta, tb = load_lora(a)[0], load_lora(b)[0]
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize(
    "network",
    [
        # LyCORIS: rank and module dropout draw in every step; max-norm folds LyCORIS's scalar into the weights
        ("network=loha", "network.rank_dropout=0.2", "network.module_dropout=0.1", "network.scale_weight_norms=0.05"),
        # Kohya DyLoRA: the trainable rows are drawn from the network's generator every step; with 3×3 convs
        ("network=dylora", "network.rank=4", "network.unit=2", "network.conv_rank=4", "network.scale_weight_norms=.05"),
    ],
    ids=["loha", "dylora"],
)
def test_resume_is_bit_exact(small_dataset, tmp_path, network):
    full = run(tmp_path, small_dataset, "full", *STEPS, *network)
    state = tmp_path / "full" / "last-step00000003-state"
    resumed = run(tmp_path, small_dataset, "resumed", *STEPS, *network, f"resume={state}")
    assert full["steps"] == resumed["steps"] == 6
    assert same_file(tmp_path / "full" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")
    assert not same_file(tmp_path / "full" / "last-step00000003.safetensors", tmp_path / "full" / "last.safetensors")
    assert max(scalars(tmp_path / "full", "max_norm/keys_scaled").values()) > 0  # the cap acted


class StartingTensors(L.Callback):
    """Keeps the network's file tensors as training starts."""

    def on_train_start(self, trainer, pl_module) -> None:
        self.tensors = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}


def test_network_weights_continues_a_loha_file_and_refuses_another_type(small_dataset, tmp_path):
    loha = ("network=loha", "network.rank=4", "network.alpha=2", "trainer.max_steps=2", "optimizer.lr=1e-2")
    run(tmp_path, small_dataset, "first", *loha)
    path = tmp_path / "first" / "last.safetensors"
    start = StartingTensors()
    run(tmp_path, small_dataset, "second", *loha, "network.rank=8", f"network.weights={path}", callbacks=[start])
    trained, _ = load_lora(path)
    assert start.tensors.keys() == trained.keys()  # the file's modules, with the file's rank 4 (not 8)
    assert all(torch.equal(start.tensors[k], trained[k]) for k in trained)
    with pytest.raises(SdloraError, match=r"holds LoHa \(hada_\*\) modules, but network=lokr writes LoKr"):
        run(tmp_path, small_dataset, "third", "network=lokr", f"network.weights={path}", "trainer.max_steps=1")
