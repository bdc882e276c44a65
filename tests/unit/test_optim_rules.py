"""kohya's optimizer rules (Adafactor's relative step, adaptive optimizers, bitsandbytes), the value checks that build
the optimizer and schedule before training, and how the optimizer and schedule are named in the metadata."""

from __future__ import annotations

import logging

import pytest
import torch

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.network.metadata import optimizer_description, scheduler_name
from sdlora.optim.adafactor import build_adafactor
from sdlora.optim.rules import check_optimizer_runs, first_group_lr, optimizer_notes
from tests.helpers.config import EXAMPLE_DATA, compose_config, resolved

BASE = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]


def _cfg(*overrides: str):
    return compose_config(*BASE, *overrides)


def _notes(*overrides: str) -> list[str]:
    """The warnings of kohya's optimizer rules for a resolved config on the CPU."""
    return optimizer_notes(resolved(*BASE, *overrides), "cpu")


def _problems(*overrides: str) -> list[str]:
    with pytest.raises(SdloraError) as info:
        check_config(_cfg(*overrides))
    return info.value.problems


# --- Adafactor --------------------------------------------------------------------------------------------------------


def test_adafactor_builder_drops_group_lrs_with_relative_step():
    a, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3, 3))
    groups = [{"name": "textencoder", "params": [a], "lr": 5e-5}, {"name": "unet", "params": [b], "lr": 1e-4}]
    optimizer = build_adafactor(groups, lr=1e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [None, None]  # Adafactor chooses the step size
    assert all(g["relative_step"] for g in optimizer.param_groups)
    assert [g["name"] for g in optimizer.param_groups] == ["textencoder", "unet"]
    assert groups[0]["lr"] == 5e-5  # the caller's groups are not modified


def test_adafactor_builder_fixed_lr_and_warmup_init():
    fixed = build_adafactor([{"params": [torch.nn.Parameter(torch.ones(2))], "lr": 3e-4}], lr=1e-4, relative_step=False)
    assert fixed.param_groups[0]["lr"] == 3e-4 and not fixed.param_groups[0]["relative_step"]
    forced = build_adafactor([torch.nn.Parameter(torch.ones(2))], lr=1e-4, relative_step=False, warmup_init=True)
    assert forced.param_groups[0]["relative_step"]  # kohya: warmup_init forces relative_step


def test_adafactor_relative_step_switches_the_scheduler(caplog):
    with caplog.at_level(logging.WARNING, logger="sdlora"):
        cfg = resolved(*BASE, "optimizer=adafactor", "scheduler=cosine", "network.unet_lr=1e-3")
    assert cfg.scheduler["_target_"] == "sdlora.optim.schedulers.adafactor"
    assert cfg.scheduler["initial_lr"] == cfg.optimizer["lr"] == 1e-4
    assert "replaced by scheduler=adafactor" in caplog.text
    assert "network.unet_lr ignored" in caplog.text
    assert scheduler_name(cfg.scheduler) == "adafactor:0.0001"  # kohya's ss_lr_scheduler


def test_adafactor_with_its_scheduler_needs_no_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="sdlora"):
        cfg = resolved(*BASE, "optimizer=adafactor", "scheduler=adafactor")
    assert "adafactor" not in caplog.text
    assert cfg.scheduler["initial_lr"] == 1e-4


def test_adafactor_fixed_lr_keeps_the_schedule_with_kohya_hints():
    cfg = resolved(*BASE, "optimizer=adafactor", "optimizer.relative_step=false", "scheduler=cosine")
    assert cfg.scheduler["_target_"] == "sdlora.optim.schedulers.cosine"
    notes = optimizer_notes(cfg, "cpu")
    assert any("gradient_clip_val" in n for n in notes) and any("constant_with_warmup" in n for n in notes)


def test_adafactor_scheduler_with_another_optimizer_is_a_config_error():
    (problem,) = _problems("scheduler=adafactor")
    assert "scheduler=adafactor needs optimizer=adafactor" in problem
    (problem,) = _problems("optimizer=adafactor", "optimizer.relative_step=false", "scheduler=adafactor")
    assert "optimizer.relative_step=true" in problem


# --- adaptive optimizers ----------------------------------------------------------------------------------------------


def test_adaptive_optimizer_warns_about_a_small_lr():
    notes = _notes("optimizer=prodigy", "optimizer.lr=1e-4")
    assert any("set optimizer.lr around 1.0" in n and "lr=0.0001" in n for n in notes)
    assert _notes("optimizer=dadapt_adam") == []  # lr 1.0


def test_prodigy_warns_about_16_bit_lora_parameters():
    notes = _notes("optimizer=prodigy", "precision=full_bf16")
    assert any("warms up badly" in n for n in notes)


