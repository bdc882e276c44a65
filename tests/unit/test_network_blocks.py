"""Block-wise ranks/alphas/learning rates (docs/kohya.md §1.3, current sd-scripts' 25 / 23 blocks) and the
optimizer parameter groups: per-encoder text-encoder lrs, LoRA+, dropped zero-lr groups."""

from __future__ import annotations

import math

import pytest
import torch

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.models.sd15 import SD15Family
from sdlora.models.sdxl import SDXLFamily
from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
from sdlora.network.blocks import kohya_block_lr_weight, sd_block_index, sdxl_block_index
from sdlora.network.build import build_network
from tests.helpers.shipped import meta_components


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("lora_unet_down_blocks_0_attentions_0_proj_in", 1),
        ("lora_unet_down_blocks_0_attentions_1_transformer_blocks_0_attn1_to_q", 2),
        ("lora_unet_down_blocks_0_downsamplers_0_conv", 3),
        ("lora_unet_down_blocks_1_resnets_1_conv2", 5),
        ("lora_unet_down_blocks_3_resnets_1_conv1", 11),
        ("lora_unet_mid_block_attentions_0_proj_out", 12),
        ("lora_unet_mid_block_resnets_1_time_emb_proj", 12),
        ("lora_unet_up_blocks_0_resnets_0_conv1", 13),
        ("lora_unet_up_blocks_0_upsamplers_0_conv", 15),
        ("lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2", 24),
        ("lora_te_text_model_encoder_layers_0_mlp_fc1", -1),
    ],
)
def test_sd_block_index(name, block):
    assert sd_block_index(name) == block


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("lora_unet_input_blocks_1_0_in_layers_2", 2),
        ("lora_unet_input_blocks_3_0_op", 4),
        ("lora_unet_input_blocks_8_1_transformer_blocks_9_attn2_to_k", 9),
        ("lora_unet_middle_block_0_emb_layers_1", 10),
        ("lora_unet_middle_block_1_proj_in", 11),
        ("lora_unet_output_blocks_0_1_proj_out", 13),
        ("lora_unet_output_blocks_8_0_skip_connection", 21),
        ("lora_unet_time_embed_0", 0),
        ("lora_unet_out_2", 22),
    ],
)
def test_sdxl_block_index(name, block):
    assert sdxl_block_index(name) == block


def _meta(family_cls, config):
    return meta_components(config, family_cls.text_encoder_classes)


@pytest.mark.parametrize(("family_cls", "config", "blocks"), [(SD15Family, "sd15", 25), (SDXLFamily, "sdxl", 23)])
def test_block_dims_and_alphas_on_full_size_unets(family_cls, config, blocks):
    """Every U-Net module gets its block's rank and alpha (conv_* for 3×3 convs); rank 0 leaves the block out."""
    family = family_cls(pretrained="unused")
    dims = [(i % 5) * 2 for i in range(blocks)]  # 0, 2, 4, 6, 8, 0, … : some blocks get no LoRA
    alphas = [0.5 * i for i in range(blocks)]
    conv_dims = [1 + i % 3 for i in range(blocks)]
    conv_alphas = [float(i % 2) + 1 for i in range(blocks)]
    cfg = NetworkConfig(
        name=NetworkType.locon, rank=8, alpha=1.0, conv_rank=4, train_text_encoder=False,
        block_dims=dims, block_alphas=alphas, conv_block_dims=conv_dims, conv_block_alphas=conv_alphas,
    )  # fmt: skip
    network = build_network(family, _meta(family_cls, config), cfg)
    full = build_network(family, _meta(family_cls, config), NetworkConfig(name=NetworkType.locon, conv_rank=4))
    seen_blocks = set()
    for name in full.names("lora_unet"):
        block = family.unet_block_index(name)
        assert 0 < block < blocks - (1 if blocks == 23 else 0)
        conv = full.modules[name].lora_down.weight.shape[2:] == (3, 3)
        rank, alpha = (conv_dims[block], conv_alphas[block]) if conv else (dims[block], alphas[block])
        if rank == 0:
            assert name not in network.modules
            continue
        seen_blocks.add(block)
        module = network.modules[name]
        assert (module.rank, module.scale) == (rank, pytest.approx((alpha or rank) / rank)), name  # meta: no .alpha
    assert len(seen_blocks) > blocks // 2


def test_block_lr_weight_zero_leaves_the_block_out_and_sets_group_lrs():
    family = TinySD15Family()
    components = family.load()
    weights = [1.0] * 25
    weights[1], weights[13] = 0.0, 0.5  # IN01 (first attention) has no LoRA; OUT00 learns at half the rate
    cfg = NetworkConfig(rank=4, alpha=4.0, block_lr_weight=weights, train_text_encoder=False)
    network = build_network(family, components, cfg)
    blocks = {family.unet_block_index(n) for n in network.modules}
    assert 1 not in blocks and {2, 12} <= blocks
    groups = {g["name"]: g for g in network.param_groups(1e-3, unet_lr=2e-3, text_encoder_lr=None)}
    assert set(groups) == {f"unet_block{b}" for b in blocks}
    for name, group in groups.items():
        block = int(name.removeprefix("unet_block"))
        assert group["lr"] == pytest.approx(2e-3 * weights[block])
    assert sum(len(g["params"]) for g in groups.values()) == 2 * len(network)


