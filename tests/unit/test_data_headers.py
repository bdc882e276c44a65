"""Image sizes from headers (:mod:`sdlora.data.headers`), the scan built on them (docs/design.md §3 "The record scan"):
sizes agree with PIL, incomplete files take the decoding path, duplicates are confirmed by hashing only candidates,
damage inside a complete-looking file is an error naming it when the image is decoded."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlora.data import records as records_module
from sdlora.data.dataset import decode_rgb
from sdlora.data.folders import scan_subsets
from sdlora.data.headers import read_header
from sdlora.data.records import duplicate_groups, scan_records
from sdlora.errors import SdloraError

FORMATS = [
    ("a.png", {}),
    ("b.jpg", {}),
    ("c.jpg", {"progressive": True}),
    ("d.jpg", {"exif": b"Exif\x00\x00" + bytes(9000)}),  # the SOF lies beyond the first read
    ("e.webp", {}),
    ("f.webp", {"lossless": True}),
    ("g.bmp", {}),
]


def _noise(w: int, h: int, channels: int = 3, seed: int = 0) -> Image.Image:
    shape = (h, w, channels) if channels > 1 else (h, w)
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


@pytest.mark.parametrize("size", [(1, 1), (17, 9), (300, 200), (64, 640)])
def test_header_sizes_agree_with_pil(tmp_path, size):
    image = _noise(*size)
    paths = []
    for name, options in FORMATS:
        image.save(tmp_path / name, **options)
        paths.append(tmp_path / name)
    _noise(*size, channels=4).save(tmp_path / "alpha.webp")  # VP8X
    image.convert("L").save(tmp_path / "grey.png")
    image.convert("P").save(tmp_path / "palette.png")
    paths += [tmp_path / "alpha.webp", tmp_path / "grey.png", tmp_path / "palette.png"]
    for path in paths:
        header = read_header(path)
        assert header is not None, path.name
        with Image.open(path) as img:
            assert header.size == img.size, path.name
        assert header.file_bytes == path.stat().st_size


def test_the_format_comes_from_the_bytes_not_the_extension(tmp_path):
    _noise(20, 10).save(tmp_path / "really_png.jpg", format="PNG")
    header = read_header(tmp_path / "really_png.jpg")
    assert header is not None and (header.format, header.size) == ("PNG", (20, 10))


def test_top_down_bmp_has_a_positive_height(tmp_path):
    path = tmp_path / "a.bmp"
    _noise(12, 7).save(path)
    data = bytearray(path.read_bytes())
    data[22:26] = (-7).to_bytes(4, "little", signed=True)  # top-down row order
    path.write_bytes(bytes(data))
    assert read_header(path).size == (12, 7)


@pytest.mark.parametrize("name", ["a.png", "b.jpg", "e.webp", "g.bmp"])
def test_truncated_files_cannot_be_vouched_for(tmp_path, name):
    path = tmp_path / name
    _noise(64, 48).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert read_header(path) is None


def test_unknown_or_unreadable_files_return_none(tmp_path):
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "soi_only.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    for name in ("text.png", "empty.jpg", "soi_only.jpg", "missing.png"):
        assert read_header(tmp_path / name) is None


def test_images_over_the_pixel_limit_take_the_decoding_path(tmp_path):
    _noise(40, 30).save(tmp_path / "a.png")
    assert read_header(tmp_path / "a.png", max_pixels=1200) is not None
    assert read_header(tmp_path / "a.png", max_pixels=1199) is None


def test_a_jpeg_with_bytes_after_its_end_is_decoded_and_kept(tmp_path):
    """Some cameras append data after EOI: the header path declines, the full decode accepts it."""
    folder = tmp_path / "1_x"
    folder.mkdir()
    _noise(32, 24).save(folder / "tail.jpg")
    (folder / "tail.jpg").write_bytes((folder / "tail.jpg").read_bytes() + b"trailing data")
    assert read_header(folder / "tail.jpg") is None
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt")
    assert [(r.path.name, r.size) for r in scan.records] == [("tail.jpg", (32, 24))]


def test_the_scan_decodes_no_complete_file(tmp_path, monkeypatch):
    folder = tmp_path / "1_x"
    folder.mkdir()
    for i, (name, options) in enumerate(FORMATS):
        _noise(16 + i, 16, seed=i).save(folder / name, **options)
    decoded = []
    monkeypatch.setattr(records_module, "probe_image", lambda path: decoded.append(path))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt")
    assert len(scan.records) == len(FORMATS) and decoded == []


def test_damage_inside_a_complete_file_is_an_error_naming_it_when_decoded(tmp_path):
    """The IEND chunk is intact but the pixel data is not: the plan keeps the image; decoding it names the file."""
    folder = tmp_path / "1_x"
    folder.mkdir()
    path = folder / "damaged.png"
    _noise(64, 64).save(path)
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 8
    data[start : start + 200] = bytes(200)
    path.write_bytes(bytes(data))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt")
    assert [r.path.name for r in scan.records] == ["damaged.png"]
    with pytest.raises(SdloraError, match="damaged.png.*damaged inside"):
        decode_rgb(path)


def test_duplicates_are_confirmed_by_hashing_only_files_of_equal_length_size_and_head(tmp_path, monkeypatch):
    """Only files that share their length, size and first bytes' CRC-32 are hashed; the hash decides."""
    folder = tmp_path / "1_x"
    folder.mkdir()
    _noise(20, 20, seed=1).save(folder / "a.png")
    (folder / "copy_of_a.png").write_bytes((folder / "a.png").read_bytes())
    _noise(20, 20, seed=2).save(folder / "b.png")  # same length as a.png (incompressible), other first bytes
    _noise(30, 10, seed=3).save(folder / "c.png")  # a length of its own: never hashed
    _noise(64, 64, seed=4).save(folder / "d.png")  # 12 KB: d_tail differs from it after the first 4 KB only
    tail = bytearray((folder / "d.png").read_bytes())
    tail[8000] ^= 0xFF
    (folder / "d_tail.png").write_bytes(bytes(tail))
    hashed = []
    import sdlora.utils.hashing as hashing

    real = hashing.file_sha256
    monkeypatch.setattr(hashing, "file_sha256", lambda path: hashed.append(path.name) or real(path))
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt")
    groups = duplicate_groups(scan.records)
    assert [[p.name for p in g] for g in groups] == [["a.png", "copy_of_a.png"]]
    assert sorted(set(hashed)) == ["a.png", "copy_of_a.png", "d.png", "d_tail.png"]
    assert any("duplicate images" in w and "copy_of_a.png" in w for w in scan.warnings)


