"""The optimizers added beside kohya_ss v21.8.8's resume exactly (CPU, fp32, tiny model): an interrupted-and-resumed
run gives the uninterrupted run's LoRA bit for bit. Schedule-free ones are evaluated (validation every step), sampled
and saved at their evaluation point without changing training; their saved LoRA is that point."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides
from tests.integration.test_resume import same_lora
from tests.unit.test_optimizers_new import CLASSES

NEW = ["adamw_schedulefree", "radam_schedulefree", "sgd_schedulefree", "prodigy_schedulefree", "came", "adopt",
       "muon", "adamw_kahan"]  # fmt: skip
SCHEDULE_FREE = {"adamw_schedulefree", "radam_schedulefree", "sgd_schedulefree", "prodigy_schedulefree"}
COMMON = ("save.state=true", "save.every_n_steps=3", "trainer.max_steps=6", "data.flip_aug=true")


def run(tmp_path: Path, data: Path, name: str, *extra: str, callbacks=None) -> dict:
    return train(compose_config(*tiny_overrides(data, *COMMON, *extra)), tmp_path / name, callbacks=callbacks)


@pytest.mark.parametrize("option", NEW)
def test_new_optimizer_resumes_exactly(option, small_dataset, tmp_path):
    extra = [f"optimizer={option}"]
    if option in SCHEDULE_FREE:  # validation at the evaluation point after every step must not change training
        extra += ["validation.split=0.25", "validation.every_n_steps=1"]
    full = run(tmp_path, small_dataset, "full", *extra)
    state = tmp_path / "full" / "last-step00000003-state"
    resumed = run(tmp_path, small_dataset, "resumed", *extra, f"resume={state}")
    assert full["steps"] == resumed["steps"] == 6
    assert same_lora(tmp_path / "full" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")
    if option in SCHEDULE_FREE:
        assert resumed["val_loss"] == full["val_loss"]
    _, metadata = load_lora(tmp_path / "full" / "last.safetensors")
    assert metadata["ss_optimizer"].startswith(CLASSES[option] + "(")  # kohya's module.Class(args)


def test_schedule_free_saves_its_evaluation_point(small_dataset, tmp_path):
    """The saved LoRA is x: the training-mode weights y at the end differ from it, and y = β₁·x + (1 − β₁)·z."""
    from lightning.pytorch.callbacks import Callback

    class Probe(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 6:
                optimizer = trainer.optimizers[0]
                beta1 = optimizer.param_groups[0]["betas"][0]
                self.y = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}
                self.x = {}
                for name, module in pl_module.network.modules.items():
                    for suffix, tensor in module.file_tensors().items():
                        z = optimizer.state.get(tensor, {}).get("z") if isinstance(tensor, torch.nn.Parameter) else None
                        key = f"{name}.{suffix}"
                        self.x[key] = self.y[key] if z is None else (self.y[key] - (1 - beta1) * z) / beta1

    probe = Probe()
    run(tmp_path, small_dataset, "sf", "optimizer=adamw_schedulefree", "optimizer.lr=1e-2", callbacks=[probe])
    saved, _ = load_lora(tmp_path / "sf" / "last.safetensors")
    ups = [k for k in saved if k.endswith("lora_up.weight")]
    assert any(not torch.equal(saved[k], probe.y[k]) for k in ups)  # not the training-mode weights
    for key in ups:
        assert torch.allclose(saved[key], probe.x[key], atol=1e-6)
