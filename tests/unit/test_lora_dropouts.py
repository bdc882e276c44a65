"""kohya's three dropouts (docs/kohya.md §2): formulas, mask statistics with a fixed seed, order inside the LoRA
forward, and that they act only in training mode."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdlora.network.functional import module_dropout_skips, neuron_dropout, rank_dropout
from sdlora.network.lora import LoRAModule
from tests.helpers.network import lora


def test_neuron_dropout_zeroes_elements_with_probability_p_and_rescales_survivors():
    torch.manual_seed(0)
    lx = torch.randn(8, 64, 16)  # [B, tokens, rank]
    out = neuron_dropout(lx, 0.3)
    dropped = out == 0
    assert abs(dropped.float().mean().item() - 0.3) < 0.01  # 8192 elements: σ ≈ 0.005
    torch.testing.assert_close(out[~dropped], lx[~dropped] / 0.7)
    # elementwise: the same rank channel is kept for some tokens and dropped for others
    assert dropped[0, :, 0].any() and (~dropped[0, :, 0]).any()
    assert neuron_dropout(lx, 0.0) is lx


@pytest.mark.parametrize(
    ("shape", "mask_view"),
    [((6, 40, 12), (6, 1, 12)), ((6, 12, 5, 7), (6, 12, 1, 1)), ((6, 12), (6, 12))],
    ids=["tokens", "conv", "vector"],
)
def test_rank_dropout_is_one_mask_per_sample_and_rank_with_a_fixed_factor(shape, mask_view):
    lx = torch.randn(shape).abs() + 0.1  # no zeros of its own
    torch.manual_seed(3)
    out, factor = rank_dropout(lx, 0.25)
    torch.manual_seed(3)
    keep = torch.rand(6, 12) > 0.25  # kohya: keep where U > p, drawn as [batch, rank]
    assert factor == pytest.approx(1 / 0.75)
    torch.testing.assert_close(out, lx * keep.reshape(mask_view))
    assert torch.equal(out, lx * keep.reshape(mask_view))  # no rescaling inside the mask itself


def test_rank_dropout_statistics_with_a_fixed_seed():
    torch.manual_seed(0)
    out, _ = rank_dropout(torch.ones(4096, 1, 32), 0.2)
    assert abs((out == 0).float().mean().item() - 0.2) < 0.01
    lx = torch.ones(2, 3)
    assert rank_dropout(lx, 0.0) == (lx, 1.0)


def test_module_dropout_skips_with_probability_p():
    torch.manual_seed(0)
    skips = sum(module_dropout_skips(0.3) for _ in range(20000))
    assert abs(skips / 20000 - 0.3) < 0.01
    state = torch.random.get_rng_state()
    assert not module_dropout_skips(0.0)
    assert torch.equal(torch.random.get_rng_state(), state), "p = 0 must not consume random numbers"


def _module(kind: str, **dropouts) -> tuple[LoRAModule, torch.Tensor]:
    torch.manual_seed(1)
    if kind == "linear":
        base, x = nn.Linear(10, 6), torch.randn(3, 5, 10)
    else:
        base, x = nn.Conv2d(10, 6, 3, padding=1), torch.randn(3, 10, 4, 4)
    module = lora(base, rank=4, alpha=2.0, **dropouts)
    nn.init.normal_(module.lora_up.weight)
    return module, x


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_forward_applies_the_dropouts_in_kohyas_order(kind):
    """module dropout draw → down → neuron dropout → rank dropout (scale × 1/(1−p)) → up, reproduced by hand."""
    module, x = _module(kind, dropout=0.4, rank_dropout=0.5, module_dropout=0.2)
    module.train()
    for seed in range(6):
        torch.manual_seed(seed)
        got = module(x)
        torch.manual_seed(seed)
        skip = torch.rand(1) < 0.2
        expected = module.base(x)
        if not skip:
            lx = F.dropout(module.lora_down(x), p=0.4)
            keep = torch.rand(3, 4) > 0.5
            keep = keep[:, None, :] if kind == "linear" else keep[:, :, None, None]
            expected = expected + module.lora_up(lx * keep) * (0.5 / 0.5)  # scale alpha/rank = 0.5, / (1 − 0.5)
        torch.testing.assert_close(got, expected)


def test_module_dropout_returns_the_base_output_for_the_whole_batch():
    module, x = _module("linear", module_dropout=0.5)
    module.train()
    outputs = []
    for seed in range(20):
        torch.manual_seed(seed)
        outputs.append(module(x))
    base = module.base(x)
    skipped = [torch.equal(o, base) for o in outputs]
    assert any(skipped) and not all(skipped)


@pytest.mark.parametrize("kind", ["linear", "conv3x3"])
def test_eval_mode_has_no_dropout(kind):
    module, x = _module(kind, dropout=0.5, rank_dropout=0.5, module_dropout=0.5)
    plain, _ = _module(kind)
    module.eval()
    state = torch.random.get_rng_state()
    torch.testing.assert_close(module(x), plain(x))
    assert torch.equal(torch.random.get_rng_state(), state)


def test_network_evaluating_switches_dropouts_off_and_restores_the_mode():
    from sdlora.config.schema import NetworkConfig
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network
    from tests.unit.test_network_invariants import forward, randomise

    family = TinySD15Family()
    components = family.load()
    network = build_network(family, components, NetworkConfig(dropout=0.3, rank_dropout=0.3, module_dropout=0.3))
    randomise(network)
    network.set_training(True)
    with torch.no_grad():
        first, second = forward(family, components), forward(family, components)
        assert not torch.equal(first["unet"], second["unet"]), "dropouts are active in training mode"
        with network.evaluating():
            assert not any(m.training for m in network.modules.values())
            a, b = forward(family, components), forward(family, components)
        assert torch.equal(a["unet"], b["unet"]) and torch.equal(a["text"], b["text"])
    assert all(m.training and m.lora_down.training for m in network.modules.values())