def test_kohya_block_lr_weight_lists_and_presets():
    assert kohya_block_lr_weight(None, None, None) is None
    weights = kohya_block_lr_weight([0.5, 0.0], [2.0], None)
    assert weights == [0.5, 0.0] + [1.0] * 10 + [2.0] + [1.0] * 12
    cosine = kohya_block_lr_weight("cosine", None, "linear+0.5")
    assert cosine[0] == pytest.approx(1.0) and cosine[11] == pytest.approx(0.0)
    assert cosine[1] == pytest.approx(math.sin(math.pi * (10 / 11) / 2))
    assert cosine[13] == pytest.approx(0.5) and cosine[24] == pytest.approx(1.5)
    assert kohya_block_lr_weight("zeros", None, None, zero_threshold=0.1)[:12] == [0.0] * 12
    thresholded = kohya_block_lr_weight([0.05, 0.2], None, None, zero_threshold=0.1)
    assert thresholded[:2] == [0.0, 0.2]
    sdxl = kohya_block_lr_weight(None, [0.0, 0.0, 0.0], None, sdxl=True)
    assert len(sdxl) == 23 and sdxl[0] == sdxl[22] == 1.0 and sdxl[10:13] == [0.0] * 3
    with pytest.raises(ValueError, match="unknown block lr preset"):
        kohya_block_lr_weight("wavy", None, None)


def _sdxl_network(**kw):
    family = TinySDXLFamily()
    components = family.load()
    return build_network(family, components, NetworkConfig(rank=4, alpha=1.0, **kw))


@pytest.mark.parametrize(
    ("te_lr", "expected"), [(None, (1e-4, 1e-4)), (3e-5, (3e-5, 3e-5)), ([1e-5, 2e-5], (1e-5, 2e-5))]
)
def test_sdxl_text_encoders_get_their_own_groups(te_lr, expected):
    network = _sdxl_network()
    groups = {g["name"]: g for g in network.param_groups(1e-4, unet_lr=5e-4, text_encoder_lr=te_lr)}
    assert list(groups) == ["textencoder1", "textencoder2", "unet"]
    assert (groups["textencoder1"]["lr"], groups["textencoder2"]["lr"]) == pytest.approx(expected)
    te1 = {id(p) for n in network.names("lora_te1") for p in network.modules[n].parameters() if p.requires_grad}
    assert {id(p) for p in groups["textencoder1"]["params"]} == te1
    assert groups["unet"]["lr"] == 5e-4


def test_zero_lr_drops_only_that_encoders_group():
    network = _sdxl_network()
    groups = network.param_groups(1e-4, unet_lr=None, text_encoder_lr=[0.0, 1e-5])
    assert [g["name"] for g in groups] == ["textencoder2", "unet"]


def test_sd15_rejects_two_text_encoder_lrs():
    family = TinySD15Family()
    network = build_network(family, family.load(), NetworkConfig())
    with pytest.raises(ValueError, match="2 values for 1 text encoder"):
        network.param_groups(1e-4, None, [1e-4, 2e-4])


def test_loraplus_puts_lora_up_in_its_own_group():
    network = _sdxl_network(loraplus_lr_ratio=16.0, loraplus_text_encoder_lr_ratio=4.0)
    groups = {g["name"]: g for g in network.param_groups(1e-4, unet_lr=2e-4, text_encoder_lr=None)}
    assert set(groups) == {
        "textencoder1",
        "textencoder1_plus",
        "textencoder2",
        "textencoder2_plus",
        "unet",
        "unet_plus",
    }
    assert groups["unet_plus"]["lr"] == pytest.approx(2e-4 * 16) and groups["unet"]["lr"] == 2e-4
    assert groups["textencoder1_plus"]["lr"] == pytest.approx(1e-4 * 4)
    ups = {id(m.lora_up.weight) for m in network.modules.values()}
    plus = {id(p) for name, g in groups.items() if name.endswith("_plus") for p in g["params"]}
    rest = {id(p) for name, g in groups.items() if not name.endswith("_plus") for p in g["params"]}
    assert plus == ups and not (rest & ups)
    assert len(plus) + len(rest) == 2 * len(network)


def test_optimizer_accepts_the_groups():
    network = _sdxl_network(loraplus_unet_lr_ratio=2.0, block_lr_weight=[1.0] * 23)
    optimizer = torch.optim.AdamW(network.param_groups(1e-4, None, [1e-5, 0.0]))
    names = [g["name"] for g in optimizer.param_groups]
    assert names[0] == "textencoder1" and all(n.startswith("unet_block") for n in names[1:])
    assert any(n.endswith("_plus") for n in names)


def test_text_encoder_lr_list_is_ignored_without_text_encoder_modules():
    network = _sdxl_network(train_text_encoder=False)
    assert [g["name"] for g in network.param_groups(1e-4, None, [1e-5, 2e-5])] == ["unet"]
