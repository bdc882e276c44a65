"""EMA of the LoRA, post-hoc EMA, the best checkpoint and the per-band validation loss on the tiny model (CPU):
the -ema file is the EMA of the trained weights, kept like the other saves; val/loss_ema and the bands are logged;
<name>-best is the LoRA with the lowest value; resume through ``python train.py`` continues the EMA, the post-hoc
snapshots and the best value exactly; ``sdlora-posthoc-ema`` writes the EMA of any length from a run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.cli import run_train_py
from tests.helpers.config import EXAMPLE_DATA, compose_config, tiny_overrides
from tests.integration.test_train_e2e import scalars

VALIDATION = ("validation.split=0.25", "validation.every_n_steps=1")


class Trajectory(Callback):
    """The LoRA's file tensors at the start and after every optimizer step."""

    def on_train_start(self, trainer, pl_module):
        self.trainer = trainer
        self.start = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}
        self.steps: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps[trainer.global_step] = {k: v.clone() for k, v in pl_module.network.kohya_tensors().items()}


def _run(tmp_path: Path, data: Path, *extra: str, callbacks=(), name: str = "run") -> dict:
    overrides = tiny_overrides(data, "data.batch_size=1", *extra)
    return train(compose_config(*overrides), tmp_path / name, callbacks=list(callbacks))


def test_ema_file_is_the_ema_of_the_weights_and_kept_like_the_saves(small_dataset, tmp_path):
    trajectory = Trajectory()
    summary = _run(tmp_path, small_dataset, "ema=default", "ema.decay=0.5", "ema.every_n_steps=2",
                   "save.every_n_steps=1", "save.last_n_steps=1", *VALIDATION, callbacks=[trajectory])  # fmt: skip
    run_dir = tmp_path / "run"
    ema = dict(trajectory.start)
    for step in (2, 4):  # one update every 2 steps: θ̄ ← 0.5·θ̄ + 0.5·θ
        ema = {k: 0.5 * ema[k] + 0.5 * trajectory.steps[step][k] for k in ema}
    saved, metadata = load_lora(run_dir / "last-ema.safetensors")
    assert all(torch.allclose(saved[k], ema[k], atol=1e-7) for k in ema)
    assert metadata["ss_ema_decay"] == "0.5" and metadata["ss_ema_updates"] == "2"
    main, _ = load_lora(run_dir / "last.safetensors")
    assert any(not torch.equal(main[k], saved[k]) for k in main)
    # retention: the -ema files follow the step files (last_n_steps=1 keeps steps 3 and 4)
    names = sorted(p.name for p in run_dir.glob("last-step*.safetensors"))
    assert names == ["last-step00000003-ema.safetensors", "last-step00000003.safetensors",
                     "last-step00000004-ema.safetensors", "last-step00000004.safetensors"]  # fmt: skip
    # val/loss_ema beside val/loss, and both per timestep band (4 bands, one validation timestep each)
    logged = scalars(run_dir)
    assert len(logged["val/loss"]) == len(logged["val/loss_ema"]) == 4  # every step (the last is not repeated)
    bands = [f"val/loss_t{a}" for a in ("000-249", "250-499", "500-749", "750-999")]
    assert all(b in logged and b.replace("loss_", "loss_ema_") in logged for b in bands)
    mean = sum(logged[b][-1] for b in bands) / 4
    assert mean == pytest.approx(logged["val/loss"][-1], rel=1e-5)
    assert summary["val_loss_ema"] == pytest.approx(logged["val/loss_ema"][-1], rel=1e-6)


def test_warmup_ema_in_float32_under_full_bf16_on_the_cpu(small_dataset, tmp_path):
    """ema.power: β_n = min(decay, 1 − n^−power) (the first update copies); float32 shadows in CPU memory whatever
    the training precision (ema.device=cpu), and float32 -ema files; ema.use_for_eval=false logs no val/loss_ema."""
    from sdlora.callbacks.ema import LoRAEMA

    trajectory = Trajectory()
    _run(tmp_path, small_dataset, "precision=full_bf16", "ema=default", "ema.decay=0.6", "ema.power=0.75",
         "ema.device=cpu", "ema.use_for_eval=false", *VALIDATION,
         callbacks=[trajectory])  # fmt: skip
    ema = {k: v.float() for k, v in trajectory.steps[1].items()}
    for n in (2, 3, 4):
        beta = min(0.6, 1 - n**-0.75)
        ema = {k: beta * ema[k] + (1 - beta) * trajectory.steps[n][k].float() for k in ema}
    saved, metadata = load_lora(tmp_path / "run" / "last-ema.safetensors")
    # the file keeps the float32 EMA (not rounded through the bf16 LoRA), while the LoRA file itself is bf16
    assert all(saved[k].dtype == torch.float32 and torch.allclose(saved[k], ema[k], atol=1e-7) for k in ema)
    main, _ = load_lora(tmp_path / "run" / "last.safetensors")
    assert main[next(k for k in main if k.endswith("lora_up.weight"))].dtype == torch.bfloat16
    assert metadata["ss_ema_power"] == "0.75" and metadata["ss_ema_updates"] == "4"
    assert {v.dtype for k, v in trajectory.steps[4].items() if not k.endswith(".alpha")} == {torch.bfloat16}
    logged = scalars(tmp_path / "run")
    assert "val/loss" in logged and "val/loss_ema" not in logged
    callback = next(c for c in trajectory.trainer.callbacks if isinstance(c, LoRAEMA))
    assert all(s.dtype == torch.float32 and s.device.type == "cpu" for s in callback.ema.shadow)


