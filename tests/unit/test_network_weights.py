"""``network.weights``: start from a LoRA file with its own ranks and alphas; clear errors for files that are not
LoRAs or do not fit the model; the diffusers/PEFT export of a network."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors.torch import save_file

from sdlora.config.schema import NetworkConfig, NetworkType
from sdlora.errors import SdloraError
from sdlora.models.tiny import TinySD15Family, TinySDXLFamily
from sdlora.network.build import build_network
from sdlora.network.export import peft_state_dict
from sdlora.network.io import save_lora
from sdlora.network.weights import check_network_file
from tests.unit.test_network_invariants import forward, randomise


def _network(family_cls=TinySD15Family, **kw):
    family = family_cls()
    components = family.load()
    return family, components, build_network(family, components, NetworkConfig(**kw))


def test_check_network_file(tmp_path):
    assert "does not exist" in check_network_file(str(tmp_path / "missing.safetensors"))
    (tmp_path / "lora.bin").write_bytes(b"x")
    assert ".safetensors, .ckpt, .pt" in check_network_file(str(tmp_path / "lora.bin"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    assert "cannot be read" in check_network_file(str(tmp_path / "junk.safetensors"))
    save_file({"model.diffusion_model.x": torch.zeros(2)}, str(tmp_path / "ckpt.safetensors"))
    assert "is not a LoRA file" in check_network_file(str(tmp_path / "ckpt.safetensors"))
    down = "lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"
    save_file({down: torch.zeros(2, 2)}, str(tmp_path / "half.safetensors"))
    assert "has ['lora_down.weight'] without ['lora_up.weight']" in check_network_file(
        str(tmp_path / "half.safetensors")
    )
    _, _, network = _network()
    save_lora(tmp_path / "ok.safetensors", network.kohya_tensors())
    save_lora(tmp_path / "ok.ckpt", network.kohya_tensors())
    assert check_network_file(str(tmp_path / "ok.safetensors")) is None
    assert check_network_file(str(tmp_path / "ok.ckpt")) is None


@pytest.mark.parametrize("family_cls", [TinySD15Family, TinySDXLFamily])
def test_ranks_alphas_and_values_come_from_the_file(family_cls, tmp_path):
    """A LoCon file with block-wise alphas loads exactly: every module's rank, alpha, scale and output."""
    blocks = family_cls.unet_blocks
    alphas = [0.25 * (i % 7) for i in range(blocks)]  # 0 = alpha equals rank
    family, components, source = _network(
        family_cls, name=NetworkType.locon, rank=4, alpha=2.0, conv_rank=2, conv_alpha=0.5, block_alphas=alphas,
    )  # fmt: skip
    randomise(source)
    expected = forward(family, components)
    path = save_lora(tmp_path / "source.safetensors", source.kohya_tensors())

    _, components2, loaded = _network(family_cls, rank=8, alpha=1.0, weights=str(path))  # network=lora: file decides
    assert set(loaded.modules) == set(source.modules)
    for name, module in source.modules.items():
        other = loaded.modules[name]
        assert (other.rank, float(other.alpha), other.scale) == (module.rank, float(module.alpha), module.scale), name
    for key, value in source.kohya_tensors().items():
        assert torch.equal(loaded.kohya_tensors()[key], value), key
    got = forward(family, components2)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_modules_missing_from_the_file_are_created_fresh(tmp_path):
    _, _, source = _network(rank=4, train_text_encoder=False)
    randomise(source)
    path = save_lora(tmp_path / "unet.safetensors", source.kohya_tensors())
    _, _, loaded = _network(rank=2, alpha=2.0, weights=str(path))
    te = [m for n, m in loaded.modules.items() if n.startswith("lora_te_")]
    assert te and all(m.rank == 2 and m.scale == 1.0 and not m.lora_up.weight.any() for m in te)
    assert all(loaded.modules[n].rank == 4 for n in source.modules)


def test_file_modules_on_an_untrained_side_are_left_out_with_a_warning(tmp_path, caplog):
    _, _, source = _network(rank=4)
    path = save_lora(tmp_path / "both.safetensors", source.kohya_tensors())
    with caplog.at_level(logging.WARNING, logger="sdlora"):
        _, _, loaded = _network(weights=str(path), train_text_encoder=False)
    assert loaded.names("lora_te") == [] and "not trained" in caplog.text


def test_a_file_for_another_family_is_an_error_naming_modules(tmp_path):
    _, _, sdxl = _network(TinySDXLFamily)
    path = save_lora(tmp_path / "xl.safetensors", sdxl.kohya_tensors())
    with pytest.raises(SdloraError, match=r"xl.safetensors.*does not have, e\.g\. lora_te1_.*another model family"):
        _network(weights=str(path))


def test_a_shape_mismatch_names_the_module(tmp_path):
    _, _, source = _network()
    state = source.kohya_tensors()
    name = "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k"
    state[f"{name}.lora_down.weight"] = torch.zeros(8, 7)  # the layer's input has 32 features
    path = save_lora(tmp_path / "bad.safetensors", state)
    with pytest.raises(
        SdloraError, match=rf"{name}\.lora_down has shape \(8, 7\) but this model's layer needs \(8, 32\)"
    ):
        _network(weights=str(path))


def test_one_by_one_conv_tensors_fit_linear_layers_and_missing_alpha_means_rank(tmp_path):
    """SD2 LoRAs from .ckpt-trained kohya have 4-D proj_in/out tensors; very old files have no alpha."""
    _, _, source = _network()
    randomise(source)
    state = source.kohya_tensors()
    name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    state[f"{name}.lora_down.weight"] = state[f"{name}.lora_down.weight"][:, :, None, None]
    state[f"{name}.lora_up.weight"] = state[f"{name}.lora_up.weight"][:, :, None, None]
    del state[f"{name}.alpha"]
    path = save_lora(tmp_path / "mixed.safetensors", state)
    _, _, loaded = _network(weights=str(path))
    module = loaded.modules[name]
    assert module.lora_down.weight.dim() == 2 and float(module.alpha) == module.rank == 8 and module.scale == 1.0
    torch.testing.assert_close(module.lora_up.weight, source.modules[name].lora_up.weight)


@pytest.mark.parametrize("family_cls", [TinySD15Family, TinySDXLFamily])
def test_peft_export_keys_and_folded_scale(family_cls):
    _, _, network = _network(family_cls, name=NetworkType.locon, rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0)
    randomise(network)
    exported = peft_state_dict(network, torch.float16)
    assert len(exported) == 2 * len(network) and all(v.dtype == torch.float16 for v in exported.values())
    components = {key.split(".")[0] for key in exported}
    assert components == ({"unet", "text_encoder", "text_encoder_2"} if family_cls is TinySDXLFamily else
                          {"unet", "text_encoder"})  # fmt: skip
    assert all(".text_model.encoder.layers." in k for k in exported if k.startswith("text_encoder"))
    for name, module in network.modules.items():
        placement = network.injections[name]
        prefix = f"{placement.component}.{placement.path}"
        if placement.component != "unet" and not placement.path.startswith("text_model."):
            prefix = f"{placement.component}.text_model.{placement.path}"
        a, b = exported[f"{prefix}.lora_A.weight"].float(), exported[f"{prefix}.lora_B.weight"].float()
        torch.testing.assert_close(b.flatten(1) @ a.flatten(1), module.delta_weight().flatten(1), atol=2e-3, rtol=2e-3)
