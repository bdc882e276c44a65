"""The schedules added for the whole kohya list: hand-computed values, the formulas at sample steps, and the
diffusers/transformers implementations kohya calls (warm-up fractions, restarts, power, min lr, WSD, Adafactor)."""

from __future__ import annotations

import math

import pytest
import torch
from diffusers.optimization import (
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
)
from omegaconf import OmegaConf
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup, get_wsd_schedule

from sdlora.optim import schedulers
from sdlora.optim.factory import build_lr_scheduler, instantiate_partial
from sdlora.optim.schedulers import (
    cosine_with_min_lr_factor,
    cosine_with_restarts_factor,
    polynomial_factor,
    resolve_steps,
    warmup_stable_decay_factor,
)
from tests.helpers.schedules import scheduled_lrs, sgd

# --- warm-up as an int or a fraction ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "total", "expected"),
    [(0, 100, 0), (10, 100, 10), (0.1, 100, 10), (0.25, 10, 2), (0.999, 10, 9), (5.0, 100, 5), (0.0, 50, 0)],
)
def test_resolve_steps_int_or_fraction(value, total, expected):
    assert resolve_steps(value, total) == expected  # fractions round down, as kohya's int(f · total)


@pytest.mark.parametrize("value", [-1, -0.5, 1.5, "10", None, True])
def test_resolve_steps_rejects(value):
    with pytest.raises(ValueError, match="scheduler.warmup_steps"):
        resolve_steps(value, 100)


def test_warmup_fraction_in_a_schedule():
    sched = schedulers.constant_with_warmup(sgd(1.0), total_steps=40, warmup_steps=0.1)  # 4 steps
    assert scheduled_lrs(sched, 6) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0, 1.0])
    cos = schedulers.cosine(sgd(1.0), total_steps=20, warmup_steps=0.25)  # 5 steps of warm-up
    lrs = scheduled_lrs(cos, 21)
    assert lrs[:6] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[20] == pytest.approx(0.0, abs=1e-12)


# --- cosine with restarts ---------------------------------------------------------------------------------------------


def test_cosine_with_restarts_hand_values():
    # 2 cycles over 8 steps after a 2-step warm-up: each cycle of 4 steps goes 1, ½(1+cos π/4), ½, ½(1−cos π/4)
    r = math.sqrt(2) / 2
    got = [cosine_with_restarts_factor(s, 10, 2, 2) for s in range(11)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.5 + r / 2, 0.5, 0.5 - r / 2, 1.0, 0.5 + r / 2, 0.5, 0.5 - r / 2, 0.0])


def test_cosine_with_restarts_one_cycle_is_cosine():
    assert [cosine_with_restarts_factor(s, 12, 0, 1) for s in range(12)] == pytest.approx(
        [schedulers.cosine_factor(s, 12, 0) for s in range(12)]
    )


@pytest.mark.parametrize(("cycles", "warmup"), [(1, 0), (3, 4), (4, 0.1)])
def test_cosine_with_restarts_matches_diffusers(cycles, warmup):
    ours = schedulers.cosine_with_restarts(sgd(2e-4), total_steps=30, warmup_steps=warmup, num_cycles=cycles)
    theirs = get_cosine_with_hard_restarts_schedule_with_warmup(
        sgd(2e-4), num_warmup_steps=resolve_steps(warmup, 30), num_training_steps=30, num_cycles=cycles
    )
    assert scheduled_lrs(ours, 33) == pytest.approx(scheduled_lrs(theirs, 33), rel=1e-12, abs=1e-18)


def test_cosine_with_restarts_rejects_zero_cycles():
    with pytest.raises(ValueError, match="num_cycles"):
        schedulers.cosine_with_restarts(sgd(), total_steps=10, num_cycles=0)


# --- polynomial -------------------------------------------------------------------------------------------------------


def test_polynomial_factor_formula():
    total, warmup, r = 10, 2, 1e-3
    for power in (0.5, 1.0, 2.0):
        for s in range(12):
            if s < warmup:
                expected = s / warmup
            elif s > total:
                expected = r
            else:
                expected = (1 - r) * (1 - (s - warmup) / (total - warmup)) ** power + r
            assert polynomial_factor(s, total, warmup, power, r) == pytest.approx(expected)
    assert polynomial_factor(6, 10, 2, 2.0, 0.0) == pytest.approx(0.25)  # halfway, squared
    assert polynomial_factor(10, 10, 2, 1.0, r) == pytest.approx(r)  # lr_end at the last step


