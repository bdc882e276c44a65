"""The offline assets shipped in ``sdlora.models.assets``: the CLIP tokenizer and the diffusers config folders."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdlora.models.configs import CONFIG_NAMES, config_dir
from sdlora.models.tokenizer import load_clip_tokenizer, tokenizer_dir
from tests.helpers.config import TINY_MODELS

REPO = Path(__file__).resolve().parents[2]
CAT = "a photo of a cat"
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
SDXL_LIKE = {"sdxl", "tiny_sdxl"}


def _load_path(name: str, path: Path):
    if not path.exists():
        pytest.skip(f"{path} not present")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _build(name: str) -> dict[str, torch.nn.Module]:
    """UNet, VAE and text encoder(s) of a shipped config, on the current default device."""
    d = config_dir(name)
    models = {
        "unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet")),
        "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae")),
        "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(d / "text_encoder")),
    }
    if (d / "text_encoder_2").is_dir():
        models["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(d / "text_encoder_2"))
    return models


# --- tokenizer ---------------------------------------------------------------------------------------------------


def test_tokenizer_ids_and_padding():
    tok = load_clip_tokenizer()
    assert tok.model_max_length == 77 and len(tok) == 49408
    assert tok(CAT).input_ids == CAT_IDS
    padded = tok(CAT, padding="max_length", truncation=True).input_ids
    assert padded == CAT_IDS + [49407] * (77 - len(CAT_IDS))
    assert len(tok("word " * 100, padding="max_length", truncation=True).input_ids) == 77


def test_tokenizer_bang_padding_keeps_bang_as_text():
    tok = load_clip_tokenizer(pad_token="!")
    assert tok.pad_token_id == 0 and tok.model_max_length == 77
    assert tok(CAT, padding="max_length").input_ids == CAT_IDS + [0] * (77 - len(CAT_IDS))
    # as OpenCLIP (and kohya's SDXL tokenizer 2): a "!" in the prompt is text, not the pad id
    assert tok("wow!!").input_ids == load_clip_tokenizer()("wow!!").input_ids
    assert 0 not in tok("wow! a cat!").input_ids


def test_tokenizer_rejects_other_pad_tokens():
    with pytest.raises(ValueError, match="pad_token"):
        load_clip_tokenizer(pad_token="<pad>")


def test_converter_reproduces_shipped_vocab(tmp_path):
    """Rebuild a BPE file from the shipped merges (plus trailing rules CLIP ignores) and convert it again."""
    script = _load_path("make_clip_tokenizer", REPO / "scripts" / "make_clip_tokenizer.py")
    merges = (tokenizer_dir() / "merges.txt").read_text(encoding="utf-8").splitlines()[1:]
    assert len(merges) == 48894
    vocab, rebuilt = script.convert("\n".join(["bpe header", *merges, "x y", "z w", ""]))
    assert [f"{a} {b}" for a, b in rebuilt] == merges
    assert vocab == json.loads((tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407 and vocab["!"] == 0

    bad = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    bad.write_bytes(gzip.compress(b"not the real file"))
    with pytest.raises(SystemExit, match="sha256"):
        script.main(["--bpe", str(bad), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


# --- config folders ----------------------------------------------------------------------------------------------


def test_config_dir_names():
    assert set(CONFIG_NAMES) == {"sd15", "sd2", "sd2_v", "sdxl", "tiny", "tiny_sd2_v", "tiny_sdxl"}
    with pytest.raises(ValueError, match="sd15, sd2"):
        config_dir("sd3")


def test_every_preset_has_its_conf_file_with_the_same_family_class():
    """``sdlora.models.presets`` and ``conf/model/*.yaml`` name the same presets and family classes."""
    from omegaconf import OmegaConf

    from sdlora.models.presets import FAMILY_CLASSES
    from tests.helpers.config import CONF_DIR

    files = {p.stem: OmegaConf.load(p)["_target_"] for p in (CONF_DIR / "model").glob("*.yaml")}
    assert files == FAMILY_CLASSES


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_folder_layout(name):
    d = config_dir(name)
    index = json.loads((d / "model_index.json").read_text())
    xl = name in SDXL_LIKE
    assert index["_class_name"] == ("StableDiffusionXLPipeline" if xl else "StableDiffusionPipeline")
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    components = {k for k, v in index.items() if isinstance(v, list) and v[0] is not None}
    expected = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    assert components == (expected | {"text_encoder_2", "tokenizer_2"} if xl else expected)
    if not xl:
        assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    for comp in components - {"tokenizer", "tokenizer_2", "scheduler"}:
        assert (d / comp / "config.json").is_file()

    sched = DDPMScheduler.from_config(DDPMScheduler.load_config(d / "scheduler"))
    assert (sched.config.beta_start, sched.config.beta_end) == (0.00085, 0.012)
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.num_train_timesteps == 1000
    assert sched.config.prediction_type == ("v_prediction" if name.endswith("sd2_v") else "epsilon")


# sha256 of the official stabilityai/stable-diffusion-xl-base-1.0 files (their git-lfs pointers)
SDXL_OFFICIAL_SHA256 = {
    "model_index.json": "a40ca00944bb33ea9281580f50d009d1e23a434173c0e4e234bb90bd75178874",
    "unet/config.json": "30ebc70750223e59006f7f2b4e1e6c102570aa19a9c4ae3e1fbe7591332dbae6",
    "text_encoder/config.json": "39b8b2e4b1949e36969caa425b6c81c68bace99198dd9078ce05d16ad401fe7f",
}


@pytest.mark.parametrize("rel", sorted(SDXL_OFFICIAL_SHA256))
def test_sdxl_configs_byte_identical_to_official(rel):
    assert hashlib.sha256((config_dir("sdxl") / rel).read_bytes()).hexdigest() == SDXL_OFFICIAL_SHA256[rel]


# exact parameter counts of the official architectures (SD1.5 UNet 859.5M, SDXL UNet 2567.5M, ...)
FULL_SIZE = {
    "sd15": (859_520_964, 123_060_480, None),
    "sd2": (865_910_724, 340_387_840, None),
    "sd2_v": (865_910_724, 340_387_840, None),
    "sdxl": (2_567_463_684, 123_060_480, 694_659_840),
}
VAE_PARAMS = 83_653_863


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_configs_on_meta(name):
    with torch.device("meta"):
        models = _build(name)
    unet_n, te_n, te2_n = FULL_SIZE[name]
    assert _n_params(models["unet"]) == unet_n
    assert _n_params(models["vae"]) == VAE_PARAMS
    assert _n_params(models["text_encoder"]) == te_n
    if te2_n is not None:
        assert _n_params(models["text_encoder_2"]) == te2_n
        assert models["text_encoder_2"].config.projection_dim == 1280
    unet, vae, te = models["unet"].config, models["vae"].config, models["text_encoder"].config
    assert unet.upcast_attention is (True if name == "sd2_v" else None if name == "sdxl" else False)
    assert vae.scaling_factor == (0.13025 if name == "sdxl" else 0.18215)
    assert vae.force_upcast is True  # diffusers' default; explicit in the SDXL config
    if name.startswith("sd2"):
        assert (te.num_hidden_layers, te.hidden_size, te.hidden_act) == (23, 1024, "gelu")
        assert unet.cross_attention_dim == 1024 and unet.use_linear_projection


@pytest.mark.parametrize("name", TINY_MODELS)
def test_tiny_configs_build_small_and_seeded(name):
    torch.manual_seed(0)
    first = _build(name)
    torch.manual_seed(0)
    second = _build(name)
    for key, model in first.items():
        assert _n_params(model) < 3_000_000
        again = second[key].state_dict()
        assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items()), key

    unet = first["unet"]
    if name not in SDXL_LIKE:
        assert unet.config.cross_attention_dim == first["text_encoder"].config.hidden_size == 32
    if name == "tiny_sd2_v":  # what sets SD 2.x apart, in small
        te = first["text_encoder"].config
        assert unet.config.use_linear_projection and unet.config.upcast_attention and te.hidden_act == "gelu"
        assert isinstance(unet.config.attention_head_dim, list)
    if name in SDXL_LIKE:
        te1, te2 = first["text_encoder"].config, first["text_encoder_2"].config
        assert te1.hidden_size != te2.hidden_size  # diffusers' single-file loader tells them apart by width
        assert unet.config.cross_attention_dim == te1.hidden_size + te2.hidden_size
        assert unet.config.projection_class_embeddings_input_dim == 6 * unet.config.addition_time_embed_dim + 48


@pytest.mark.parametrize("name", TINY_MODELS)
def test_from_single_file_with_shipped_config_and_tokenizers(name, tmp_path):
    """A config folder without ``tokenizer*/`` is enough when tokenizer objects are passed."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from sdlora.models import ldm_keys as export

    torch.manual_seed(0)
    models = _build(name)
    xl = name in SDXL_LIKE
    tes = [models["text_encoder"], *([models["text_encoder_2"]] if xl else [])]
    ckpt = export.write_checkpoint(
        tmp_path / "model.safetensors",
        unet=models["unet"],
        vae=models["vae"],
        text_encoders=tes,
        layout="sdxl" if xl else "sd2" if name == "tiny_sd2_v" else "sd1",
    )
    tokenizers = {"tokenizer": load_clip_tokenizer()}
    if xl:
        tokenizers["tokenizer_2"] = load_clip_tokenizer("!")
    cls = StableDiffusionXLPipeline if xl else StableDiffusionPipeline
    pipe = cls.from_single_file(str(ckpt), config=str(config_dir(name)), local_files_only=True, **tokenizers)
    assert pipe.tokenizer(CAT).input_ids == CAT_IDS
    for key, model in models.items():
        loaded = getattr(pipe, key).state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items()), key
