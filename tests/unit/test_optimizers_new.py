"""The optimizers added beside kohya_ss v21.8.8's (schedule-free, CAME, ADOPT, Muon, Kahan-summed AdamW): the
schedule-free evaluation point, Muon's split of the parameter groups, their config rules and ss_optimizer names."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.network.metadata import optimizer_description
from sdlora.optim.factory import instantiate_partial
from sdlora.optim.muon import is_matrix, split_groups
from sdlora.optim.rules import optimizer_notes
from sdlora.optim.schedule_free import evaluation_point, in_training_mode, to_training, train_point
from tests.helpers.config import EXAMPLE_DATA, compose_config, resolved

BASE = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]
CLASSES = {
    "adamw_schedulefree": "schedulefree.adamw_schedulefree.AdamWScheduleFree",
    "radam_schedulefree": "schedulefree.radam_schedulefree.RAdamScheduleFree",
    "sgd_schedulefree": "schedulefree.sgd_schedulefree.SGDScheduleFree",
    "prodigy_schedulefree": "prodigyplus.prodigy_plus_schedulefree.ProdigyPlusScheduleFree",
    "came": "pytorch_optimizer.optimizer.came.CAME",
    "adopt": "pytorch_optimizer.optimizer.adopt.ADOPT",
    "muon": "pytorch_optimizer.optimizer.muon.muon.Muon",
    "adamw_kahan": "optimi.adamw.AdamW",
}


def _problems(*overrides: str) -> list[str]:
    with pytest.raises(SdloraError) as info:
        check_config(compose_config(*BASE, *overrides))
    return info.value.problems


def _trained_schedule_free(steps: int = 3) -> tuple[torch.optim.Optimizer, torch.nn.Parameter]:
    import schedulefree

    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(4, 6))
    optimizer = schedulefree.AdamWScheduleFree([param], lr=0.1)
    optimizer.train()
    for _ in range(steps):
        param.grad = torch.randn_like(param)
        optimizer.step()
    return optimizer, param


def test_evaluation_point_is_x_and_gives_y_back_bit_for_bit():
    optimizer, param = _trained_schedule_free()
    y = param.detach().clone()
    z = optimizer.state[param]["z"]
    beta1 = optimizer.param_groups[0]["betas"][0]
    with evaluation_point([optimizer]):
        x = param.detach().clone()
        assert not in_training_mode(optimizer) and torch.equal(train_point(optimizer)[0], y)
        with evaluation_point([optimizer]):  # nested: acts once
            assert torch.equal(param, x)
        assert torch.equal(param, x)
    assert torch.allclose(beta1 * x + (1 - beta1) * z, y, atol=1e-6)  # y = β₁·x + (1 − β₁)·z
    assert not torch.equal(x, y)
    assert torch.equal(param, y) and in_training_mode(optimizer) and train_point(optimizer) is None


def test_evaluation_point_leaves_other_optimizers_alone():
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    with evaluation_point([optimizer]):
        assert train_point(optimizer) is None
    assert torch.equal(param, torch.ones(3))


def test_resuming_from_the_evaluation_point_restores_training_exactly():
    """A state saved at x (the optimizer state in evaluation mode) plus y continues like the run that saved it."""
    import schedulefree

    optimizer, param = _trained_schedule_free()
    with evaluation_point([optimizer]):
        saved = {"optimizer": copy.deepcopy(optimizer.state_dict()), "lora": param.detach().clone(),
                 "y": train_point(optimizer)}  # fmt: skip
    grad = torch.randn_like(param)
    param.grad = grad.clone()
    optimizer.step()

    fresh = torch.nn.Parameter(saved["lora"].clone())
    other = schedulefree.AdamWScheduleFree([fresh], lr=0.1)
    other.load_state_dict(saved["optimizer"])
    to_training(other, saved["y"])
    fresh.grad = grad.clone()
    other.step()
    assert torch.equal(fresh, param)


def test_muon_matrices_and_the_rest():
    lora_down, lora_up = torch.zeros(8, 32), torch.zeros(32, 8, 1, 1)
    magnitude, rank1, scale = torch.zeros(32, 1), torch.zeros(1, 32), torch.zeros(32)
    assert is_matrix(lora_down) and is_matrix(lora_up)
    assert not any(is_matrix(t) for t in (magnitude, rank1, scale))
    groups = [{"name": "unet", "lr": 1e-4, "params": [lora_down, magnitude]}, {"name": "textencoder", "lr": 5e-5,
              "params": [lora_up]}]  # fmt: skip
    split = split_groups(groups, None)
    assert [(g["name"], g["use_muon"], g["lr"], len(g["params"])) for g in split] == [
        ("unet", True, 1e-4, 1), ("unet_adamw", False, 1e-4, 1), ("textencoder", True, 5e-5, 1),
    ]  # fmt: skip
    assert split_groups(groups, 3e-4)[1]["lr"] == 3e-4


@pytest.mark.parametrize("option", sorted(CLASSES))
def test_new_optimizers_build_step_and_name_themselves(option):
    """Each builds from its YAML, makes a finite step on CPU and is named in ss_optimizer as kohya names classes."""
    node = resolved(*BASE, f"optimizer={option}").optimizer
    down = torch.nn.Parameter(torch.randn(4, 16))
    up = torch.nn.Parameter(torch.zeros(16, 4))
    magnitude = torch.nn.Parameter(torch.ones(16, 1))
    optimizer = instantiate_partial(node)([{"name": "unet", "lr": node["lr"], "params": [down, up, magnitude]}])
    if hasattr(optimizer, "train"):
        optimizer.train()
    before = [p.detach().clone() for p in (down, up, magnitude)]
    steps = 6 if option == "radam_schedulefree" else 2  # no update in RAdam's first steps
    for _ in range(steps):
        loss = (torch.randn(3, 16) @ down.T @ up.T * magnitude.T).pow(2).mean() - up.sum()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(p).all() for p in (down, up, magnitude))
    assert not torch.equal(before[1], up)
    description = optimizer_description(node)
    assert description.startswith(CLASSES[option] + "("), description


def test_schedule_free_needs_the_constant_schedule():
    problems = _problems("optimizer=adamw_schedulefree", "scheduler=cosine")
    assert any("schedule-free" in p and "scheduler=cosine" in p and "scheduler=constant" in p for p in problems)
    check_config(compose_config(*BASE, "optimizer=prodigy_schedulefree"))  # constant: fine


def test_kahan_summation_and_stochastic_rounding_exclude_each_other():
    problems = _problems("optimizer=adamw_kahan", "precision=full_bf16", "precision.stochastic_rounding=true")
    assert any("kahan_sum" in p and "stochastic_rounding" in p for p in problems)


def test_kahan_summation_notes_float32_parameters(caplog):
    assert any("plain AdamW" in n for n in optimizer_notes(resolved(*BASE, "optimizer=adamw_kahan"), "cpu"))
    with caplog.at_level(logging.WARNING, logger="sdlora"):
        notes = optimizer_notes(resolved(*BASE, "optimizer=adamw_kahan", "precision=full_bf16"), "cpu")
    assert not any("plain AdamW" in n for n in notes)


def test_prodigy_schedulefree_lr_is_a_multiplier():
    notes = optimizer_notes(resolved(*BASE, "optimizer=prodigy_schedulefree", "optimizer.lr=1e-4"), "cpu")
    assert any("multiplier" in n for n in notes)
