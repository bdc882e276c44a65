"""Merging LoRAs into checkpoints and extracting them again (tiny SD1.5- and SDXL-shaped models; single files and
diffusers folders): merge → extract recovers ΔW, untouched tensors stay bit-identical, the concat merge equals the
sum of the updates, and a LoRA of another family is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sdlora.errors import SdloraError
from sdlora.tools.checkpoint import detect_model, open_checkpoint
from sdlora.tools.export_model import export_model
from sdlora.tools.extract import extract_lora
from sdlora.tools.lora_file import read_lora
from sdlora.tools.merge import merge_into_checkpoint, merge_loras
from tests.helpers.config import TINY_MODELS
from tests.helpers.lora_files import random_lora


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(model, kind) → exported tiny checkpoint."""
    root = tmp_path_factory.mktemp("models")
    out = {}
    for model in TINY_MODELS:
        out[model, "file"] = export_model(model, root / f"{model}.safetensors")
        out[model, "folder"] = export_model(model, root / f"{model}_diffusers")
    return out


def weights(ckpt) -> dict[str, torch.Tensor]:
    return {name: t.target.module.weight.detach().clone() for name, t in ckpt.targets().items()}


def raw_state(path: Path) -> dict[str, torch.Tensor]:
    if path.is_file():
        return load_file(str(path))
    return {
        f"{f.parent.name}/{k}": v for f in sorted(path.rglob("*.safetensors")) for k, v in load_file(str(f)).items()
    }


@pytest.mark.parametrize("model", TINY_MODELS)
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_merge_then_extract_recovers_the_update(model, kind, models, tmp_path):
    source = models[model, kind]
    assert detect_model(source, "--sd_model") == model
    lora_path = random_lora(tmp_path / "lora.safetensors", model, rank=4, conv_rank=3, alpha=2.0)
    merged = tmp_path / ("merged.safetensors" if kind == "file" else "merged")
    merge_into_checkpoint(str(source), [str(lora_path)], [0.8], merged)

    before, after = raw_state(source), raw_state(merged)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    lora = read_lora(lora_path)
    assert 0 < len(changed) <= len(lora.modules)  # only LoRA targets changed (q/k/v of OpenCLIP share one tensor)
    assert all(after[k].dtype == before[k].dtype for k in before)

    extracted = extract_lora(source, merged, tmp_path / "extracted.safetensors", dim=64, conv_dim=64,
                             clamp_quantile=1.0, min_diff=1e-6)  # fmt: skip
    result = read_lora(extracted)
    assert set(result.modules) >= set(lora.modules)
    for name, module in lora.modules.items():
        expected = 0.8 * module.delta()
        error = (result.modules[name].delta() - expected).norm() / expected.norm()
        assert error < 1e-3, (name, float(error))
    for name in set(result.modules) - set(lora.modules):
        assert float(result.modules[name].delta().abs().max()) < 1e-5  # a target no LoRA touched: ΔW = 0


def test_merge_reads_back_as_base_plus_update(models, tmp_path):
    """The merged single file loads (family.load) with W = W₀ + ρ·ΔW at every target, other weights equal."""
    source = models["tiny_sdxl", "file"]
    lora_path = random_lora(tmp_path / "lora.safetensors", "tiny_sdxl", rank=2, every=3)
    merged = merge_into_checkpoint(str(source), [str(lora_path)], [-1.5], tmp_path / "m.safetensors")
    base, result = open_checkpoint(source, "x"), open_checkpoint(merged, "x")
    w0, w1 = weights(base), weights(result)
    lora = read_lora(lora_path)
    for name in w0:
        expected = w0[name] + (-1.5 * lora.modules[name].delta().reshape(w0[name].shape) if name in lora.modules else 0)
        assert torch.allclose(w1[name], expected, atol=1e-6), name


def unet_output(ckpt) -> torch.Tensor:
    torch.manual_seed(0)
    unet = ckpt.components.unet
    hidden = torch.randn(1, 77, unet.config.cross_attention_dim)
    kwargs = {}
    if unet.config.addition_embed_type == "text_time":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled), "time_ids": torch.randn(1, 6)}
    with torch.no_grad():
        return unet(torch.randn(1, 4, 8, 8), torch.tensor([500]), encoder_hidden_states=hidden, **kwargs).sample


def test_concat_merge_equals_the_sum_of_the_two(models, tmp_path):
    source = models["tiny", "file"]
    a = random_lora(tmp_path / "a.safetensors", rank=4, conv_rank=2, seed=1)
    b = random_lora(tmp_path / "b.safetensors", rank=2, alpha=8.0, seed=2)
    joined = merge_loras([str(a), str(b)], [0.6, -1.0], tmp_path / "ab.safetensors", concat=True)
    one = merge_into_checkpoint(str(source), [str(joined)], [1.0], tmp_path / "one.safetensors")
    two = merge_into_checkpoint(str(source), [str(a), str(b)], [0.6, -1.0], tmp_path / "two.safetensors")
    base = unet_output(open_checkpoint(source, "x"))
    out_one, out_two = unet_output(open_checkpoint(one, "x")), unet_output(open_checkpoint(two, "x"))
    assert not torch.allclose(out_one, base, atol=1e-4)
    assert torch.allclose(out_one, out_two, atol=1e-5)


def test_format_conversion_and_refusals(models, tmp_path):
    source = models["tiny", "folder"]
    lora_path = random_lora(tmp_path / "lora.safetensors", rank=2)
    as_file = merge_into_checkpoint(str(source), [str(lora_path)], [1.0], tmp_path / "m.safetensors", fmt="single_file")
    assert detect_model(as_file, "x") == "tiny"
    direct = merge_into_checkpoint(str(source), [str(lora_path)], [1.0], tmp_path / "same")
    w_file, w_folder = weights(open_checkpoint(as_file, "x")), weights(open_checkpoint(direct, "x"))
    assert all(torch.allclose(w_file[n], w_folder[n], atol=1e-6) for n in w_file)

    xl_lora = random_lora(tmp_path / "xl.safetensors", "tiny_sdxl", rank=2)
    with pytest.raises(SdloraError, match="another model family"):
        merge_into_checkpoint(str(source), [str(xl_lora)], [1.0], tmp_path / "bad")
    with pytest.raises(SdloraError, match="would write over the input"):
        merge_into_checkpoint(str(models["tiny", "file"]), [str(lora_path)], [1.0], models["tiny", "file"])
    with pytest.raises(SdloraError, match="is a LoRA file, not a Stable Diffusion checkpoint"):
        merge_into_checkpoint(str(lora_path), [str(lora_path)], [1.0], tmp_path / "x.safetensors")
