"""Building the training data: regularisation balance, steps with repeats and reg images (docs/kohya.md §6.1, §7),
explicit subsets, buckets in the plan, and the dataset's per-sample augmentation."""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.data.build import build_training_data
from sdlora.data.regularisation import balance_regularisation
from sdlora.errors import SdloraError
from tests.helpers.config import data_config


def _image(path: Path, size, color=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:  # a colour from the path: no two test images are identical files
        digest = hashlib.sha256(str(path).encode()).digest()
        color = tuple(digest[:3])
    Image.new("RGB", size, color).save(path)
    return path


def _gradient(path: Path, size) -> Path:
    """An image whose pixel (x, y) encodes x (red) and y (green), to check crops and flips."""
    w, h = size
    x = np.tile(np.arange(w, dtype=np.uint8), (h, 1))
    y = np.tile(np.arange(h, dtype=np.uint8)[:, None], (1, w))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1)).save(path)
    return path


def _cfg(**kw):
    return data_config(**kw)


def _build(cfg, resolution=(64, 64), seed=0, accumulate=1, max_steps=-1, max_epochs=1, **kw):
    return build_training_data(cfg, resolution, seed, accumulate, max_steps, max_epochs, **kw)


# --- regularisation balance -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "repeats", "expected"),
    [
        (10, [3, 3, 3, 3, 3], [3, 3, 3, 3, 0]),  # first pass stops once the sum reaches the target
        (9, [3, 3, 3, 3], [3, 3, 3, 0]),
        (10, [1, 1, 1], [4, 3, 3]),  # later passes add one repeat round robin
        (3, [1, 1, 1], [1, 1, 1]),
        (4, [2, 5], [2, 5]),  # the last image may overshoot
        (7, [2, 2], [4, 3]),
        (5, [], []),
        (0, [1, 1], [0, 0]),
    ],
)
def test_balance_regularisation(target, repeats, expected):
    result = balance_regularisation(target, repeats)
    assert result == expected
    if repeats and target > 0:
        assert sum(result) >= target


@pytest.fixture
def dataset_with_reg(tmp_path) -> tuple[Path, Path]:
    train, reg = tmp_path / "train", tmp_path / "reg"
    for i in range(3):
        _image(train / "5_sks dog" / f"d{i}.png", (64, 64))
    for i in range(2):
        _image(train / "2_toy" / f"t{i}.png", (128, 64))
    for i in range(4):
        _image(reg / "1_dog" / f"r{i}.png", (64, 64))
    return train, reg


def test_steps_with_repeats_and_reg_images(dataset_with_reg):
    train, reg = dataset_with_reg
    cfg = _cfg(train_dir=str(train), reg_dir=str(reg), batch_size=2, enable_bucket=False)
    data = _build(cfg, max_epochs=3)
    plan = data.plan
    # 3×5 + 2×2 = 19 training samples; 4 reg images × 1 < 19 → raised round robin to 19: [5, 5, 5, 4]
    assert plan.num_train_images_with_repeats == 19
    reg_repeats = [n for r, n in zip(plan.records, plan.repeats, strict=True) if r.subset.is_reg]
    assert reg_repeats == [5, 5, 5, 4]
    assert len(plan.entries) == 38
    assert len(data.sampler) == 19 and plan.length.steps_per_epoch == 19  # one bucket: ⌈38 / 2⌉
    assert plan.length.total_steps == 57
    js = plan.to_json()
    assert (js["num_images"], js["num_reg_images"]) == (5, 4)
    assert js["regularisation"] == {
        "target": 19, "images": 4, "images_used": 4, "requested_with_repeats": 4, "count_with_repeats": 19,
    }  # fmt: skip
    assert "regularisation: 4 of 4 regularisation images used, 19 samples" in plan.format()


def test_steps_per_bucket_round_up(dataset_with_reg):
    train, reg = dataset_with_reg
    cfg = _cfg(
        train_dir=str(train), reg_dir=str(reg), batch_size=4, min_bucket_reso=64, max_bucket_reso=256,
        bucket_reso_steps=32,
    )  # fmt: skip
    plan = _build(cfg, resolution=(128, 128), max_steps=-1, max_epochs=2, accumulate=2).plan
    buckets = {res: len(idx) for res, idx in plan.buckets().items()}
    assert buckets == {(128, 128): 15 + 19, (160, 96): 4}  # the 2:1 images get their own bucket
    batches = sum(math.ceil(n / 4) for n in buckets.values())  # Σ ⌈n_b / batch⌉ = 9 + 1
    assert plan.length.batches_per_epoch == batches == 10
    assert plan.length.steps_per_epoch == 5 and plan.length.total_steps == 10


