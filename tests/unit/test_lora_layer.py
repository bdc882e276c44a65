"""The LoRA wrapper layer and its pure maths (network/functional.py, network/lora.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdlora.network.functional import delta_weight, lora_scale
from tests.helpers.network import lora


@pytest.mark.parametrize(("alpha", "rank", "expected"), [(1.0, 8, 0.125), (4, 4, 1.0), (None, 8, 1.0), (0, 16, 1.0)])
def test_scale_is_alpha_over_rank_with_kohya_default(alpha, rank, expected):
    assert lora_scale(alpha, rank) == expected


BASES = {
    "linear": (lambda: nn.Linear(12, 10), lambda: torch.randn(3, 5, 12)),
    "conv1x1": (lambda: nn.Conv2d(12, 10, 1), lambda: torch.randn(2, 12, 6, 6)),
    "conv3x3": (lambda: nn.Conv2d(12, 10, 3, padding=1), lambda: torch.randn(2, 12, 6, 6)),
    "conv3x3_stride2": (lambda: nn.Conv2d(12, 10, 3, stride=2, padding=1), lambda: torch.randn(2, 12, 8, 8)),
}


@pytest.mark.parametrize("kind", BASES)
def test_delta_weight_equals_the_lora_branch(kind):
    """ΔW = scale·reshape(up.flatten(1) @ down.flatten(1)) reproduces base(x) + scale·up(down(x)) as one layer."""
    torch.manual_seed(0)
    make_base, make_x = BASES[kind]
    base = make_base()
    module = lora(base, rank=3, alpha=1.5)
    nn.init.normal_(module.lora_up.weight)
    x = make_x()
    merged = base.weight + module.delta_weight()
    if isinstance(base, nn.Linear):
        expected = F.linear(x, merged, base.bias)
    else:
        expected = F.conv2d(x, merged, base.bias, base.stride, base.padding)
    torch.testing.assert_close(module(x), expected, atol=1e-5, rtol=1e-5)
    assert module.delta_weight().shape == base.weight.shape


def test_delta_weight_formula_for_linear():
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    torch.testing.assert_close(delta_weight(up, down, 0.5, (6, 5)), 0.5 * up @ down)


@pytest.mark.parametrize("kind", BASES)
def test_initial_lora_is_a_no_op_and_shapes_follow_kohya(kind):
    make_base, make_x = BASES[kind]
    base = make_base()
    module = lora(base, rank=4, alpha=1.0)
    x = make_x()
    assert torch.equal(module(x), base(x))
    assert torch.count_nonzero(module.lora_up.weight) == 0
    bound = 1 / (base.weight[0].numel() ** 0.5)  # Kaiming-uniform a=√5: U(−1/√fan_in, 1/√fan_in)
    assert module.lora_down.weight.abs().max() <= bound
    down, up = module.lora_down.weight, module.lora_up.weight
    if isinstance(base, nn.Linear):
        assert down.shape == (4, 12) and up.shape == (10, 4)
    else:
        assert down.shape == (4, 12, *base.kernel_size) and up.shape == (10, 4, 1, 1)
    assert set(module.state_dict()) == {"base.weight", "base.bias", "lora_down.weight", "lora_up.weight", "alpha"}


def test_merge_is_idempotent_and_unmerge_restores():
    torch.manual_seed(0)
    base = nn.Linear(8, 8)
    original = base.weight.detach().clone()
    module = lora(base, rank=2, alpha=2)
    nn.init.normal_(module.lora_up.weight)
    x = torch.randn(4, 8)
    unmerged = module(x)
    module.merge()
    module.merge()
    torch.testing.assert_close(module(x), unmerged, atol=1e-6, rtol=1e-6)
    module.unmerge()
    torch.testing.assert_close(base.weight, original, atol=1e-6, rtol=0)


def test_lora_branch_runs_in_fp32_beside_a_bf16_base():
    base = nn.Linear(8, 8).to(torch.bfloat16)
    module = lora(base, rank=2, alpha=1)
    assert module.lora_down.weight.dtype == torch.float32
    out = module(torch.randn(2, 8, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16


def test_grouped_conv_is_rejected():
    with pytest.raises(ValueError, match="grouped"):
        lora(nn.Conv2d(4, 4, 3, groups=2), rank=2, alpha=1)


def test_the_branch_takes_its_input_uncast_under_autocast():
    """float32 LoRA weights beside bfloat16 layers: without autocast the branch casts its input to float32; under
    autocast it passes it on as it is — the same outputs and gradients as casting first (bf16 → fp32 → bf16 is
    exact), without the float32 copy autograd would keep (branch_input)."""
    from sdlora.network.functional import branch_input

    x16 = torch.randn(3, 12, dtype=torch.bfloat16)
    assert branch_input(x16, torch.float32).dtype == torch.float32
    assert branch_input(x16, torch.bfloat16) is x16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert branch_input(x16, torch.float32) is x16
    for kind in ("linear", "conv3x3"):
        torch.manual_seed(0)
        make_base, make_x = BASES[kind]
        module = lora(make_base().to(torch.bfloat16), rank=3, alpha=1.5)
        nn.init.normal_(module.lora_up.weight)
        x = make_x().to(torch.bfloat16)
        results = []
        for cast_first in (False, True):
            module.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = (
                    module(x)
                    if not cast_first
                    else module.base(x)
                    + (module.lora_up(module.lora_down(x.float())) * module.scale).to(torch.bfloat16)
                )
            out.float().square().sum().backward()
            results.append((out, module.lora_down.weight.grad.clone(), module.lora_up.weight.grad.clone()))
        assert all(torch.equal(a, b) for a, b in zip(*results, strict=True)), kind