@pytest.mark.parametrize(("power", "warmup"), [(1.0, 0), (2.0, 3), (0.5, 0.2)])
def test_polynomial_matches_diffusers(power, warmup):
    ours = schedulers.polynomial(sgd(1e-3), total_steps=20, warmup_steps=warmup, power=power)
    theirs = get_polynomial_decay_schedule_with_warmup(
        sgd(1e-3), num_warmup_steps=resolve_steps(warmup, 20), num_training_steps=20, power=power
    )
    assert scheduled_lrs(ours, 24) == pytest.approx(scheduled_lrs(theirs, 24), rel=1e-9, abs=1e-18)


def test_polynomial_lr_end_must_be_below_lr():
    with pytest.raises(ValueError, match="lr_end"):
        schedulers.polynomial(sgd(1e-7), total_steps=10)


# --- cosine with min lr -----------------------------------------------------------------------------------------------


def test_cosine_with_min_lr_hand_values():
    # kohya passes num_cycles / 2: one half cosine from 1 down to the ratio
    got = [cosine_with_min_lr_factor(s, 10, 2, 0.5, 0.2) for s in (0, 1, 2, 6, 10)]
    assert got == pytest.approx([0.0, 0.5, 1.0, 0.2 + 0.8 * 0.5, 0.2])


@pytest.mark.parametrize(("cycles", "ratio", "warmup"), [(1, 0.1, 0), (1, 0.0, 5), (2, 0.3, 0.1)])
def test_cosine_with_min_lr_matches_transformers(cycles, ratio, warmup):
    ours = schedulers.cosine_with_min_lr(
        sgd(1e-4), total_steps=30, warmup_steps=warmup, num_cycles=cycles, min_lr_ratio=ratio
    )
    theirs = get_cosine_with_min_lr_schedule_with_warmup(
        sgd(1e-4),
        num_warmup_steps=resolve_steps(warmup, 30),
        num_training_steps=30,
        num_cycles=cycles / 2,  # what kohya passes
        min_lr_rate=ratio,
    )
    assert scheduled_lrs(ours, 30) == pytest.approx(scheduled_lrs(theirs, 30), rel=1e-12, abs=1e-18)


def test_cosine_with_min_lr_never_below_the_ratio():
    lrs = scheduled_lrs(schedulers.cosine_with_min_lr(sgd(1.0), total_steps=50, min_lr_ratio=0.25), 51)
    assert min(lrs) == pytest.approx(0.25) and lrs[-1] == pytest.approx(0.25)


# --- warmup_stable_decay ----------------------------------------------------------------------------------------------


def test_warmup_stable_decay_phases():
    f = [warmup_stable_decay_factor(s, 2, 4, 4, 0.1, 0.5) for s in range(12)]
    assert f[0] == pytest.approx(0.1) and f[1] == pytest.approx(0.1 + 0.9 * 0.5)  # warm-up from the ratio
    assert f[2:6] == [1.0] * 4  # stable
    assert f[6] == pytest.approx(1.0) and f[8] == pytest.approx(0.1 + 0.9 * 0.5)  # cosine decay, halfway
    assert f[10] == f[11] == pytest.approx(0.1)  # min lr after the decay


@pytest.mark.parametrize("shape", ["linear", "1-sqrt"])
def test_warmup_stable_decay_other_shapes(shape):
    q = 0.25
    fall = 1 - q if shape == "linear" else 1 - math.sqrt(q)
    assert warmup_stable_decay_factor(5, 0, 4, 4, 0.0, 0.5, decay_type=shape) == pytest.approx(fall)
    rise = q if shape == "linear" else 1 - math.sqrt(1 - q)
    assert warmup_stable_decay_factor(1, 4, 0, 4, 0.0, 0.5, warmup_type=shape) == pytest.approx(rise)


