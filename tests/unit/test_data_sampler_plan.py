"""Bucket batches, training length, the data plan and the dataset (docs/kohya.md §5.3, §7; docs/design.md §3 pinned)."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from sdlora.data.batch import collate_batch
from sdlora.data.build import build_training_data
from sdlora.data.dataset import Entry, LoRADataset
from sdlora.data.folders import scan_subsets
from sdlora.data.plan import DataPlan
from sdlora.data.records import scan_records
from sdlora.data.sampler import BucketBatchSampler
from sdlora.data.steps import TrainingLength, training_length
from sdlora.errors import SdloraError
from tests.helpers.config import data_config

BUCKETS = [list(range(0, 7)), list(range(7, 10)), list(range(10, 22))]  # 7, 3 and 12 entries


def _bucket_of(entry: int) -> int:
    return next(i for i, b in enumerate(BUCKETS) if entry in b)


def _entries(batch: list[tuple[int, int]]) -> list[int]:
    return [e for e, _ in batch]


# --- sampler ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5, 16])
def test_sampler_length_and_every_entry_once(batch_size):
    sampler = BucketBatchSampler(BUCKETS, batch_size, seed=0)
    assert len(sampler) == sum(math.ceil(len(b) / batch_size) for b in BUCKETS)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    seen = [e for batch in batches for e in _entries(batch)]
    assert sorted(seen) == list(range(22))  # every entry exactly once per epoch
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        assert len({_bucket_of(e) for e in _entries(batch)}) == 1  # never mixes buckets
    # per bucket: full batches except at most one short one
    for b, bucket in enumerate(BUCKETS):
        sizes = sorted(len(batch) for batch in batches if _bucket_of(batch[0][0]) == b)
        full, short = divmod(len(bucket), batch_size)
        assert sizes == ([short] if short else []) + [batch_size] * full
        assert len(sizes) == math.ceil(len(bucket) / batch_size)


def test_sampler_len_example():
    assert len(BucketBatchSampler(BUCKETS, 4, seed=0)) == 2 + 1 + 3  # ⌈7/4⌉ + ⌈3/4⌉ + ⌈12/4⌉


def test_sampler_empty_buckets_are_dropped():
    sampler = BucketBatchSampler([[], [0, 1, 2], []], 2, seed=0)
    assert len(sampler) == 2
    assert sorted(e for b in sampler for e in _entries(b)) == [0, 1, 2]


def test_sampler_items_are_entry_epoch_pairs():
    sampler = BucketBatchSampler(BUCKETS, 3, seed=1)
    sampler.set_epoch(4)
    for batch in sampler:
        assert all(isinstance(item, tuple) and len(item) == 2 and item[1] == 4 for item in batch)


def test_sampler_same_order_for_same_seed_and_epoch():
    a, b = BucketBatchSampler(BUCKETS, 3, seed=7), BucketBatchSampler(BUCKETS, 3, seed=7)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again repeats the epoch
    assert a.batches(2) == b.batches(2)


def test_sampler_order_changes_across_epochs_and_seeds():
    sampler = BucketBatchSampler(BUCKETS, 3, seed=7)
    orders = set()
    for epoch in range(4):
        sampler.set_epoch(epoch)
        orders.add(tuple(tuple(b) for b in map(_entries, sampler)))
    assert len(orders) == 4
    assert BucketBatchSampler(BUCKETS, 3, seed=8).batches(0) != sampler.batches(0)


def test_sampler_without_shuffle_keeps_bucket_order():
    sampler = BucketBatchSampler(BUCKETS, 5, seed=0, shuffle=False)
    assert sampler.batches(0) == [
        [0, 1, 2, 3, 4],
        [5, 6],
        [7, 8, 9],
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20, 21],
    ]
    assert sampler.batches(3) == sampler.batches(0)


def test_sampler_shuffles_within_buckets():
    sampler = BucketBatchSampler([list(range(40))], 40, seed=0)
    (batch,) = sampler.batches(0)
    assert sorted(batch) == list(range(40)) and batch != list(range(40))


def test_sampler_state_round_trip_resumes_mid_epoch():
    sampler = BucketBatchSampler(BUCKETS, 3, seed=11)
    sampler.set_epoch(3)
    full = list(sampler)
    consumed = 4
    sampler.start = consumed  # what the training loop records after 4 batches
    state = sampler.state_dict()
    assert state == {"epoch": 3, "start": 4, "seed": 11}

    resumed = BucketBatchSampler(BUCKETS, 3, seed=0)  # a fresh run; the state carries the seed
    resumed.load_state_dict(state)
    resumed.set_epoch(3)  # Lightning calls this for the same epoch: the position is kept
    rest = list(resumed)
    assert rest == full[consumed:]
    assert sorted(e for b in full[:consumed] + rest for e in _entries(b)) == list(range(22))
    # once the resumed epoch is exhausted, the next pass is a whole epoch again
    assert resumed.start == 0
    assert list(resumed) == full


def test_sampler_set_epoch_to_a_new_epoch_resets_the_position():
    sampler = BucketBatchSampler(BUCKETS, 3, seed=5)
    sampler.load_state_dict({"epoch": 2, "start": 5, "seed": 5})
    sampler.set_epoch(3)
    assert sampler.start == 0 and len(list(sampler)) == len(sampler)


def test_sampler_in_a_dataloader():
    class Indexed(torch.utils.data.Dataset):
        def __len__(self):
            return 22

        def __getitem__(self, key):
            entry, epoch = key
            return {"entry": entry, "epoch": epoch}

    sampler = BucketBatchSampler(BUCKETS, 4, seed=0)
    sampler.set_epoch(1)
    loader = DataLoader(Indexed(), batch_sampler=sampler, collate_fn=lambda s: s)
    batches = list(loader)
    assert len(batches) == len(loader) == 6
    assert sorted(s["entry"] for b in batches for s in b) == list(range(22))
    assert {s["epoch"] for b in batches for s in b} == {1}


# --- training length --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((10, 1, 100, None), TrainingLength(10, 10, 100, 10)),
        ((10, 3, -1, 4), TrainingLength(10, 4, 16, 4)),  # ⌈10/3⌉ = 4 optimizer steps per epoch
        ((10, 1, 25, 5), TrainingLength(10, 10, 25, 3)),  # steps come first: the last epoch is partial
        ((10, 1, 100, 2), TrainingLength(10, 10, 20, 2)),  # epochs come first
        ((10, 1, None, 2), TrainingLength(10, 10, 20, 2)),
        ((7, 2, 9, None), TrainingLength(7, 4, 9, 3)),
        ((1, 4, -1, 3), TrainingLength(1, 1, 3, 3)),  # accumulation larger than the epoch
        ((5, 1, 5, 1), TrainingLength(5, 5, 5, 1)),
    ],
)
def test_training_length(args, expected):
    assert training_length(*args) == expected


@pytest.mark.parametrize(("max_steps", "max_epochs"), [(-1, None), (None, None), (-1, -1)])
def test_training_length_needs_a_limit(max_steps, max_epochs):
    with pytest.raises(ValueError, match=r"max_steps or trainer\.max_epochs"):
        training_length(10, 1, max_steps, max_epochs)


def test_training_length_needs_a_batch():
    with pytest.raises(ValueError):
        training_length(0, 1, 10, None)


# --- a kohya folder built on disk -------------------------------------------------------------------------------------


def _image(path: Path, size, color) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


@pytest.fixture
def train_dir(tmp_path) -> Path:
    root = tmp_path / "train"
    dog, cat = root / "3_sks dog", root / "1_cat"
    _image(dog / "a.png", (64, 48), (255, 0, 0))
    _image(dog / "b.jpg", (32, 64), (0, 255, 0))
    (dog / "a.txt").write_text("a photo of sks dog\n")
    _image(cat / "c.png", (40, 40), (0, 0, 255))
    _image(cat / "small.png", (4, 4), (0, 0, 0))  # skipped
    (root / "notes").mkdir()  # ignored folder
    return root


def _cfg(train_dir: Path, **kw):
    base = {"train_dir": str(train_dir), "caption_extension": "txt", "strict": False, "num_workers": 0, "batch_size": 2}
    return data_config(**{"min_bucket_reso": 256, "enable_bucket": False, **base, **kw})


def test_build_training_data_plan(train_dir):
    data = build_training_data(_cfg(train_dir), (32, 32), seed=0, accumulate_grad_batches=1, max_steps=-1, max_epochs=3)
    plan = data.plan
    assert [r.path.name for r in plan.records] == ["c.png", "a.png", "b.jpg"]  # folders sorted: 1_cat, 3_sks dog
    assert len(plan.entries) == 1 + 3 + 3  # images × repeats
    assert Counter(e.record for e in plan.entries) == {0: 1, 1: 3, 2: 3}
    assert {e.bucket for e in plan.entries} == {(32, 32)}
    assert len(data.dataset) == 7
    assert len(data.sampler) == 4  # ⌈7 / 2⌉
    assert plan.length == TrainingLength(4, 4, 12, 3)

    js = plan.to_json()
    json.dumps(js)  # serialisable as is
    for key in ["buckets", "steps_per_epoch", "total_steps", "num_images", "num_reg_images", "warnings"]:
        assert key in js
    (bucket,) = js["buckets"]
    assert bucket["resolution"] == [32, 32]
    assert bucket["count_with_repeats"] == 7
    dog, cat = (train_dir / "3_sks dog").resolve(), (train_dir / "1_cat").resolve()
    assert bucket["images"] == [
        {"path": str(cat / "c.png"), "repeats": 1},
        {"path": str(dog / "a.png"), "repeats": 3},
        {"path": str(dog / "b.jpg"), "repeats": 3},
    ]
    assert all(Path(i["path"]).is_absolute() for i in bucket["images"])
    assert (js["steps_per_epoch"], js["total_steps"], js["epochs"], js["batches_per_epoch"]) == (4, 12, 3, 4)
    assert (js["num_images"], js["num_reg_images"], js["batch_size"]) == (3, 0, 2)
    assert len(js["warnings"]) == 4
    assert any("notes" in w and "ignored folder" in w for w in js["warnings"])
    assert any("small.png" in w and "skipped" in w for w in js["warnings"])
    assert any(f"no .txt caption files in {cat}" in w for w in js["warnings"])
    assert any(f"1 image(s) in {dog} have no .txt caption file" in w and "b.jpg" in w for w in js["warnings"])
    assert not any("upscaled" in w for w in js["warnings"])  # every image covers 32×32 already
    subsets = {s["path"]: s for s in js["subsets"]}
    common = {"is_reg": False}
    assert subsets[str(dog)] == {
        "path": str(dog), "images": 2, "caption_files": 1, "repeats": 3, "class_tokens": "sks dog", "images_used": 2,
        **common,
    }  # fmt: skip
    assert subsets[str(cat)] == {
        "path": str(cat), "images": 1, "caption_files": 0, "repeats": 1, "class_tokens": "cat", "images_used": 1,
        **common,
    }  # fmt: skip


def test_build_respects_max_steps_and_accumulation(train_dir):
    data = build_training_data(_cfg(train_dir, batch_size=1), (32, 32), 0, 3, max_steps=5, max_epochs=None)
    # 7 batches per epoch, ⌈7/3⌉ = 3 optimizer steps per epoch, 5 steps → 2 epochs
    assert data.plan.length == TrainingLength(7, 3, 5, 2)
    assert data.plan.to_json()["total_steps"] == 5


def test_plan_format_mentions_folders_buckets_and_steps(train_dir):
    plan = build_training_data(_cfg(train_dir), (32, 32), 0, 1, max_steps=-1, max_epochs=3).plan
    text = plan.format()
    assert "3_sks dog" in text and "1_cat" in text
    assert "32×32" in text
    assert "4 batches = 4 optimizer steps per epoch" in text
    assert "training: 12 steps over 3 epoch(s)" in text
    assert "trainer.max_steps=none" in text and "trainer.max_epochs=3" in text
    assert "warning:" in text and "small.png" in text


def test_build_errors(tmp_path):
    with pytest.raises(SdloraError, match="does not exist"):
        build_training_data(_cfg(tmp_path / "missing"), (32, 32), 0, 1, -1, 1)
    root = tmp_path / "train"
    (root / "5_empty").mkdir(parents=True)
    (root / "5_empty" / "readme.txt").write_text("no images here")
    with pytest.raises(SdloraError) as info:
        build_training_data(_cfg(root), (32, 32), 0, 1, -1, 1)
    assert "no usable images" in str(info.value) and "5_empty" in str(info.value)


def test_build_strict_raises_on_the_small_image(train_dir):
    with pytest.raises(SdloraError, match=r"small\.png"):
        build_training_data(_cfg(train_dir, strict=True), (32, 32), 0, 1, -1, 1)


# --- plan with several buckets (built by hand) ------------------------------------------------------------------------


def test_plan_json_groups_entries_by_sorted_bucket(train_dir):
    subsets, _ = scan_subsets(train_dir)
    scan = scan_records(subsets, ".txt", strict=False)
    records = scan.records  # c (×1), a (×3), b (×3)
    entries = [
        Entry(1, (64, 32)),
        Entry(2, (32, 64)),
        Entry(1, (64, 32)),
        Entry(0, (32, 32)),
        Entry(2, (32, 64)),
        Entry(1, (32, 32)),
    ]
    length = training_length(4, 1, -1, 1)
    plan = DataPlan(records, entries, scan, 2, 1, length, -1, 1, warnings=["w"])
    assert list(plan.buckets()) == [(32, 32), (32, 64), (64, 32)]
    assert plan.buckets()[(64, 32)] == [0, 2]
    js = plan.to_json()
    assert [b["resolution"] for b in js["buckets"]] == [[32, 32], [32, 64], [64, 32]]
    assert [b["count_with_repeats"] for b in js["buckets"]] == [2, 2, 2]
    assert [[(Path(i["path"]).name, i["repeats"]) for i in b["images"]] for b in js["buckets"]] == [
        [("c.png", 1), ("a.png", 1)],
        [("b.jpg", 2)],
        [("a.png", 2)],
    ]
    assert js["warnings"] == ["w"]
    text = plan.format()
    assert "32×64" in text and "64×32" in text


# --- dataset and collate ----------------------------------------------------------------------------------------------


def test_dataset_item(train_dir):
    data = build_training_data(_cfg(train_dir), (32, 32), 0, 1, -1, 1)
    ds = data.dataset
    index = next(i for i, e in enumerate(ds.entries) if ds.records[e.record].path.name == "a.png")
    item = ds[(index, 5)]
    assert set(item) == {"pixels", "caption", "size_cond", "loss_weight", "path"}
    assert item["pixels"].shape == (3, 32, 32) and item["pixels"].dtype == np.float32
    np.testing.assert_allclose(item["pixels"][0], 1.0, atol=1e-6)  # red
    np.testing.assert_allclose(item["pixels"][1:], -1.0, atol=1e-6)
    assert item["caption"] == "a photo of sks dog"
    # 64×48 → covers 32×32 as 43×32 (s = 32/48); centred crop at left (43−32)//2 = 5
    assert item["size_cond"] == (48, 64, 0, 5, 32, 32)
    assert item["loss_weight"] == 1.0
    assert item["path"] == str((train_dir / "3_sks dog" / "a.png").resolve())
    assert ds[index]["size_cond"] == item["size_cond"]  # a plain index works too


def test_dataset_tall_image_and_class_token_caption(train_dir):
    ds = build_training_data(_cfg(train_dir), (32, 32), 0, 1, -1, 1).dataset
    index = next(i for i, e in enumerate(ds.entries) if ds.records[e.record].path.name == "b.jpg")
    item = ds[(index, 0)]
    assert item["caption"] == "sks dog"  # no b.txt: the folder's class tokens
    # 32×64 → already covers 32×32 at s = 1 (32×64); centred crop at top (64−32)//2 = 16
    assert item["size_cond"] == (64, 32, 16, 0, 32, 32)
    assert float(np.abs(item["pixels"][1] - 1.0).max()) < 0.05  # green (JPEG: approximately)


def test_dataset_non_square_bucket(train_dir):
    subsets, _ = scan_subsets(train_dir)
    records = scan_records(subsets, ".txt", strict=False).records
    ds = LoRADataset(records, [Entry(1, (48, 32))], seed=0)  # a.png 64×48 into W 48 × H 32
    item = ds[(0, 0)]
    assert item["pixels"].shape == (3, 32, 48)
    # AR 1.333 < 1.5 → s = 48/64 → 48×36; crop top (36−32)//2 = 2
    assert item["size_cond"] == (48, 64, 2, 0, 32, 48)


def test_collate_batch(train_dir):
    data = build_training_data(_cfg(train_dir), (32, 32), 0, 1, -1, 1)
    samples = [data.dataset[(i, 0)] for i in range(3)]
    batch = collate_batch(samples)
    assert batch.pixels.shape == (3, 3, 32, 32) and batch.pixels.dtype == torch.float32
    assert batch.size_cond.shape == (3, 6) and batch.size_cond.dtype == torch.float32
    assert batch.size_cond[0].tolist() == list(samples[0]["size_cond"])
    assert batch.loss_weight.tolist() == [1.0, 1.0, 1.0]
    assert batch.captions == [s["caption"] for s in samples]
    assert batch.paths == [s["path"] for s in samples]
    torch.testing.assert_close(batch.pixels[2], torch.from_numpy(samples[2]["pixels"]))


def test_dataloader_epoch_over_the_built_data(train_dir):
    data = build_training_data(_cfg(train_dir), (32, 32), 0, 1, -1, 1)
    loader = DataLoader(data.dataset, batch_sampler=data.sampler, collate_fn=collate_batch)
    batches = list(loader)
    assert len(batches) == 4
    assert [b.pixels.shape[0] for b in batches].count(1) == 1  # 7 entries, batch 2: one short batch
    paths = Counter(p for b in batches for p in b.paths)
    assert sorted(paths.values()) == [1, 3, 3]  # repeats
