"""Learning-rate schedules (docs/kohya.md §10.2); optimizer/scheduler config checks, factory (docs/design.md §6.1)."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
from diffusers.optimization import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from sdlora.optim import schedulers
from sdlora.optim.factory import check_optimizer, check_scheduler, instantiate_partial, locate_target
from sdlora.optim.schedulers import (
    constant_factor,
    constant_with_warmup_factor,
    cosine_factor,
    linear_factor,
    warmup_factor,
)
from tests.helpers.schedules import scheduled_lrs, sgd

CONF = Path(__file__).resolve().parents[2] / "conf"

# --- factor functions -------------------------------------------------------------------------------------------------


def test_warmup_factor():
    assert [warmup_factor(s, 4) for s in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert warmup_factor(0, 0) == 1.0 and warmup_factor(7, 0) == 1.0  # no warm-up


def test_constant_factor():
    assert {constant_factor(s) for s in (0, 1, 10, 10**6)} == {1.0}


def test_constant_with_warmup_factor():
    assert [constant_with_warmup_factor(s, 5) for s in (0, 1, 4, 5, 100)] == [0.0, 0.2, 0.8, 1.0, 1.0]
    assert constant_with_warmup_factor(0, 0) == 1.0


def test_linear_factor_formula():
    total, warmup = 10, 2
    expected = [0.0, 0.5] + [(total - s) / (total - warmup) for s in range(2, 11)]
    got = [linear_factor(s, total, warmup) for s in range(11)]
    assert got == pytest.approx(expected)
    assert got[2] == 1.0  # peak right after warm-up
    assert got[6] == pytest.approx(0.5)  # halfway through the decay
    assert got[10] == 0.0  # zero at the last step
    assert linear_factor(15, total, warmup) == 0.0  # clamped beyond the horizon


def test_linear_factor_without_warmup():
    assert [linear_factor(s, 4, 0) for s in range(5)] == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_cosine_factor_formula():
    total, warmup = 12, 2
    for s in range(13):
        decay = 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup)))
        expected = s / warmup if s < warmup else decay
        assert cosine_factor(s, total, warmup) == pytest.approx(expected)
    assert cosine_factor(2, total, warmup) == 1.0
    assert cosine_factor(7, total, warmup) == pytest.approx(0.5)  # halfway: cos(π/2) = 0
    assert cosine_factor(12, total, warmup) == pytest.approx(0.0, abs=1e-12)
    assert cosine_factor(30, total, warmup) >= 0.0  # never negative past the horizon


def test_cosine_factor_without_warmup_quarter_points():
    got = [cosine_factor(s, 4, 0) for s in range(5)]
    r = math.sqrt(2) / 2
    assert got == pytest.approx([1.0, 0.5 + r / 2, 0.5, 0.5 - r / 2, 0.0], abs=1e-12)


# --- LambdaLR factories -----------------------------------------------------------------------------------------------


def test_constant_scheduler_keeps_lr():
    sched = schedulers.constant(sgd(3e-4), total_steps=5)
    assert isinstance(sched, LambdaLR)
    assert scheduled_lrs(sched, 5) == pytest.approx([3e-4] * 5)


def test_constant_with_warmup_scheduler_steps_lr():
    sched = schedulers.constant_with_warmup(sgd(1e-3), total_steps=8, warmup_steps=4)
    assert scheduled_lrs(sched, 6) == pytest.approx([0.0, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_linear_scheduler_reaches_zero_at_total_steps():
    opt = sgd(1.0)
    sched = schedulers.linear(opt, total_steps=6, warmup_steps=2)
    assert scheduled_lrs(sched, 7) == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0])
    assert opt.param_groups[0]["lr"] == 0.0


def test_cosine_scheduler_scales_every_param_group():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD([{"params": [params[0]], "lr": 1e-4}, {"params": [params[1]], "lr": 5e-5}], lr=1.0)
    sched = schedulers.cosine(opt, total_steps=10, warmup_steps=0)
    for _ in range(5):
        opt.step()
        sched.step()
    # after 5 of 10 steps: half the cosine, factor ½ for both groups (unet_lr / text_encoder_lr keep their ratio)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-5, 2.5e-5])


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda o: schedulers.constant(o, total_steps=20), lambda o: get_constant_schedule(o)),
        (
            lambda o: schedulers.constant_with_warmup(o, total_steps=20, warmup_steps=5),
            lambda o: get_constant_schedule_with_warmup(o, num_warmup_steps=5),
        ),
        (
            lambda o: schedulers.linear(o, total_steps=20, warmup_steps=5),
            lambda o: get_linear_schedule_with_warmup(o, num_warmup_steps=5, num_training_steps=20),
        ),
        (
            lambda o: schedulers.cosine(o, total_steps=20, warmup_steps=3),
            lambda o: get_cosine_schedule_with_warmup(o, num_warmup_steps=3, num_training_steps=20),
        ),
    ],
    ids=["constant", "constant_with_warmup", "linear", "cosine"],
)
def test_schedules_match_diffusers(ours, theirs):
    """kohya builds these schedules with diffusers' functions; the lr sequences must be the same."""
    assert scheduled_lrs(ours(sgd(2e-4)), 22) == pytest.approx(scheduled_lrs(theirs(sgd(2e-4)), 22), rel=1e-12, abs=0)