def test_reg_images_beyond_the_target_are_unused(tmp_path):
    train, reg = tmp_path / "train", tmp_path / "reg"
    _image(train / "2_cat" / "a.png", (64, 64))
    for i in range(5):
        _image(reg / "1_animal" / f"r{i}.png", (64, 64))
    plan = _build(_cfg(train_dir=str(train), reg_dir=str(reg), enable_bucket=False)).plan
    used = [r.path.name for r, n in zip(plan.records, plan.repeats, strict=True) if r.subset.is_reg and n]
    assert used == ["r0.png", "r1.png"]
    assert plan.reg.images_used == 2 and plan.reg.images == 5
    assert "3 unused" in plan.reg.describe()
    reg_in_json = [i for b in plan.to_json()["buckets"] for i in b["images"] if "/1_animal/" in i["path"]]
    assert [Path(i["path"]).name for i in reg_in_json] == ["r0.png", "r1.png"]


def test_reg_samples_get_prior_loss_weight_and_their_own_folder_settings(dataset_with_reg):
    train, reg = dataset_with_reg
    cfg = _cfg(
        subsets=[{"dir": str(train / "5_sks dog"), "repeats": 2, "flip_aug": True, "class_tokens": "sks dog"},
                 {"dir": str(reg / "1_dog"), "is_reg": True, "class_tokens": "dog"}],
        enable_bucket=False,
    )  # fmt: skip
    data = _build(cfg, prior_loss_weight=0.5)
    dataset = data.dataset
    weights = Counter(
        (dataset.records[e.record].subset.is_reg, dataset[(i, 0)]["loss_weight"]) for i, e in enumerate(dataset.entries)
    )
    assert weights == {(False, 1.0): 6, (True, 0.5): 6}
    reg_subset = next(r.subset for r in dataset.records if r.subset.is_reg)
    assert not reg_subset.options.flip_aug  # not the training folder's settings (kohya v21.8.8's bug)
    assert next(r.subset for r in dataset.records if not r.subset.is_reg).options.flip_aug


# --- explicit subsets -------------------------------------------------------------------------------------------------


def test_explicit_subsets_any_folder_name_and_overrides(tmp_path):
    _image(tmp_path / "photos" / "a.png", (64, 64))
    _image(tmp_path / "photos" / "b.png", (64, 64))
    (tmp_path / "photos" / "a.cap").write_text("from a cap file")
    cfg = _cfg(
        subsets=[{"dir": str(tmp_path / "photos"), "repeats": 3, "class_tokens": "ohwx", "caption_extension": "cap",
                  "shuffle_caption": True, "keep_tokens": 1}],
        enable_bucket=False,
    )  # fmt: skip
    plan = _build(cfg).plan
    assert [(r.path.name, r.caption, r.repeats) for r in plan.records] == [
        ("a.png", "from a cap file", 3),
        ("b.png", "ohwx", 3),
    ]
    options = plan.records[0].subset.options
    assert options.shuffle_caption and options.keep_tokens == 1 and options.caption_extension == ".cap"
    assert not options.flip_aug  # inherited from data.flip_aug


def test_explicit_subsets_are_added_to_train_dir_and_duplicates_ignored(tmp_path):
    _image(tmp_path / "train" / "2_a" / "x.png", (64, 64))
    _image(tmp_path / "extra" / "y.png", (64, 64))
    cfg = _cfg(
        train_dir=str(tmp_path / "train"),
        subsets=[{"dir": str(tmp_path / "extra")}, {"dir": str(tmp_path / "train" / "2_a"), "repeats": 9}],
        enable_bucket=False,
    )
    plan = _build(cfg).plan
    assert sorted((r.path.name, r.repeats) for r in plan.records) == [("x.png", 2), ("y.png", 1)]
    assert any("listed twice" in w and "2_a" in w for w in plan.warnings)


def test_explicit_subset_that_does_not_exist(tmp_path):
    with pytest.raises(SdloraError, match=r"data\.subsets\[0\]\.dir="):
        _build(_cfg(subsets=[{"dir": str(tmp_path / "nope")}]))