@pytest.mark.parametrize(
    ("warmup", "decay", "ratio", "warmup_type", "decay_type"),
    [(0, 0.1, 0.0, "linear", "cosine"), (5, 10, 0.1, "cosine", "linear"), (0.1, 0.3, 0.05, "1-sqrt", "1-sqrt")],
)
def test_warmup_stable_decay_matches_transformers(warmup, decay, ratio, warmup_type, decay_type):
    total = 40
    ours = schedulers.warmup_stable_decay(
        sgd(1e-4), total, warmup, decay, min_lr_ratio=ratio, warmup_type=warmup_type, decay_type=decay_type
    )
    theirs = get_wsd_schedule(
        sgd(1e-4),
        num_warmup_steps=resolve_steps(warmup, total),
        num_decay_steps=resolve_steps(decay, total),
        num_training_steps=total,
        min_lr_ratio=ratio,
        num_cycles=0.5,  # kohya: lr_scheduler_num_cycles (1) / 2
        warmup_type=warmup_type,
        decay_type=decay_type,
    )
    assert scheduled_lrs(ours, total + 2) == pytest.approx(scheduled_lrs(theirs, total + 2), rel=1e-12, abs=1e-18)


def test_warmup_stable_decay_rejects_bad_values():
    with pytest.raises(ValueError, match="exceed"):
        schedulers.warmup_stable_decay(sgd(), total_steps=10, warmup_steps=6, decay_steps=6)
    with pytest.raises(ValueError, match="decay_type"):
        schedulers.warmup_stable_decay(sgd(), total_steps=10, decay_type="step")
    with pytest.raises(ValueError, match="scheduler.decay_steps"):
        schedulers.warmup_stable_decay(sgd(), total_steps=10, decay_steps=2.5)


# --- adafactor and custom schedules -----------------------------------------------------------------------------------


def test_adafactor_schedule_reports_the_relative_step():
    from sdlora.optim.adafactor import build_adafactor

    param = torch.nn.Parameter(torch.ones(4, 4))
    optimizer = build_adafactor([{"params": [param], "lr": 5e-4, "name": "unet"}], lr=5e-4)
    sched = schedulers.adafactor(optimizer, total_steps=10, initial_lr=5e-4)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)  # before the first step: the initial lr
    for step in range(1, 4):
        param.grad = torch.full_like(param, 0.1)
        optimizer.step()
        sched.step()
        # relative step min(1e-2, 1/√t) times the parameter RMS (scale_parameter): the weights are ≈ 1
        rms = float(param.detach().pow(2).mean().sqrt())
        assert optimizer.param_groups[0]["lr"] == pytest.approx(min(1e-2, 1 / math.sqrt(step)) * rms, rel=0.02)


def test_adafactor_schedule_needs_adafactor_with_relative_step():
    with pytest.raises(ValueError, match="needs optimizer=adafactor"):
        schedulers.adafactor(sgd(), total_steps=10)
    from sdlora.optim.adafactor import build_adafactor

    fixed = build_adafactor([torch.nn.Parameter(torch.ones(2, 2))], lr=1e-3, relative_step=False)
    with pytest.raises(ValueError, match="relative_step=true"):
        schedulers.adafactor(fixed, total_steps=10)


def test_custom_scheduler_class_gets_no_total_steps():
    node = OmegaConf.create({"_target_": "torch.optim.lr_scheduler.StepLR", "step_size": 2, "gamma": 0.5})
    sched = build_lr_scheduler(instantiate_partial(node), sgd(1.0), total_steps=100)
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    assert scheduled_lrs(sched, 6) == pytest.approx([1.0, 1.0, 0.5, 0.5, 0.25, 0.25])


def test_sdlora_schedules_get_total_steps():
    node = OmegaConf.create({"_target_": "sdlora.optim.schedulers.linear", "warmup_steps": 0})
    sched = build_lr_scheduler(instantiate_partial(node), sgd(1.0), total_steps=4)
    assert scheduled_lrs(sched, 5) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_resumed_schedule_keeps_the_horizon():
    """A resumed run rebuilds the schedule with the whole run's total steps and loads its state: same curve."""
    sched = schedulers.warmup_stable_decay(sgd(1.0), total_steps=20, warmup_steps=0.1, decay_steps=0.5)
    first = scheduled_lrs(sched, 8)
    resumed = schedulers.warmup_stable_decay(sgd(1.0), total_steps=20, warmup_steps=0.1, decay_steps=0.5)
    resumed.load_state_dict(sched.state_dict())
    reference = schedulers.warmup_stable_decay(sgd(1.0), total_steps=20, warmup_steps=0.1, decay_steps=0.5)
    assert first + scheduled_lrs(resumed, 12) == pytest.approx(scheduled_lrs(reference, 20))