@pytest.mark.parametrize("factory", [schedulers.constant_with_warmup, schedulers.linear, schedulers.cosine])
def test_negative_warmup_is_rejected(factory):
    with pytest.raises(ValueError, match="warmup_steps"):
        factory(sgd(), total_steps=10, warmup_steps=-1)


def test_scheduler_state_round_trip():
    sched = schedulers.cosine(sgd(1.0), total_steps=10, warmup_steps=2)
    scheduled_lrs(sched, 4)
    resumed = schedulers.cosine(sgd(1.0), total_steps=10, warmup_steps=2)
    resumed.load_state_dict(sched.state_dict())
    assert resumed.last_epoch == 4
    assert scheduled_lrs(resumed, 6) == pytest.approx(scheduled_lrs(sched, 6))


# --- config checks ----------------------------------------------------------------------------------------------------


def test_shipped_adamw_and_scheduler_configs_are_valid():
    assert check_optimizer(OmegaConf.load(CONF / "optimizer" / "adamw.yaml")) == []
    scheduler_files = sorted((CONF / "scheduler").glob("*.yaml"))
    assert scheduler_files
    for path in scheduler_files:
        if path.stem == "custom":  # its _target_ is for the user to set
            assert "no _target_" in check_scheduler(OmegaConf.load(path))[0]
            continue
        assert check_scheduler(OmegaConf.load(path)) == [], path.name


def test_check_optimizer_valid_node():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "betas": [0.9, 0.99]})
    assert check_optimizer(node) == []
    fn, problems = locate_target(node, "optimizer")
    assert fn is torch.optim.AdamW and problems == []


def test_check_optimizer_unknown_key_suggests_the_close_name():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decy": 0.1})
    problems = check_optimizer(node)
    assert len(problems) == 1
    assert "optimizer.weight_decy" in problems[0]
    assert "torch.optim.AdamW" in problems[0]
    assert "did you mean optimizer.weight_decay?" in problems[0]


def test_check_optimizer_unknown_key_without_close_match_lists_accepted():
    node = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 1e-2, "zzzz": 1})
    (problem,) = check_optimizer(node)
    assert "optimizer.zzzz" in problem and "accepted:" in problem
    assert "momentum" in problem and "nesterov" in problem
    assert "params" not in problem.split("accepted:")[1]  # supplied by the run, not a config key


def test_check_optimizer_reports_every_unknown_key():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-4, "weight_decy": 0.1, "betaz": [0.9, 0.9]})
    problems = check_optimizer(node)
    assert len(problems) == 2
    assert any("did you mean optimizer.betas?" in p for p in problems)


def test_check_optimizer_missing_target():
    problems = check_optimizer(OmegaConf.create({"lr": 1e-4}))
    assert len(problems) == 1 and "no _target_" in problems[0] and "optimizer" in problems[0]


