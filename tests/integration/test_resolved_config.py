"""The resolved config: one typed, read-only object per run, written to the run folder, read by resume and the
metadata. Resume through ``python train.py`` works for every optimizer whose rules fill in options (Adafactor's
schedule, D-Adaptation/Prodigy); a run's own saved config reproduces it; unknown keys are errors, also with ``+``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from sdlora.config.frozen import FrozenDict
from sdlora.network.io import load_lora
from tests.helpers.cli import assert_clean_failure, run_cli, run_train_py
from tests.helpers.config import resolved, tiny_overrides


def _tensors_equal(a: Path, b: Path) -> bool:
    ta, _ = load_lora(a)
    tb, _ = load_lora(b)
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


# --- the resolved config ----------------------------------------------------------------------------------------------


def test_the_resolved_config_is_read_only(small_dataset):
    config = resolved(*tiny_overrides(small_dataset, "optimizer=adafactor"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.network.rank = 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data = None
    with pytest.raises(TypeError):
        config.scheduler["initial_lr"] = 1.0  # an open node
    with pytest.raises(AttributeError):
        config.data.subsets.append(None)  # lists become tuples
    assert isinstance(config.optimizer, FrozenDict)


def test_rules_and_family_defaults_are_applied_once(small_dataset):
    config = resolved(*tiny_overrides(small_dataset, "optimizer=adafactor", "network.alpha_ratio=0.5"))
    assert config.scheduler["_target_"] == "sdlora.optim.schedulers.adafactor"  # kohya's Adafactor rule
    assert config.scheduler["initial_lr"] == config.optimizer["lr"]
    assert config.network.alpha == 0.5 * config.network.rank
    assert (config.data.min_bucket_reso, config.data.max_bucket_reso) == (64, 1024)  # the tiny family's range
    assert config.model.v_parameterization is False and config.trainer.accelerator == "cpu"
    assert config.validation.batch_size == config.data.batch_size
    sdxl = resolved(*tiny_overrides(small_dataset, "precision=fp16_mixed"), "model=tiny_sdxl")
    assert sdxl.precision.name == "bf16_mixed" and sdxl.precision.no_half_vae is True  # CPU fallback, SDXL's VAE


@pytest.mark.skipif(torch.cuda.is_available(), reason="asks for a GPU on a machine without one")
def test_an_accelerator_that_is_not_here_is_an_error_and_a_plan_says_so(small_dataset, caplog):
    """Before, trainer.accelerator=gpu on a machine without one trained on the CPU without a word."""
    from sdlora.errors import SdloraError

    with pytest.raises(SdloraError, match="trainer.accelerator=gpu, but no CUDA GPU is available here: use"):
        resolved(*tiny_overrides(small_dataset, "trainer.accelerator=gpu"))
    with caplog.at_level("WARNING", logger="sdlora"):
        plan = resolved(*tiny_overrides(small_dataset, "trainer.accelerator=cuda", "dry_run=true"))
    assert plan.trainer.accelerator == "cpu" and "the plan is made as for a CPU run" in caplog.text
    with pytest.raises(SdloraError, match="trainer.accelerator='tpu' is none of auto, cpu, gpu, cuda, mps"):
        resolved(*tiny_overrides(small_dataset, "trainer.accelerator=tpu"))


@pytest.mark.parametrize(
    ("override", "key"),
    [("+save.comment=x", "save.comment"), ("+network.rnak=4", "network.rnak")],
)
def test_an_unknown_key_is_an_error_also_with_plus(small_dataset, tmp_path, override, key):
    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset), override)
    assert_clean_failure(result, run_dir, f"unknown option {key}")
    if key == "network.rnak":
        assert "did you mean network.rank" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [("loss_type=huber", "unknown option loss_type: no such key or config group — kohya's loss_type is loss.type"),
     ("network.dim=8", "unknown option network.dim: network has no such key — kohya's network_dim is network.rank"),
     ("trainer.max_step=3", "unknown option trainer.max_step: trainer has no such key — did you mean "
      "trainer.max_steps")],
)  # fmt: skip
def test_a_kohya_name_or_a_near_miss_says_what_was_meant_before_hydra_starts(small_dataset, tmp_path, override,
                                                                          message):  # fmt: skip
    """Hydra would answer "To append to your config use +…", and that + is refused too."""
    result, run_dir = run_cli(tmp_path, *tiny_overrides(small_dataset), override)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "append" not in result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert not run_dir.exists()  # stopped before Hydra made the run folder


# --- through the command line -----------------------------------------------------------------------------------------

OPTIMIZERS = {
    "adafactor": ("optimizer=adafactor",),
    "adafactor_schedule": ("optimizer=adafactor", "scheduler=adafactor"),
    "prodigy": ("optimizer=prodigy",),
    "dadapt_adam": ("optimizer=dadapt_adam",),
}


@pytest.mark.parametrize("case", OPTIMIZERS)
def test_every_optimizer_resumes_exactly_through_the_command_line(small_dataset, tmp_path, case):
    args = tiny_overrides(small_dataset, *OPTIMIZERS[case], "save.state=true", "save.every_n_steps=2")
    run_train_py(args, tmp_path / "full")
    state = tmp_path / "full" / "last-step00000002-state"
    run_train_py([*args, f"resume={state}"], tmp_path / "resumed")
    assert _tensors_equal(tmp_path / "full" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")
    saved = OmegaConf.load(tmp_path / "full" / "resolved_config.yaml")
    assert saved.scheduler == OmegaConf.load(tmp_path / "resumed" / "resolved_config.yaml").scheduler
    # one session per run, kept by the resumed run (kohya writes ss_session_id and ss_training_started_at once)
    _, step2 = load_lora(tmp_path / "full" / "last-step00000002.safetensors")
    _, last = load_lora(tmp_path / "full" / "last.safetensors")
    _, resumed = load_lora(tmp_path / "resumed" / "last.safetensors")
    for key in ("ss_session_id", "ss_training_started_at"):
        assert step2[key] == last[key] == resumed[key]


def test_a_run_s_saved_config_reproduces_the_run(small_dataset, tmp_path):
    run_train_py(tiny_overrides(small_dataset, "trainer.max_steps=2", "network=locon", "network.conv_rank=2"),
                 tmp_path / "first")  # fmt: skip
    hydra_dir = tmp_path / "first" / ".hydra"
    run_train_py(["--config-path", str(hydra_dir), "--config-name", "config"], tmp_path / "again")
    assert _tensors_equal(tmp_path / "first" / "last.safetensors", tmp_path / "again" / "last.safetensors")


def test_a_logger_save_dir_is_honoured(small_dataset, tmp_path):
    logs = tmp_path / "logs"
    run_train_py(tiny_overrides(small_dataset, "trainer.max_steps=1", f"+logger.save_dir={logs}"), tmp_path / "run")
    assert list(logs.rglob("events.out.tfevents.*"))
    assert not list((tmp_path / "run").rglob("events.out.tfevents.*"))
    record = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert record["status"] == "completed"
