"""Caption processing (docs/kohya.md §6.2) and image augmentation (§6.3) with fixed seeds."""

from __future__ import annotations

import numpy as np
import pytest

from sdlora.data import augment
from sdlora.data.captions import augment_tags, caption_dropped, process_caption
from sdlora.data.folders import SubsetOptions

CAPTION = "sks dog, red collar, on grass, sunny, looking at viewer, tongue out"
TAGS = [t.strip() for t in CAPTION.split(",")]


def _rng(i: int = 0) -> np.random.Generator:
    return np.random.default_rng(i)


# --- tags -------------------------------------------------------------------------------------------------------------


def test_static_captions_are_returned_unchanged():
    options = SubsetOptions(keep_tokens=2)  # keep_tokens alone changes nothing (kohya)
    assert augment_tags("a,b ,  c", options, _rng()) == "a,b ,  c"
    assert process_caption(CAPTION, options, _rng(), epoch=0) == CAPTION


def test_shuffle_keeps_the_first_keep_tokens_tags():
    options = SubsetOptions(shuffle_caption=True, keep_tokens=2)
    outputs = {augment_tags(CAPTION, options, _rng(i)) for i in range(50)}
    assert len(outputs) > 10  # the order changes
    for out in outputs:
        tags = out.split(", ")
        assert tags[:2] == TAGS[:2]
        assert sorted(tags) == sorted(TAGS)


def test_shuffle_is_reproducible_from_the_seed():
    options = SubsetOptions(shuffle_caption=True)
    assert augment_tags(CAPTION, options, _rng(3)) == augment_tags(CAPTION, options, _rng(3))
    assert augment_tags(CAPTION, options, _rng(3)) != augment_tags(CAPTION, options, _rng(4))


def test_shuffle_strips_tags_and_joins_with_comma_space():
    options = SubsetOptions(shuffle_caption=True, keep_tokens=1)
    out = augment_tags(" first ,second,  third ,, ", options, _rng())
    assert out.startswith("first, ")
    assert sorted(out.split(", ")) == ["first", "second", "third"]  # empty tags are removed


def test_custom_separator():
    options = SubsetOptions(shuffle_caption=True, caption_separator=";", keep_tokens=1)
    outputs = {augment_tags("a; b; c, d", options, _rng(i)) for i in range(20)}
    assert outputs == {"a, b, c, d", "a, c, d, b"}  # tags a | b | "c, d"; kohya re-joins with ", "


def test_tag_dropout_rate_and_kept_tags_never_drop():
    options = SubsetOptions(caption_tag_dropout_rate=0.3, keep_tokens=1)
    n, kept = 4000, 0
    for i in range(n):
        tags = augment_tags(CAPTION, options, _rng(i)).split(", ")
        assert tags[0] == TAGS[0]
        assert tags[1:] == [t for t in TAGS[1:] if t in tags[1:]]  # order kept without shuffle
        kept += len(tags) - 1
    rate = 1 - kept / (n * (len(TAGS) - 1))
    assert rate == pytest.approx(0.3, abs=0.02)


def test_caption_dropout_rate_statistically():
    options = SubsetOptions(caption_dropout_rate=0.25)
    dropped = sum(process_caption(CAPTION, options, _rng(i), epoch=0) == "" for i in range(4000))
    assert dropped / 4000 == pytest.approx(0.25, abs=0.02)


@pytest.mark.parametrize(("n", "dropped_epochs"), [(1, [0, 1, 2, 3, 4, 5]), (2, [1, 3, 5]), (3, [2, 5])])
def test_caption_dropout_every_n_epochs_counts_epochs_from_one(n, dropped_epochs):
    options = SubsetOptions(caption_dropout_every_n_epochs=n)
    assert [e for e in range(6) if caption_dropped(options, _rng(), e)] == dropped_epochs
    assert process_caption(CAPTION, options, _rng(), dropped_epochs[0]) == ""


def test_no_dropout_draw_when_rate_is_zero():
    # the generator is untouched, so turning dropout on/off does not shift the other random choices
    rng = _rng(5)
    assert not caption_dropped(SubsetOptions(), rng, 0)
    assert rng.random() == _rng(5).random()


# --- per-sample random streams ----------------------------------------------------------------------------------------


def test_sample_rng_depends_on_every_part():
    base = augment.sample_rng(1, 2, 3, augment.FLIP).random()
    assert augment.sample_rng(1, 2, 3, augment.FLIP).random() == base
    for args in [(2, 2, 3, augment.FLIP), (1, 3, 3, augment.FLIP), (1, 2, 4, augment.FLIP), (1, 2, 3, augment.CROP)]:
        assert augment.sample_rng(*args).random() != base


def test_flip_probability_is_one_half():
    flips = [augment.flip_drawn(augment.sample_rng(0, 0, i, augment.FLIP)) for i in range(4000)]
    assert sum(flips) / 4000 == pytest.approx(0.5, abs=0.03)


# --- colour augmentation ----------------------------------------------------------------------------------------------


def test_gamma_is_kohyas_pixel_power_clipped_and_truncated():
    image = np.array([[[0, 1, 100], [200, 250, 255]]], dtype=np.uint8)
    out = augment.gamma(image, 1.05)
    expected = np.clip(image.astype(np.float64) ** 1.05, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 2] == int(100**1.05) and out[0, 1, 1] == 255  # 250^1.05 = 328 → clipped
    assert augment.gamma(image, 0.95)[0, 0, 2] == int(100**0.95)


def test_hue_shift_keeps_greys_and_rotates_colours():
    grey = np.full((2, 2, 3), 128, dtype=np.uint8)
    np.testing.assert_array_equal(augment.hue_shift(grey, 8.0), grey)
    red = np.zeros((1, 1, 3), dtype=np.uint8)
    red[..., 0] = 200
    plus, minus = augment.hue_shift(red, 8.0)[0, 0], augment.hue_shift(red, -8.0)[0, 0]
    assert plus[0] >= 190 and plus[1] > 30 and plus[2] < 10  # towards yellow (+16°)
    assert minus[0] >= 190 and minus[2] > 30 and minus[1] < 10  # towards magenta (−16°)


def test_color_aug_applies_with_probability_one_third():
    image = np.random.default_rng(0).integers(20, 230, (4, 4, 3), dtype=np.uint8)
    changed = [not np.array_equal(augment.color_aug(image, _rng(i)), image) for i in range(3000)]
    assert sum(changed) / 3000 == pytest.approx(0.33, abs=0.03)


def test_color_aug_returns_uint8_rgb_of_the_same_shape():
    image = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    for i in range(30):
        out = augment.color_aug(image, _rng(i))
        assert out.shape == image.shape and out.dtype == np.uint8


def test_flip_crop_left_mirrors_the_crop():
    # resized width 100, bucket 64 wide, crop from x = 10: mirrored, the crop starts at 100 − (10 + 64) = 26
    assert augment.flip_crop_left(100, 10, 64) == 26
    assert augment.flip_crop_left(64, 0, 64) == 0