def test_check_optimizer_non_importable_target():
    problems = check_optimizer(OmegaConf.create({"_target_": "torch.optim.NoSuchOptimizer", "lr": 1e-4}))
    assert len(problems) == 1
    assert "torch.optim.NoSuchOptimizer" in problems[0] and "cannot be imported" in problems[0]
    problems = check_optimizer(OmegaConf.create({"_target_": "no_such_package_xyz.Opt", "lr": 1e-4}))
    assert "cannot be imported" in problems[0]


@pytest.mark.parametrize("lr", [0, 0.0, -1e-4, "fast", None])
def test_check_optimizer_bad_lr(lr):
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": lr})
    problems = check_optimizer(node)
    assert len(problems) == 1
    assert "optimizer.lr must be a positive number" in problems[0] and repr(lr) in problems[0]


def test_check_optimizer_missing_lr():
    problems = check_optimizer(OmegaConf.create({"_target_": "torch.optim.AdamW"}))
    assert problems == ["optimizer.lr must be a positive number, got None"]


def test_check_optimizer_integer_lr_is_accepted():
    assert check_optimizer(OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 1})) == []


def test_check_optimizer_var_keyword_target_accepts_any_key():
    node = OmegaConf.create({"_target_": "builtins.dict", "lr": 1e-3, "anything": 1})
    assert check_optimizer(node) == []


def test_check_scheduler_unknown_key_suggestion():
    node = OmegaConf.create({"_target_": "sdlora.optim.schedulers.cosine", "_partial_": True, "warmup_step": 10})
    (problem,) = check_scheduler(node)
    assert "scheduler.warmup_step" in problem and "did you mean scheduler.warmup_steps?" in problem


def test_check_scheduler_runtime_arguments_are_not_config_keys():
    node = OmegaConf.create({"_target_": "sdlora.optim.schedulers.linear", "total_steps": 100})
    (problem,) = check_scheduler(node)
    assert "scheduler.total_steps" in problem  # the run supplies it


def test_check_scheduler_argument_of_a_scheduler_without_arguments():
    node = OmegaConf.create({"_target_": "sdlora.optim.schedulers.constant", "warmup_steps": 10})
    (problem,) = check_scheduler(node)
    assert "scheduler.warmup_steps" in problem and "sdlora.optim.schedulers.constant" in problem
    assert "accepted: )" not in problem  # no empty list of accepted arguments


def test_check_scheduler_missing_and_bad_target():
    assert "no _target_" in check_scheduler(OmegaConf.create({"warmup_steps": 1}))[0]
    assert "cannot be imported" in check_scheduler(OmegaConf.create({"_target_": "sdlora.optim.schedulers.nope"}))[0]


# --- instantiate_partial ----------------------------------------------------------------------------------------------


def test_instantiate_partial_builds_adamw_with_param_groups():
    node = OmegaConf.create(
        {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 0.05, "betas": [0.8, 0.95]}
    )
    make = instantiate_partial(node)
    assert isinstance(make, functools.partial)
    unet, te = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    opt = make([{"params": list(unet.parameters())}, {"params": list(te.parameters()), "lr": 5e-5}])
    assert type(opt) is torch.optim.AdamW
    assert [g["lr"] for g in opt.param_groups] == [1e-4, 5e-5]
    assert all(g["weight_decay"] == 0.05 for g in opt.param_groups)
    assert tuple(opt.param_groups[0]["betas"]) == (0.8, 0.95)
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]


def test_instantiate_partial_adds_partial_when_missing_and_keeps_node_intact():
    node = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 2e-4})
    make = instantiate_partial(node)
    assert isinstance(make, functools.partial)
    assert "_partial_" not in node  # the config node itself is not modified
    opt = make([torch.nn.Parameter(torch.zeros(3))])
    assert opt.param_groups[0]["lr"] == 2e-4


def test_instantiate_partial_scheduler_from_shipped_config():
    make_sched = instantiate_partial(OmegaConf.merge(OmegaConf.load(CONF / "scheduler" / "cosine.yaml"), {}))
    sched = make_sched(optimizer=sgd(1.0), total_steps=4)
    assert isinstance(sched, LambdaLR)
    assert scheduled_lrs(sched, 5) == pytest.approx([cosine_factor(s, 4, 0) for s in range(5)])
