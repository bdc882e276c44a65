"""Validation of the ``data`` options: values and impossible combinations, each reported by name."""

from __future__ import annotations

import pytest

from sdlora.config.checks import check_config
from sdlora.errors import SdloraError
from tests.helpers.config import EXAMPLE_DATA, compose_config

BASE = ["model=tiny", f"data.train_dir={EXAMPLE_DATA}"]


def problems(*overrides: str) -> list[str]:
    try:
        check_config(compose_config(*BASE, *overrides))
    except SdloraError as exc:
        return list(exc.problems)
    return []


def test_defaults_are_valid_and_kohya_like():
    cfg = compose_config(*BASE)
    assert problems() == []
    data = cfg.data
    assert data.enable_bucket is True  # the kohya_ss GUI's default
    assert (data.bucket_reso_steps, data.bucket_no_upscale, data.caption_extension) == (64, False, ".caption")
    assert (data.shuffle_caption, data.keep_tokens, data.caption_separator) == (False, 0, ",")
    assert str(data.cache_latents.value) == "none" and data.vae_batch_size == 1
    assert cfg.loss.prior_loss_weight == 1.0


def test_family_bucket_defaults():
    from sdlora.models.sd15 import SD15Family
    from sdlora.models.sdxl import SDXLFamily
    from sdlora.models.tiny import TinySD15Family

    assert SD15Family.default_bucket_reso == (256, 1024) and SD15Family.bucket_reso_multiple == 64
    assert SDXLFamily.bucket_reso_multiple == 32
    assert TinySD15Family.default_bucket_reso == (64, 1024)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data.min_bucket_reso=32"],
            "data.min_bucket_reso=32 must be ≥ 64 and a multiple of data.bucket_reso_steps=64",
        ),
        (["data.max_bucket_reso=1000"], "data.max_bucket_reso=1000 must be ≥ 64 and a multiple"),
        (["data.min_bucket_reso=512", "data.max_bucket_reso=256", "data.resolution=256"], "is larger than data.max"),
        (
            ["data.resolution=128", "data.min_bucket_reso=192"],
            "data.resolution 128x128 is smaller than data.min_bucket",
        ),
        (
            ["data.resolution=2048", "data.max_bucket_reso=1024"],
            "data.resolution 2048x2048 is larger than data.max_buc",
        ),
        (["data.bucket_reso_steps=24"], "data.bucket_reso_steps=24 must be a positive multiple of 16"),
        (["data.bucket_reso_steps=0"], "data.bucket_reso_steps=0 must be a positive multiple"),
        (["data.caption_dropout_rate=1.5"], "data.caption_dropout_rate must be in [0, 1], got 1.5"),
        (["data.caption_tag_dropout_rate=-0.1"], "data.caption_tag_dropout_rate must be in [0, 1]"),
        (["data.keep_tokens=-1"], "data.keep_tokens must be ≥ 0"),
        (["data.caption_dropout_every_n_epochs=-2"], "data.caption_dropout_every_n_epochs must be ≥ 0"),
        (["data.caption_separator=''"], "data.caption_separator must not be empty"),
        (["data.caption_extension=''"], "data.caption_extension must not be empty"),
        (["data.vae_batch_size=0"], "data.vae_batch_size must be ≥ 1"),
        (["data.caption_variants=0"], "data.caption_variants must be ≥ 1"),
        (["loss.prior_loss_weight=-1"], "loss.prior_loss_weight must be ≥ 0"),
        (["data.reg_dir=/no/such/folder"], "data.reg_dir='/no/such/folder' does not exist"),
    ],
)
def test_bad_values_are_named(overrides, expected):
    found = problems(*overrides)
    assert any(expected in p for p in found), found


def test_sd15_needs_steps_of_64_and_sdxl_of_32():
    sd = ["model=sd15", "model.pretrained=null"]
    assert any("multiple of 64" in p for p in problems(*sd, "data.bucket_reso_steps=32"))
    xl = problems("model=sdxl", "data.bucket_reso_steps=32")
    assert not any("bucket_reso_steps" in p for p in xl)
    assert any("multiple of 32" in p for p in problems("model=sdxl", "data.bucket_reso_steps=48"))


