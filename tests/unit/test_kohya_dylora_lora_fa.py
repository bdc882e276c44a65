"""kohya's own LoRA variants (docs/kohya.md §1.4–1.5): DyLoRA [networks.dylora] and LoRA-FA
[networks.lora_fa] — their draws, trainable tensors, scales and files."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.dylora import draw_trainable_row, dylora_scale
from tests.helpers.network import layer_output, lora, randomise_

LAYERS = {
    "linear": (lambda: nn.Linear(12, 10), (3, 5, 12)),
    "conv3x3": (lambda: nn.Conv2d(6, 10, 3, padding=1), (2, 6, 5, 5)),
}


def test_draws_are_uniform_multiples_of_unit():
    generator = torch.Generator().manual_seed(0)
    counts = Counter(draw_trainable_row(8, 2, generator) for _ in range(4000))
    assert set(counts) == {0, 2, 4, 6}
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in counts.values())
    assert dylora_scale(2.0, 8, 6, 2) == pytest.approx(2.0 / 8)  # full rank: alpha/rank
    assert dylora_scale(2.0, 8, 0, 2) == pytest.approx(2.0 / 8 * math.sqrt(8 / 2))


@pytest.mark.parametrize("layer", LAYERS)
def test_dylora_step_trains_only_the_drawn_rows_with_kohyas_scale(layer):
    make_base, shape = LAYERS[layer]
    torch.manual_seed(0)
    base = make_base()
    module = lora(base, 8, 4.0, NetworkType.dylora, {"unit": 2})
    randomise_(module)
    module.begin_step(torch.Generator().manual_seed(3))
    b = module.trainable_row
    assert b % 2 == 0 and 0 <= b <= 6
    x = torch.randn(shape)
    out = module(x)
    down, up = module.file_tensors()["lora_down.weight"], module.file_tensors()["lora_up.weight"]
    delta = (up.flatten(1) @ down.flatten(1)).reshape(base.weight.shape) * dylora_scale(4.0, 8, b, 2)
    torch.testing.assert_close(out, layer_output(base, x, base.weight + delta, base.bias), atol=1e-5, rtol=1e-4)
    out.pow(2).sum().backward()
    trained = [i for i, p in enumerate(module.lora_A) if p.grad is not None]
    assert trained == [b, b + 1]
    assert [i for i, p in enumerate(module.lora_B) if p.grad is not None] == [b, b + 1]
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=0.1)
    before = module.file_tensors()["lora_down.weight"].clone()
    optimizer.step()
    changed = (module.file_tensors()["lora_down.weight"] != before).flatten(1).any(1).nonzero().flatten().tolist()
    assert changed == [b, b + 1], "rows without a gradient are skipped by the optimizer, as kohya's per-row params"


@pytest.mark.parametrize("layer", LAYERS)
def test_dylora_file_is_a_plain_lora_and_its_first_rows_a_lower_rank_one(layer):
    """Eval mode applies (alpha/rank)·up·down; the same tensors in a LoRA module give the same layer; the first
    unit·k rows with the same alpha load into a rank-unit·k LoRA (kohya's extract_lora_from_dylora.py)."""
    make_base, shape = LAYERS[layer]
    torch.manual_seed(0)
    base = make_base()
    module = lora(base, 8, 4.0, NetworkType.dylora, {"unit": 2})
    randomise_(module)
    module.set_training(False)
    file = {k: v.detach().clone() for k, v in module.file_tensors().items()}
    plain = lora(base, 8, 4.0)
    plain.load_file_tensors(file)
    x = torch.randn(shape)
    torch.testing.assert_close(plain(x), module(x), atol=1e-6, rtol=1e-5)
    cut = {"lora_down.weight": file["lora_down.weight"][:4], "lora_up.weight": file["lora_up.weight"][:, :4],
           "alpha": file["alpha"]}  # fmt: skip
    lower = lora(base, 4, 4.0)
    lower.load_file_tensors(cut)
    expected = (cut["lora_up.weight"].flatten(1) @ cut["lora_down.weight"].flatten(1)) * (4.0 / 4)
    torch.testing.assert_close(lower.delta_weight(), expected.reshape(base.weight.shape))


@pytest.mark.parametrize("layer", LAYERS)
def test_lora_fa_trains_only_lora_up_from_a_normal_start(layer):
    make_base, shape = LAYERS[layer]
    torch.manual_seed(0)
    base = make_base()
    module = lora(base, 4, 1.0, NetworkType.lora_fa)
    down = module.lora_down.weight
    big = lora(nn.Linear(4000, 10), 50, 1.0, NetworkType.lora_fa).lora_down.weight  # std √(2 / (in + rank))
    assert big.std().item() == pytest.approx(math.sqrt(2.0 / 4050), rel=0.02) and abs(big.mean().item()) < 2e-3
    assert not down.requires_grad and list(module.trainable_parameters()) == [module.lora_up.weight]
    before = down.detach().clone()
    optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        module(torch.randn(shape)).pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.equal(module.lora_down.weight, before)
    assert module.lora_up.weight.abs().sum() > 0
    assert F.mse_loss(module.delta_weight(), torch.zeros_like(base.weight)) > 0
