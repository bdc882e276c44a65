"""LoRA targets and kohya key names.

Full-size architectures are built on the meta device (no memory) for counts and example names; tiny models are used for
the numerical round trip through diffusers' kohya reader (our names -> diffusers -> same modules, same merged weights).
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.utils import convert_unet_state_dict_to_peft
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdlora.network.naming import (
    TE1_PREFIX,
    TE2_PREFIX,
    TE_PREFIX,
    SGMUNetNamer,
    diffusers_unet_name,
    name_targets,
    text_encoder_name,
    text_encoder_namer,
)
from sdlora.network.targets import Target, text_encoder_targets, unet_targets
from tests.helpers.shipped import shipped_kwargs

# --- configs (inline on purpose: independent of the model assets) -----------------------------------------------------

SD15_UNET = dict(
    sample_size=64,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SDXL_UNET = dict(
    sample_size=128,
    block_out_channels=(320, 640, 1280),
    layers_per_block=2,
    transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048,
    use_linear_projection=True,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
OPENCLIP_H_23 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16)
OPENCLIP_BIGG = dict(
    hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, projection_dim=1280
)

TINY_SDXL_UNET = shipped_kwargs("tiny_sdxl", "unet")
TINY_SD15_UNET = shipped_kwargs("tiny", "unet")


def _meta_unet(cfg: dict) -> UNet2DConditionModel:
    with torch.device("meta"):
        return UNet2DConditionModel(**cfg)


def _meta_te(cls: type[nn.Module], cfg: dict) -> nn.Module:
    with torch.device("meta"):
        return cls(CLIPTextConfig(**cfg))


@functools.cache
def _sd15() -> UNet2DConditionModel:
    return _meta_unet(SD15_UNET)


@functools.cache
def _sdxl() -> UNet2DConditionModel:
    return _meta_unet(SDXL_UNET)


# --- counts -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unet", "conv", "count"),
    [(_sd15, False, 192), (_sd15, True, 278), (_sdxl, False, 722), (_sdxl, True, 788)],
    ids=["sd15", "sd15-conv", "sdxl", "sdxl-conv"],
)
def test_unet_target_counts(unet, conv: bool, count: int) -> None:
    targets = unet_targets(unet(), conv=conv)
    assert len(targets) == count
    paths = [t.path for t in targets]
    assert len(set(paths)) == len(paths)
    order = {name: i for i, (name, _) in enumerate(unet().named_modules())}
    assert paths == sorted(paths, key=order.__getitem__)


@pytest.mark.parametrize(
    ("cls", "cfg", "prefix", "count"),
    [
        (CLIPTextModel, CLIP_L, TE_PREFIX, 72),  # SD1.5
        (CLIPTextModel, OPENCLIP_H_23, TE_PREFIX, 138),  # SD2 (23 layers)
        (CLIPTextModel, CLIP_L, TE1_PREFIX, 72),  # SDXL TE1
        (CLIPTextModelWithProjection, OPENCLIP_BIGG, TE2_PREFIX, 192),  # SDXL TE2
    ],
    ids=["sd15", "sd2", "sdxl-te1", "sdxl-te2"],
)
def test_text_encoder_targets(cls, cfg: dict, prefix: str, count: int) -> None:
    targets = text_encoder_targets(_meta_te(cls, cfg))
    assert len(targets) == count
    assert all(t.kind == "linear" for t in targets)
    names = name_targets(targets, text_encoder_namer(prefix))
    assert all(n.startswith(f"{prefix}_text_model_encoder_layers_") for n in names)
    last = cfg["num_hidden_layers"] - 1
    assert f"{prefix}_text_model_encoder_layers_{last}_mlp_fc2" in names
    assert f"{prefix}_text_model_encoder_layers_0_self_attn_q_proj" in names


# --- names and kinds --------------------------------------------------------------------------------------------------


def test_sd15_names_and_kinds() -> None:
    names = name_targets(unet_targets(_sd15(), conv=True), diffusers_unet_name)
    for name in (
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
        "lora_unet_mid_block_attentions_0_proj_in",
        "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2",
        "lora_unet_down_blocks_0_resnets_0_conv1",
        "lora_unet_down_blocks_0_downsamplers_0_conv",
        "lora_unet_up_blocks_0_upsamplers_0_conv",
    ):
        assert name in names
    assert names["lora_unet_mid_block_attentions_0_proj_in"].kind == "conv1x1"
    assert names["lora_unet_down_blocks_0_resnets_0_conv1"].kind == "conv"
    assert names["lora_unet_down_blocks_1_resnets_0_conv_shortcut"].kind == "conv1x1"
    assert names["lora_unet_down_blocks_0_resnets_0_time_emb_proj"].kind == "linear"
    te = name_targets(text_encoder_targets(_meta_te(CLIPTextModel, CLIP_L)), text_encoder_namer(TE_PREFIX))
    assert "lora_te_text_model_encoder_layers_11_mlp_fc1" in te


def test_sdxl_names_and_kinds() -> None:
    names = name_targets(unet_targets(_sdxl(), conv=True), SGMUNetNamer(_sdxl()))
    expected = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k": (
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k"
        ),
        "lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj": (
            "mid_block.attentions.0.transformer_blocks.9.ff.net.0.proj"
        ),
        "lora_unet_output_blocks_0_1_proj_out": "up_blocks.0.attentions.0.proj_out",
        "lora_unet_input_blocks_1_0_in_layers_2": "down_blocks.0.resnets.0.conv1",
        "lora_unet_input_blocks_1_0_out_layers_3": "down_blocks.0.resnets.0.conv2",
        "lora_unet_input_blocks_1_0_emb_layers_1": "down_blocks.0.resnets.0.time_emb_proj",
        "lora_unet_input_blocks_4_0_skip_connection": "down_blocks.1.resnets.0.conv_shortcut",
        "lora_unet_input_blocks_3_0_op": "down_blocks.0.downsamplers.0.conv",
        "lora_unet_input_blocks_8_1_transformer_blocks_9_attn1_to_out_0": (
            "down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_out.0"
        ),
        "lora_unet_middle_block_0_in_layers_2": "mid_block.resnets.0.conv1",
        "lora_unet_middle_block_2_out_layers_3": "mid_block.resnets.1.conv2",
        "lora_unet_output_blocks_2_2_conv": "up_blocks.0.upsamplers.0.conv",
        "lora_unet_output_blocks_5_2_conv": "up_blocks.1.upsamplers.0.conv",
        "lora_unet_output_blocks_8_0_skip_connection": "up_blocks.2.resnets.2.conv_shortcut",
    }
    for name, path in expected.items():
        assert names[name].path == path
    assert names["lora_unet_output_blocks_0_1_proj_out"].kind == "linear"
    assert names["lora_unet_input_blocks_4_1_proj_in"].kind == "linear"
    assert names["lora_unet_input_blocks_1_0_in_layers_2"].kind == "conv"
    assert names["lora_unet_input_blocks_3_0_op"].kind == "conv"
    assert names["lora_unet_input_blocks_4_0_skip_connection"].kind == "conv1x1"
    te1 = name_targets(text_encoder_targets(_meta_te(CLIPTextModel, CLIP_L)), text_encoder_namer(TE1_PREFIX))
    te2 = text_encoder_targets(_meta_te(CLIPTextModelWithProjection, OPENCLIP_BIGG))
    assert te2[0].path.startswith("text_model.")  # the projection model keeps the prefix; no double insertion
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in te1
    assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in name_targets(te2, text_encoder_namer(TE2_PREFIX))


def test_sgm_namer_small_layout_and_config() -> None:
    cfg = {
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "layers_per_block": 1,
    }
    to_sgm = SGMUNetNamer(cfg).to_sgm
    assert to_sgm("down_blocks.0.resnets.0.conv1") == "input_blocks.1.0.in_layers.2"
    assert to_sgm("down_blocks.0.downsamplers.0.conv") == "input_blocks.2.0.op"
    assert to_sgm("down_blocks.1.attentions.0.proj_in") == "input_blocks.3.1.proj_in"
    assert to_sgm("down_blocks.1.downsamplers.0.conv") == "input_blocks.4.0.op"
    assert to_sgm("down_blocks.2.resnets.0.conv_shortcut") == "input_blocks.5.0.skip_connection"
    assert to_sgm("up_blocks.0.attentions.1.proj_out") == "output_blocks.1.1.proj_out"
    assert to_sgm("up_blocks.0.upsamplers.0.conv") == "output_blocks.1.2.conv"
    assert to_sgm("up_blocks.2.resnets.1.time_emb_proj") == "output_blocks.5.0.emb_layers.1"
    assert to_sgm("time_embedding.linear_1") == "time_embed.0"
    assert SGMUNetNamer(cfg)("mid_block.attentions.0.proj_in") == "lora_unet_middle_block_1_proj_in"
    # an up level without attention puts its upsampler at index 1 (LDM layout)
    cfg["up_block_types"] = ["UpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"]
    assert SGMUNetNamer(cfg).to_sgm("up_blocks.0.upsamplers.0.conv") == "output_blocks.1.1.conv"
    for bad in ("down_blocks.0.attentions.0.proj_in", "down_blocks.2.downsamplers.0.conv", "down_blocks.0.resnets.0.x"):
        with pytest.raises(ValueError):
            to_sgm(bad)
    assert SGMUNetNamer(_sdxl()).blocks == SGMUNetNamer(dict(_sdxl().config)).blocks


def test_text_encoder_name_prefix() -> None:
    expected = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert text_encoder_name(TE_PREFIX, "encoder.layers.0.self_attn.q_proj") == expected
    assert text_encoder_name(TE_PREFIX, "text_model.encoder.layers.0.self_attn.q_proj") == expected


def test_container_rule_and_duplicates() -> None:
    class Transformer2DModel(nn.Module):  # matched by class name, like kohya
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.conv = nn.Conv2d(2, 2, 3)
            self.norm = nn.LayerNorm(2)
            self.sub = type("MyLinear", (nn.Linear,), {})(2, 2)  # subclass: not a plain Linear

    root = nn.Module()
    root.block = Transformer2DModel()
    root.outside = nn.Linear(2, 2)
    targets = unet_targets(root)
    assert [(t.path, t.kind) for t in targets] == [("block.lin", "linear"), ("block.conv", "conv")]
    with pytest.raises(ValueError, match="duplicate"):
        name_targets([*targets, Target("block.lin", root.block.lin, "linear")], diffusers_unet_name)


# --- diffusers reads our names ----------------------------------------------------------------------------------------


def _paths_seen_by_diffusers(pipeline_cls, names: dict[str, Target], unet_config) -> set[str]:
    """Module paths diffusers' kohya converter assigns our keys to (its own load path, without touching a model)."""
    sd = {}
    for name in names:
        sd |= {f"{name}.lora_down.weight": torch.zeros(1), f"{name}.lora_up.weight": torch.zeros(1)}
        sd[f"{name}.alpha"] = torch.tensor(1.0)
    converted, _ = pipeline_cls.lora_state_dict(sd, unet_config=unet_config)
    unet_sd = {k.removeprefix("unet."): v for k, v in converted.items() if k.startswith("unet.")}
    peft_sd = convert_unet_state_dict_to_peft(unet_sd)
    return {k.removesuffix(".lora_A.weight") for k in peft_sd if k.endswith(".lora_A.weight")}


