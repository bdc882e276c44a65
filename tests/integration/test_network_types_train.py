"""Every network type × {SD1.5-shaped, SDXL-shaped}: two steps through ``python train.py`` (one Hydra multirun per
model, one job per type), then, per file:

- keys: every module's tensors are its type's (lora_down/up, hada_*, lokr_*, …), kohya names (SDXL: LDM names);
- metadata: ``ss_network_module``, ``ss_network_args`` with ``algo``, dim/alpha, the base-model keys;
- ΔW: the file's ΔW for every module, computed from the file alone with ComfyUI's formulas, equals the network's
  effect on that layer (the module's eval-mode forward, the network loaded from the file);
- LyCORIS's loader (``lycoris.kohya.create_network_from_weights`` + ``apply_to`` + ``load_state_dict``, as kohya's
  tools run it) reports no missing and no unexpected keys, and its modules give the same layer outputs;
- training moved something, and LoRA-FA's lora_down did not move (step-1 and final files).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.io import load_lora
from sdlora.network.types import TYPES
from sdlora.network.weights import group_modules, module_format
from tests.helpers import comfy_oracle
from tests.helpers.cli import run_train_py
from tests.helpers.config import TINY_MODELS, resolved, tiny_overrides
from tests.helpers.network import layer_output

pytestmark = pytest.mark.xdist_group("network_types_train")  # one worker: each model's multirun runs once

ALL = [t.value for t in NetworkType]
MODELS = TINY_MODELS
ARCHITECTURE = {"tiny": "stable-diffusion-v1/lora", "tiny_sd2_v": "stable-diffusion-v2-768-v/lora",
                "tiny_sdxl": "stable-diffusion-xl-v1-base/lora"}  # fmt: skip
EXTRA = ("optimizer.lr=1e-3", "data.batch_size=1", "trainer.max_steps=2", "save.every_n_steps=1")

#: lycoris-lora 4.1's loader cannot build iA3 modules (make_module_from_state_dict takes one argument too few).
LYCORIS_LOADER_BROKEN = {"ia3"}


@pytest.fixture(scope="module")
def one_image(tmp_path_factory) -> Path:
    from PIL import Image

    folder = tmp_path_factory.mktemp("types") / "data" / "1_tok"
    folder.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 60, 30)).save(folder / "a.png")
    (folder / "a.txt").write_text("tok, red square", encoding="utf-8")
    return folder.parent


@pytest.fixture(scope="module")
def sweeps(one_image, tmp_path_factory):
    """``python train.py -m network=<every type> model=<model>``, run once per model however pytest orders the tests:
    a function from the model to the run folder of each type."""
    folders_of: dict[str, dict[str, Path]] = {}

    def run(model: str) -> dict[str, Path]:
        if model not in folders_of:
            sweep = tmp_path_factory.mktemp(f"sweep_{model}")
            run_train_py(["-m", *tiny_overrides(one_image, *EXTRA, model=model), f"network={','.join(ALL)}",
                          f"hydra.sweep.dir={sweep}"], sweep / "unused")  # fmt: skip
            found = {m.group(1): f for f in sweep.iterdir() if (m := re.search(r"network=(\w+)", f.name))}
            assert set(found) == set(ALL), sorted(found)
            folders_of[model] = found
        return folders_of[model]

    return run


@pytest.fixture(params=MODELS)
def runs(request, sweeps) -> tuple[str, dict[str, Path]]:
    """(model, the run folder of each type)."""
    return request.param, sweeps(request.param)


def rebuilt(model: str, network_type: str, one_image: Path, *extra: str):
    """The run's model and network (a fresh one), rebuilt in this process."""
    from sdlora.models.family import make_family
    from sdlora.network.build import build_network

    cfg = resolved(*tiny_overrides(one_image, *EXTRA, f"network={network_type}", *extra, model=model))
    family = make_family(cfg.model)
    components = family.load()
    return family, components, build_network(family, components, cfg.network)