def test_captions_are_read_once_from_the_folder_listing(tmp_path):
    folder = tmp_path / "2_tok"
    folder.mkdir()
    for name in ("a", "b", "c"):
        _noise(16, 16).save(folder / f"{name}.png")
    (folder / "a.txt").write_text("first line\nsecond line")
    (folder / "b.caption").write_text("other extension")
    (folder / "c.txt").mkdir()  # a folder named like a caption file is not one
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt")
    assert [(r.path.name, r.caption, r.has_caption_file) for r in scan.records] == [
        ("a.png", "first line", True), ("b.png", "tok", False), ("c.png", "tok", False)
    ]  # fmt: skip
    assert any("set data.caption_extension=.caption" in w for w in scan.warnings)


def test_dataset_digest_is_the_json_of_every_entry(small_plan):
    """The fingerprint's dataset digest (a resume compares it with saved states) keeps its definition."""
    from sdlora.state.fingerprint import dataset_digest

    rows = [[str(small_plan.records[e.record].path), *e.bucket] for e in small_plan.entries]
    expected = hashlib.sha256(json.dumps(rows).encode()).hexdigest()
    assert dataset_digest(small_plan)["sha256"] == expected


@pytest.fixture
def small_plan(tmp_path: Path):
    from sdlora.data.build import build_training_data
    from tests.helpers.config import data_config

    for folder, count in (("3_a", 3), ("1_b", 2)):
        (tmp_path / folder).mkdir()
        for i in range(count):
            _noise(16 + 16 * (i % 2), 16, seed=i).save(tmp_path / folder / f"{i}.png")
    data = build_training_data(data_config(train_dir=str(tmp_path), resolution="32", min_bucket_reso=16,
                                           bucket_reso_steps=16, batch_size=2), (32, 32), 0, max_steps=10)  # fmt: skip
    return data.plan


def test_chunks_stay_on_the_calling_thread_while_fast_and_go_to_the_pool_once_slow():
    """Cached reads are Python work (threads only contend for the GIL); slow items, such as reads waiting on the disk,
    overlap on the pool. The results keep their order either way."""
    import threading
    import time

    from sdlora.data.records import CHUNK, map_chunks

    main = threading.get_ident()
    fast = map_chunks(lambda i: (i, threading.get_ident()), list(range(3 * CHUNK)), workers=4)
    assert [i for i, _ in fast] == list(range(3 * CHUNK)) and {t for _, t in fast} == {main}

    def slow(i):
        time.sleep(0.0002)  # over the 100 µs an item of a fast chunk
        return i, threading.get_ident()

    mixed = map_chunks(slow, list(range(3 * CHUNK)), workers=4)
    assert [i for i, _ in mixed] == list(range(3 * CHUNK))
    assert {t for _, t in mixed[:CHUNK]} == {main} and main not in {t for _, t in mixed[CHUNK:]}
    single = map_chunks(slow, list(range(2 * CHUNK)), workers=1)
    assert {t for _, t in single} == {main}