@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
def test_diffusers_maps_full_size_names_to_our_modules(sdxl: bool) -> None:
    unet = _sdxl() if sdxl else _sd15()
    namer = SGMUNetNamer(unet) if sdxl else diffusers_unet_name
    names = name_targets(unet_targets(unet, conv=True), namer)
    cls = StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline
    assert _paths_seen_by_diffusers(cls, names, unet.config) == {t.path for t in names.values()}


def _random_kohya_lora(names: dict[str, Target], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """kohya-layout LoRA: network_dim 4 / alpha 2 for Linear and 1x1, conv_dim 2 / conv_alpha 1 for 3x3 convs.

    Alphas are uniform per kind on purpose: diffusers 0.42 builds malformed alpha keys for attention projections
    (``...attn1.processor.to_q_lora.down.weight.alpha``), so per-module alphas there fall back to the most common alpha.
    """
    sd = {}
    for name, t in names.items():
        m = t.module
        rank, alpha = (2, 1.0) if t.kind == "conv" else (4, 2.0)
        if t.kind == "linear":
            down, up = torch.randn(rank, m.in_features, generator=gen), torch.randn(m.out_features, rank, generator=gen)
        else:
            down = torch.randn(rank, m.in_channels, *m.kernel_size, generator=gen)
            up = torch.randn(m.out_channels, rank, 1, 1, generator=gen)
        sd[f"{name}.lora_down.weight"] = down * 0.1
        sd[f"{name}.lora_up.weight"] = up * 0.1
        sd[f"{name}.alpha"] = torch.tensor(alpha)
    return sd


def _hand_merged(model: nn.Module, names: dict[str, Target], sd: dict[str, torch.Tensor]) -> nn.Module:
    """Deep copy with W += (alpha / rank) * up @ down (convs: flattened, which equals the kernel composition)."""
    merged = copy.deepcopy(model)
    with torch.no_grad():
        for name, t in names.items():
            down, up = sd[f"{name}.lora_down.weight"], sd[f"{name}.lora_up.weight"]
            weight = merged.get_submodule(t.path).weight
            scale = sd[f"{name}.alpha"].item() / down.shape[0]
            weight += scale * (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    return merged


def _tiny_te(cls, hidden: int) -> nn.Module:
    cfg = CLIPTextConfig(
        vocab_size=1000,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=hidden,
    )
    return cls(cfg).eval()


@pytest.mark.parametrize("conv", [False, True], ids=["attn", "locon"])
@pytest.mark.parametrize("sdxl", [False, True], ids=["sd15", "sdxl"])
def test_diffusers_round_trip(sdxl: bool, conv: bool) -> None:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    unet = UNet2DConditionModel(**(TINY_SDXL_UNET if sdxl else TINY_SD15_UNET)).eval()
    if sdxl:
        pipeline_cls = StableDiffusionXLPipeline
        tes = {"text_encoder": (_tiny_te(CLIPTextModel, 32), TE1_PREFIX)}
        tes["text_encoder_2"] = (_tiny_te(CLIPTextModelWithProjection, 48), TE2_PREFIX)
        unet_names = name_targets(unet_targets(unet, conv=conv), SGMUNetNamer(unet))
        kwargs = {"added_cond_kwargs": {"text_embeds": torch.randn(1, 48), "time_ids": torch.randn(1, 6)}}
    else:
        pipeline_cls = StableDiffusionPipeline
        tes = {"text_encoder": (_tiny_te(CLIPTextModel, 32), TE_PREFIX)}
        unet_names = name_targets(unet_targets(unet, conv=conv), diffusers_unet_name)
        kwargs = {}
    te_names = {key: name_targets(text_encoder_targets(te), text_encoder_namer(p)) for key, (te, p) in tes.items()}
    all_names = unet_names | {n: t for names in te_names.values() for n, t in names.items()}
    sd = _random_kohya_lora(all_names, gen)

    expected_unet = _hand_merged(unet, unet_names, sd)
    expected_tes = {key: _hand_merged(te, te_names[key], sd) for key, (te, _) in tes.items()}
    loaded_unet = copy.deepcopy(unet)
    loaded_tes = {key: copy.deepcopy(te) for key, (te, _) in tes.items()}
    state_dict, alphas = pipeline_cls.lora_state_dict(dict(sd), unet_config=unet.config)
    pipeline_cls.load_lora_into_unet(state_dict, alphas, unet=loaded_unet)
    for key, te in loaded_tes.items():
        pipeline_cls.load_lora_into_text_encoder(state_dict, alphas, text_encoder=te, prefix=key)

    x, t = torch.randn(1, 4, 8, 8), torch.tensor([10])
    ctx = torch.randn(1, 5, unet.config.cross_attention_dim)
    ids = torch.randint(0, 1000, (1, 7))
    with torch.no_grad():
        base = unet(x, t, ctx, **kwargs).sample
        want = expected_unet(x, t, ctx, **kwargs).sample
        got = loaded_unet(x, t, ctx, **kwargs).sample
        assert (want - base).abs().max() > 1e-2  # the LoRA has a visible effect
        assert (got - want).abs().max() < 1e-5
        for key, (te, _) in tes.items():
            base, want = te(ids).last_hidden_state, expected_tes[key](ids).last_hidden_state
            got = loaded_tes[key](ids).last_hidden_state
            assert (want - base).abs().max() > 1e-2
            assert (got - want).abs().max() < 1e-5
