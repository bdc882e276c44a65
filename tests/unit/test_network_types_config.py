"""The network types as a user configures them: every ``network=`` option composes and validates; a key a type
does not use, a dropout its code never applies, max-norm or LoRA+ where the type has none, and the diffusers export
of a type diffusers cannot load are one message naming the option and the type; presets pick LyCORIS's layers."""

from __future__ import annotations

import pytest
import torch

from sdlora.config.checks import check_config
from sdlora.config.schema import LycorisPreset, NetworkConfig, NetworkType
from sdlora.errors import SdloraError
from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
from sdlora.network.build import build_network
from sdlora.network.export import peft_state_dict
from tests.helpers.config import EXAMPLE_DATA, compose_config
from tests.helpers.network import randomise_


def problems(*overrides: str, model: str = "tiny") -> list[str]:
    try:
        check_config(compose_config(f"model={model}", f"data.train_dir={EXAMPLE_DATA}", *overrides))
    except SdloraError as exc:
        return exc.problems
    return []


@pytest.mark.parametrize("network_type", [t.value for t in NetworkType])
def test_every_type_composes_and_validates(network_type):
    cfg = compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", f"network={network_type}")
    assert cfg.network.name.value == network_type
    assert problems(f"network={network_type}") == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["network=loha", "network.factor=4"], "network.factor is set, but network=loha does not use it"),
        (["network=lora", "network.use_tucker=true"], "network.use_tucker is set, but network=lora does not use it"),
        (["network=lokr", "network.unit=2"], "network.unit is set, but network=lokr does not use it"),
        (["network=ia3", "network.rank=4"], "network.rank is set, but network=ia3 has no rank"),
        (["network=oft", "network.alpha=1"], "network.alpha is set, but network=oft has no alpha"),
        (
            ["network=loha", "network.dropout=0.1"],
            "network.dropout is set, but network=loha applies no such dropout: "
            "it acts only with network.bypass_mode=true",
        ),
        (["network=dylora", "network.rank_dropout=0.1"], "network=dylora applies no such dropout"),
        (["network=ia3", "network.scale_weight_norms=1"], "network=ia3 has no max-norm"),
        (["network=loha", "network.loraplus_lr_ratio=4"], "network=loha has no lora_up matrix"),
        (["network=dylora", "network.conv_rank=4"], "network=dylora needs network.conv_rank = network.rank (8)"),
        (
            ["network=dylora", "network.conv_rank=8", "network.conv_alpha=2"],
            "kohya's networks.dylora gives the 3×3 convs network.alpha",
        ),
        (["network=dylora", "network.unit=3"], "network.rank=8 must be a multiple of network.unit=3"),
        (["network=lycoris_dylora", "network.block_size=3"], "network.rank=8 must be a multiple of network.block_size"),
        (["network=lora_fa", "network.conv_alpha=2"], "network=lora_fa trains no 3×3 convs: set network.conv_rank"),
        (
            ["network=lycoris_locon", "network.weight_decompose=true", "network.bypass_mode=true"],
            "LyCORIS ignores DoRA in bypass mode",
        ),
        (["network=loha", "save.also_diffusers=true"], "diffusers/PEFT cannot load network=loha files"),
        (
            ["network=lycoris_locon", "network.use_tucker=true", "save.also_diffusers=true"],
            "diffusers/PEFT cannot load network=lycoris_locon",
        ),
    ],
)
def test_options_a_type_does_not_use_are_errors_naming_it(overrides, message):
    found = problems(*overrides)
    assert len(found) == 1 and message in found[0], found


@pytest.mark.parametrize("network_type", ["lora", "locon", "lora_fa", "dylora", "lycoris_dylora", "lycoris_locon"])
def test_plain_lora_types_export_to_diffusers(network_type):
    assert problems(f"network={network_type}", "save.also_diffusers=true") == []
    family = TinySD15Family()
    components = family.load()
    defaults = {"dylora": {"unit": 1}, "lycoris_dylora": {"block_size": 2}, "locon": {"conv_rank": 2}}.get(
        network_type, {}
    )
    network = build_network(family, components, NetworkConfig(name=NetworkType(network_type), rank=4, **defaults))
    for module in network.modules.values():
        randomise_(module)
    exported = peft_state_dict(network)
    for name, module in network.modules.items():
        injection = network.injections[name]
        key = f"{injection.component}.{injection.path}"
        if key.startswith("text_encoder") and ".text_model." not in key:
            key = key.replace("text_encoder.", "text_encoder.text_model.", 1)
        a, b = exported[f"{key}.lora_A.weight"], exported[f"{key}.lora_B.weight"]
        merged = (b.flatten(1) @ a.flatten(1)).reshape(module.base.weight.shape)
        torch.testing.assert_close(merged, module.delta_weight(), atol=1e-6, rtol=1e-5)


def _names(family_cls, **options) -> set[str]:
    family = family_cls()
    return set(build_network(family, family.load(), NetworkConfig(**options)).modules)


