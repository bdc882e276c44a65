"""Round trips through ``sdlora.models.ldm_keys``: tiny diffusers models -> original-format single file ->
diffusers' own ``from_single_file`` (offline, with a config-only folder) -> identical weights."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
    infer_diffusers_model_type,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sdlora.models.ldm_keys import (
    LAYOUTS,
    clip_to_ldm,
    open_clip_to_ldm,
    to_ldm_state_dict,
    unet_to_ldm,
    vae_to_ldm,
    write_checkpoint,
)
from tests.helpers.shipped import shipped_kwargs

ASSET_TOKENIZER = Path(__file__).resolve().parents[2] / "src/sdlora/models/assets/tokenizer"
PROMPT = "a photo of a cat"

# --- tiny models ---------------------------------------------------------------------------------------------------

VAE_KW = shipped_kwargs("tiny", "vae")
UNET_KW = {
    "sd1": shipped_kwargs("tiny", "unet"),
    "sd2": dict(  # three blocks, L=1, linear proj_in/out, per-block head dims
        sample_size=8,
        block_out_channels=(32, 32, 64),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    ),
    "sdxl": shipped_kwargs("tiny_sdxl", "unet"),  # docs/design.md §5.4
}


def _clip_config(hidden: int, layers: int, **kw) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
        **kw,
    )


def _tokenizer(tmp: Path, pad: str = "<|endoftext|>") -> CLIPTokenizer:
    folder = ASSET_TOKENIZER
    if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
        folder = tmp / "toy_tokenizer"  # the real CLIP vocab is not there yet: a toy one with the same special tokens
        folder.mkdir(exist_ok=True)
        words = ["!", *"acehopt", *(f"{c}</w>" for c in "acehopt"), "ca", "cat</w>"]
        vocab = {t: i for i, t in enumerate([*words, "<|startoftext|>", "<|endoftext|>"])}
        (folder / "vocab.json").write_text(json.dumps(vocab))
        (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    tok = CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), pad_token=pad)
    tok.model_max_length = 77
    return tok


def _build(layout: str, tmp: Path) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    torch.manual_seed(0)
    unet, vae = UNet2DConditionModel(**UNET_KW[layout]), AutoencoderKL(**VAE_KW)
    if layout == "sdxl":  # te widths must differ: diffusers picks te2's branch by comparing position-embedding widths
        return StableDiffusionXLPipeline(
            unet=unet,
            vae=vae,
            scheduler=EulerDiscreteScheduler(),
            text_encoder=CLIPTextModel(_clip_config(32, 5, pad_token_id=49407)),
            text_encoder_2=CLIPTextModelWithProjection(_clip_config(48, 3, pad_token_id=0, projection_dim=48)),
            tokenizer=_tokenizer(tmp),
            tokenizer_2=_tokenizer(tmp, pad="!"),
        )
    act = "gelu" if layout == "sd2" else "quick_gelu"  # SD2: diffusers' 23-layer OpenCLIP-H shape, as N tiny layers
    te = CLIPTextModel(_clip_config(32, 5 if layout == "sd1" else 3, pad_token_id=49407, hidden_act=act))
    return StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=te,
        tokenizer=_tokenizer(tmp),
        scheduler=DDPMScheduler(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1, clip_sample=False
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _save_config_folder(pipe, folder: Path, tokenizers: bool = True) -> Path:
    """A diffusers folder with configs only (model_index.json + one config per component), no weights."""
    pipe.save_config(folder)  # model_index.json
    for name, comp in pipe.components.items():
        if comp is None or (not tokenizers and name.startswith("tokenizer")):
            continue
        if name.startswith("tokenizer"):
            comp.save_pretrained(folder / name)
        elif hasattr(comp, "save_config"):  # diffusers models and schedulers
            comp.save_config(folder / name)
        else:  # transformers models
            comp.config.save_pretrained(folder / name)
    assert not [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin"}]
    return folder


def _text_encoders(pipe) -> list[torch.nn.Module]:
    return [te for te in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if te is not None]


def _assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key, value in sa.items():
        assert sb[key].device.type == "cpu", key  # a tensor left on "meta" means diffusers never filled it
        assert sb[key].dtype == value.dtype and torch.equal(sb[key], value), key


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# --- round trips through diffusers' single-file loader --------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "suffix"),
    [("sd1", ".safetensors"), ("sd1", ".ckpt"), ("sd2", ".safetensors"), ("sdxl", ".safetensors"), ("sdxl", ".ckpt")],
)
def test_from_single_file_round_trip(layout, suffix, tmp_path, offline):
    pipe = _build(layout, tmp_path)
    config = _save_config_folder(pipe, tmp_path / "config")
    ckpt = write_checkpoint(
        tmp_path / f"model{suffix}", unet=pipe.unet, vae=pipe.vae, text_encoders=_text_encoders(pipe), layout=layout
    )
    cls = StableDiffusionXLPipeline if layout == "sdxl" else StableDiffusionPipeline
    loaded = cls.from_single_file(str(ckpt), config=str(config))

    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if hasattr(pipe, name):
            _assert_identical(getattr(pipe, name), getattr(loaded, name))
    assert loaded.tokenizer(PROMPT).input_ids == pipe.tokenizer(PROMPT).input_ids


def test_tokenizer_objects_replace_tokenizer_folders(tmp_path, offline):
    """Passing ``tokenizer=``/``tokenizer_2=`` lets the config folder omit ``tokenizer*/`` (model_index.json still
    names them). Without them, transformers 5.x does *not* fail: ``CLIPTokenizer.from_pretrained`` on the missing
    subfolder silently builds an empty 2-token tokenizer, so every prompt encodes to unk ids."""
    pipe = _build("sdxl", tmp_path)
    config = _save_config_folder(pipe, tmp_path / "config", tokenizers=False)
    ckpt = write_checkpoint(
        tmp_path / "xl.safetensors", unet=pipe.unet, vae=pipe.vae, text_encoders=_text_encoders(pipe), layout="sdxl"
    )
    loaded = StableDiffusionXLPipeline.from_single_file(
        str(ckpt), config=str(config), tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2
    )
    assert loaded.tokenizer is pipe.tokenizer and loaded.tokenizer_2 is pipe.tokenizer_2
    _assert_identical(pipe.text_encoder_2, loaded.text_encoder_2)

    try:  # the trap: no error, a useless tokenizer (a later transformers may raise instead, which is fine too)
        broken = StableDiffusionXLPipeline.from_single_file(str(ckpt), config=str(config)).tokenizer
    except (OSError, ValueError):
        return
    assert broken.vocab_size < 10
    assert broken(PROMPT).input_ids != pipe.tokenizer(PROMPT).input_ids


# --- key layout: full-size architectures on the meta device (no memory, no weights) ---------------------------------

FULL_UNET = {
    "v1": dict(cross_attention_dim=768, attention_head_dim=8),
    "v2": dict(cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True),
    "xl_base": dict(
        block_out_channels=(320, 640, 1280),
        transformer_layers_per_block=(1, 2, 10),
        cross_attention_dim=2048,
        attention_head_dim=(5, 10, 20),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    ),
}
FULL_TE = {  # (class, hidden, layers, heads); SD2 is diffusers' 23-layer cut of OpenCLIP-H
    "v1": [(CLIPTextModel, 768, 12, 12)],
    "v2": [(CLIPTextModel, 1024, 23, 16)],
    "xl_base": [(CLIPTextModel, 768, 12, 12), (CLIPTextModelWithProjection, 1280, 32, 20)],
}


@pytest.mark.parametrize(("model_type", "layout"), [("v1", "sd1"), ("v2", "sd2"), ("xl_base", "sdxl")])
def test_full_size_keys_invert_diffusers_converters(model_type, layout):
    with torch.device("meta"):
        unet = UNet2DConditionModel(**FULL_UNET[model_type])
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
        )
        tes = [
            cls(
                CLIPTextConfig(
                    hidden_size=h, intermediate_size=4 * h, num_hidden_layers=n, num_attention_heads=a, projection_dim=h
                )
            )
            for cls, h, n, a in FULL_TE[model_type]
        ]
    sd = to_ldm_state_dict(unet=unet, vae=vae, text_encoders=tes, layout=layout)
    assert infer_diffusers_model_type(sd) == model_type
    assert len(unet_to_ldm(unet)) == {"v1": 686, "v2": 686, "xl_base": 1680}[model_type]  # as in released files
    assert len(vae_to_ldm(vae)) == 248

    def same(converted: dict, module: torch.nn.Module) -> None:
        ref = module.state_dict()
        assert converted.keys() == ref.keys()
        assert all(converted[k].shape == ref[k].shape for k in ref)

    same(convert_ldm_unet_checkpoint(sd, unet.config), unet)
    same(convert_ldm_vae_checkpoint(sd, vae.config), vae)
    for te, (export, prefix) in zip(tes, LAYOUTS[layout], strict=True):
        if export is clip_to_ldm:
            converted = convert_ldm_clip_checkpoint(sd)
        else:
            converted = convert_open_clip_checkpoint(te, sd, prefix=prefix)
        if not hasattr(te, "text_model"):  # transformers >= 5.6 flat CLIPTextModel
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        same(converted, te)


def test_exported_names_and_shapes():
    torch.manual_seed(0)
    te = CLIPTextModelWithProjection(_clip_config(48, 2, projection_dim=16))
    oc = open_clip_to_ldm(te, "p.")
    sd = te.state_dict()
    q, k, v = (sd[f"text_model.encoder.layers.1.self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(oc["p.transformer.resblocks.1.attn.in_proj_weight"], torch.cat([q, k, v]))
    assert torch.equal(oc["p.text_projection"], sd["text_projection.weight"].T)  # [width, proj_dim]
    assert oc["p.positional_embedding"].shape == (77, 48)
    assert {"p.ln_final.weight", "p.token_embedding.weight", "p.transformer.resblocks.0.mlp.c_fc.bias"} <= oc.keys()

    flat = clip_to_ldm(CLIPTextModel(_clip_config(32, 1)), "cond_stage_model.transformer.")
    assert all(k.startswith("cond_stage_model.transformer.text_model.") for k in flat)

    vae = vae_to_ldm(AutoencoderKL(**VAE_KW))
    assert vae["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)
    assert "first_stage_model.decoder.up.3.upsample.conv.weight" in vae  # LDM numbers up blocks low-res first
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in vae

    with pytest.raises(ValueError, match="layers_per_block"):
        unet_to_ldm(UNet2DConditionModel(**{**UNET_KW["sd1"], "layers_per_block": (1, 2)}))


@pytest.mark.parametrize("layout", ["sd1", "sd2", "sdxl"])
def test_slots_locate_every_diffusers_tensor_in_the_checkpoint(layout, tmp_path):
    """``checkpoint_slots``: each diffusers tensor is found at its key (OpenCLIP q/k/v as rows of in_proj,
    text_projection transposed, SD2 proj_in as 1x1 conv where the file has one)."""
    from sdlora.models.ldm_keys import checkpoint_slots

    pipe = _build(layout, tmp_path)
    tes = _text_encoders(pipe)
    sd = to_ldm_state_dict(unet=pipe.unet, vae=pipe.vae, text_encoders=tes, layout=layout)
    slots = checkpoint_slots(unet=pipe.unet, text_encoders=tes, layout=layout)
    components = {"unet": pipe.unet, "text_encoder": tes[0], **({"text_encoder_2": tes[1]} if len(tes) > 1 else {})}
    assert slots.keys() == components.keys()
    fused = 0
    for name, module in components.items():
        for key, value in module.state_dict().items():
            slot = slots[name][key]
            stored = sd[slot.key]
            if slot.rows is not None:
                stored, fused = stored[slot.rows[0] : slot.rows[1]], fused + 1
            elif slot.transposed:
                stored = stored.T
            assert torch.equal(stored.reshape(value.shape), value), (name, key)
    assert fused == (0 if layout == "sd1" else 6 * pipe.text_encoder_2.config.num_hidden_layers if layout == "sdxl"
                     else 6 * pipe.text_encoder.config.num_hidden_layers)  # fmt: skip