def sample_input(base: nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    if isinstance(base, nn.Linear):
        return torch.randn(2, 3, base.in_features, generator=generator)
    if isinstance(base, nn.Conv2d):
        return torch.randn(1, base.in_channels, 8, 8, generator=generator)
    channels = base.num_channels if isinstance(base, nn.GroupNorm) else base.normalized_shape[0]
    shape = (1, channels, 4, 4) if isinstance(base, nn.GroupNorm) else (2, 3, channels)
    return torch.randn(shape, generator=generator)


@pytest.mark.parametrize("network_type", ALL)
def test_file_keys_and_metadata(runs, network_type):
    model, folders = runs
    tensors, meta = load_lora(folders[network_type] / "last.safetensors")
    info = TYPES[NetworkType(network_type)]
    modules = group_modules(tensors)
    assert modules and len(modules) * 2 <= len(tensors) + len(modules)
    formats = {module_format({k: tuple(v.shape) for k, v in t.items()}) for t in modules.values()}
    assert formats <= {info.file_format, "norm"} and info.file_format in formats
    assert all(k.split(".")[0] in modules for k in tensors), "every key belongs to a module"
    prefixes = ("lora_unet_", "lora_te1_", "lora_te2_") if model == "tiny_sdxl" else ("lora_unet_", "lora_te_")
    assert all(name.startswith(prefixes) for name in modules)
    unet_names = [n.removeprefix("lora_unet_") for n in modules if n.startswith("lora_unet_")]
    blocks = r"(input_blocks|middle_block|output_blocks)_" if model == "tiny_sdxl" else (
        r"(down_blocks|mid_block|up_blocks|conv_in|conv_out|time_embedding)_?")  # fmt: skip
    assert unet_names and all(re.match(blocks, n) for n in unet_names), unet_names[:3]
    assert meta["ss_network_module"] == info.module
    args = json.loads(meta["ss_network_args"])
    assert args.get("algo") == info.algo
    assert meta["modelspec.architecture"] == ARCHITECTURE[model]
    assert meta["ss_base_model_version"] and "ss_network_dim" in meta and "ss_network_alpha" in meta


@pytest.mark.parametrize("network_type", ALL)
def test_file_delta_is_the_networks_effect_and_lycoris_loads_it(runs, network_type, one_image):
    model, folders = runs
    tensors, _ = load_lora(folders[network_type] / "last.safetensors")
    _, _, network = rebuilt(model, network_type, one_image)
    network.load_kohya_tensors(tensors)
    network.set_training(False)
    files = group_modules(tensors)
    moved = 0
    for name, module in network.modules.items():
        x = sample_input(module.base)
        weight_delta, bias_delta = comfy_oracle.delta(files[name], module.base.weight)
        bias = module.base.bias
        expected = layer_output(module.base, x, module.base.weight + weight_delta,
                                bias if bias_delta is None else bias + bias_delta)  # fmt: skip
        with torch.no_grad():
            torch.testing.assert_close(module(x), expected, atol=5e-5, rtol=1e-4, msg=name)
        moved += bool(weight_delta.abs().max() > 0)
    assert moved > 0, "two steps at lr 1e-3 changed no module"
    if network_type not in LYCORIS_LOADER_BROKEN:
        _lycoris_loads(network, tensors, model)


def _views(network, model: str) -> tuple[nn.Module, list[nn.Module]]:
    """The frozen layers under kohya's module paths (copies, flat: a child per kohya name without its prefix), the
    way LyCORIS's loader finds layers by name in kohya's U-Net and text encoders."""
    unet, encoders = nn.Module(), {}
    for name, module in network.modules.items():
        prefix, _, rest = name.partition("_text_model_") if "_text_model_" in name else ("lora_unet", "", name[10:])
        owner = unet if prefix == "lora_unet" else encoders.setdefault(prefix, nn.Module())
        owner.add_module(rest if prefix == "lora_unet" else f"text_model_{rest}", copy.deepcopy(module.base))
    return unet, [encoders[p] for p in sorted(encoders)]


def _lycoris_loads(network, tensors: dict[str, torch.Tensor], model: str) -> None:
    from lycoris.kohya import create_network_from_weights

    unet, encoders = _views(network, model)
    text_encoder = encoders if model == "tiny_sdxl" else encoders[0]
    lyco, weights = create_network_from_weights(1.0, None, None, text_encoder, unet, weights_sd=dict(tensors))
    lyco.apply_to(text_encoder, unet, apply_text_encoder=True, apply_unet=True)
    assert len(lyco.loras) == len(network.modules)
    lyco.eval()
    by_name = {m.lora_name: m for m in lyco.loras}
    for name, module in network.modules.items():  # the modules as the loader built them from the file
        x = sample_input(module.base)
        with torch.no_grad():
            torch.testing.assert_close(by_name[name](x), module(x), atol=5e-5, rtol=1e-4, msg=name)
    # kohya's tools then load the file into the applied network (LyCORIS's full adds diff a second time there)
    result = lyco.load_state_dict(weights, strict=False)
    missing, unexpected = result.missing_keys, result.unexpected_keys
    assert (missing, unexpected) == ([], []), (missing[:5], unexpected[:5])


def test_lora_fa_keeps_lora_down_and_training_moves_every_type(runs):
    _, folders = runs
    for network_type, folder in folders.items():
        first, _ = load_lora(folder / "last-step00000001.safetensors")
        final, _ = load_lora(folder / "last.safetensors")
        assert any(not torch.equal(first[k], final[k]) for k in final), network_type
        if network_type == "lora_fa":
            downs = [k for k in final if k.endswith("lora_down.weight")]
            assert downs and all(torch.equal(first[k], final[k]) for k in downs)


def test_kohya_dylora_file_cut_to_fewer_rows_is_a_working_lora(runs, one_image, tmp_path):
    """kohya's extract_lora_from_dylora.py: lora_down[:r], lora_up[:, :r], alpha unchanged — a rank-r LoRA that
    network=lora starts from (network.weights) with ΔW = alpha/r · up[:, :r] · down[:r]."""
    from sdlora.network.io import save_lora

    model, folders = runs
    tensors, _ = load_lora(folders["dylora"] / "last.safetensors")
    rows = {"lora_down.weight": lambda v: v[:4], "lora_up.weight": lambda v: v[:, :4]}
    cut = {k: rows.get(k.split(".", 1)[1], lambda v: v)(v).contiguous() for k, v in tensors.items()}
    path = save_lora(tmp_path / "cut.safetensors", cut)
    _, _, network = rebuilt(model, "lora", one_image, f"network.weights={path}")
    assert set(network.modules) == set(group_modules(cut))
    for name, module in network.modules.items():
        down, up = cut[f"{name}.lora_down.weight"], cut[f"{name}.lora_up.weight"]
        expected = float(cut[f"{name}.alpha"]) / 4 * (up.flatten(1) @ down.flatten(1))
        assert module.rank == 4
        torch.testing.assert_close(module.delta_weight(), expected.reshape(module.base.weight.shape))
