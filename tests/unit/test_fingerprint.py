"""The resume fingerprint: which config changes alter the data order or the schedule, listed readably."""

from __future__ import annotations

from sdlora.data.build import build_training_data
from sdlora.data.resolution import parse_resolution
from sdlora.state.fingerprint import compare, fingerprint, fingerprint_hash
from tests.helpers.config import resolved, tiny_overrides


def print_of(data_dir, *extra: str, world_size: int = 1) -> dict:
    cfg = resolved(*tiny_overrides(data_dir, *extra))
    t = cfg.trainer
    data = build_training_data(
        cfg.data, parse_resolution(cfg.data.resolution), cfg.seed, t.accumulate_grad_batches, t.max_steps,
        t.max_epochs, world_size=world_size,
    )  # fmt: skip
    return fingerprint(cfg, data.plan)


def test_same_config_same_fingerprint(small_dataset):
    a, b = print_of(small_dataset), print_of(small_dataset)
    assert compare(a, b) == [] and fingerprint_hash(a) == fingerprint_hash(b)


def test_changes_that_alter_the_order_or_the_schedule_are_listed(small_dataset):
    before = print_of(small_dataset)
    after = print_of(small_dataset, "seed=7", "optimizer.lr=2e-4", "network.unet_lr=1e-4", "data.resolution=96")
    lines = compare(before, after)
    assert "seed: 42 (state) → 7 (now)" in lines
    assert "optimizer.lr: 0.0001 (state) → 0.0002 (now)" in lines
    assert "network.unet_lr: None (state) → 0.0001 (now)" in lines
    assert any(line.startswith("dataset: the images, repeats or buckets differ") for line in lines)
    assert fingerprint_hash(before) != fingerprint_hash(after)


def test_the_number_of_processes_is_part_of_the_global_batch(small_dataset):
    lines = compare(print_of(small_dataset), print_of(small_dataset, world_size=2))
    assert "processes: 1 (state) → 2 (now)" in lines


def test_the_horizon_is_not_a_setting(small_dataset):
    before, after = print_of(small_dataset), print_of(small_dataset, "trainer.max_steps=8")
    assert compare(before, after) == [] and fingerprint_hash(before) == fingerprint_hash(after)
    assert (before["horizon"]["total_steps"], after["horizon"]["total_steps"]) == (4, 8)
