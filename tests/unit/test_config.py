"""The real Hydra config: every group option composes and instantiates; typos, bad types and bad values are rejected
with messages that name the key."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.models.family import ModelFamily
from sdlora.optim.factory import build_lr_scheduler, instantiate_partial
from tests.helpers.config import CONF_DIR, EXAMPLE_DATA, compose_config
from tests.helpers.processes import run_python

BASE = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def test_defaults_compose_to_typed_config():
    cfg = compose_config(*BASE)
    assert OmegaConf.get_type(cfg.network).__name__ == "NetworkConfig"
    assert cfg.network.rank == 8 and cfg.network.alpha == 1.0  # kohya_ss GUI defaults
    assert cfg.data.caption_extension == ".caption"  # kohya's default
    assert cfg.trainer.max_steps == 1600 and cfg.trainer.max_epochs is None
    assert cfg.model.gradient_checkpointing is False and cfg.model.attention == "sdpa"
    assert cfg.network.train_text_encoder is True


@pytest.mark.parametrize("option", options("model"))
def test_model_options_instantiate(option):
    cfg = compose_config(f"model={option}", f"data.train_dir={EXAMPLE_DATA}")
    from hydra.utils import instantiate

    family = instantiate(cfg.model)
    assert isinstance(family, ModelFamily) and family.name == option


# options that need more than their name to run
NEEDS = {
    ("optimizer", "custom"): ["optimizer._target_=torch.optim.RAdam"],
    ("scheduler", "custom"): ["scheduler._target_=torch.optim.lr_scheduler.StepLR", "+scheduler.step_size=3"],
    ("scheduler", "adafactor"): ["optimizer=adafactor"],
}


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizer_options_build_an_optimizer(option):
    cfg = compose_config(*BASE, f"optimizer={option}", *NEEDS.get(("optimizer", option), []))
    param = torch.nn.Parameter(torch.zeros(4, 4))
    optimizer = instantiate_partial(cfg.optimizer)([{"params": [param], "lr": cfg.optimizer.lr, "name": "unet"}])
    if hasattr(optimizer, "train"):
        optimizer.train()  # schedule-free: training mode (sdlora.callbacks.schedule_free)
    for _ in range(6):  # ADOPT's first step and RAdam's first few make no update
        param.grad = torch.ones_like(param)
        optimizer.step()
        if param.abs().sum() > 0:
            break
    assert param.abs().sum() > 0
    assert optimizer.param_groups[0]["name"] == "unet"


@pytest.mark.parametrize("option", options("scheduler"))
def test_scheduler_options_build_a_scheduler(option):
    cfg = compose_config(*BASE, f"scheduler={option}", *NEEDS.get(("scheduler", option), []))
    check_config(cfg)
    param = torch.nn.Parameter(torch.zeros(4, 4))
    optimizer = instantiate_partial(cfg.optimizer)([{"params": [param], "lr": cfg.optimizer.lr}])
    scheduler = build_lr_scheduler(instantiate_partial(cfg.scheduler), optimizer, total_steps=10)
    for _ in range(10):
        param.grad = torch.ones_like(param)
        optimizer.step()
        scheduler.step()
    assert 0.0 <= optimizer.param_groups[0]["lr"] <= cfg.optimizer.lr


@pytest.mark.parametrize("option", options("precision"))
def test_precision_options_are_valid_for_lightning(option):
    import lightning as L

    cfg = compose_config(*BASE, f"precision={option}")
    assert hasattr(torch, cfg.precision.weight_dtype)
    trainer = L.Trainer(accelerator="cpu", precision=cfg.precision.trainer_precision, logger=False)
    assert trainer.precision in (cfg.precision.trainer_precision, "bf16-mixed")  # fp16 AMP falls back on CPU


def test_logger_option_instantiates(tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config(*BASE)
    logger = instantiate(cfg.logger, save_dir=str(tmp_path))
    assert type(logger).__name__ == "TensorBoardLogger"
    assert compose_config(*BASE, "~logger").logger is None  # no logger at all


@pytest.mark.parametrize("extra", [["experiment=demo"], ["debug=default"], ["debug=fdr"], []])
def test_every_preset_validates(extra):
    check_config(compose_config(*BASE, *extra))


def test_demo_experiment_is_the_tiny_model_on_the_example_data():
    cfg = compose_config("experiment=demo")
    assert cfg.model._target_.endswith("TinySD15Family")
    assert cfg.data.train_dir == "examples/data"
    assert cfg.trainer.max_steps <= 100


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("network.rnak=4", "Key 'rnak' not in 'NetworkConfig'"),
        ("network.rank=abc", "could not be converted to Integer"),
        ("model.attention=flash", "expected one of [sdpa, xformers, none]"),
        ("data.batch_size=1.5", "could not be converted to Integer"),
        ("save.format=zip", "expected one of [safetensors, ckpt, pt]"),
        ("trainer.max_step=10", "Key 'max_step' not in 'TrainerConfig'"),
        ("optimizer.weight_decy=0.1", "Key 'weight_decy' is not in struct"),
    ],
)
def test_typos_and_bad_types_fail_at_compose_time(override, message):
    with pytest.raises(ConfigCompositionException) as info:
        compose_config(*BASE, override)
    assert message in str(info.value.__cause__ or info.value)


def test_cli_typo_is_one_readable_message_without_traceback(tmp_path):
    result = run_python(["train.py", "network.rnak=4", f"hydra.run.dir={tmp_path}"])
    assert result.returncode != 0
    assert result.stderr.startswith(
        "error: unknown option network.rnak: network has no such key — did you mean network.rank"
    )  # before Hydra (sdlora.config.spelling)
    assert "Traceback" not in result.stderr + result.stdout


def test_validation_reports_every_problem_together(tmp_path):
    cfg = compose_config(
        "model=sd15",
        f"data.train_dir={tmp_path / 'missing'}",
        "network.rank=0",
        "loss.min_timestep=800",
        "loss.max_timestep=100",
        "trainer.max_steps=-1",
        "+optimizer.weight_decy=0.1",
        "save.output_name=a/b",
        "data.resolution=70",
    )
    with pytest.raises(SdloraError) as info:
        check_config(cfg)
    text = str(info.value)
    for expected in (
        "model.pretrained is required for model=sd15",
        "data.train_dir=",
        "network.rank must be ≥ 1",
        "loss.min_timestep=800",
        "set trainer.max_steps or trainer.max_epochs",
        "did you mean optimizer.weight_decay",
        "save.output_name='a/b'",
        "data.resolution='70'",
    ):
        assert expected in text
    assert len(info.value.problems) == 8


def test_missing_train_dir_is_reported():
    cfg = compose_config("model=tiny")
    with pytest.raises(SdloraError, match="data.train_dir is required"):
        check_config(cfg)


def test_nonexistent_pretrained_path_is_reported(tmp_path):
    cfg = compose_config(*BASE, f"model.pretrained={tmp_path / 'nope.safetensors'}")
    with pytest.raises(SdloraError, match="nope.safetensors' does not exist"):
        check_config(cfg)
