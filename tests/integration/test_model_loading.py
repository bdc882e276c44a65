"""Loading paths of the family adapters, offline: A1111-style single files through the shipped configs and
tokenizer, diffusers folders, a VAE override, wrong-family files — and LoRA module counts on full-size
architectures (built on the meta device)."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.errors import SdloraError
from sdlora.models.configs import config_dir
from sdlora.models.ldm_keys import write_checkpoint
from sdlora.models.sd2 import SD2Family, SD2VFamily
from sdlora.models.sd15 import SD15Family
from sdlora.models.sdxl import SDXLFamily
from sdlora.models.tiny import TinySD2VFamily, TinySD15Family, TinySDXLFamily
from sdlora.network.build import build_network
from tests.helpers.config import TINY_MODELS
from tests.helpers.shipped import meta_components

LAYOUT = {"tiny": "sd1", "tiny_sd2_v": "sd2", "tiny_sdxl": "sdxl"}
FAMILIES = {"tiny": TinySD15Family, "tiny_sd2_v": TinySD2VFamily, "tiny_sdxl": TinySDXLFamily}


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict().items() if not k.endswith("position_ids")}


def assert_same_weights(a, b) -> None:
    for left, right in [(a.unet, b.unet), (a.vae, b.vae), *zip(a.text_encoders, b.text_encoders, strict=True)]:
        sa, sb = state(left), state(right)
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("name", TINY_MODELS)
@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_single_file_checkpoint_loads_offline_through_the_shipped_config(name, suffix, tmp_path):
    reference = FAMILIES[name](init_seed=3).load()
    ckpt = write_checkpoint(
        tmp_path / f"model{suffix}", unet=reference.unet, vae=reference.vae,
        text_encoders=reference.text_encoders, layout=LAYOUT[name],
    )  # fmt: skip
    loaded = FAMILIES[name](pretrained=str(ckpt)).load()
    assert_same_weights(reference, loaded)
    assert loaded.source == str(ckpt)
    ids = loaded.tokenizers[0]("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    if name == "tiny_sdxl":
        assert loaded.tokenizers[1].pad_token_id == 0  # SDXL's second tokenizer pads with "!"


def test_real_family_preset_loads_a_file_with_an_explicit_config_folder(tmp_path):
    """The same code path a user's A1111 file takes, with ``model.config`` pointing at a matching config folder."""
    reference = TinySD15Family(init_seed=5).load()
    ckpt = write_checkpoint(
        tmp_path / "m.safetensors", unet=reference.unet, vae=reference.vae,
        text_encoders=reference.text_encoders, layout="sd1",
    )  # fmt: skip
    loaded = SD15Family(pretrained=str(ckpt), config=str(config_dir("tiny"))).load()
    assert_same_weights(reference, loaded)
    assert loaded.prediction_type == "epsilon"


