"""verify, fix and convert on tiny-shaped LoRAs: the diffusers-format conversion reverses bit for bit and loads in
diffusers with the kohya update (per-module ranks and alphas, LoCon); a PEFT-format SDXL file and one with other
trainers' slips are fixed into kohya files that load with every module matched."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from sdlora.network.io import load_lora
from sdlora.tools.convert import convert_lora
from sdlora.tools.families import family, shipped_targets
from sdlora.tools.fix import fix_lora
from sdlora.tools.verify import verify_lora
from tests.helpers.config import TINY_MODELS
from tests.helpers.lora_files import random_lora
from tests.integration.test_interop_diffusers import diffusers_outputs, hand_merge, outputs


def varied_lora(path, model: str):
    """A LoCon with per-module ranks and alphas (every third module alpha 5, every fourth rank 2)."""
    random_lora(path, model, rank=4, conv_rank=3, alpha=2.0, seed=3, scale=0.2)
    tensors = load_file(str(path))
    names = sorted(k.removesuffix(".alpha") for k in tensors if k.endswith(".alpha"))
    for i, name in enumerate(names):
        if i % 3 == 0:
            tensors[f"{name}.alpha"] = torch.tensor(5.0)
        if i % 4 == 0 and tensors[f"{name}.lora_down.weight"].shape[0] == 4:
            tensors[f"{name}.lora_down.weight"] = tensors[f"{name}.lora_down.weight"][:2].contiguous()
            tensors[f"{name}.lora_up.weight"] = tensors[f"{name}.lora_up.weight"][:, :2].contiguous()
    save_file(tensors, str(path))
    return path


@pytest.mark.parametrize("model", TINY_MODELS)
def test_convert_round_trips_bit_exact_and_loads_in_diffusers(model, tmp_path):
    kohya = varied_lora(tmp_path / "kohya.safetensors", model)
    diffusers_file = convert_lora(kohya, tmp_path / "lora.diffusers.safetensors", "diffusers")
    back = convert_lora(diffusers_file, tmp_path / "back.safetensors", "kohya")
    again = convert_lora(back, tmp_path / "again.diffusers.safetensors", "diffusers")
    original, returned = load_file(str(kohya)), load_file(str(back))
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[k], returned[k]) and original[k].dtype == returned[k].dtype for k in original)
    first, second = load_file(str(diffusers_file)), load_file(str(again))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    fam = family(model)
    merged = fam.load()
    count = hand_merge(fam, merged, original)
    expected = outputs(fam, merged)
    got, loaded = diffusers_outputs(fam, diffusers_file)
    assert loaded == count == len(first) // 2
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, atol=1e-5, rtol=1e-4, msg=key)
    folded = convert_lora(kohya, tmp_path / "folded.safetensors", "diffusers", alpha="fold")
    got, _ = diffusers_outputs(fam, folded)
    torch.testing.assert_close(got["unet"], expected["unet"], atol=1e-5, rtol=1e-4)


def test_fix_turns_a_peft_sdxl_file_into_a_kohya_file_that_loads(tmp_path):
    kohya = random_lora(tmp_path / "kohya.safetensors", "tiny_sdxl", rank=4, alpha=4.0, seed=5)  # scale 1
    folded = convert_lora(kohya, tmp_path / "peft.safetensors", "diffusers", alpha="fold")
    peft = {k: v for k, v in load_file(str(folded)).items()}
    save_file(peft, str(tmp_path / "bare_peft.safetensors"))  # no metadata at all, as PEFT trainers write it

    report = verify_lora(tmp_path / "bare_peft.safetensors")
    assert report.model == "tiny_sdxl" and report.format == "peft"
    assert any("diffusers/PEFT keys" in p for p in report.problems)
    assert any("ss_base_model_version" in p for p in report.problems)

    fixed, _ = fix_lora(tmp_path / "bare_peft.safetensors", tmp_path / "fixed.safetensors")
    tensors, meta = load_lora(fixed)
    names = {k.rsplit(".", 2)[0] for k in tensors if k.endswith(".lora_down.weight")}
    targets = shipped_targets("tiny_sdxl")
    assert names == {k.rsplit(".", 2)[0] for k in load_file(str(kohya)) if k.endswith(".lora_down.weight")}
    assert names <= targets.keys()  # zero unknown (missing) keys for a kohya loader
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert verify_lora(fixed).problems == []
    from sdlora.config.schema import NetworkConfig
    from sdlora.network.weights import InitialWeights

    initial = InitialWeights(str(fixed), NetworkConfig())  # sdlora's reader (network.weights=): every module known
    initial.check_names(set(targets), set(targets))
    assert all(initial.rank_alpha(name) == (4, 4.0) for name in initial.modules)

    fam = family("tiny_sdxl")
    merged = fam.load()
    count = hand_merge(fam, merged, load_file(str(kohya)))
    got, loaded = diffusers_outputs(fam, fixed)
    assert loaded == count == len(names)
    torch.testing.assert_close(got["unet"], outputs(fam, merged)["unet"], atol=1e-5, rtol=1e-4)


def test_verify_names_each_problem_and_fix_repairs_them(tmp_path, capsys):
    src = random_lora(tmp_path / "src.safetensors", "tiny", rank=4, alpha=2.0, metadata={})
    tensors = load_file(str(src))
    names = sorted(k.removesuffix(".alpha") for k in tensors if k.endswith(".alpha"))
    broken: dict[str, torch.Tensor] = {}
    table = shipped_targets("tiny")
    for i, name in enumerate(names):
        path = table[name].target.path
        new = f"lycoris_{path.replace('.', '_')}" if table[name].component == "unet" and i % 2 else name
        for role in ("lora_down.weight", "lora_up.weight", "alpha"):
            broken[f"{new}.{role}"] = tensors[f"{name}.{role}"]
        if i == 1:
            del broken[f"{new}.alpha"]
        if i == 2:
            broken[f"{new}.alpha"] = torch.tensor(2)  # int64
        if i == 3:
            broken[f"{new}.lora_up.weight"] = torch.zeros_like(broken[f"{new}.lora_up.weight"])
    save_file(broken, str(tmp_path / "broken.safetensors"))

    from sdlora.tools.verify import main

    assert main([str(tmp_path / "broken.safetensors"), "--json"]) == 0  # what sdlora-verify-lora runs
    report = json.loads(capsys.readouterr().out)
    text = "\n".join(report["problems"])
    assert report["model"] == "tiny" and len(report["modules"]) == len(names)
    for expected in ("'lycoris_' names", "no .alpha", "int64", "untrained", "ss_base_model_version"):
        assert expected in text, expected

    fixed, _ = fix_lora(tmp_path / "broken.safetensors", tmp_path / "fixed.safetensors")
    repaired = load_file(str(fixed))
    assert all(v.dtype == torch.float32 and v.dim() == 0 for k, v in repaired.items() if k.endswith(".alpha"))
    assert {k.rsplit(".", 2)[0] for k in repaired if k.endswith(".lora_down.weight")} == set(names)
    assert float(repaired[f"{names[1]}.alpha"]) == 4.0  # the missing alpha is the rank (scale 1)
    left = verify_lora(fixed).problems
    assert len(left) == 1 and "untrained" in left[0]  # an all-zero lora_up is reported, not "fixed"


@pytest.mark.parametrize(
    ("network", "options"),
    [("loha", {"conv_rank": 2}), ("lokr", {"factor": 4, "decompose_both": True, "conv_rank": 2}),
     ("lokr", {"factor": 4}), ("full", {})],
)  # fmt: skip
def test_verify_gives_a_lycoris_files_ranks_alphas_and_delta_norms(tmp_path, network, options):
    """LoHa, LoKr and full files: ‖ΔW‖ from the file alone equals the trained modules' own ΔW (what the network
    applies); a module left at zero is untrained."""
    from hydra.utils import get_class

    from sdlora.config.schema import LycorisPreset, NetworkConfig, NetworkType
    from sdlora.models import presets
    from sdlora.network.build import build_network
    from sdlora.network.io import save_lora
    from tests.helpers.network import randomise_

    fam = get_class(presets.FAMILY_CLASSES["tiny"])()
    rank, alpha = (None, None) if network == "full" else (4, 2.0)
    cfg = NetworkConfig(name=NetworkType(network), rank=rank, alpha=alpha, preset=LycorisPreset.full, **options)
    built = build_network(fam, fam.load(), cfg)
    names = list(built.modules)
    for i, name in enumerate(names[1:]):  # the first module stays as built: ΔW = 0
        randomise_(built.modules[name], seed=i)
    path = save_lora(tmp_path / f"{network}.safetensors", built.kohya_tensors(), {"ss_base_model_version": "sd_v1"})
    report = {m.name: m for m in verify_lora(path, "tiny").modules}
    assert report.keys() == set(names)
    for name in names[1:]:
        expected = float(built.modules[name].delta_weight().detach().float().norm())
        assert report[name].delta_norm == pytest.approx(expected, rel=1e-4), name
        # LyCORIS stores alpha = rank where both LoKr factors are full matrices (it then ignores alpha)
        assert report[name].alpha in ((None,) if network == "full" else (alpha, float(rank)))
    assert report[names[0]].problems == ["untrained: ΔW = 0"]
    if network == "loha":
        assert {report[n].rank for n in names} == {4, 2}  # rank and conv rank
