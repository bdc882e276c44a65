"""The file-level LoRA tools: resize, SVD merge, LoRA + LoRA merges, DyLoRA cuts (tiny-shaped random LoRAs, CPU)."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sdlora.errors import SdloraError
from sdlora.tools.combine import concat, weighted_sum
from sdlora.tools.extract_dylora import extract_dylora
from sdlora.tools.lora_file import read_lora
from sdlora.tools.merge import merge_loras
from sdlora.tools.resize import resize_lora
from sdlora.tools.svd import dynamic_rank, low_rank, product_svd
from sdlora.tools.svd_merge import svd_merge_lora
from tests.helpers.lora_files import random_lora


def deltas(path) -> dict[str, torch.Tensor]:
    return {name: m.delta() for name, m in read_lora(path).modules.items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def spectrum_lora(path, s: list[float], out: int = 32, inp: int = 48, alpha: float = 3.0):
    """One Linear module whose up·down has exactly the singular values ``s`` (rank = len(s))."""
    generator = torch.Generator().manual_seed(1)
    u, _ = torch.linalg.qr(torch.randn(out, len(s), generator=generator))
    v, _ = torch.linalg.qr(torch.randn(inp, len(s), generator=generator))
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    tensors = {
        f"{name}.lora_up.weight": (u * torch.tensor(s)).contiguous(),
        f"{name}.lora_down.weight": v.T.contiguous(),
        f"{name}.alpha": torch.tensor(alpha),
    }
    save_file(tensors, str(path))
    return path


S = [8.0, 4.0, 2.0, 1.0, 0.5, 0.25]


@pytest.mark.parametrize(
    ("method", "param", "expected"),
    [
        ("sv_ratio", 5.0, 3),  # s > 8/5: 8, 4, 2
        ("sv_cumulative", 0.9, 4),  # cumsum/15.75 = .508 .762 .889 .952 …: first ≥ .9 at index 3
        ("sv_fro", 0.95, 2),  # cumsum(s²)/85.31 = .750 .938 .985 …: first ≥ .9025 at index 1
        (None, None, 6),
    ],
)
def test_dynamic_methods_pick_the_ranks_of_their_formulas(method, param, expected, tmp_path):
    assert dynamic_rank(torch.tensor(S), 6, method, param) == expected
    src = spectrum_lora(tmp_path / "s.safetensors", S)
    out = resize_lora(src, tmp_path / "r.safetensors", new_rank=6, dynamic_method=method, dynamic_param=param).path
    module = next(iter(read_lora(out).modules.values()))
    assert module.rank == expected
    assert module.scale == pytest.approx(3.0 / len(S))  # alpha' = (alpha / r)·r': the scale is kept


def test_dynamic_rank_caps_and_zero_matrix():
    assert dynamic_rank(torch.tensor(S), 2, "sv_ratio", 100.0) == 2
    assert dynamic_rank(torch.zeros(4), 4, "sv_fro", 0.5) == 1


def test_resize_keeps_scale_and_gives_the_best_approximation(tmp_path):
    src = random_lora(tmp_path / "a.safetensors", rank=8, conv_rank=6, alpha=4.0)
    full = resize_lora(src, tmp_path / "full.safetensors", new_rank=8, new_conv_rank=6, verbose=True).path
    small = resize_lora(src, tmp_path / "small.safetensors", new_rank=3, new_conv_rank=2).path
    before, after_full, after_small = deltas(src), deltas(full), deltas(small)
    lora_small = read_lora(small)
    for name, delta in before.items():
        assert rel(after_full[name], delta) < 1e-5, name
        module = lora_small.modules[name]
        assert module.rank == (2 if module.is_conv else 3)
        assert module.effective_alpha == pytest.approx(read_lora(src).modules[name].scale * module.rank)
        s = torch.linalg.svdvals(delta.flatten(1))
        best = s[module.rank :].pow(2).sum().sqrt()  # Eckart–Young: the error of the best rank-r approximation
        assert float((after_small[name] - delta).norm()) == pytest.approx(float(best), rel=1e-3, abs=1e-6)
    meta = lora_small.metadata
    assert meta["ss_training_comment"].startswith("dimension is resized from 8 to 3 (conv: 2)")
    assert meta["ss_network_dim"] == "3"


def test_svd_merge_with_itself_at_plus_and_minus_one_is_zero(tmp_path):
    src = random_lora(tmp_path / "a.safetensors", rank=4, conv_rank=4)
    out = svd_merge_lora([str(src), str(src)], [1.0, -1.0], tmp_path / "zero.safetensors", new_rank=4)
    for name, delta in deltas(out).items():
        assert float(delta.abs().max()) == 0.0, name


def test_svd_merge_of_different_ranks_is_the_best_approximation_of_the_sum(tmp_path):
    a = random_lora(tmp_path / "a.safetensors", rank=4, alpha=1.0, seed=1)
    b = random_lora(tmp_path / "b.safetensors", rank=8, alpha=8.0, seed=2)
    out = svd_merge_lora([str(a), str(b)], [0.5, -1.0], tmp_path / "ab.safetensors", new_rank=12, clamp_quantile=1)
    clamped = svd_merge_lora([str(a), str(b)], [0.5, -1.0], tmp_path / "c.safetensors", new_rank=12)
    da, db, merged = deltas(a), deltas(b), deltas(out)
    exact, kohya = read_lora(out), read_lora(clamped)
    for name in da:
        assert rel(merged[name], 0.5 * da[name] - db[name]) < 1e-4, name
        before, after = exact.modules[name], kohya.modules[name]  # kohya's clamp at the 0.99 quantile cuts the peaks
        peak = max(float(before.up.abs().max()), float(before.down.abs().max()))
        assert max(float(after.up.abs().max()), float(after.down.abs().max())) < peak
    assert read_lora(out).metadata["modelspec.merged_from"] == "a, b"


def test_concat_is_exact_and_weighted_sum_applies_the_ratio_once_with_its_sign(tmp_path):
    a = read_lora(random_lora(tmp_path / "a.safetensors", rank=4, alpha=1.0, seed=1))
    b = read_lora(random_lora(tmp_path / "b.safetensors", rank=2, alpha=4.0, seed=2))
    joined = concat([a, b], [0.7, -1.5])
    for name, module in joined.items():
        assert module.rank == 6
        expected = 0.7 * a.modules[name].delta() - 1.5 * b.modules[name].delta()
        assert rel(module.delta(), expected) < 1e-5, name
    single = weighted_sum([a], [-0.5])
    for name, module in single.items():
        assert rel(module.delta(), -0.5 * a.modules[name].delta()) < 1e-6
    with pytest.raises(SdloraError, match="different ranks"):
        weighted_sum([a, b], [1.0, 1.0])


def test_merge_loras_writes_kohya_metadata(tmp_path):
    a = random_lora(tmp_path / "a.safetensors", rank=4, seed=1, metadata={"ss_base_model_version": "sd_v1"})
    out = merge_loras([str(a), str(a)], [1.0, 1.0], tmp_path / "aa.safetensors", concat=True)
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["ss_network_dim"] == "8" and meta["ss_network_alpha"] == "8.0"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert meta["sshs_model_hash"]


def test_dylora_cuts(tmp_path):
    src = random_lora(tmp_path / "dy.safetensors", rank=8, metadata={"ss_network_module": "networks.dylora"})
    written = extract_dylora(src, tmp_path / "cut.safetensors", unit=2)
    assert [p.name for p in written] == ["cut-0002.safetensors", "cut-0004.safetensors", "cut-0006.safetensors"]
    original = read_lora(src)
    cut = read_lora(written[1])
    for name, module in cut.modules.items():
        assert module.rank == 4 and module.alpha == original.modules[name].alpha
        assert torch.equal(module.down, original.modules[name].down[:4])
    assert cut.metadata["ss_training_comment"].startswith("split from DyLoRA, rank 8 to 4")
    with pytest.raises(SdloraError, match="nothing to cut"):
        extract_dylora(src, tmp_path / "x.safetensors", unit=8)


def test_low_rank_and_product_svd():
    generator = torch.Generator().manual_seed(0)
    delta = torch.randn(6, 5, 3, 3, generator=generator)
    up, down = low_rank(delta, 100)
    assert up.shape == (6, 6, 1, 1) and down.shape == (6, 5, 3, 3)
    assert rel((up.flatten(1) @ down.flatten(1)).reshape(delta.shape), delta) < 1e-5
    svd = product_svd(up, down)
    assert torch.allclose(svd.s, torch.linalg.svdvals(delta.flatten(1)), rtol=1e-4)


def test_unusable_inputs_are_one_line_errors(tmp_path):
    src = random_lora(tmp_path / "a.safetensors", rank=4)
    with pytest.raises(SdloraError, match="would write over the input"):
        resize_lora(src, src, new_rank=2)
    with pytest.raises(SdloraError, match="does not exist"):
        resize_lora(tmp_path / "missing.safetensors", tmp_path / "o.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(SdloraError, match="cannot be read"):
        resize_lora(tmp_path / "junk.safetensors", tmp_path / "o.safetensors")
    with pytest.raises(SdloraError, match="needs --dynamic_param"):
        resize_lora(src, tmp_path / "o.safetensors", dynamic_method="sv_fro")
    with pytest.raises(SdloraError, match="one ratio per LoRA"):
        merge_loras([str(src)], [1.0, 2.0], tmp_path / "o.safetensors")
