"""Max-norm regularisation [scale_weight_norms] (docs/kohya.md §3): hand-computed norms, modules under the cap
untouched, Linear / 1×1 / 3×3 handled, and the same result as kohya's own loop."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sdlora.config.schema import NetworkType
from sdlora.network.functional import delta_weight, delta_weight_norm, max_norm_ratio
from sdlora.network.lora import LoRAModule
from sdlora.network.max_norm import apply_max_norm
from tests.helpers.network import lora, randomise_

SHAPES = {
    "linear": lambda: nn.Linear(7, 5),
    "conv1x1": lambda: nn.Conv2d(7, 5, 1),
    "conv3x3": lambda: nn.Conv2d(7, 5, 3, padding=1),
}


@pytest.mark.parametrize("kind", SHAPES)
def test_delta_weight_norm_is_the_frobenius_norm_of_delta_w(kind):
    torch.manual_seed(0)
    module = lora(SHAPES[kind](), rank=3, alpha=1.5)
    nn.init.normal_(module.lora_up.weight)
    up, down = module.lora_up.weight, module.lora_down.weight
    full = delta_weight(up, down, 0.5, module.base.weight.shape)
    torch.testing.assert_close(delta_weight_norm(up, down, 0.5), full.norm())
    if kind == "conv3x3":  # kohya's composition: conv2d(down as [in, r, 3, 3], up) → [out, in, 3, 3]
        composed = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        torch.testing.assert_close(0.5 * composed, full)


def test_ratio_is_one_under_the_cap():
    assert max_norm_ratio(0.4, 1.0) == 1.0
    assert max_norm_ratio(1.0, 1.0) == 1.0
    assert max_norm_ratio(4.0, 1.0) == 0.25


def _set(module: LoRAModule, up, down) -> None:
    with torch.no_grad():
        module.lora_up.weight.copy_(torch.tensor(up, dtype=torch.float32).reshape(module.lora_up.weight.shape))
        module.lora_down.weight.copy_(torch.tensor(down, dtype=torch.float32).reshape(module.lora_down.weight.shape))


def test_hand_computed_network():
    """Three modules with ΔW norms 4, 0.5 and 3 (3×3 conv) under a cap of 1."""
    big = lora(nn.Linear(3, 2), rank=1, alpha=2.0)  # scale 2: ΔW = 2·[[2],[0]]·[[1, 0, 0]], ‖ΔW‖ = 4
    _set(big, [[2.0], [0.0]], [[1.0, 0.0, 0.0]])
    small = lora(nn.Conv2d(2, 2, 1), rank=1, alpha=1.0)  # ΔW = [[0.3],[0.4]]·[[1, 0]], ‖ΔW‖ = 0.5
    _set(small, [0.3, 0.4], [1.0, 0.0])
    conv = lora(nn.Conv2d(1, 1, 3, padding=1), rank=1, alpha=1.0)  # ΔW = 1.5·K with ‖K‖ = 2: norm 3
    kernel = torch.zeros(9)
    kernel[0], kernel[4] = math.sqrt(2), math.sqrt(2)
    _set(conv, [1.5], kernel.tolist())
    small_before = [t.clone() for t in (small.lora_up.weight, small.lora_down.weight)]
    up_storage = big.lora_up.weight.data_ptr()

    keys_scaled, average, maximum = apply_max_norm([big, small, conv], max_norm=1.0)

    assert keys_scaled == 2
    assert average == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    assert maximum == pytest.approx(1.0)
    assert big.lora_up.weight.data_ptr() == up_storage, "scaled in place"
    # each factor scaled by √(1/4) = 0.5 and √(1/3)
    torch.testing.assert_close(big.lora_up.weight, torch.tensor([[1.0], [0.0]]))
    torch.testing.assert_close(big.lora_down.weight, torch.tensor([[0.5, 0.0, 0.0]]))
    torch.testing.assert_close(conv.lora_up.weight.flatten(), torch.tensor([1.5 / math.sqrt(3)]))
    for module in (big, conv):
        norm = module.delta_weight().norm().item()
        assert norm == pytest.approx(1.0, rel=1e-6)
    assert torch.equal(small.lora_up.weight, small_before[0]) and torch.equal(small.lora_down.weight, small_before[1])


def _kohya_reference(modules, max_norm):
    """kohya's apply_max_norm_regularization, as written in sd-scripts, over the modules' tensors."""
    norms, keys_scaled = [], 0
    for m in modules:
        down, up, alpha = m.lora_down.weight.data, m.lora_up.weight.data, m.alpha
        scale = alpha / down.shape[0]
        if up.shape[2:] == (1, 1) and down.shape[2:] == (1, 1):
            updown = (up.squeeze(2).squeeze(2) @ down.squeeze(2).squeeze(2)).unsqueeze(2).unsqueeze(3)
        elif up.shape[2:] == (3, 3) or down.shape[2:] == (3, 3):
            updown = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
        else:
            updown = up @ down
        updown = updown * scale
        norm = updown.norm().clamp(min=max_norm / 2)
        desired = torch.clamp(norm, max=max_norm)
        ratio = desired / norm
        if ratio != 1:
            keys_scaled += 1
            up *= ratio**0.5
            down *= ratio**0.5
        norms.append((updown.norm() * ratio).item())
    return keys_scaled, sum(norms) / len(norms), max(norms)


def test_same_result_as_kohyas_loop():
    torch.manual_seed(0)
    layers = [nn.Linear(16, 12), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 6, 3, padding=1), nn.Linear(4, 4), nn.Linear(9, 3)]
    ours = [
        lora(layer, rank=r, alpha=a) for layer, r, a in zip(layers, (4, 2, 3, 2, 1), (1, 2, 3, 0.5, 1), strict=True)
    ]
    for i, m in enumerate(ours):
        nn.init.normal_(m.lora_up.weight, std=0.2 * (i + 1))
    theirs = [lora(layer, rank=m.rank, alpha=float(m.alpha)) for layer, m in zip(layers, ours, strict=True)]
    for a, b in zip(ours, theirs, strict=True):
        b.load_state_dict(a.state_dict())
    expected = _kohya_reference(theirs, 1.0)
    got = apply_max_norm(ours, 1.0)
    assert got[0] == expected[0] and 0 < got[0] < len(ours)
    assert got[1:] == pytest.approx(expected[1:], rel=1e-5)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.lora_up.weight, b.lora_up.weight)
        torch.testing.assert_close(a.lora_down.weight, b.lora_down.weight)


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        apply_max_norm([], 0.0)


LYCORIS_CAPPED = {  # type, rank, alpha, options: LyCORIS's own max-norm (lycoris-lora 4.1 apply_max_norm)
    "loha": (NetworkType.loha, 4, 2.0, {}),
    "lokr": (NetworkType.lokr, 2, 2.0, {"factor": 4}),
    "lokr_full": (NetworkType.lokr, 4, 2.0, {}),
    "lycoris_locon": (NetworkType.lycoris_locon, 4, 2.0, {}),
    "lora_fa": (NetworkType.lora_fa, 4, 2.0, {}),
    "dylora": (NetworkType.dylora, 4, 2.0, {"unit": 2}),
}


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("case", LYCORIS_CAPPED)
def test_max_norm_caps_delta_w_for_every_type_as_for_lora(case, kind):
    """‖ΔW‖ of a module over the cap lands on it, one under it is untouched, the statistics are kohya's; the file
    holds the capped values (LyCORIS's scalar is folded in), so a reloaded module has the same ΔW."""
    network, rank, alpha, options = LYCORIS_CAPPED[case]
    torch.manual_seed(0)
    big = lora(SHAPES[kind](), rank, alpha, network, options)
    small = lora(SHAPES[kind](), rank, alpha, network, options)
    randomise_(big, seed=1, std=1.0)
    randomise_(small, seed=2, std=0.01)
    before, small_before = big.delta_weight().norm().item(), small.delta_weight().clone()
    cap = 0.5 * before
    assert small_before.norm().item() < cap
    keys_scaled, average, maximum = apply_max_norm([big, small], cap)
    assert keys_scaled == 1
    assert big.delta_weight().norm().item() == pytest.approx(cap, rel=1e-4)
    assert maximum == pytest.approx(cap, rel=1e-4)
    assert average == pytest.approx((cap + small_before.norm().item()) / 2, rel=1e-4)
    torch.testing.assert_close(small.delta_weight(), small_before)
    reloaded = lora(big.base, rank, alpha, network, options)
    reloaded.load_file_tensors({k: v.detach().clone() for k, v in big.file_tensors().items()})
    torch.testing.assert_close(reloaded.delta_weight(), big.delta_weight(), atol=1e-6, rtol=1e-5)
    if network == NetworkType.lora_fa:  # only lora_up moves: the frozen lora_down keeps its start
        assert torch.equal(reloaded.lora_down.weight, big.lora_down.weight)
