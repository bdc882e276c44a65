"""Aspect-ratio buckets against kohya's worked examples (docs/kohya.md §5.1–5.2; docs/design.md §3 pinned behaviour)."""

from __future__ import annotations

import math

import pytest

from sdlora.data.buckets import (
    BucketAssigner,
    BucketSpec,
    cover_resize,
    is_upscaled,
    make_bucket_resolutions,
    no_upscale_resize,
)

KOHYA_512 = [
    (256, 832), (256, 896), (256, 960), (256, 1024), (320, 704), (320, 768), (384, 640), (448, 576), (512, 512),
    (576, 448), (640, 384), (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
]  # fmt: skip


# --- the bucket list --------------------------------------------------------------------------------------------------


def test_bucket_list_512_gives_kohyas_17_buckets():
    assert make_bucket_resolutions((512, 512), 256, 1024, 64) == KOHYA_512


def test_bucket_list_1024_with_max_2048_gives_41_buckets():
    buckets = make_bucket_resolutions((1024, 1024), 256, 2048, 64)
    assert len(buckets) == 41
    assert (1024, 1024) in buckets and (256, 2048) in buckets and (2048, 256) in buckets


def test_bucket_list_is_not_all_equal_area():
    # docs/kohya.md §5.1: 768² with max 1024 also yields 576×1024 and 576×960 (h capped at max, not area-matched)
    buckets = make_bucket_resolutions((768, 768), 256, 1024, 64)
    assert (576, 1024) in buckets and (1024, 576) in buckets
    assert (768, 768) in buckets


@pytest.mark.parametrize(
    ("resolution", "lo", "hi", "steps"),
    [
        ((512, 512), 256, 1024, 64),
        ((1024, 1024), 256, 2048, 64),
        ((768, 512), 320, 1024, 64),
        ((1024, 1024), 512, 2048, 32),
    ],
)
def test_bucket_list_properties(resolution, lo, hi, steps):
    buckets = make_bucket_resolutions(resolution, lo, hi, steps)
    area = resolution[0] * resolution[1]
    assert buckets == sorted(set(buckets))
    square = int(math.sqrt(area) // steps) * steps
    assert (square, square) in buckets
    for w, h in buckets:
        assert w % steps == 0 and h % steps == 0
        assert w * h <= area
        if (w, h) != (square, square):
            assert lo <= w <= hi and lo <= h <= hi
        assert (h, w) in buckets  # symmetric


def test_bucket_list_drops_pairs_below_min():
    # current sd-scripts adds a pair only when h ≥ min (the 2023-12-20 fix)
    buckets = make_bucket_resolutions((512, 512), 448, 1024, 64)
    assert all(min(b) >= 448 for b in buckets if b != (512, 512))
    assert buckets == [(448, 576), (512, 512), (576, 448)]


# --- assignment, upscale mode -----------------------------------------------------------------------------------------


def _assigner(**kw) -> BucketAssigner:
    spec = {"enabled": True, "resolution": (512, 512), "min_reso": 256, "max_reso": 1024, "steps": 64, **kw}
    return BucketAssigner(BucketSpec(**spec))


@pytest.mark.parametrize(
    ("size", "bucket", "resized"),
    [
        ((512, 512), (512, 512), (512, 512)),  # exact size
        ((1024, 1024), (512, 512), (512, 512)),
        ((1000, 500), (704, 320), (704, 352)),  # AR 2: |2.2 − 2| < |1.667 − 2|; AR_img < AR_b → s = 704/1000
        ((500, 1000), (320, 704), (352, 704)),
        ((1920, 1080), (640, 384), (683, 384)),  # AR 1.778 → 640×384 (1.667); s = 384/1080 → 682.67 → 683
    ],
)
def test_select_nearest_aspect_ratio_and_cover(size, bucket, resized):
    placement = _assigner().select(size)
    assert placement.bucket == bucket
    assert placement.resized == resized
    assert placement.ar_error == pytest.approx(bucket[0] / bucket[1] - size[0] / size[1])


def test_select_ratio_1_5_goes_to_the_nearest_bucket():
    # AR 1.5: 640×384 (1.667, error 0.167) beats 576×448 (1.286, error 0.214); a small image is upscaled
    placement = _assigner().select((300, 200))
    assert placement.bucket == (640, 384)
    assert placement.resized == (640, 427)  # AR 1.5 < 1.667 → s = 640/300; 200·s = 426.67 → 427
    assert is_upscaled((300, 200), placement)
    assert not is_upscaled((3000, 2000), _assigner().select((3000, 2000)))


def test_exact_size_match_wins_over_nearest_ratio():
    # 448×576 is a bucket: kept as is, although no resize would be needed for other buckets either
    assert _assigner().select((448, 576)).bucket == (448, 576)
    assert _assigner().select((448, 576)).resized == (448, 576)


def test_ties_go_to_the_first_bucket_of_the_sorted_list():
    # 93×135 is exactly as far (in float64, as kohya computes it) from 384×640 as from 448×576
    ratio = 93 / 135
    assert abs(384 / 640 - ratio) == abs(448 / 576 - ratio)
    assert _assigner().select((93, 135)).bucket == (384, 640)


@pytest.mark.parametrize("size", [(64, 64), (100, 3000), (3000, 100), (513, 511), (1, 1000), (777, 333)])
def test_resized_image_always_covers_its_bucket(size):
    placement = _assigner().select(size)
    (rw, rh), (bw, bh) = placement.resized, placement.bucket
    assert rw >= bw and rh >= bh
    assert min(rw - bw, rh - bh) <= 1  # one side fits (up to rounding)


def test_cover_resize_rounds_half_up_like_kohya():
    # int(x + 0.5): 2.5 → 3 (Python's round would give 2)
    assert cover_resize((5, 4), (2, 2)) == (3, 2)  # s = 2/4 → 2.5 → 3


# --- no upscale -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "bucket", "resized"),
    [
        ((1050, 1080), (960, 960), (960, 987)),  # kohya's worked examples at 1024²
        ((3072, 3000), (960, 960), (983, 960)),
        ((1800, 1024), (1344, 768), (1350, 768)),
        ((700, 500), (640, 448), (700, 500)),  # smaller than the area: not resized, only cropped
    ],
)
def test_no_upscale_worked_examples(size, bucket, resized):
    assigner = _assigner(resolution=(1024, 1024), no_upscale=True)
    placement = assigner.select(size)
    assert (placement.bucket, placement.resized) == (bucket, resized)
    assert not is_upscaled(size, placement)


def test_no_upscale_ignores_min_and_max_bucket_reso():
    assigner = _assigner(resolution=(1024, 1024), no_upscale=True, min_reso=512, max_reso=1024)
    assert assigner.select((200, 130)).bucket == (192, 128)
    assert assigner.select((4000, 250)).bucket[0] > 1024


def test_no_upscale_too_small_for_a_bucket_is_none():
    assigner = _assigner(resolution=(1024, 1024), no_upscale=True)
    assert assigner.select((63, 500)) is None  # a side below bucket_reso_steps
    assert assigner.select((64, 64)).bucket == (64, 64)


def test_no_upscale_resize_keeps_area_and_ratio():
    w, h = no_upscale_resize((4000, 3000), 1024 * 1024, 64)
    assert w * h <= 1024 * 1024 * 1.02 and abs(w / h - 4 / 3) < 0.01


# --- buckets off ------------------------------------------------------------------------------------------------------


def test_buckets_off_is_one_bucket_of_the_resolution():
    assigner = BucketAssigner(BucketSpec(False, (768, 512)))
    assert assigner.resolutions == [(768, 512)]
    for size in [(100, 100), (2000, 1000), (512, 768)]:
        placement = assigner.select(size)
        assert placement.bucket == (768, 512)
        assert placement.resized == cover_resize(size, (768, 512))
