"""Training states and exact resume on the tiny model (CPU, fp32): an interrupted-and-resumed run must give the same
LoRA as an uninterrupted one, bit for bit — with flipped and caption-shuffled samples, batches of 2, dropouts,
gradient accumulation, crossing epoch boundaries; plus Ctrl-C, continuing a finished run, and config-change checks."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides

# 5 images × 2 repeats = 10 samples = 5 batches of 2 per epoch: 8 steps cross an epoch boundary.
COMMON = ("data.flip_aug=true", "data.shuffle_caption=true", "network.dropout=0.1", "save.state=true",
          "trainer.max_steps=8")  # fmt: skip


@pytest.fixture
def tagged_dataset(tmp_path: Path) -> Path:
    """5 differently coloured 64-px images with multi-tag captions (so caption shuffling matters)."""
    from PIL import Image

    folder = tmp_path / "tagged" / "2_tok"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.new("RGB", (64, 64), (40 * i, 200 - 30 * i, 30 + 20 * i)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"tok, color {i}, square, plain background", encoding="utf-8")
    return folder.parent


def run(tmp_path: Path, data: Path, name: str, *extra: str, callbacks=None) -> dict:
    return train(compose_config(*tiny_overrides(data, *COMMON, *extra)), tmp_path / name, callbacks=callbacks)


def same_lora(a: Path, b: Path) -> bool:
    ta, _ = load_lora(a)
    tb, _ = load_lora(b)
    assert ta.keys() == tb.keys()
    return all(torch.equal(ta[k], tb[k]) for k in ta)


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(next(run_dir.rglob("events.out.tfevents.*")).parent))
    accumulator.Reload()
    return {e.step: e.value for e in accumulator.Scalars(tag)}


@pytest.mark.parametrize(
    ("extra", "state"),
    [
        # mid-epoch step state; cosine schedule, neuron dropout
        (("scheduler=cosine", "save.every_n_steps=3"), "last-step00000003-state"),
        # accumulation (5 batches → steps of 2+2+1), all three dropouts, an epoch state after a partial window
        (
            (
                "scheduler=linear",
                "trainer.accumulate_grad_batches=2",
                "network.rank_dropout=0.2",
                "network.module_dropout=0.1",
                "save.every_n_epochs=1",
            ),
            "last-000001-state",
        ),
        # bf16 LoRA weights with stochastic rounding: its generator is part of the state too
        (
            ("precision=full_bf16", "precision.stochastic_rounding=true", "save.every_n_steps=3"),
            "last-step00000003-state",
        ),
    ],
)
def test_resume_continues_exactly(tagged_dataset, tmp_path, extra, state):
    full = run(tmp_path, tagged_dataset, "full", *extra)
    state_dir = tmp_path / "full" / state
    assert (state_dir / "state.json").is_file() and (state_dir / "lora.safetensors").is_file()
    resumed = run(tmp_path, tagged_dataset, "resumed", *extra, f"resume={state_dir}")
    assert full["steps"] == resumed["steps"] == 8
    assert same_lora(tmp_path / "full" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")
    assert resumed["loss"] == full["loss"]  # the running loss average was restored too
    # the resumed run logs from the step after the state's, with the values of the uninterrupted run (Lightning logs
    # optimizer step k at index k − 1)
    before, after = scalars(tmp_path / "full", "loss/current"), scalars(tmp_path / "resumed", "loss/current")
    saved_step = json.loads((state_dir / "state.json").read_text())["global_step"]
    assert min(after) == saved_step and max(after) == max(before) == 7
    assert after == {s: v for s, v in before.items() if s >= saved_step}


def test_state_holds_no_base_model(tagged_dataset, tmp_path):
    run(tmp_path, tagged_dataset, "run", "trainer.max_steps=2")
    state = tmp_path / "run" / "last-state"
    assert sorted(p.name for p in state.iterdir()) == [
        "lora.safetensors",
        "manifest.json",
        "state.json",
        "training_state.pt",
    ]
    tensors, _ = load_lora(state / "lora.safetensors")
    assert all(k.startswith("lora_") for k in tensors)
    lora_bytes = (state / "lora.safetensors").stat().st_size
    assert (state / "training_state.pt").stat().st_size < 4 * lora_bytes  # optimizer moments, no frozen weights
    checkpoint = torch.load(state / "training_state.pt", weights_only=True)
    assert "state_dict" not in checkpoint and checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]
    assert {"python", "numpy", "torch", "generators"} <= checkpoint["sdlora"]["rng"].keys()


def test_continue_a_finished_run(tagged_dataset, tmp_path, caplog):
    run(tmp_path, tagged_dataset, "full")
    run(tmp_path, tagged_dataset, "short", "trainer.max_steps=4")
    with caplog.at_level(logging.WARNING, logger="sdlora"):
        more = run(tmp_path, tagged_dataset, "more", f"resume={tmp_path / 'short'}")  # the run folder: its newest state
    assert more["steps"] == 8
    assert "horizon changed from 4 to 8 steps" in caplog.text
    # with the constant schedule the horizon does not matter: the same LoRA as 8 steps at once
    assert same_lora(tmp_path / "full" / "last.safetensors", tmp_path / "more" / "last.safetensors")


class CtrlC(L.Callback):
    """Presses Ctrl-C (SIGINT to this process) right after optimizer step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_a_state_and_resume_continues(tagged_dataset, tmp_path):
    extra = ("scheduler=cosine", "trainer.accumulate_grad_batches=2")
    run(tmp_path, tagged_dataset, "full", *extra)
    previous = signal.getsignal(signal.SIGINT)
    cut = run(tmp_path, tagged_dataset, "cut", *extra, callbacks=[CtrlC(at=2)])
    assert signal.getsignal(signal.SIGINT) is previous  # the handler is removed again
    # Ctrl-C came after step 2 had been handled: the run stops after its next optimizer step
    state = tmp_path / "cut" / "last-step00000003-state"
    assert cut["steps"] == 3 and cut["interrupted"] == str(state) and state.is_dir()
    assert (tmp_path / "cut" / "last-step00000003.safetensors").is_file()
    assert not (tmp_path / "cut" / "last.safetensors").exists()  # no final file for an interrupted run
    run(tmp_path, tagged_dataset, "resumed", *extra, f"resume={state}")
    assert same_lora(tmp_path / "full" / "last.safetensors", tmp_path / "resumed" / "last.safetensors")