def test_sd2_single_file_with_open_clip_text_encoder(tmp_path):
    """SD2 files hold the OpenCLIP text encoder; the SD2 adapters read it (v-prediction for sd2_v by default)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = tmp_path / "config"
    shutil.copytree(config_dir("tiny"), folder)
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    unet_cfg.update(use_linear_projection=True, attention_head_dim=[2, 4])
    (folder / "unet" / "config.json").write_text(json.dumps(unet_cfg))
    te_cfg = json.loads((folder / "text_encoder" / "config.json").read_text())
    te_cfg.update(hidden_act="gelu", pad_token_id=0)
    (folder / "text_encoder" / "config.json").write_text(json.dumps(te_cfg))
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder"))
    ckpt = write_checkpoint(tmp_path / "sd2.safetensors", unet=unet, vae=vae, text_encoders=[te], layout="sd2")
    for family_cls, prediction in ((SD2Family, "epsilon"), (SD2VFamily, "v_prediction")):
        loaded = family_cls(pretrained=str(ckpt), config=str(folder)).load()
        assert_same_weights(SimpleNamespace(unet=unet, vae=vae, text_encoders=[te]), loaded)
        assert loaded.prediction_type == prediction
        assert loaded.tokenizers[0].pad_token_id == 0  # SD2 pads with "!"


def test_diffusers_folder_supplies_its_own_configs_and_tokenizers(tmp_path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    reference = TinySD15Family(init_seed=7).load()
    scheduler = DDPMScheduler(prediction_type="v_prediction", clip_sample=False)
    pipe = StableDiffusionPipeline(
        reference.vae, reference.text_encoders[0], reference.tokenizers[0], reference.unet, scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = SD15Family(pretrained=str(tmp_path / "pipe")).load()  # no model.config needed: the folder has it
    assert_same_weights(reference, loaded)
    assert loaded.prediction_type == "v_prediction"  # auto-detected from the folder's scheduler config
    assert SD15Family(pretrained=str(tmp_path / "pipe"), v_parameterization=False).load().prediction_type == "epsilon"


@pytest.mark.parametrize("standalone", [False, True], ids=["from_full_checkpoint", "vae_only_file"])
def test_vae_override_from_a_single_file(standalone, tmp_path):
    from safetensors.torch import save_file

    from sdlora.models.ldm_keys import vae_to_ldm

    reference = TinySD15Family(init_seed=1).load()
    other = TinySD15Family(init_seed=2).load()
    if standalone:  # like vae-ft-mse-840000-ema-pruned.safetensors: LDM VAE keys without a prefix
        vae_file = tmp_path / "vae.safetensors"
        save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in vae_to_ldm(other.vae).items()},
                  str(vae_file))  # fmt: skip
    else:
        vae_file = write_checkpoint(
            tmp_path / "full.safetensors", unet=other.unet, vae=other.vae, text_encoders=other.text_encoders,
            layout="sd1",
        )  # fmt: skip
    loaded = TinySD15Family(init_seed=1, vae=str(vae_file)).load()
    assert torch.equal(state(loaded.unet)["conv_in.weight"], state(reference.unet)["conv_in.weight"])
    for key, value in state(other.vae).items():
        assert torch.equal(state(loaded.vae)[key], value), key


def test_vae_override_from_a_diffusers_folder(tmp_path):
    other = TinySD15Family(init_seed=2).load()
    other.vae.save_pretrained(tmp_path / "vae")
    loaded = TinySD15Family(init_seed=1, vae=str(tmp_path / "vae")).load()
    for key, value in state(other.vae).items():
        assert torch.equal(state(loaded.vae)[key], value), key


def test_wrong_family_is_a_clear_error(tmp_path):
    reference = TinySDXLFamily().load()
    ckpt = write_checkpoint(
        tmp_path / "xl.safetensors", unet=reference.unet, vae=reference.vae,
        text_encoders=reference.text_encoders, layout="sdxl",
    )  # fmt: skip
    with pytest.raises(SdloraError, match=r"is an SDXL model but model=sd15 expects SD 1.x: use model=sdxl"):
        SD15Family(pretrained=str(ckpt)).load()


def test_a_tiny_sd2_folder_is_told_from_a_tiny_sd1_folder(tmp_path):
    """Too narrow to be told by its width, the tiny SD 2.x-v folder is told by OpenCLIP's GELU text encoder."""
    from sdlora.models.sources import folder_kind
    from sdlora.tools.export_model import export_model

    reference = TinySD2VFamily(init_seed=2).load()
    folder = export_model("tiny_sd2_v", tmp_path / "sd2_folder", "diffusers", init_seed=2)
    assert folder_kind(folder) == "sd2" and folder_kind(export_model("tiny", tmp_path / "sd1_folder")) == "sd1"
    assert_same_weights(reference, TinySD2VFamily(pretrained=str(folder)).load())
    with pytest.raises(SdloraError, match=r"is an SD 2.x model but model=tiny expects SD 1.x: use model=tiny_sd2_v"):
        TinySD15Family(pretrained=str(folder)).load()


