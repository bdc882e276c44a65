"""The data pipeline end to end on tiny models: buckets, regularisation, caches (equal results, reuse, never stale,
never inside the dataset), the bucket histogram in TensorBoard, the metadata, and bad input."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.errors import SdloraError
from sdlora.network.io import load_lora
from sdlora.run import train
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.config import compose_config, tiny_overrides

BUCKETS = ["data.resolution=128", "data.min_bucket_reso=64", "data.max_bucket_reso=256"]


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run(tmp_path: Path, train_dir: Path, *extra: str, model: str = "tiny", name: str = "run") -> tuple[dict, Path]:
    run_dir = tmp_path / name
    return train(compose_config(*tiny_overrides(train_dir, *extra, model=model)), run_dir), run_dir


@pytest.fixture
def noisy_dataset(tmp_path: Path) -> Path:
    """Like ``small_dataset`` but with random pixels, so that a flipped image differs from the plain one."""
    folder = tmp_path / "noisy" / "2_tok"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate([(64, 64), (96, 64), (64, 96), (80, 80)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"tok, color {i}", encoding="utf-8")
    return folder.parent


@pytest.fixture
def reg_dataset(small_dataset: Path, tmp_path: Path) -> tuple[Path, Path]:
    reg = tmp_path / "reg" / "1_shape"
    reg.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(reg / f"r{i}.png")
    return small_dataset, reg.parent


def test_buckets_and_regularisation_in_plan_and_metadata(reg_dataset, tmp_path):
    train_dir, reg_dir = reg_dataset
    summary, run_dir = run(
        tmp_path, train_dir, *BUCKETS, f"data.reg_dir={reg_dir}", "loss.prior_loss_weight=0.5", "data.flip_aug=true",
        "data.shuffle_caption=true", "data.keep_tokens=1",
    )  # fmt: skip
    plan = json.loads((run_dir / "data_plan.json").read_text())
    resolutions = {tuple(b["resolution"]): b["count_with_repeats"] for b in plan["buckets"]}
    # 64×64, 96×64, 80×80 (× 2 repeats) and the balanced reg images → 128×128; 64×96 → 64×192
    assert resolutions == {(128, 128): 3 * 2 + 8, (64, 192): 2}
    assert plan["num_images"] == 4 and plan["num_reg_images"] == 3
    assert plan["regularisation"]["count_with_repeats"] == 8 and plan["regularisation"]["target"] == 8
    assert plan["bucketing"]["enabled"] and plan["bucketing"]["min_bucket_reso"] == 64
    _, meta = load_lora(summary["files"][0])
    assert meta["ss_enable_bucket"] == "True" and meta["ss_min_bucket_reso"] == "64"
    assert meta["ss_max_bucket_reso"] == "256" and meta["ss_resolution"] == "(128, 128)"
    assert json.loads(meta["ss_reg_dataset_dirs"]) == {"1_shape": {"n_repeats": 1, "img_count": 3}}
    assert json.loads(meta["ss_dataset_dirs"]) == {"2_tok": {"n_repeats": 2, "img_count": 4}}
    assert (meta["ss_num_train_images"], meta["ss_num_reg_images"], meta["ss_prior_loss_weight"]) == ("8", "3", "0.5")
    assert (meta["ss_flip_aug"], meta["ss_shuffle_caption"], meta["ss_keep_tokens"]) == ("True", "True", "1")
    info = json.loads(meta["ss_bucket_info"])
    assert sorted(tuple(b["resolution"]) for b in info["buckets"].values()) == sorted(resolutions)
    assert info["mean_img_ar_error"] == pytest.approx(plan["bucketing"]["mean_ar_error"])


def test_cached_training_equals_uncached_training(noisy_dataset, tmp_path):
    """Latent and text-encoder caches change where the tensors come from, not what is trained: the same losses and
    (up to float noise from VAE batches of 1 vs 2, which Adam's normalisation can amplify per element) the same LoRA."""
    from tests.integration.test_train_e2e import scalars

    common = ("network.train_text_encoder=false", "optimizer.lr=1e-3", "data.flip_aug=true")
    plain, plain_dir = run(tmp_path, noisy_dataset, *common, name="plain")
    cached, run_dir = run(
        tmp_path, noisy_dataset, *common, "data.cache_latents=memory", "data.cache_text_encoder_outputs=true",
        name="cached",
    )  # fmt: skip
    losses_plain, losses_cached = scalars(plain_dir)["loss/current"], scalars(run_dir)["loss/current"]
    assert len(losses_plain) == 4
    assert losses_cached == pytest.approx(losses_plain, rel=1e-4)
    a, b = load_lora(plain["files"][0])[0], load_lora(cached["files"][0])[0]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.linalg.norm(a[key] - b[key]) <= 1e-2 * torch.linalg.norm(a[key]) + 1e-6, key
    assert any(b[k].abs().sum() > 0 for k in b if "lora_up" in k)
    assert not (run_dir / "cache").exists()  # memory caches write nothing
    _, meta = load_lora(cached["files"][0])
    assert meta["ss_cache_latents"] == "True"


def test_disk_caches_are_reused_and_the_dataset_folder_is_untouched(example_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sdlora")
    shared = tmp_path / "shared_cache"
    before = tree(example_data)
    args = (
        *BUCKETS, "data.flip_aug=true", "data.cache_latents=disk", "data.cache_text_encoder_outputs_to_disk=true",
        "data.shuffle_caption=true", "data.caption_variants=2", "network.train_text_encoder=false",
        f"data.cache_dir={shared}", "trainer.max_steps=2",
    )  # fmt: skip
    run(tmp_path, example_data, *args, model="tiny_sdxl", name="first")
    files = sorted(p.name for p in shared.rglob("*.safetensors"))
    assert len(list((shared / "latents").glob("*.safetensors"))) == 24  # 12 images × (plain, flipped)
    assert list((shared / "text").glob("*.safetensors"))
    assert "Cached latents in" in caplog.text and "24 computed, 0 reused" in caplog.text
    caplog.clear()
    summary, _ = run(tmp_path, example_data, *args, model="tiny_sdxl", name="second")
    assert "0 computed, 24 reused" in caplog.text
    assert sorted(p.name for p in shared.rglob("*.safetensors")) == files
    assert summary["steps"] == 2
    assert tree(example_data) == before, "training must never write into the dataset folder"
    # a run with another VAE (other init seed) recomputes instead of reusing
    caplog.clear()
    run(tmp_path, example_data, *args, "model.init_seed=1", model="tiny_sdxl", name="third")
    assert "Cached latents in" in caplog.text and "24 computed, 0 reused" in caplog.text


def test_default_cache_folder_is_inside_the_run_folder(small_dataset, tmp_path):
    _, run_dir = run(tmp_path, small_dataset, "data.cache_latents=disk", "trainer.max_steps=1")
    assert len(list((run_dir / "cache" / "latents").glob("*.safetensors"))) == 4


def test_bucket_histogram_and_plan_in_tensorboard(example_data, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, run_dir = run(tmp_path, example_data, *BUCKETS, "trainer.max_steps=1")
    events = list(run_dir.rglob("events.out.tfevents.*"))
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert "data/buckets" in accumulator.Tags()["histograms"]
    histogram = accumulator.Histograms("data/buckets")[0].histogram_value
    plan = json.loads((run_dir / "data_plan.json").read_text())
    assert histogram.num == sum(b["count_with_repeats"] for b in plan["buckets"]) == 120
    ratios = sorted(w / h for w, h in (b["resolution"] for b in plan["buckets"]))
    assert list(histogram.bucket_limit) == pytest.approx(ratios)
    assert "data/plan/text_summary" in accumulator.Tags()["tensors"]
    text = accumulator.Tensors("data/bucket_table/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "| 128×128 |" in text


def test_dry_run_with_buckets_loads_nothing(example_data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sdlora")
    summary, run_dir = run(
        tmp_path, example_data, *BUCKETS, "dry_run=true", "trainer.max_steps=-1", "trainer.max_epochs=2"
    )
    plan = json.loads((run_dir / "data_plan.json").read_text())
    batches = sum(-(-b["count_with_repeats"] // 2) for b in plan["buckets"])
    assert summary["total_steps"] == 2 * batches == 2 * plan["steps_per_epoch"]
    assert "aspect-ratio buckets of area ≤ 128×128" in caplog.text and "mean aspect-ratio error" in caplog.text
    assert not (run_dir / "cache").exists() and not list(run_dir.glob("*.safetensors"))


# --- bad input --------------------------------------------------------------------------------------------------------


def test_no_upscale_too_small_image_is_named(small_dataset, tmp_path):
    Image.new("RGB", (40, 200), (9, 9, 9)).save(small_dataset / "2_tok" / "thin.png")
    extra = ("data.bucket_no_upscale=true", "data.resolution=128")
    _, run_dir = run(tmp_path, small_dataset, *extra, "dry_run=true")
    plan = json.loads((run_dir / "data_plan.json").read_text())
    assert any("thin.png" in w and "smaller than the smallest bucket" in w for w in plan["warnings"])
    result, cli_dir = run_cli(tmp_path, *tiny_overrides(small_dataset, *extra, "data.strict=true"))
    assert_clean_failure(result, cli_dir, "thin.png", "data.strict=true")


def test_impossible_cache_combinations_fail_before_anything_runs(small_dataset, tmp_path):
    result, run_dir = run_cli(
        tmp_path, *tiny_overrides(small_dataset, "data.cache_latents=disk", "data.random_crop=true",
                                  "data.cache_text_encoder_outputs=true"),
    )  # fmt: skip
    assert_clean_failure(
        result, run_dir, "the configuration has 2 problem(s)", "data.random_crop=true", "network.train_text_encoder"
    )
    assert not (run_dir / "data_plan.json").exists()


def test_reg_dir_without_kohya_folders_explains_the_layout(small_dataset, tmp_path):
    (tmp_path / "regs").mkdir()
    shutil.copy(small_dataset / "2_tok" / "img0.png", tmp_path / "regs" / "loose.png")
    with pytest.raises(SdloraError) as info:
        run(tmp_path, small_dataset, f"data.reg_dir={tmp_path / 'regs'}")
    message = str(info.value)
    assert "data.reg_dir=" in message and "holds 1 images directly" in message and "10_mysubject/" in message