def test_best_checkpoint_is_the_lowest_validation_loss(small_dataset, tmp_path):
    summary = _run(tmp_path, small_dataset, "save.best_by=val/loss", "save.every_n_steps=1", "optimizer.lr=3e-2",
                   *VALIDATION)  # fmt: skip
    run_dir = tmp_path / "run"
    values = scalars(run_dir)["val/loss"][:4]  # steps 1–4 (the last step is not evaluated twice)
    best_step = 1 + min(range(4), key=lambda i: values[i])
    best = summary["best"]
    assert best["step"] == best_step and best["metric"] == "val/loss"
    assert best["value"] == pytest.approx(min(values), rel=1e-6)
    tensors, metadata = load_lora(run_dir / "last-best.safetensors")
    assert metadata["ss_best_step"] == str(best_step) and float(metadata["ss_best_value"]) == best["value"]
    step_file, _ = load_lora(run_dir / f"last-step{best_step:08d}.safetensors")
    assert all(torch.equal(tensors[k], step_file[k]) for k in tensors)


def _problems(*overrides: str) -> list[str]:
    with pytest.raises(SdloraError) as info:
        check_config(compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", *overrides))
    return info.value.problems


def test_ema_and_best_options_are_checked():
    problems = _problems("ema=default", "ema.decay=1.0", "ema.posthoc=true", "ema.posthoc_sigma_rels=[0.05,0.5]",
                         "save.best_by=val/loss")  # fmt: skip
    text = "\n".join(problems)
    assert "ema.decay" in text and "posthoc_sigma_rels" in text and "needs validation images" in text
    assert any("ema=default" in p for p in _problems("save.best_by=val/loss_ema", "validation.split=0.25"))
    assert any("schedule-free" in p for p in _problems("ema=default", "optimizer=adamw_schedulefree"))
    assert any("add ema=default" in p for p in _problems("ema.decay=0.5"))  # an ema.* option without the EMA
    check_config(compose_config("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "ema=default", "ema.decay=0.5"))


def test_ema_posthoc_and_best_resume_exactly_through_train_py(small_dataset, tmp_path):
    from sdlora.tools.posthoc_ema import main as posthoc_main

    args = tiny_overrides(small_dataset, "data.batch_size=1", "ema=default", "ema.decay=0.8", "ema.posthoc=true",
                          "ema.snapshot_every=2", "save.state=true", "save.every_n_steps=3", "trainer.max_steps=6",
                          "validation.split=0.25", "validation.every_n_steps=3", "save.best_by=val/loss_ema",
                          "data.flip_aug=true")  # fmt: skip
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run_train_py(args, full)
    run_train_py([*args, f"resume={full / 'last-step00000003-state'}"], resumed)
    for name in ("last.safetensors", "last-ema.safetensors", "posthoc_ema/sigma0.050-step00000006.safetensors",
                 "posthoc_ema/sigma0.100-step00000006.safetensors"):  # fmt: skip
        a, _ = load_lora(full / name)
        b, _ = load_lora(resumed / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert (resumed / "posthoc_ema" / "sigma0.050-step00000002.safetensors").is_file()  # copied from the first run
    records = [json.loads((d / "summary.json").read_text()) for d in (full, resumed)]
    assert records[0]["val_loss_ema"] == records[1]["val_loss_ema"]
    assert records[0]["best"]["step"] == records[1]["best"]["step"] and records[1]["best"]["metric"] == "val/loss_ema"
    assert Path(records[1]["best"]["path"]).is_file() and records[1]["lora"].endswith("last.safetensors")

    assert posthoc_main([str(resumed), "--sigma-rel", "0.07", "0.05"]) == 0
    written, metadata = load_lora(resumed / "last-ema-sigma0.070.safetensors")
    assert metadata["ss_ema_sigma_rel"] == "0.07" and set(written) == set(load_lora(resumed / "last.safetensors")[0])
    own, _ = load_lora(resumed / "posthoc_ema" / "sigma0.050-step00000006.safetensors")
    solved, _ = load_lora(resumed / "last-ema-sigma0.050.safetensors")  # a snapshot's own profile: itself
    assert all(torch.allclose(solved[k], own[k], atol=1e-5) for k in own)