def test_only_reg_folders_is_an_error(tmp_path):
    _image(tmp_path / "reg" / "1_dog" / "a.png", (64, 64))
    with pytest.raises(SdloraError, match="only regularisation folders"):
        _build(_cfg(subsets=[{"dir": str(tmp_path / "reg" / "1_dog"), "is_reg": True}]))


def test_reg_dir_without_kohya_folders(tmp_path):
    _image(tmp_path / "train" / "1_a" / "x.png", (64, 64))
    (tmp_path / "reg").mkdir()
    with pytest.raises(SdloraError, match=r"data\.reg_dir=.*has no '<repeats>_<name>' subfolders"):
        _build(_cfg(train_dir=str(tmp_path / "train"), reg_dir=str(tmp_path / "reg")))


# --- buckets in the plan ----------------------------------------------------------------------------------------------


def test_buckets_in_the_plan_and_batches_never_mix(tmp_path):
    root = tmp_path / "train"
    sizes = {"sq.png": (256, 256), "wide.png": (500, 200), "tall.png": (200, 400), "small.png": (50, 100)}
    for name, size in sizes.items():
        _image(root / "3_x" / name, size)
    cfg = _cfg(train_dir=str(root), batch_size=2, min_bucket_reso=64, max_bucket_reso=256)
    data = _build(cfg, resolution=(128, 128))
    by_name = {
        Path(i["path"]).name: tuple(b["resolution"]) for b in data.plan.to_json()["buckets"] for i in b["images"]
    }
    assert by_name == {"sq.png": (128, 128), "wide.png": (192, 64), "tall.png": (64, 192), "small.png": (64, 192)}
    for batch in data.sampler:
        assert len({data.dataset.entries[e].bucket for e, _ in batch}) == 1
    info = data.plan.bucket_info()
    assert info["buckets"] == {
        "0": {"resolution": [64, 192], "count": 6},
        "2": {"resolution": [128, 128], "count": 3},
        "3": {"resolution": [192, 64], "count": 3},
    }  # indices are positions in kohya's bucket list [64×192, 64×256, 128×128, 192×64, 256×64]
    # |ar_error| without repeats: sq 0, wide |3 − 2.5| = 0.5, tall and small |1/3 − 1/2| = 1/6 each
    assert info["mean_img_ar_error"] == pytest.approx((0 + 0.5 + 1 / 6 + 1 / 6) / 4)
    (upscaled,) = [w for w in data.plan.warnings if "upscaled" in w]
    assert upscaled.startswith("1 image(s)") and "small.png (50×100 → 64×192)" in upscaled
    assert not any(w.startswith("bucket ") for w in data.plan.warnings)  # every bucket fills a batch


def test_bucket_no_upscale_skips_images_smaller_than_a_step(tmp_path):
    root = tmp_path / "train"
    _image(root / "1_x" / "ok.png", (200, 130))
    _image(root / "1_x" / "thin.png", (40, 300))
    cfg = _cfg(train_dir=str(root), bucket_no_upscale=True)
    plan = _build(cfg, resolution=(512, 512)).plan
    assert [r.path.name for r in plan.records] == ["ok.png"]
    assert plan.entries[0].bucket == (192, 128)
    assert any("thin.png" in w and "smaller than the smallest bucket" in w for w in plan.warnings)
    assert plan.scan.images_per_subset[(root / "1_x").resolve()] == 1
    with pytest.raises(SdloraError, match=r"thin\.png.*data\.strict"):
        _build(_cfg(train_dir=str(root), bucket_no_upscale=True, strict=True), resolution=(512, 512))


def test_tiny_bucket_warning(tmp_path):
    root = tmp_path / "train"
    for i in range(4):
        _image(root / "1_x" / f"sq{i}.png", (64, 64))
    _image(root / "1_x" / "wide.png", (192, 64))
    plan = _build(_cfg(train_dir=str(root), batch_size=4, min_bucket_reso=64), resolution=(128, 128)).plan
    (warning,) = [w for w in plan.warnings if w.startswith("bucket ")]
    assert "bucket 192×64 holds only 1 sample(s)" in warning and "data.batch_size=4" in warning


# --- the dataset: augmentation and SDXL size conditioning -------------------------------------------------------------


def _one_image_dataset(tmp_path, size, **kw):
    _gradient(tmp_path / "train" / "1_x" / "g.png", size)
    cfg = _cfg(train_dir=str(tmp_path / "train"), enable_bucket=False, **kw)
    return _build(cfg, resolution=(32, 32)).dataset


