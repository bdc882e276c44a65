"""Parameter counts and LoRA target sums from config JSON (:mod:`sdlora.models.sizes`) equal those of the models
diffusers and transformers build from the same configs (on the meta device: no memory, no weights)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sdlora.models.configs import CONFIG_NAMES, config_dir
from sdlora.models.sizes import UnknownLayout, model_size, unet_size
from sdlora.network.targets import text_encoder_targets, unet_candidates, unet_targets


def _built(folder):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
        encoders = []
        for sub in ("text_encoder", "text_encoder_2"):
            if (folder / sub).is_dir():
                config = CLIPTextConfig.from_pretrained(folder / sub)
                projection = "CLIPTextModelWithProjection" in (config.architectures or [])
                encoders.append((CLIPTextModelWithProjection if projection else CLIPTextModel)(config))
    return unet, vae, encoders


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _io(targets) -> int:
    """Σ(in·k² + out) of LoRA targets (what one unit of rank costs)."""
    total = 0
    for target in targets:
        shape = target.module.weight.shape  # [out, in] or [out, in, kh, kw]
        total += shape[0] + (shape[1] * shape[2] * shape[3] if target.kind == "conv" else shape[1])
    return total


def _layers(targets) -> list[tuple]:
    """(path, container, kind, in, out, k, bias) of built targets, as :class:`sdlora.models.sizes.Layer` lists them."""
    rows = []
    for target in targets:  # text encoders: the path from encoder.layers on
        path = target.path[target.path.find("encoder.layers.") :] if "encoder.layers." in target.path else target.path
        module = target.module
        if target.kind == "norm":
            channels = module.num_channels if hasattr(module, "num_channels") else module.normalized_shape[0]
            rows.append((path, target.container, "norm", channels, channels, 1, True))
            continue
        shape = module.weight.shape
        kernel = shape[2] if target.kind == "conv" else 1
        rows.append((path, target.container, target.kind, shape[1], shape[0], kernel, module.bias is not None))
    return sorted(rows)


def _size_layers(layers) -> list[tuple]:
    return sorted((x.path, x.container, x.kind, x.in_features, x.out_features, x.kernel, x.bias) for x in layers)


def _mid_size(tmp_path):
    """SD1.5's layout at other widths (the benchmarks' mid-size model)."""
    folder = tmp_path / "mid"
    shutil.copytree(config_dir("sd15"), folder)
    for sub, change in (
        ("unet", {"block_out_channels": [160, 320, 640, 640]}),
        ("vae", {"block_out_channels": [32, 64, 128, 128]}),
        ("text_encoder", {"num_hidden_layers": 4}),
    ):
        path = folder / sub / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))  # fmt: skip
    return folder


@pytest.mark.parametrize("name", [*CONFIG_NAMES, "mid"])
def test_sizes_match_the_built_models(name, tmp_path):
    folder = _mid_size(tmp_path) if name == "mid" else config_dir(name)
    size = model_size(folder)
    unet, vae, encoders = _built(folder)
    assert size.unet.params == _count(unet)
    assert size.vae.params == _count(vae)
    assert [te.params for te in size.text_encoders] == [_count(te) for te in encoders]
    attention = unet_targets(unet, conv=False)
    everything = unet_targets(unet, conv=True)
    attention_paths = {t.path for t in attention}
    resnet = [t for t in everything if t.path not in attention_paths]
    assert size.unet.lora.attention == _io(attention) and size.unet.lora.modules == len(attention)
    assert size.unet.lora.resnet_conv == _io([t for t in resnet if t.kind == "conv"])
    assert size.unet.lora.resnet_linear == _io([t for t in resnet if t.kind != "conv"])
    assert size.unet.lora.conv_modules == len(resnet)
    assert [te.lora.attention for te in size.text_encoders] == [_io(text_encoder_targets(te)) for te in encoders]
    assert _size_layers(size.unet.layers) == _layers(unet_candidates(unet))
    assert [_size_layers(te.layers) for te in size.text_encoders] == [_layers(text_encoder_targets(te))
                                                                      for te in encoders]  # fmt: skip


def test_full_size_counts_are_the_known_ones():
    assert model_size(config_dir("sd15")).unet.params == 859_520_964  # docs/design.md §5.8: 859.5 M
    assert model_size(config_dir("sdxl")).unet.params == 2_567_463_684  # 2567.5 M


def test_other_block_types_are_refused():
    config = json.loads((config_dir("sd15") / "unet" / "config.json").read_text())
    config["down_block_types"] = ["SimpleCrossAttnDownBlock2D", *config["down_block_types"][1:]]
    with pytest.raises(UnknownLayout):
        unet_size(config)
