"""The deterministic validation loss (validation.dir / validation.split) and masked loss (loss.masked)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from sdlora.config.checks import check_config
from sdlora.data.buckets import BucketSpec
from sdlora.data.held_out import build_validation_data, hold_out
from sdlora.data.masks import MaskSource
from sdlora.data.records import scan_records
from sdlora.data.subsets import resolve_subsets
from sdlora.diffusion.objective import DiffusionObjective
from sdlora.errors import SdloraError
from sdlora.lit.module import LoRATrainingModule
from sdlora.lit.val_loss import ValidationLoss
from sdlora.run import train
from tests.helpers.config import compose_config, data_config, tiny_overrides
from tests.integration.test_train_e2e import scalars


def _validation_module(small_dataset, **network):
    from sdlora.config.schema import NetworkConfig
    from sdlora.models.tiny import TinySD15Family
    from sdlora.network.build import build_network

    family = TinySD15Family()
    components = family.load()
    net = build_network(family, components, NetworkConfig(rank=4, alpha=4, **network))
    module = LoRATrainingModule(
        family, components, net, optimizer=None, scheduler=None, learning_rates={"default": 1e-4}, total_steps=1,
        batches_per_epoch=1, objective=DiffusionObjective("epsilon"), validation=ValidationLoss(0, 1000, 4, seed=0),
    )  # fmt: skip
    subsets, _ = resolve_subsets(data_config(train_dir=str(small_dataset)))
    records = scan_records(subsets).records
    spec = BucketSpec(enabled=True, resolution=(64, 64), min_reso=64, max_reso=256, steps=16)
    data = build_validation_data(records, spec, batch_size=2, source="test")
    return module, net, data


def _evaluate(module, data) -> float:
    from sdlora.data.batch import collate_batch

    module.train(False)
    module.validation.reset()
    for batch in data.sampler:
        module.validation.update(module, collate_batch([data.dataset[key] for key in batch]))
    return module.validation.value


def test_validation_loss_is_deterministic_and_follows_the_weights(small_dataset):
    module, network, data = _validation_module(small_dataset, dropout=0.5, rank_dropout=0.3)
    first = _evaluate(module, data)
    torch.manual_seed(999)  # neither the global RNG nor the dropouts (off in eval mode) may change it
    assert _evaluate(module, data) == first and math.isfinite(first)
    with torch.no_grad():
        for lora in network.modules.values():
            lora.lora_up.weight.normal_(std=0.05)
    assert _evaluate(module, data) != first
    assert module.validation.count == data.num_images * 4


def test_hold_out_is_seeded_and_removes_images_from_training(small_dataset):
    subsets, _ = resolve_subsets(data_config(train_dir=str(small_dataset)))
    scan_a, held_a = hold_out(scan_records(subsets), 0.5, seed=3)
    _, held_b = hold_out(scan_records(subsets), 0.5, seed=3)
    assert [r.path for r in held_a] == [r.path for r in held_b] and len(held_a) == 2
    assert not {r.path for r in held_a} & {r.path for r in scan_a.records}
    assert sum(scan_a.images_per_subset.values()) == 2
    with pytest.raises(SdloraError, match="at least 2 training images"):
        one = scan_records(subsets)
        one.records = one.records[:1]
        hold_out(one, 0.5, seed=0)


def test_training_with_a_validation_split_logs_val_loss(small_dataset, tmp_path):
    cfg = compose_config(*tiny_overrides(small_dataset, "validation.split=0.25", "validation.every_n_steps=2"))
    summary = train(cfg, tmp_path / "run")
    values = scalars(tmp_path / "run")["val/loss"]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)  # after steps 2 and 4
    assert summary["val_loss"] == pytest.approx(values[-1]) and summary["best_val_loss"] == pytest.approx(min(values))
    plan = json.loads((tmp_path / "run" / "data_plan.json").read_text())
    held = set(plan["validation"]["paths"])
    trained = {img["path"] for bucket in plan["buckets"] for img in bucket["images"]}
    assert len(held) == 1 and not held & trained and plan["num_images"] == 3
    assert plan["validation"]["timesteps"] == [125, 375, 625, 875]


def test_validation_dir_is_evaluated_at_the_end(small_dataset, example_data, tmp_path):
    cfg = compose_config(*tiny_overrides(small_dataset, f"validation.dir={example_data}", "trainer.max_steps=2"))
    summary = train(cfg, tmp_path / "run")
    assert len(scalars(tmp_path / "run")["val/loss"]) == 1 and math.isfinite(summary["val_loss"])
    again = train(cfg, tmp_path / "again")
    assert again["val_loss"] == summary["val_loss"]  # same weights and fixed noise: the same number


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["validation.split=1.5"], "validation.split must be in [0, 1)"),
        (["validation.every_n_steps=5"], "validation.every_n_steps needs validation images"),
        (["validation.dir=/nonexistent/val"], "validation.dir='/nonexistent/val' does not exist"),
        (["data.mask_dir=/nonexistent/masks"], "loss.masked=false"),
    ],
)
def test_validation_and_mask_options_are_checked(overrides, fragment, small_dataset):
    with pytest.raises(SdloraError) as info:
        check_config(compose_config(*tiny_overrides(small_dataset, *overrides)))
    assert fragment in str(info.value)


# -------------------------------------------------------------------------------------------------------- masks
def test_mask_from_file_alpha_or_none_fitted_like_the_image(tmp_path):
    from sdlora.data.images import plan_fit

    images, masks = tmp_path / "img", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    Image.new("RGB", (64, 32), "red").save(images / "a.png")
    mask = np.zeros((32, 64), np.uint8)
    mask[:, :16] = 255  # left quarter learnt
    Image.fromarray(mask).save(masks / "a.png")
    rgba = Image.new("RGBA", (32, 32), (0, 0, 255, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    rgba.save(images / "b.png")
    Image.new("RGB", (32, 32)).save(images / "c.png")
    source = MaskSource(masks)
    assert [source.describe(images / n) for n in ("a.png", "b.png", "c.png")] == ["file", "alpha", "none"]
    fit = plan_fit((64, 32), (32, 32))  # centre crop of the middle half
    cropped = source.array(images / "a.png", (64, 32), fit, flipped=False)
    assert cropped.shape == (1, 32, 32) and float(cropped.sum()) == 0.0  # the learnt quarter is cropped away
    full = source.array(images / "a.png", (64, 32), plan_fit((64, 32), (64, 32)), flipped=True)
    assert full[0, :, -16:].min() == 1.0 and full[0, :, :-16].max() == 0.0  # flipped with the image
    assert source.array(images / "c.png", (32, 32), plan_fit((32, 32), (32, 32)), False).min() == 1.0
    alpha = source.array(images / "b.png", (32, 32), plan_fit((32, 32), (32, 32)), False)
    assert alpha[0, 0, 0] == 1.0 and alpha.sum() == 1.0


def test_an_all_black_mask_makes_the_loss_zero(small_dataset, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for image in (small_dataset / "2_tok").glob("*.png"):
        Image.new("L", (8, 8), 0).save(masks / image.name)
    cfg = compose_config(*tiny_overrides(small_dataset, "loss.masked=true", f"data.mask_dir={masks}"))
    summary = train(cfg, tmp_path / "run")
    assert summary["loss"] == 0.0
    logged = scalars(tmp_path / "run")["loss/current"]
    assert logged == [0.0] * 4


def test_masked_training_with_alpha_channels(small_dataset, tmp_path):
    for image in (small_dataset / "2_tok").glob("*.png"):
        rgba = Image.open(image).convert("RGBA")
        rgba.putalpha(128)
        rgba.save(image)
    summary = train(compose_config(*tiny_overrides(small_dataset, "loss.masked=true")), tmp_path / "run")
    assert math.isfinite(summary["loss"]) and summary["loss"] > 0
