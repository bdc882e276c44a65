"""The checks that run before a model is loaded without importing torch (docs/design.md §7): unchanged optimizer
presets, sdlora's schedules on a probe, the device where it is certainly a CPU."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sdlora.optim import presets as presets_module
from sdlora.optim.checks import schedule_problems
from sdlora.optim.presets import is_shipped_preset, presets
from sdlora.optim.schedulers import FACTORIES, ScheduleProbe, is_sdlora_schedule
from sdlora.precision import policy
from tests.helpers.config import CONF_DIR, compose_config

BASE = ("model=tiny", "data.train_dir=/tmp", "data.caption_extension=.txt")


def test_every_shipped_optimizer_preset_is_found():
    files = [p for p in (CONF_DIR / "optimizer").glob("*.yaml") if p.stem != "custom"]
    assert len(presets("optimizer")) == len(files) > 10
    adamw = presets("optimizer", "torch.optim.AdamW")  # only the files naming the target are parsed
    assert adamw and all(node["_target_"] == "torch.optim.AdamW" for node in adamw)


@pytest.mark.parametrize("option", ["adamw", "adamw8bit", "prodigy", "adafactor", "lion"])
def test_a_composed_preset_is_recognised_whatever_its_lr(option):
    assert is_shipped_preset(compose_config(*BASE, f"optimizer={option}").optimizer)
    assert is_shipped_preset(compose_config(*BASE, f"optimizer={option}", "optimizer.lr=0.37").optimizer)


@pytest.mark.parametrize(
    "overrides",
    [["optimizer.betas=[0.9,0.99]"], ["optimizer.weight_decay=0.1"], ["+optimizer.amsgrad=true"],
     ["optimizer=custom", "optimizer._target_=torch.optim.RAdam"]],
)  # fmt: skip
def test_any_other_value_is_not_a_preset(overrides):
    assert not is_shipped_preset(compose_config(*BASE, *overrides).optimizer)


def test_without_the_conf_folder_nothing_is_a_preset(monkeypatch):
    monkeypatch.setattr(presets_module, "conf_folder", lambda: None)
    presets_module._texts.cache_clear()
    try:
        assert not is_shipped_preset(compose_config(*BASE).optimizer)
    finally:
        presets_module._texts.cache_clear()


@pytest.mark.parametrize("name", FACTORIES)
def test_the_probe_runs_the_same_factory_as_training(name):
    """On a probe every sdlora schedule returns its multiplier; it agrees with the LambdaLR of a real optimizer."""
    import torch

    from sdlora.optim import schedulers

    options = {"warmup_steps": 3} if name != "constant" else {}
    multiplier = getattr(schedulers, name)(ScheduleProbe(1e-3), total_steps=20, **options)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1e-3)
    scheduler = getattr(schedulers, name)(optimizer, total_steps=20, **options)
    for step in range(20):
        assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * multiplier(step))
        optimizer.step()
        scheduler.step()


def test_only_sdlora_schedules_take_the_probe():
    assert is_sdlora_schedule({"_target_": "sdlora.optim.schedulers.cosine"})
    assert not is_sdlora_schedule({"_target_": "sdlora.optim.schedulers.adafactor"})
    assert not is_sdlora_schedule({"_target_": "torch.optim.lr_scheduler.StepLR"})


def test_schedule_problems_over_the_horizon_without_torch_are_the_factorys_own():
    optimizer = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 1e-4})
    scheduler = OmegaConf.create({"_target_": "sdlora.optim.schedulers.warmup_stable_decay", "warmup_steps": 30,
                                  "decay_steps": 30})  # fmt: skip
    assert "(30 + 30) exceed the 50 steps" in schedule_problems(optimizer, scheduler, 50)[0]
    assert schedule_problems(optimizer, scheduler, 60) == []


def _torch_at(tmp_path, text: str):
    (tmp_path / "torch").mkdir(exist_ok=True)
    (tmp_path / "torch" / "version.py").write_text(text)

    from types import SimpleNamespace

    return SimpleNamespace(submodule_search_locations=[str(tmp_path / "torch")])


@pytest.mark.parametrize(
    ("text", "build"),
    [
        ("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n", (None, None)),
        ("cuda: Optional[str] = '12.8'\nhip: Optional[str] = None\n", ("12.8", None)),
        ("cuda = None\nhip = '6.2.4'\n", (None, "6.2.4")),
        ("something else\n", None),
    ],
)
def test_the_torch_build_is_read_without_importing_torch(tmp_path, monkeypatch, text, build):
    spec = _torch_at(tmp_path, text)
    monkeypatch.setattr(policy.importlib.util, "find_spec", lambda name: spec)
    assert policy.torch_build() == build


@pytest.mark.parametrize(
    ("build", "driver", "platform", "accelerator", "cpu"),
    [
        ((None, None), False, "linux", "auto", True),  # a CPU build: certainly no GPU
        (("12.8", None), False, "linux", "auto", True),  # a CUDA build without the NVIDIA driver
        (("12.8", None), True, "linux", "auto", False),  # with it: torch decides
        (("12.8", None), False, "win32", "auto", False),  # no /proc to look at: torch decides
        (None, False, "linux", "cuda", False),  # unreadable build: torch decides
        ((None, None), False, "darwin", "auto", False),  # MPS may exist
        ((None, None), False, "linux", "mps", True),  # MPS only on macOS
    ],
)
def test_certainly_cpu(monkeypatch, build, driver, platform, accelerator, cpu):
    monkeypatch.setattr(policy, "torch_build", lambda: build)
    monkeypatch.setattr(policy.os.path, "exists", lambda path: driver and path == "/proc/driver/nvidia/version")
    monkeypatch.setattr(policy.sys, "platform", platform)
    assert policy.certainly_cpu(accelerator) is cpu


def test_device_type_agrees_with_torch_here():
    import torch

    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert policy.device_type("auto") == expected
    assert policy.device_type("cpu") == "cpu"