def test_first_group_lr_is_the_text_encoder_s():
    assert first_group_lr(_cfg("network.text_encoder_lr=0.5")) == 0.5
    assert first_group_lr(_cfg("network.train_text_encoder=false", "network.unet_lr=0.7")) == 0.7


def test_adaptive_optimizer_needs_one_lr_for_all_groups():
    (problem,) = _problems("optimizer=dadapt_adam", "network.unet_lr=0.5")
    assert "network.unet_lr=0.5" in problem and "network.text_encoder_lr=1.0" in problem
    check_config(_cfg("optimizer=dadapt_adam", "network.text_encoder_lr=0"))  # 0 freezes a side: allowed
    check_config(_cfg("optimizer=prodigy", "network.train_text_encoder=false", "network.unet_lr=0.5"))


# --- bitsandbytes -----------------------------------------------------------------------------------------------------


def test_paged_optimizer_on_cpu_names_the_fallback():
    (note,) = _notes("optimizer=paged_lion8bit")
    assert "PagedLion8bit" in note and "non-paged Lion8bit" in note and "CUDA" in note
    assert _notes("optimizer=adamw8bit") == []
    check_optimizer_runs(resolved(*BASE, "optimizer=adamw8bit").optimizer, "cpu")  # one real step on cpu works


def test_bitsandbytes_optimizer_that_cannot_step_is_one_readable_error():
    # SGD8bit without momentum is rejected by bitsandbytes when it steps, not when it is built
    cfg = _cfg("optimizer=sgd_nesterov8bit", "optimizer.momentum=0", "optimizer.nesterov=false")
    with pytest.raises(SdloraError, match=r"cannot run on cpu with bitsandbytes .*optimizer=adamw"):
        check_optimizer_runs(cfg.optimizer, "cpu")


# --- value checks (building the optimizer and schedule) ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optimizer.betas=[1.5,0.999]"], "optimizer (_target_=torch.optim.AdamW): Invalid beta parameter"),
        (["scheduler=cosine", "scheduler.warmup_steps=2.5"], "a float must be < 1"),
        (["scheduler=linear", "scheduler.warmup_steps=-1"], "scheduler.warmup_steps must be ≥ 0"),
        (["scheduler=cosine_with_restarts", "scheduler.num_cycles=0"], "scheduler.num_cycles must be ≥ 1"),
        (["scheduler=polynomial", "scheduler.lr_end=0.01"], "scheduler.lr_end (0.01) must be smaller"),
        (["scheduler=warmup_stable_decay", "scheduler.decay_type=steps"], "scheduler.decay_type='steps'"),
        (["optimizer._target_=came_pytorch.CAME"], "needs the Python package 'came-pytorch'"),
        (["optimizer=custom"], "no _target_"),
    ],
)
def test_value_problems_are_reported_before_training(overrides, message):
    problems = _problems(*overrides)
    assert len(problems) == 1 and message in problems[0], problems


def test_horizon_problems_are_found_once_the_steps_are_known(tmp_path):
    from sdlora.run import train

    cfg = _cfg(
        "scheduler=warmup_stable_decay",
        "scheduler.warmup_steps=30",
        "scheduler.decay_steps=30",
        "trainer.max_steps=50",
        "data.caption_extension=.txt",
        "dry_run=true",
    )
    with pytest.raises(SdloraError) as info:
        train(cfg, tmp_path)
    assert "(30 + 30) exceed the 50 steps" in str(info.value)


# --- metadata names ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("adamw", "torch.optim.adamw.AdamW(betas=(0.9, 0.999),eps=1e-08,weight_decay=0.01)"),
        ("adamw8bit", "bitsandbytes.optim.adamw.AdamW8bit(betas=(0.9, 0.999),eps=1e-08,weight_decay=0.01)"),
        ("lion", "lion_pytorch.lion_pytorch.Lion(betas=(0.9, 0.99),weight_decay=0.0)"),
        ("sgd_nesterov", "torch.optim.sgd.SGD(momentum=0.9,nesterov=True,weight_decay=0.0)"),
    ],
)
def test_ss_optimizer_is_kohya_s_module_class_and_args(option, expected):
    assert optimizer_description(_cfg(f"optimizer={option}").optimizer) == expected


def test_ss_optimizer_names_the_class_a_builder_makes():
    assert optimizer_description(_cfg("optimizer=adafactor").optimizer).startswith(
        "transformers.optimization.Adafactor(relative_step=True,"
    )
    assert optimizer_description(_cfg("optimizer=dadapt_adan_ip").optimizer).startswith(
        "dadaptation.experimental.dadapt_adan_ip.DAdaptAdanIP("
    )


def test_ss_lr_scheduler_names():
    assert scheduler_name(_cfg("scheduler=cosine_with_restarts").scheduler) == "cosine_with_restarts"
    assert scheduler_name(_cfg("scheduler=warmup_stable_decay").scheduler) == "warmup_stable_decay"