def test_resume_stops_on_schedule_changes(tagged_dataset, tmp_path, caplog):
    run(tmp_path, tagged_dataset, "first", "trainer.max_steps=4", "save.every_n_steps=2")
    state = tmp_path / "first" / "last-step00000002-state"
    changed = ("data.batch_size=1", "seed=7", "optimizer.lr=2e-4", "scheduler=cosine", "trainer.max_steps=3")
    extra_image = tagged_dataset / "2_tok" / "img0.png"
    (tagged_dataset / "2_tok" / "img5.png").write_bytes(extra_image.read_bytes())  # one more image: a new dataset
    (tagged_dataset / "2_tok" / "img5.txt").write_text("tok, extra", encoding="utf-8")
    with pytest.raises(SdloraError) as error:
        run(tmp_path, tagged_dataset, "second", "trainer.max_steps=4", *changed, f"resume={state}")
    for added in ("img5.png", "img5.txt"):
        (tagged_dataset / "2_tok" / added).unlink()
    message = str(error.value)
    assert "resume_allow_changes=true" in message
    for text in ("data.batch_size: 2 (state) → 1 (now)", "seed: 42 (state) → 7 (now)", "optimizer.lr:",
                 "scheduler._target_:", "dataset: the images, repeats or buckets differ", "total steps"):  # fmt: skip
        assert text in message, text
    assert not (tmp_path / "second" / "last.safetensors").exists()

    with caplog.at_level(logging.WARNING, logger="sdlora"):
        summary = run(tmp_path, tagged_dataset, "third", "optimizer.lr=2e-4", f"resume={state}",
                      "resume_allow_changes=true", "trainer.max_steps=4")  # fmt: skip
    assert summary["steps"] == 4 and "optimizer.lr" in caplog.text

    with pytest.raises(SdloraError, match="nothing to train"):
        run(tmp_path, tagged_dataset, "fourth", "trainer.max_steps=2", f"resume={state}", "resume_allow_changes=true")