def test_a_tiny_file_under_a_real_preset_names_the_tiny_presets(tmp_path):
    from sdlora.tools.export_model import export_model

    ckpt = export_model("tiny_sd2_v", tmp_path / "tiny_sd2_v.safetensors")
    with pytest.raises(SdloraError, match=r"other sizes than this preset's.*model=tiny / tiny_sd2_v / tiny_sdxl"):
        SD2VFamily(pretrained=str(ckpt)).load()


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(SdloraError, match="broken.safetensors"):
        SD15Family(pretrained=str(bad)).load()


def test_folder_without_model_index_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SdloraError, match="without model_index.json"):
        SD15Family(pretrained=str(tmp_path / "empty")).load()


@pytest.mark.parametrize(
    ("family_cls", "config", "network", "expected"),
    [
        (SD15Family, "sd15", "lora", {"lora_unet": 192, "lora_te": 72}),
        (SD2Family, "sd2", "lora", {"lora_unet": 192, "lora_te": 138}),
        (SDXLFamily, "sdxl", "lora", {"lora_unet": 722, "lora_te1": 72, "lora_te2": 192}),
        # LoCon adds 22 resnets × (conv1, conv2, time_emb_proj) + 14 conv_shortcut + 3 down- + 3 upsamplers = 86 (SD1/2)
        # and 17 resnets × 3 + 11 skip_connection + 2 + 2 = 66 (SDXL)
        (SD15Family, "sd15", "locon", {"lora_unet": 278, "lora_te": 72}),
        (SD2Family, "sd2", "locon", {"lora_unet": 278, "lora_te": 138}),
        (SDXLFamily, "sdxl", "locon", {"lora_unet": 788, "lora_te1": 72, "lora_te2": 192}),
    ],
)
def test_module_counts_on_full_size_architectures(family_cls, config, network, expected):
    family = family_cls(pretrained="unused")
    components = meta_components(config, family.text_encoder_classes)
    cfg = NetworkConfig(name=NetworkType(network), rank=8, alpha=1.0, conv_rank=4 if network == "locon" else None)
    lora = build_network(family, components, cfg)
    counts = {prefix: sum(n.startswith(prefix + "_") for n in lora.modules) for prefix in expected}
    assert counts == expected
    conv_ranks = {m.rank for m in lora.modules.values() if m.lora_down.weight.shape[2:] == (3, 3)}
    assert conv_ranks == ({4} if network == "locon" else set())
    if family_cls is SDXLFamily:
        assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in lora.modules
        assert "lora_unet_middle_block_1_transformer_blocks_9_ff_net_0_proj" in lora.modules
        assert "lora_te2_text_model_encoder_layers_31_mlp_fc2" in lora.modules
        if network == "locon":
            for name in ("input_blocks_1_0_in_layers_2", "input_blocks_3_0_op", "output_blocks_2_2_conv"):
                assert lora.modules[f"lora_unet_{name}"].rank == 4
            for name in ("input_blocks_4_0_skip_connection", "input_blocks_1_0_emb_layers_1"):
                assert lora.modules[f"lora_unet_{name}"].rank == 8  # kohya: base rank for Linear/1×1 in resnets
    else:
        assert "lora_unet_mid_block_attentions_0_proj_in" in lora.modules
        assert "lora_te_text_model_encoder_layers_11_mlp_fc1" in lora.modules
        if network == "locon":
            for name in (
                "down_blocks_0_resnets_0_conv1",
                "down_blocks_0_downsamplers_0_conv",
                "up_blocks_0_upsamplers_0_conv",
            ):
                assert lora.modules[f"lora_unet_{name}"].rank == 4
            for name in ("down_blocks_1_resnets_0_conv_shortcut", "mid_block_resnets_0_time_emb_proj"):
                assert lora.modules[f"lora_unet_{name}"].rank == 8