def test_resolution_must_fit_the_bucket_range_of_the_family():
    # sd15 defaults to min_bucket_reso 256: a 128-px resolution is rejected with both names (kohya asserts it)
    found = problems("model=sd15", "data.resolution=128")
    assert any("data.resolution 128x128 is smaller than data.min_bucket_reso=256" in p for p in found)
    assert not any(
        "min_bucket_reso" in p for p in problems("model=sd15", "data.resolution=128", "data.enable_bucket=false")
    )
    assert not any(
        "bucket" in p
        for p in problems(
            "data.resolution=128", "data.min_bucket_reso=128", "data.bucket_no_upscale=true", "data.max_bucket_reso=64"
        )
    )


@pytest.mark.parametrize("option", ["color_aug", "random_crop"])
def test_latent_cache_rejects_color_aug_and_random_crop(option):
    (found,) = problems("data.cache_latents=disk", f"data.{option}=true")
    assert f"data.cache_latents=disk cannot be combined with data.{option}=true" in found
    assert "set one of them off" in found
    assert problems("data.cache_latents=disk", "data.flip_aug=true") == []  # flip is cached as a second latent


def test_latent_cache_checks_subsets_too(tmp_path):
    (found,) = problems(
        "data.cache_latents=memory", f"data.subsets=[{{dir: {EXAMPLE_DATA / '10_shapes'}, random_crop: true}}]"
    )
    assert "data.random_crop=true" in found


def test_text_cache_rejects_training_the_text_encoder():
    (found,) = problems("data.cache_text_encoder_outputs=true")
    assert "network.train_text_encoder=true" in found and "network.train_text_encoder=false" in found
    assert problems("data.cache_text_encoder_outputs=true", "network.train_text_encoder=false") == []
    assert len(problems("data.cache_text_encoder_outputs_to_disk=true")) == 1  # _to_disk implies the cache


def test_text_cache_with_shuffling_needs_caption_variants():
    te = ["data.cache_text_encoder_outputs=true", "network.train_text_encoder=false"]
    (found,) = problems(*te, "data.shuffle_caption=true")
    assert "data.caption_variants ≥ 2" in found
    assert problems(*te, "data.shuffle_caption=true", "data.caption_variants=4") == []
    assert problems(*te, "data.caption_dropout_rate=0.1") == []  # the empty caption is cached as well
    assert len(problems(*te, "data.caption_tag_dropout_rate=0.2")) == 1


def test_cache_dir_inside_the_dataset_is_rejected(tmp_path):
    (found,) = problems(f"data.cache_dir={EXAMPLE_DATA / 'cache'}")
    assert "is inside the dataset folder" in found and "never writes into a dataset" in found
    assert problems(f"data.cache_dir={tmp_path / 'cache'}") == []


def test_subsets_instead_of_train_dir(tmp_path):
    cfg = compose_config("model=tiny", f"data.subsets=[{{dir: {tmp_path}, repeats: 3, is_reg: false}}]")
    assert cfg.data.subsets[0].repeats == 3 and cfg.data.subsets[0].flip_aug is None
    check_config(cfg)
    found = problems(f"data.subsets=[{{dir: {tmp_path / 'no'}, repeats: 0}}]")
    assert any("data.subsets[0].dir=" in p and "does not exist" in p for p in found)
    assert any("data.subsets[0].repeats must be ≥ 1" in p for p in found)
    with pytest.raises(SdloraError, match="data.train_dir is required"):
        check_config(compose_config("model=tiny"))


def test_subset_typo_fails_at_compose_time(tmp_path):
    with pytest.raises(Exception, match="repeat"):
        compose_config("model=tiny", f"data.subsets=[{{dir: {tmp_path}, repeat: 3}}]")