def test_flip_mirrors_pixels_and_crop_conditioning(tmp_path):
    ds = _one_image_dataset(tmp_path, (49, 32), flip_aug=True)  # not resized; centred crop: columns 8 … 39
    items = [ds[(0, epoch)] for epoch in range(12)]
    plain = [it for it in items if it["size_cond"][3] == 8]
    flipped = [it for it in items if it["size_cond"][3] != 8]
    assert plain and flipped  # p = 0.5 over 12 epochs
    for item in plain:
        assert item["size_cond"] == (32, 49, 0, 8, 32, 32)
        np.testing.assert_allclose(item["pixels"][0, 0], np.arange(8, 40) / 127.5 - 1, atol=1e-6)
    for item in flipped:
        # in the mirrored image the crop starts at resized_w − crop_right = 49 − 40 = 9
        assert item["size_cond"] == (32, 49, 0, 9, 32, 32)
        np.testing.assert_allclose(item["pixels"][0, 0], np.arange(39, 7, -1) / 127.5 - 1, atol=1e-6)


def test_random_crop_varies_per_epoch_and_is_reproducible(tmp_path):
    ds = _one_image_dataset(tmp_path, (64, 32), random_crop=True)  # resized 64×32: 33 possible left offsets
    lefts = [ds[(0, epoch)]["size_cond"][3] for epoch in range(20)]
    assert len(set(lefts)) > 5 and all(0 <= x <= 32 for x in lefts)
    for epoch, left in enumerate(lefts[:5]):
        item = ds[(0, epoch)]
        assert item["size_cond"][3] == left  # the same sample again: the same crop
        np.testing.assert_allclose(item["pixels"][0, 0, 0], left / 127.5 - 1, atol=1e-6)  # column = red value


def test_color_aug_changes_some_samples(tmp_path):
    ds = _one_image_dataset(tmp_path, (32, 32), color_aug=True)
    reference = _one_image_dataset(tmp_path / "ref", (32, 32))[(0, 0)]["pixels"]
    changed = sum(not np.allclose(ds[(0, e)]["pixels"], reference) for e in range(60))
    assert 5 < changed < 40  # p ≈ 0.33


def test_no_upscale_sample_crops_without_resizing(tmp_path):
    _gradient(tmp_path / "train" / "1_x" / "g.png", (70, 50))
    data = _build(
        _cfg(train_dir=str(tmp_path / "train"), bucket_no_upscale=True, bucket_reso_steps=16), resolution=(64, 64)
    )
    item = data.dataset[(0, 0)]
    assert item["pixels"].shape == (3, 48, 64)  # 70×50 → bucket 64×48, no resize: crop (3, 1)
    assert item["size_cond"] == (50, 70, 1, 3, 48, 64)
    np.testing.assert_allclose(item["pixels"][0, 0, :3], np.arange(3, 6) / 127.5 - 1, atol=1e-6)


def test_resumed_sampler_gives_the_same_remaining_samples(tmp_path):
    """Mid-epoch resume: the rest of the epoch has the same order and the same augmented samples."""
    from torch.utils.data import DataLoader

    from sdlora.data.batch import collate_batch

    root = tmp_path / "train"
    for i, size in enumerate([(64, 64), (80, 64), (64, 96), (70, 70), (128, 64)]):
        _gradient(root / "3_x" / f"g{i}.png", size)
        (root / "3_x" / f"g{i}.txt").write_text("x, a, b, c, d")
    cfg = _cfg(
        train_dir=str(root), batch_size=2, flip_aug=True, random_crop=True, color_aug=True, shuffle_caption=True,
        caption_dropout_rate=0.2, min_bucket_reso=64,
    )  # fmt: skip

    def epoch_batches(data, epoch):
        data.sampler.set_epoch(epoch)
        return list(DataLoader(data.dataset, batch_sampler=data.sampler, collate_fn=collate_batch))

    first = _build(cfg, resolution=(128, 128), seed=7)
    full = epoch_batches(first, 2)
    first.sampler.start = 3  # what the training loop records after 3 batches
    state = first.sampler.state_dict()

    resumed = _build(cfg, resolution=(128, 128), seed=7)
    resumed.sampler.load_state_dict(state)
    rest = epoch_batches(resumed, 2)
    assert len(rest) == len(full) - 3
    for a, b in zip(full[3:], rest, strict=True):
        assert a.paths == b.paths and a.captions == b.captions
        assert a.size_cond.tolist() == b.size_cond.tolist()
        assert np.array_equal(a.pixels.numpy(), b.pixels.numpy())
