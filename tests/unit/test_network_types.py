"""Every network type's module on Linear, 1×1 and 3×3 conv layers (and norms), driven by one case table:

zero start ⇒ the frozen layer's output; the eval-mode forward equals the layer with W + ΔW where ΔW is computed from
the module's file tensors alone by ComfyUI's formulas (tests/helpers/comfy_oracle.py); ``delta_weight()`` is that
ΔW; LyCORIS's own loader (``lycoris.modules.get_module`` + ``make_module``, what ``create_network_from_weights``
runs per module) rebuilds the same layer from the file; the file loads back exactly; merge/unmerge.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdlora.config.schema import NetworkType as T
from tests.helpers import comfy_oracle
from tests.helpers.network import layer_output, lora, randomise_

LAYERS = {
    "linear": (lambda: nn.Linear(32, 64), (2, 5, 32)),
    "conv1x1": (lambda: nn.Conv2d(32, 64, 1), (2, 32, 6, 6)),
    "conv3x3": (lambda: nn.Conv2d(32, 64, 3, stride=2, padding=1), (2, 32, 6, 6)),
}
#: id → (type, rank, alpha, options). Each runs on every layer of LAYERS.
CASES = {
    "lora": (T.lora, 4, 2.0, {}),
    "lora_fa": (T.lora_fa, 4, 2.0, {}),
    "dylora": (T.dylora, 4, 2.0, {"unit": 2}),
    "lycoris_locon": (T.lycoris_locon, 4, 2.0, {}),
    "lycoris_locon_tucker": (T.lycoris_locon, 4, 2.0, {"use_tucker": True}),
    "lycoris_locon_rs": (T.lycoris_locon, 4, 2.0, {"rs_lora": True}),
    "dora_on_input": (T.lycoris_locon, 4, 2.0, {"weight_decompose": True, "wd_on_out": False}),
    "loha": (T.loha, 4, 2.0, {}),
    "loha_tucker": (T.loha, 4, 2.0, {"use_tucker": True}),
    "loha_dora_on_input": (T.loha, 4, 2.0, {"weight_decompose": True, "wd_on_out": False}),
    "lokr": (T.lokr, 4, 2.0, {}),
    "lokr_factor": (T.lokr, 2, 2.0, {"factor": 4}),
    "lokr_both": (T.lokr, 2, 2.0, {"factor": 8, "decompose_both": True}),
    "lokr_tucker": (T.lokr, 2, 2.0, {"factor": 4, "use_tucker": True}),
    "ia3": (T.ia3, None, None, {"train_on_input": False}),
    "ia3_input": (T.ia3, None, None, {"train_on_input": True}),
    "lycoris_dylora": (T.lycoris_dylora, 4, 2.0, {"block_size": 2}),
    "oft": (T.oft, 4, None, {}),
    "boft": (T.boft, 4, None, {}),
    "boft_rescaled": (T.boft, 4, None, {"rescaled": True}),
    "glora": (T.glora, 4, 2.0, {}),
    "full": (T.full, None, None, {}),
}
#: Cases lycoris-lora 4.1's own loader cannot rebuild (docs/network-types.md §6): it assumes DoRA on the output axis,
#: reads a Tucker LoKr's rank from the wrong side of lokr_w2_a, and calls iA3's constructor with one argument too many.
NOT_LYCORIS_LOADABLE = {"dora_on_input", "loha_dora_on_input", "lokr_tucker", "ia3", "ia3_input"}


def build(case: str, layer: str, seed: int = 0):
    network, rank, alpha, options = CASES[case]
    make_base, shape = LAYERS[layer]
    torch.manual_seed(seed)
    base = make_base()
    return base, lora(base, rank, alpha, network, options), torch.randn(shape)


def trained(case: str, layer: str):
    base, module, x = build(case, layer)
    randomise_(module)
    module.set_training(False)
    return base, module, x


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("case", CASES)
def test_a_new_module_leaves_the_layer_unchanged(case, layer):
    base, module, x = build(case, layer)
    expected = base(x)
    module.set_training(False)
    assert torch.equal(module(x), expected) or torch.allclose(module(x), expected, atol=1e-6)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("case", CASES)
def test_forward_equals_the_file_delta(case, layer):
    """ComfyUI's ΔW from the file alone (iA3: its definition) reproduces the eval-mode forward."""
    base, module, x = trained(case, layer)
    file = {k: v.detach() for k, v in module.file_tensors().items()}
    weight_delta, bias_delta = comfy_oracle.delta(file, base.weight)
    bias = base.bias if bias_delta is None else base.bias + bias_delta
    expected = layer_output(base, x, base.weight + weight_delta, bias)
    torch.testing.assert_close(module(x), expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(module.delta_weight(), weight_delta, atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("case", sorted(set(CASES) - NOT_LYCORIS_LOADABLE))
def test_lycorises_loader_rebuilds_the_module_from_the_file(case, layer):
    from lycoris.modules import get_module, make_module

    base, module, x = trained(case, layer)
    name = "lora_unet_test"
    file = {f"{name}.{k}": v.detach().clone() for k, v in module.file_tensors().items()}
    algo, params = get_module(file, name)
    assert algo is not None, f"LyCORIS recognises no module in {sorted(file)}"
    rebuilt = make_module(algo, params, name, base)
    rebuilt.eval()
    torch.testing.assert_close(rebuilt(x), module(x), atol=2e-5, rtol=1e-4)
    assert set(rebuilt.state_dict()) >= {k.removeprefix(f"{name}.") for k in file}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("case", CASES)
def test_file_round_trip_and_merge(case, layer):
    base, module, x = trained(case, layer)
    expected = module(x)
    _, fresh, _ = build(case, layer, seed=0)  # the same frozen layer (same seed), a new module
    fresh.load_file_tensors({k: v.detach().clone() for k, v in module.file_tensors().items()})
    fresh.set_training(False)
    torch.testing.assert_close(fresh(x), expected, atol=1e-6, rtol=1e-6)
    weight = base.weight.detach().clone()
    module.merge()
    module.merge()  # idempotent
    torch.testing.assert_close(module(x), expected, atol=2e-5, rtol=1e-4)
    module.unmerge()
    torch.testing.assert_close(base.weight, weight, atol=1e-6, rtol=0)


def test_norm_layers_train_through_lycoris_norm_modules():
    """``train_norm``: GroupNorm/LayerNorm get LyCORIS's norm module; the file's w_norm/b_norm are ΔW/Δb."""
    for base, shape in ((nn.GroupNorm(4, 32), (2, 32, 5, 5)), (nn.LayerNorm(32), (2, 7, 32))):
        module = lora(base, 4, 1.0, T.loha)
        x = torch.randn(shape)
        assert torch.equal(module(x), base(x))
        randomise_(module)
        module.set_training(False)
        file = {k: v.detach() for k, v in module.file_tensors().items()}
        assert set(file) == {"w_norm", "b_norm"}
        weight_delta, bias_delta = comfy_oracle.delta(file, base.weight)
        expected = layer_output(base, x, base.weight + weight_delta, base.bias + bias_delta)
        torch.testing.assert_close(module(x), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("network", [T.lycoris_locon, T.loha])
def test_dora_on_the_output_axis_differs_in_comfyui(network):
    """LyCORIS's DoRA default (wd_on_output): W′ = (W + ΔW)·m/‖W + ΔW‖ per row — what LyCORIS's loader gives back.
    ComfyUI divides by ‖W‖ per row instead, so it reads such a file slightly differently (docs/network-types.md)."""
    from lycoris.modules import get_module, make_module

    torch.manual_seed(0)
    base, x = nn.Linear(32, 64), torch.randn(2, 5, 32)
    module = lora(base, 4, 2.0, network, {"weight_decompose": True})
    randomise_(module)
    module.set_training(False)
    file = {f"lora_te_x.{k}": v.detach().clone() for k, v in module.file_tensors().items()}
    rebuilt = make_module(*get_module(file, "lora_te_x"), "lora_te_x", base).eval()
    torch.testing.assert_close(rebuilt(x), module(x), atol=2e-5, rtol=1e-4)
    comfy, _ = comfy_oracle.delta({k.split(".", 1)[1]: v for k, v in file.items()}, base.weight)
    assert not torch.allclose(module.delta_weight(), comfy, atol=1e-4)


@pytest.mark.parametrize(
    ("case", "layer", "error"), [("ia3", "linear", TypeError), ("lokr_tucker", "conv3x3", AttributeError)]
)
def test_lycoris_loader_limitations(case, layer, error):
    """Pins the lycoris-lora 4.1 loader bugs NOT_LYCORIS_LOADABLE skips (sdlora's own loader reads these files)."""
    from lycoris.modules import get_module, make_module

    base, module, _ = trained(case, layer)
    file = {f"lora_unet_x.{k}": v.detach().clone() for k, v in module.file_tensors().items()}
    with pytest.raises(error):
        make_module(*get_module(file, "lora_unet_x"), "lora_unet_x", base)
