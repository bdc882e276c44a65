"""The network options in the real Hydra config: network=locon composes, every bad value or combination is one
readable problem naming the option, reported before any model is loaded."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.network.io import SAVE_DTYPES
from tests.helpers.config import EXAMPLE_DATA, compose_config

BASE = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]


def problems(*overrides: str, model: str = "tiny") -> list[str]:
    cfg = compose_config(f"model={model}", f"data.train_dir={EXAMPLE_DATA}", *overrides)
    try:
        check_config(cfg)
    except SdloraError as exc:
        return exc.problems
    return []


def test_locon_option_composes():
    cfg = compose_config(*BASE, "network=locon")
    assert cfg.network.name.value == "locon" and (cfg.network.conv_rank, cfg.network.conv_alpha) == (4, 1.0)
    assert cfg.network.rank == 8  # the lora defaults underneath
    check_config(cfg)
    assert compose_config(*BASE).network.name.value == "lora"


@pytest.mark.parametrize(
    "overrides",
    [
        ["network=locon", "network.dropout=0.1", "network.rank_dropout=0.2", "network.module_dropout=0.3"],
        ["network.scale_weight_norms=1.0", "network.loraplus_lr_ratio=16"],
        ["network.block_lr_weight=[" + ",".join(["1"] * 25) + "]", "network.block_dims=[" + ",".join(["4"] * 25) + "]"],
        ["network.text_encoder_lr=[1e-5]"],
    ],
)
def test_good_network_options_validate(overrides):
    assert problems(*overrides) == []


def test_sdxl_takes_two_text_encoder_lrs_and_23_blocks():
    sdxl_blocks = "[" + ",".join(["2"] * 23) + "]"
    assert problems("network.text_encoder_lr=[1e-5,2e-5]", f"network.block_dims={sdxl_blocks}", model="tiny_sdxl") == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["network.dropout=-0.1"], "network.dropout must be in [0, 1)"),
        (["network.rank_dropout=1.5"], "network.rank_dropout must be in [0, 1)"),
        (["network.module_dropout=1"], "network.module_dropout must be in [0, 1)"),
        (["network.scale_weight_norms=-1"], "network.scale_weight_norms must be ≥ 0"),
        (["network.conv_rank=4"], "network.conv_rank is set, but network=lora trains no 3×3 convs: use network=locon"),
        (
            ["network.conv_block_dims=[" + ",".join(["1"] * 25) + "]", "network.conv_alpha=1"],
            "network.conv_alpha, network.conv_block_dims are set, but network=lora",
        ),
        (["network=locon", "network.conv_rank=0"], "network=locon needs network.conv_rank ≥ 1"),
        (["network=locon", "network.conv_alpha=-1"], "network.conv_alpha must be ≥ 0"),
        (["network.text_encoder_lr=[1e-5,2e-5]"], "network.text_encoder_lr has 2 values but this model has 1"),
        (["network.text_encoder_lr=-1"], "network.text_encoder_lr must be null, a number ≥ 0"),
        (["network.block_dims=[4,4]"], "network.block_dims needs 25 values for model=tiny"),
        (["network.block_lr_weight=[" + ",".join(["-1"] * 25) + "]"], "network.block_lr_weight values must be ≥ 0"),
        (["network.loraplus_lr_ratio=0"], "network.loraplus_lr_ratio must be > 0"),
        (["network.weights=/nowhere/lora.safetensors"], "network.weights='/nowhere/lora.safetensors' does not exist"),
    ],
)
def test_bad_network_options_are_reported(overrides, message):
    found = problems(*overrides)
    assert len(found) == 1 and message in found[0], found


def test_sdxl_block_lists_need_23_values():
    found = problems("network.conv_block_alphas=[" + ",".join(["1"] * 25) + "]", "network=locon", model="tiny_sdxl")
    assert found == [
        "network.conv_block_alphas needs 23 values for model=tiny_sdxl (one alpha per U-Net block: emb, IN0–IN8, "
        "MID0–MID2, OUT0–OUT8, out), got 25"
    ]


def test_weights_that_are_not_a_lora_file(tmp_path):
    from safetensors.torch import save_file

    save_file({"model.diffusion_model.conv_in.weight": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    found = problems(f"network.weights={tmp_path / 'model.safetensors'}")
    assert len(found) == 1 and "is not a LoRA file in kohya's format" in found[0]


@pytest.mark.parametrize(
    ("value", "dtype"), [("fp32", torch.float32), ("float", torch.float32), ("bf16", torch.bfloat16)]
)
def test_save_precision_accepts_fp32_and_kohyas_float(value, dtype):
    cfg = compose_config(*BASE, f"save.precision={value}")
    assert SAVE_DTYPES[cfg.save.precision.value] == dtype


def test_network_config_builds_a_network_from_the_composed_node():
    from sdlora.network.build import build_network

    cfg = compose_config(*BASE, "network=locon", "network.conv_rank=2", "network.train_text_encoder=false")
    family = instantiate(cfg.model)
    network = build_network(family, family.load(), cfg.network)
    conv = [m for m in network.modules.values() if m.lora_down.weight.shape[2:] == (3, 3)]
    assert conv and all(m.rank == 2 and m.scale == 0.5 for m in conv)
    assert OmegaConf.is_config(cfg.network)
