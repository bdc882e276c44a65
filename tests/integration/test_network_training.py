"""End-to-end training with the network options (tiny models, CPU): LoCon + dropouts + max-norm change training as
documented and are logged and recorded in the metadata; per-encoder learning rates are logged per group; a run can
continue from an existing LoRA file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sdlora.network.functional import delta_weight_norm
from sdlora.network.io import load_lora
from tests.integration.test_train_e2e import run, scalars


def module_norms(tensors: dict[str, torch.Tensor]) -> dict[str, float]:
    names = {k.removesuffix(".lora_down.weight") for k in tensors if k.endswith(".lora_down.weight")}
    out = {}
    for name in names:
        down, up = tensors[f"{name}.lora_down.weight"], tensors[f"{name}.lora_up.weight"]
        out[name] = float(delta_weight_norm(up, down, float(tensors[f"{name}.alpha"]) / down.shape[0]))
    return out


def test_locon_with_dropouts_and_max_norm(small_dataset, tmp_path):
    cap = 2e-3
    summary, run_dir = run(
        tmp_path, small_dataset, "network=locon", "network.conv_rank=2", "network.conv_alpha=2",
        "network.dropout=0.1", "network.rank_dropout=0.2", "network.module_dropout=0.1",
        f"network.scale_weight_norms={cap}", "optimizer.lr=5e-2", "trainer.max_steps=3",
        "trainer.accumulate_grad_batches=2",
    )  # fmt: skip
    assert summary["steps"] == 3 and math.isfinite(summary["loss"])
    tensors, meta = load_lora(Path(summary["files"][0]))
    conv = [k for k in tensors if k.endswith(".lora_down.weight") and tensors[k].shape[2:] == (3, 3)]
    assert conv and all(tensors[k].shape[0] == 2 for k in conv)
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight" in conv
    assert tensors["lora_unet_down_blocks_1_resnets_0_conv_shortcut.lora_down.weight"].shape[0] == 8  # base rank

    norms = module_norms(tensors)
    assert max(norms.values()) <= cap * (1 + 1e-4), "every module's ‖ΔW‖ is capped after the last step"
    assert max(norms.values()) > cap * 0.99, "the cap was reached (the lr is high on purpose)"

    logged = scalars(run_dir)
    for tag in ("max_norm/keys_scaled", "max_norm/average_key_norm", "max_norm/max_key_norm"):
        assert len(logged[tag]) == 3, f"{tag}: once per optimizer step, not per micro-batch"
    assert logged["max_norm/keys_scaled"][-1] > 0 and logged["max_norm/max_key_norm"][-1] == pytest.approx(cap)

    assert meta["ss_network_module"] == "networks.lora"
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("8", "1.0")
    assert meta["ss_network_dropout"] == "0.1" and meta["ss_scale_weight_norms"] == str(cap)
    assert json.loads(meta["ss_network_args"]) == {
        "conv_dim": "2", "conv_alpha": "2.0", "rank_dropout": "0.2", "module_dropout": "0.1",
    }  # fmt: skip


def test_plain_lora_metadata_has_no_network_args(small_dataset, tmp_path):
    summary, _ = run(tmp_path, small_dataset, "trainer.max_steps=1")
    _, meta = load_lora(Path(summary["files"][0]))
    assert meta["ss_network_args"] == "{}" and meta["ss_network_dropout"] == "None"
    assert meta["ss_scale_weight_norms"] == "None"


def test_sdxl_text_encoder_lrs_block_lrs_and_loraplus_are_logged(small_dataset, tmp_path):
    weights = [1.0] * 23
    weights[2] = 0.0  # input_blocks_1 (a resnet-only block here: no LoRA) ...
    weights[13] = 0.5  # ... output_blocks_0 learns at half the U-Net lr
    summary, run_dir = run(
        tmp_path, small_dataset, "network.text_encoder_lr=[1e-5,2e-5]", "network.unet_lr=4e-4",
        f"network.block_lr_weight=[{','.join(map(str, weights))}]", "network.loraplus_unet_lr_ratio=4",
        "trainer.max_steps=2", model="tiny_sdxl",
    )  # fmt: skip
    logged = scalars(run_dir)
    assert logged["lr/textencoder1"] == pytest.approx([1e-5] * 2)
    assert logged["lr/textencoder2"] == pytest.approx([2e-5] * 2)
    assert logged["lr/unet_block13"] == pytest.approx([2e-4] * 2)
    assert logged["lr/unet_block13_plus"] == pytest.approx([8e-4] * 2)
    assert "lr/unet" not in logged
    _, meta = load_lora(Path(summary["files"][0]))
    args = json.loads(meta["ss_network_args"])
    assert args["mid_lr_weight"] == "1.0,1.0,1.0" and args["up_lr_weight"].startswith("0.5,")
    assert args["loraplus_unet_lr_ratio"] == "4.0"
    assert meta["ss_text_encoder_lr"] == "[1e-05, 2e-05]"


def test_training_continues_from_a_lora_file(small_dataset, tmp_path):
    """Run B starts from run A's file: the file's ranks/alphas are used (not the config's), B's text-encoder
    modules (lr 0: not trained) keep A's values exactly, and its U-Net modules move on from them."""
    first, _ = run(tmp_path, small_dataset, "network.rank=4", "network.alpha=2", "optimizer.lr=1e-2", name="a")
    source, _ = load_lora(Path(first["files"][0]))
    second, _ = run(
        tmp_path, small_dataset, f"network.weights={first['files'][0]}", "network.rank=16", "network.alpha=1",
        "network.text_encoder_lr=0", "optimizer.lr=1e-2", "trainer.max_steps=2", name="b",
    )  # fmt: skip
    tensors, meta = load_lora(Path(second["files"][0]))
    assert tensors.keys() == source.keys()
    assert all(v.shape[0] == 4 for k, v in tensors.items() if k.endswith(".lora_down.weight"))
    assert all(float(v) == 2.0 for k, v in tensors.items() if k.endswith(".alpha"))
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")
    te = [k for k in tensors if k.startswith("lora_te_")]
    assert te and all(torch.equal(tensors[k], source[k]) for k in te)
    unet_ups = [k for k in tensors if k.startswith("lora_unet_") and k.endswith("lora_up.weight")]
    assert any(not torch.equal(tensors[k], source[k]) for k in unet_ups)
    assert all(source[k].any() for k in unet_ups), "run A trained every U-Net module"
