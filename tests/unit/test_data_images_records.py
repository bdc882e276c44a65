"""Image reading, cover-and-crop fitting (docs/kohya.md §5.2–5.3, §6.1), the scan's skip rules (docs/design.md §3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.data.folders import scan_subsets
from sdlora.data.images import Fit, ImageProblem, apply_fit, cover_size, load_rgb, plan_fit, probe_image
from sdlora.data.records import MIN_SIDE, scan_records
from sdlora.errors import SdloraError


def _save(path: Path, img: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def _rgb(size, color=(10, 20, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def _truncated(path: Path, fmt: str) -> Path:
    rng = np.random.default_rng(0)
    full = path.with_name("full" + path.suffix)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, format=fmt)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: len(data) // 2])
    return path


# --- probing and loading ----------------------------------------------------------------------------------------------


def test_probe_image_size(tmp_path):
    assert probe_image(_save(tmp_path / "a.png", _rgb((30, 20)))) == (30, 20)  # (W, H)


@pytest.mark.parametrize("fmt, suffix", [("PNG", ".png"), ("JPEG", ".jpg")])
def test_probe_truncated_image_raises(tmp_path, fmt, suffix):
    path = _truncated(tmp_path / f"cut{suffix}", fmt)
    with pytest.raises(ImageProblem, match=f"cut{suffix}"):
        probe_image(path)


def test_probe_garbage_raises(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(ImageProblem) as info:
        probe_image(path)
    assert str(path) in str(info.value)


def test_load_rgb_drops_alpha_without_compositing(tmp_path):
    path = _save(tmp_path / "a.png", Image.new("RGBA", (4, 3), (200, 100, 50, 0)))  # fully transparent
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (4, 3)
    assert img.getpixel((1, 1)) == (200, 100, 50)  # colour kept, not blended with a background


def test_load_rgb_palette_and_greyscale(tmp_path):
    pal = Image.new("P", (5, 5))
    pal.putpalette([0, 0, 0, 12, 34, 56] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 5, 5))
    assert load_rgb(_save(tmp_path / "p.png", pal)).getpixel((2, 2)) == (12, 34, 56)
    grey = load_rgb(_save(tmp_path / "l.png", Image.new("L", (5, 5), 77)))
    assert grey.mode == "RGB" and grey.getpixel((0, 4)) == (77, 77, 77)
    la = load_rgb(_save(tmp_path / "la.png", Image.new("LA", (2, 2), (90, 0))))
    assert la.getpixel((0, 0)) == (90, 90, 90)


# --- cover and crop ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "bucket", "resized", "offset"),
    [
        ((1000, 500), (512, 512), (1024, 512), (256, 0)),  # wide: s = 512/500, crop left/right
        ((300, 900), (512, 512), (512, 1536), (0, 512)),  # tall: s = 512/300, crop top/bottom
        ((100, 50), (256, 256), (512, 256), (128, 0)),  # small: upscaled ×5.12
        ((1024, 1024), (768, 512), (768, 768), (0, 128)),  # square into a landscape bucket: s = 768/1024
        ((512, 768), (512, 768), (512, 768), (0, 0)),  # exact size
        ((1024, 1536), (512, 768), (512, 768), (0, 0)),  # same aspect ratio: scaled only
        ((333, 500), (512, 512), (512, 769), (0, 128)),  # s = 512/333: 500·s = 768.77 → 769; excess 257 → 128
        ((64, 48), (32, 32), (43, 32), (5, 0)),  # 64·(32/48) = 42.67 → 43; excess 11 → 5
    ],
)
def test_cover_size_and_centred_crop(size, bucket, resized, offset):
    assert cover_size(size, bucket) == resized
    fit = plan_fit(size, bucket)
    assert fit == Fit(original=size, resized=resized, bucket=bucket, offset=offset)
    # the resized image covers the bucket and the crop lies inside it
    assert resized[0] >= bucket[0] and resized[1] >= bucket[1]
    assert min(resized[0] - bucket[0], resized[1] - bucket[1]) <= 1  # one side fits (up to rounding)
    assert offset[0] + bucket[0] <= resized[0] and offset[1] + bucket[1] <= resized[1]


def test_cover_size_scale_rule_follows_aspect_ratio():
    # kohya: if AR_img > AR_bucket scale by height, else by width
    assert cover_size((2000, 1000), (768, 512)) == (1024, 512)  # AR 2 > 1.5 → s = 512/1000
    assert cover_size((1200, 1000), (768, 512)) == (768, 640)  # AR 1.2 < 1.5 → s = 768/1200


def test_plan_fit_random_crop_fraction():
    assert plan_fit((1000, 500), (512, 512), (0.0, 0.7)).offset == (0, 0)
    assert plan_fit((1000, 500), (512, 512), (0.5, 0.5)).offset == (256, 0)  # int(0.5·513) = 256
    assert plan_fit((1000, 500), (512, 512), (0.999, 0.0)).offset == (512, 0)  # the largest offset
    for f in np.linspace(0, 0.9999, 25):
        left, top = plan_fit((300, 900), (512, 512), (f, f)).offset
        assert left == 0 and 0 <= top <= 1024  # resized (512, 1536): excess 1024


# --- apply_fit --------------------------------------------------------------------------------------------------------


def test_apply_fit_shape_range_and_values():
    img = _rgb((64, 48), (255, 0, 51))
    out = apply_fit(img, plan_fit((64, 48), (32, 32)))
    assert out.shape == (3, 32, 32) and out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    assert float(out.min()) >= -1.0 and float(out.max()) <= 1.0
    np.testing.assert_allclose(out[0], 1.0, atol=1e-6)  # 255 → 1
    np.testing.assert_allclose(out[1], -1.0, atol=1e-6)  # 0 → −1
    np.testing.assert_allclose(out[2], 51 / 127.5 - 1.0, atol=1e-6)  # −0.6


def test_apply_fit_centre_crop_without_resizing():
    # 200×100: left half red, right half blue; bucket 100×100 takes columns 50..149 (no scaling: s = 1)
    arr = np.zeros((100, 200, 3), dtype=np.uint8)
    arr[:, :100] = (255, 0, 0)
    arr[:, 100:] = (0, 0, 255)
    fit = plan_fit((200, 100), (100, 100))
    assert fit.resized == (200, 100) and fit.offset == (50, 0)
    out = apply_fit(Image.fromarray(arr), fit)
    assert out.shape == (3, 100, 100)
    np.testing.assert_array_equal(out[0, :, :50], 1.0)
    np.testing.assert_array_equal(out[2, :, :50], -1.0)
    np.testing.assert_array_equal(out[0, :, 50:], -1.0)
    np.testing.assert_array_equal(out[2, :, 50:], 1.0)


def test_apply_fit_explicit_offset_crops_that_window():
    arr = np.arange(10 * 6, dtype=np.uint8).reshape(6, 10)  # H 6, W 10; value = 10·y + x
    img = Image.fromarray(np.stack([arr] * 3, axis=-1))
    out = apply_fit(img, Fit(original=(10, 6), resized=(10, 6), bucket=(4, 3), offset=(5, 2)))
    expected = arr[2:5, 5:9].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(out[1], expected, atol=1e-6)


def test_apply_fit_downscale_averages_pixels():
    # an 8×8 image of 2×2 blocks; downscaling to 4×4 (box filter, like INTER_AREA) gives each block's mean
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
    out = apply_fit(Image.fromarray(arr), plan_fit((8, 8), (4, 4)))
    block_mean = arr.reshape(4, 2, 4, 2, 3).astype(np.float64).mean(axis=(1, 3))  # [4, 4, 3]
    expected = block_mean.transpose(2, 0, 1) / 127.5 - 1.0
    np.testing.assert_allclose(out, expected, atol=1.01 / 127.5)  # PIL rounds to 8 bits


def test_apply_fit_upscale_of_a_flat_image_stays_flat():
    out = apply_fit(_rgb((10, 20), (100, 150, 200)), plan_fit((10, 20), (64, 64)))  # upscaled ×6.4 (Lanczos)
    assert out.shape == (3, 64, 64)
    for c, v in enumerate((100, 150, 200)):
        np.testing.assert_allclose(out[c], v / 127.5 - 1.0, atol=1e-6)


# --- record scan: skip rules ------------------------------------------------------------------------------------------


def _dataset(tmp_path: Path) -> Path:
    d = tmp_path / "train" / "2_thing"
    _save(d / "good.png", _rgb((32, 24)))
    _save(d / "tiny.png", _rgb((4, 4)))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _truncated(d / "truncated.png", "PNG")
    return tmp_path / "train"


def test_unusable_images_are_skipped_with_warnings_naming_them(tmp_path):
    root = _dataset(tmp_path)
    scan = scan_records(scan_subsets(root)[0], ".txt", strict=False)
    assert [r.path.name for r in scan.records] == ["good.png"]
    assert scan.records[0].size == (32, 24) and scan.records[0].repeats == 2
    skipped = [w for w in scan.warnings if w.startswith("skipped")]
    assert len(skipped) == 3
    d = root / "2_thing"
    for name in ["tiny.png", "corrupt.jpg", "truncated.png"]:
        assert sum(str((d / name).resolve()) in w for w in skipped) == 1, name
    assert any("4x4" in w and "too small" in w for w in skipped)
    assert scan.images_per_subset == {d.resolve(): 1}  # only usable images are counted


def test_min_side_boundary(tmp_path):
    d = tmp_path / "1_x"
    _save(d / "ok.png", _rgb((MIN_SIDE, 100)))
    _save(d / "thin.png", _rgb((100, MIN_SIDE - 1)))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt", strict=False)
    assert [r.path.name for r in scan.records] == ["ok.png"]
    assert any("thin.png" in w for w in scan.warnings)


@pytest.mark.parametrize("bad", ["tiny.png", "corrupt.jpg", "truncated.png"])
def test_strict_makes_unusable_images_errors(tmp_path, bad):
    d = tmp_path / "1_x"
    _save(d / "good.png", _rgb((16, 16)))
    if bad == "tiny.png":
        _save(d / bad, _rgb((4, 4)))
    elif bad == "corrupt.jpg":
        (d / bad).write_bytes(b"junk")
    else:
        _truncated(d / bad, "PNG")
    with pytest.raises(SdloraError) as info:
        scan_records(scan_subsets(tmp_path)[0], ".txt", strict=True)
    assert bad in str(info.value) and "data.strict" in str(info.value)


def test_scan_with_several_workers_keeps_order(tmp_path):
    d = tmp_path / "1_x"
    sizes = {f"{i:02d}.png": (16 + i, 16 + 2 * i) for i in range(12)}
    for name, size in sizes.items():
        _save(d / name, _rgb(size))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt", strict=False, workers=4)
    assert [(r.path.name, r.size) for r in scan.records] == sorted(sizes.items())


def test_modes_are_accepted_by_the_scan(tmp_path):
    d = tmp_path / "1_x"
    _save(d / "rgba.png", Image.new("RGBA", (16, 16)))
    _save(d / "p.png", Image.new("P", (16, 16)))
    _save(d / "l.bmp", Image.new("L", (16, 16)))
    _save(d / "w.webp", _rgb((16, 16)))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt", strict=True)
    assert sorted(r.path.name for r in scan.records) == ["l.bmp", "p.png", "rgba.png", "w.webp"]