def test_allowed_learning_rate_change_applies_from_the_resumed_step(tagged_dataset, tmp_path):
    run(tmp_path, tagged_dataset, "first", "trainer.max_steps=4", "save.every_n_steps=2")
    state = tmp_path / "first" / "last-step00000002-state"
    run(tmp_path, tagged_dataset, "second", "trainer.max_steps=4", "optimizer.lr=3e-4", f"resume={state}",
        "resume_allow_changes=true")  # fmt: skip
    assert scalars(tmp_path / "second", "lr/unet") == {2: pytest.approx(3e-4), 3: pytest.approx(3e-4)}


def test_resume_rejects_a_folder_without_states(tagged_dataset, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SdloraError, match="no state folder"):
        run(tmp_path, tagged_dataset, "x", f"resume={tmp_path / 'empty'}")
    with pytest.raises(SdloraError, match="does not exist"):
        run(tmp_path, tagged_dataset, "x", f"resume={tmp_path / 'missing'}")


def test_resume_latest_through_the_command_line(tagged_dataset, tmp_path):
    """``python train.py ... resume=latest`` in the folder holding ``outputs/``: the newest state, its own new run
    folder, the same LoRA as the uninterrupted run."""
    from sdlora.sweep.record import read_record
    from tests.helpers.config import ROOT
    from tests.helpers.processes import run_python

    args = [str(ROOT / "train.py"), *tiny_overrides(tagged_dataset, *COMMON)]
    first = run_python([*args, "trainer.max_steps=4", "hydra.run.dir=outputs/first"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_python([*args, "resume=latest", "hydra.run.dir=outputs/second"], cwd=tmp_path)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output[-3000:]
    assert f"Resuming from {tmp_path / 'outputs' / 'first' / 'last-state'} (step 4, epoch 1)" in output
    assert "horizon changed from 4 to 8 steps" in output and "Traceback" not in output
    assert read_record(tmp_path / "outputs" / "second")["steps"] == 8
    run(tmp_path, tagged_dataset, "full")
    assert same_lora(tmp_path / "full" / "last.safetensors", tmp_path / "outputs" / "second" / "last.safetensors")


def test_ctrl_c_on_the_command_line_exits_130_with_a_state(tagged_dataset, tmp_path):
    """A real SIGINT to ``python train.py``: the run stops after its current step with a state, records itself as
    interrupted and exits with code 130 (no traceback)."""
    import time

    from sdlora.sweep.record import read_record
    from tests.helpers.config import ROOT
    from tests.helpers.processes import start_python

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(tagged_dataset, *COMMON, "trainer.max_steps=100000", f"hydra.run.dir={run_dir}")
    process = start_python([str(ROOT / "train.py"), *overrides], cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list(run_dir.glob("tensorboard/**/events.out.tfevents.*")) and time.monotonic() < deadline:
        time.sleep(0.5)  # training has started once the logger has written its first event
    time.sleep(1.0)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 130, output[-3000:]
    assert "Traceback" not in output and "continue with resume=" in output
    record = read_record(run_dir)
    assert record["status"] == "interrupted"
    states = list(run_dir.glob("last-step*-state"))
    assert len(states) == 1 and json.loads((states[0] / "state.json").read_text())["kind"] == "interrupt"
