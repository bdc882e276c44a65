"""Saves during training on the tiny model: kohya's file names, retention on disk, states beside the saves, atomic
writes that keep the previous file when a write fails, and the non-finite loss guard."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from sdlora.errors import DiskFull, SdloraError
from sdlora.network.io import load_lora, save_lora
from sdlora.run import train
from tests.helpers.config import compose_config, tiny_overrides

# small_dataset: 4 images × 2 repeats = 8 samples = 4 batches of 2 per epoch


def run(data: Path, run_dir: Path, *extra: str, callbacks=None) -> dict:
    return train(compose_config(*tiny_overrides(data, *extra)), run_dir, callbacks=callbacks)


def names(run_dir: Path, pattern: str) -> list[str]:
    return sorted(p.name for p in run_dir.glob(pattern))


def test_step_saves_states_and_retention(small_dataset, tmp_path):
    out = tmp_path / "run"
    summary = run(small_dataset, out, "trainer.max_steps=7", "save.every_n_steps=2", "save.last_n_steps=3",
                  "save.state=true", "save.last_n_steps_state=2")  # fmt: skip
    assert summary["steps"] == 7
    # files: saved at 2, 4, 6; at 6 step 6 − 3 − 1 = 2 is removed (keep steps ≥ 3)
    assert names(out, "*.safetensors") == ["last-step00000004.safetensors", "last-step00000006.safetensors",
                                           "last.safetensors"]  # fmt: skip
    # states: N = 2 steps → at 6, r = 3 → 2 is removed; the final state is last-state
    assert names(out, "*-state") == ["last-state", "last-step00000004-state", "last-step00000006-state"]
    _, meta = load_lora(out / "last-step00000004.safetensors")
    assert (meta["ss_steps"], meta["ss_epoch"]) == ("4", "0")  # kohya: a step save's ss_epoch is 0-based
    _, meta = load_lora(out / "last.safetensors")
    assert (meta["ss_steps"], meta["ss_epoch"]) == ("7", "2")
    assert not list(out.glob(".*"))  # no temporary files or folders left


def test_epoch_saves_keep_the_last_n_and_never_the_last_epoch(small_dataset, tmp_path):
    out = tmp_path / "run"
    run(small_dataset, out, "trainer.max_steps=100", "trainer.max_epochs=3", "save.every_n_epochs=1",
        "save.last_n_epochs=1", "save.output_name=my")  # fmt: skip
    assert names(out, "*.safetensors") == ["my-000002.safetensors", "my.safetensors"]
    _, meta = load_lora(out / "my-000002.safetensors")
    assert (meta["ss_steps"], meta["ss_epoch"]) == ("8", "2")
    _, meta = load_lora(out / "my.safetensors")
    assert (meta["ss_steps"], meta["ss_epoch"]) == ("12", "3")


def test_last_n_steps_also_prunes_epoch_saves(small_dataset, tmp_path):
    """Beyond kohya (sd-scripts #1738): epoch files saved more than N steps before the newest save are removed."""
    out = tmp_path / "run"
    run(small_dataset, out, "trainer.max_steps=100", "trainer.max_epochs=4", "save.every_n_epochs=1",
        "save.last_n_steps=5")  # fmt: skip
    # epoch saves at steps 4, 8, 12 (the 4th epoch is the final file): at 12, those saved before step 7 go
    assert names(out, "*.safetensors") == ["last-000002.safetensors", "last-000003.safetensors", "last.safetensors"]


def test_save_checks_are_reported_together(small_dataset):
    from sdlora.config.checks import check_config

    cfg = compose_config(*tiny_overrides(small_dataset, "save.every_n_steps=0", "save.last_n_epochs=2",
                                         "save.last_n_steps_state=3"))  # fmt: skip
    with pytest.raises(SdloraError) as error:
        check_config(cfg)
    message = str(error.value)
    for text in ("save.every_n_steps must be ≥ 1", "save.last_n_epochs needs save.every_n_epochs",
                 "save.last_n_steps_state needs save.state=true"):  # fmt: skip
        assert text in message, text


# --- atomic writes ----------------------------------------------------------------------------------------------------


def test_a_failed_lora_write_keeps_the_previous_file(tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "last.safetensors"
    save_lora(target, {"lora_unet_x.lora_down.weight": torch.ones(2, 3)}, {"ss_steps": "1"})
    before = target.read_bytes()

    def write_half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 100)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", write_half_then_fail)
    with pytest.raises(DiskFull, match=r"no space left on the device of .* while writing last.safetensors"):
        save_lora(target, {"lora_unet_x.lora_down.weight": torch.zeros(2, 3)}, {"ss_steps": "2"})
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]


def test_a_failed_state_write_keeps_the_previous_state(tmp_path, monkeypatch):
    from sdlora.state.folder import read_state, write_state

    target = tmp_path / "last-state"
    write_state(target, {"a": torch.ones(2)}, {"step": 1}, {"global_step": 1})

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(DiskFull, match="while writing last-state"):
        write_state(target, {"a": torch.zeros(2)}, {"step": 2}, {"global_step": 2})
    monkeypatch.undo()
    lora, training, info = read_state(target)
    assert torch.equal(lora["a"], torch.ones(2)) and training == {"step": 1} and info["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last-state"]


# --- non-finite loss --------------------------------------------------------------------------------------------------


class PoisonBatch(L.Callback):
    """Makes the loss of the ``at``-th batch (0-based, over the run) infinite through its loss weights, the way a
    corrupt image or an fp16 overflow would."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.seen == self.at:
            batch.loss_weight = batch.loss_weight * float("inf")
        self.seen += 1


def test_nonfinite_loss_stops_with_a_message_and_a_state(small_dataset, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SdloraError) as error:
        run(small_dataset, out, "save.state=true", callbacks=[PoisonBatch(at=2)])
    message = str(error.value)
    assert "the loss became" in message and "in step 3 (epoch 1)" in message
    assert str(small_dataset / "2_tok") in message  # the batch's image paths
    assert "learning rate" in message and "trainer.skip_nonfinite=true" in message
    state = out / "last-step00000002-state"
    assert state.is_dir() and f"resume={state}" in message
    assert not (out / "last.safetensors").exists()


def test_skip_nonfinite_skips_and_counts(small_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    summary = run(small_dataset, out, "trainer.skip_nonfinite=true", "trainer.max_skipped_fraction=0.5",
                  callbacks=[PoisonBatch(at=1)])  # fmt: skip
    assert summary["nonfinite_skipped"] == 1 and summary["steps"] == 4
    tensors, _ = load_lora(out / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())
    accumulator = EventAccumulator(str(next(out.rglob("events.out.tfevents.*")).parent))
    accumulator.Reload()
    logged = {e.step: e.value for e in accumulator.Scalars("train/nonfinite_skipped")}  # a cumulative count
    assert set(logged.values()) == {1.0} and max(logged) == 3