def test_presets_pick_lycoris_layers():
    kohya = _names(TinySD15Family, name=NetworkType.lora)
    full = _names(TinySD15Family, name=NetworkType.loha, preset=LycorisPreset.full)
    assert kohya < full
    assert {"lora_unet_conv_in", "lora_unet_conv_out", "lora_unet_time_embedding_linear_1"} <= full
    assert any("resnets_0_conv1" in n for n in full) and any("downsamplers_0_conv" in n for n in full)
    assert _names(TinySD15Family, name=NetworkType.loha, preset=LycorisPreset.attn_mlp) == kohya
    unet_only = _names(TinySD15Family, name=NetworkType.loha, preset=LycorisPreset.unet_only)
    assert unet_only == {n for n in full if n.startswith("lora_unet_")}
    attn = _names(TinySD15Family, name=NetworkType.loha, preset=LycorisPreset.attn_only)
    assert attn and all("_attn" in n or "self_attn" in n for n in attn)
    lin = _names(TinySD15Family, name=NetworkType.loha, preset=LycorisPreset.full_lin)
    assert not any(n.endswith(("_conv1", "_conv2", "_conv", "_conv_in", "_conv_out")) for n in lin)
    assert any(n.endswith("time_emb_proj") for n in lin) and not any("samplers" in n for n in lin)
    norms = _names(TinySD15Family, name=NetworkType.loha, train_norm=True) - full
    assert norms and all(n.endswith(("norm", "norm1", "norm2", "norm3")) for n in norms)


@pytest.mark.parametrize("spelling", ["attn-mlp", "attn_mlp"])
def test_a_preset_is_written_as_lycoris_spells_it_and_the_underscore_form_is_taken_too(spelling, tmp_path):
    """``network.preset=attn-mlp`` (LyCORIS's and the kohya_ss GUI's spelling) composes, as does ``attn_mlp``; both
    are one member, saved in LyCORIS's spelling (the saved config composes again)."""
    from omegaconf import OmegaConf

    from sdlora.config.resolve import typed_config

    cfg = compose_config("model=tiny", "network=lycoris_locon", f"network.preset={spelling}")
    assert cfg.network.preset is LycorisPreset.attn_mlp and str(cfg.network.preset) == "attn-mlp"
    saved = OmegaConf.to_yaml(cfg)
    assert "preset: attn-mlp" in saved
    assert typed_config(OmegaConf.create(saved)).network.preset is LycorisPreset["attn-mlp"]
    assert [p.name for p in LycorisPreset][:3] == ["full", "full-lin", "attn-mlp"]  # the aliases are not listed


def test_each_preset_takes_the_top_level_layers_it_names():
    """LyCORIS names conv_in, conv_out and the time embedding in full and unet-only, only the time embedding in
    full-lin (no convs), only conv_in and conv_out in unet-convblock-only."""
    convs = {"lora_unet_conv_in", "lora_unet_conv_out"}
    time = {"lora_unet_time_embedding_linear_1", "lora_unet_time_embedding_linear_2"}
    expected = {LycorisPreset.full: convs | time, LycorisPreset.unet_only: convs | time, LycorisPreset.full_lin: time,
                LycorisPreset.unet_convblock_only: convs, LycorisPreset.attn_mlp: set()}  # fmt: skip
    for preset, top in expected.items():
        assert _names(TinySD15Family, name=NetworkType.lycoris_locon, preset=preset) & (convs | time) == top, preset


def test_sdxl_full_preset_has_no_top_level_layers_as_under_kohya():
    """kohya's SDXL U-Net names conv_in/time_embed/out by LDM paths, which LyCORIS's name list does not match."""
    names = _names(TinySDXLFamily, name=NetworkType.lokr, preset=LycorisPreset.full)
    assert not any(
        n.startswith(("lora_unet_input_blocks_0_0", "lora_unet_time_embed", "lora_unet_out_")) for n in names
    )
    assert any(n.startswith("lora_unet_input_blocks_1_0_in_layers_2") for n in names)  # a resnet conv1


def test_ia3_preset_trains_the_feed_forward_outputs_on_their_input():
    family = TinySD15Family()
    network = build_network(family, family.load(), NetworkConfig(name=NetworkType.ia3, rank=None, alpha=None,
                                                                 preset=LycorisPreset.ia3))  # fmt: skip
    ends = {name.rsplit("_", 2)[-2] + "_" + name.rsplit("_", 1)[-1] for name in network.modules}
    assert ends == {"to_k", "to_v", "net_2", "k_proj", "v_proj", "mlp_fc2"}
    for name, module in network.modules.items():
        assert bool(module.adapter.train_input) == name.endswith(("ff_net_2", "mlp_fc2")), name


def test_learning_rate_options_work_for_the_new_types():
    """LoRA+ speeds up LyCORIS LoCon's lora_up; block lr weights make one group per block (0: no module there) for a
    LyCORIS type too; unet_lr / text_encoder_lr set their groups."""
    family = TinySD15Family()
    network = build_network(family, family.load(), NetworkConfig(name=NetworkType.lycoris_locon, loraplus_lr_ratio=4))
    groups = {g["name"]: g for g in network.param_groups(1e-4, unet_lr=2e-4, text_encoder_lr=5e-5)}
    assert groups["unet_plus"]["lr"] == pytest.approx(8e-4) and groups["textencoder_plus"]["lr"] == pytest.approx(2e-4)
    ups = {id(m.adapter.lora_up.weight) for m in network.modules.values()}
    assert {id(p) for p in groups["unet_plus"]["params"]} <= ups
    weights = [1.0] * 25
    weights[1] = 0.0  # IN01: down_blocks.0 resnet/attention 0
    family = TinySD15Family()
    network = build_network(family, family.load(), NetworkConfig(name=NetworkType.ia3, rank=None, alpha=None,
                                                                 block_lr_weight=weights))  # fmt: skip
    assert not any("down_blocks_0_attentions_0" in n or "down_blocks_0_resnets_0" in n for n in network.modules)
    names = [g["name"] for g in network.param_groups(1e-4, unet_lr=None, text_encoder_lr=None)]
    assert "textencoder" in names and any(n.startswith("unet_block") for n in names)
