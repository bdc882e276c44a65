"""kohya's folder convention and caption files (docs/kohya.md §6.1–6.2; docs/design.md §3 pinned behaviour)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from sdlora.data.captions import caption_path, normalise_extension, read_caption
from sdlora.data.folders import IMAGE_EXTENSIONS, Subset, list_images, parse_folder_name, scan_subsets
from sdlora.data.records import scan_records
from sdlora.errors import SdloraError


def _image(path: Path, size=(16, 12), color=None) -> Path:
    """A flat image; its colour comes from its path so that no two test images are duplicates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        digest = hashlib.sha256(str(path).encode()).digest()
        color = (digest[0], digest[1], digest[2])
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP"}[path.suffix.lower()]
    Image.new("RGB", size, color).save(path, format=fmt)
    return path


# --- folder names -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("10_sks dog", (10, "sks dog")),
        ("1_x", (1, "x")),
        ("3_a_b_c", (3, "a_b_c")),  # the rest is kept with its underscores (kohya rejoins with "_")
        ("007_bond", (7, "bond")),
        ("2_", (2, "")),
        ("100_photo of sks, a man", (100, "photo of sks, a man")),
    ],
)
def test_parse_folder_name_valid(name, expected):
    assert parse_folder_name(name) == expected


@pytest.mark.parametrize("name", ["0_x", "00_x", "x_y", "abc", "10", "_10_x", "-1_x", "1.5_x", "", "²_x", "¹⁰_x"])
def test_parse_folder_name_ignored(name):
    # "²" is a digit for str.isdigit() but not for int(): such a name must be ignored, not crash the scan
    assert parse_folder_name(name) is None


# --- listing images ---------------------------------------------------------------------------------------------------


def test_image_extensions_are_kohyas():
    assert {".png", ".jpg", ".jpeg", ".webp", ".bmp"} == IMAGE_EXTENSIONS


def test_list_images_any_case_sorted_not_recursive(tmp_path):
    d = tmp_path / "5_cat"
    names = ["b.JPG", "a.png", "c.webp", "d.bmp", "e.Jpeg", "f.PNG", "g.jpeg", "h.WEBP"]
    for name in names:
        _image(d / name)
    (d / "x.gif").write_bytes(b"GIF89a")
    (d / "a.txt").write_text("caption")
    (d / "a.caption").write_text("caption")
    (d / "noext").write_text("x")
    (d / "folder.png").mkdir()  # a folder, not an image
    _image(d / "nested" / "deep.png")  # not recursive
    assert [p.name for p in list_images(d)] == sorted(names)


# --- scanning the root ------------------------------------------------------------------------------------------------


def test_scan_subsets(tmp_path):
    for name in ["10_sks dog", "2_cat", "0_zero", "x_y", "abc", "²_sq"]:
        (tmp_path / name).mkdir()
    (tmp_path / "3_not_a_folder.txt").write_text("files in the root are not subsets")
    subsets, warnings = scan_subsets(tmp_path)
    assert [(s.repeats, s.class_tokens, s.name) for s in subsets] == [
        (10, "sks dog", "10_sks dog"),
        (2, "cat", "2_cat"),
    ]
    assert all(s.directory.is_absolute() and not s.is_reg for s in subsets)
    assert subsets[0].directory == (tmp_path / "10_sks dog").resolve()
    assert len(warnings) == 4
    for name in ["0_zero", "x_y", "abc", "²_sq"]:
        assert sum(name in w for w in warnings) == 1
    assert all("ignored folder" in w for w in warnings)


def test_scan_subsets_relative_root_gives_absolute_directories(tmp_path, monkeypatch):
    (tmp_path / "data" / "4_dog").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    subsets, warnings = scan_subsets("data")
    assert warnings == []
    assert subsets[0].directory == (tmp_path / "data" / "4_dog").resolve()
    assert subsets[0].directory.is_absolute()


def test_scan_subsets_reg_flag_and_option_name(tmp_path):
    (tmp_path / "1_person").mkdir()
    subsets, _ = scan_subsets(tmp_path, option="data.reg_dir", is_reg=True)
    assert subsets == [Subset((tmp_path / "1_person").resolve(), 1, "person", True)]
    with pytest.raises(SdloraError, match=r"data\.reg_dir"):
        scan_subsets(tmp_path / "missing", option="data.reg_dir", is_reg=True)


def test_scan_subsets_not_recursive(tmp_path):
    (tmp_path / "group" / "10_dog").mkdir(parents=True)  # a kohya folder one level too deep
    with pytest.raises(SdloraError) as info:
        scan_subsets(tmp_path)
    assert "has no '<repeats>_<name>' subfolders" in str(info.value)


def test_missing_root_is_an_error_naming_it(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(SdloraError) as info:
        scan_subsets(missing)
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)
    assert "data.train_dir" in str(info.value)


def test_root_that_is_a_file_is_an_error_naming_it(tmp_path):
    file = tmp_path / "images.zip"
    file.write_bytes(b"PK")
    with pytest.raises(SdloraError) as info:
        scan_subsets(file)
    assert str(file) in str(info.value) and "is not a folder" in str(info.value)


def test_empty_root_is_an_error_naming_it(tmp_path):
    with pytest.raises(SdloraError) as info:
        scan_subsets(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "10_mysubject" in str(info.value)
    assert "holds" not in str(info.value)  # no loose images to mention


def test_root_with_loose_images_suggests_a_subfolder(tmp_path):
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.JPG")
    (tmp_path / "no_repeats").mkdir()
    with pytest.raises(SdloraError) as info:
        scan_subsets(tmp_path)
    message = str(info.value)
    assert "holds 2 images directly" in message
    assert str(tmp_path / "10_mysubject") in message


# --- captions ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "expected"), [(".txt", ".txt"), ("txt", ".txt"), (" .caption ", ".caption")])
def test_normalise_extension(given, expected):
    assert normalise_extension(given) == expected


def test_caption_path(tmp_path):
    image = tmp_path / "img.v2.png"
    assert caption_path(image, ".txt") == tmp_path / "img.v2.txt"
    assert caption_path(image, "caption") == tmp_path / "img.v2.caption"


def test_read_caption_first_line_stripped(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text("  sks dog, sitting on grass \t\nsecond line\nthird\n", encoding="utf-8")
    assert read_caption(image, ".txt") == "sks dog, sitting on grass"


def test_read_caption_crlf_and_unicode(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.txt").write_bytes("café, 日本語, ümlaut\r\nnext\r\n".encode())
    assert read_caption(image, ".txt") == "café, 日本語, ümlaut"


def test_read_caption_utf8_with_bom(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.caption").write_bytes(b"\xef\xbb\xbfa photo of sks\n")
    assert read_caption(image, ".caption") == "a photo of sks"


def test_read_caption_extension_without_dot(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text("with dot or without")
    assert read_caption(image, "txt") == read_caption(image, ".txt") == "with dot or without"


def test_read_caption_missing_file_is_none(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text("other extension")
    assert read_caption(image, ".caption") is None


def test_read_caption_empty_file(tmp_path):
    image = tmp_path / "a.png"
    (tmp_path / "a.txt").write_text("")
    assert read_caption(image, ".txt") == ""


def test_read_caption_invalid_utf8_is_an_error_naming_the_file(tmp_path):
    image = tmp_path / "a.png"
    bad = tmp_path / "a.txt"
    bad.write_bytes("caf\xe9 latin-1".encode("latin-1"))
    with pytest.raises(SdloraError) as info:
        read_caption(image, ".txt")
    assert str(bad) in str(info.value) and "UTF-8" in str(info.value)


# --- captions through the record scan ---------------------------------------------------------------------------------


def test_scan_records_captions_and_class_token_fallback(tmp_path):
    d = tmp_path / "3_sks dog"
    _image(d / "a.png")
    _image(d / "b.jpg")
    (d / "a.txt").write_text("a photo of sks dog\nignored")
    subsets, _ = scan_subsets(tmp_path)
    scan = scan_records(subsets, "txt", strict=False)
    by_name = {r.path.name: r for r in scan.records}
    assert by_name["a.png"].caption == "a photo of sks dog" and by_name["a.png"].has_caption_file
    assert by_name["b.jpg"].caption == "sks dog" and not by_name["b.jpg"].has_caption_file  # class tokens
    assert scan.images_per_subset == {d.resolve(): 2}
    assert scan.captions_per_subset == {d.resolve(): 1}
    (warning,) = scan.warnings  # the image without a caption file is named
    assert "1 image(s)" in warning and "b.jpg" in warning and "class tokens 'sks dog'" in warning
    assert "a.png" not in warning


def test_scan_records_caption_replaces_class_tokens(tmp_path):
    d = tmp_path / "1_ohwx man"
    _image(d / "a.png")
    (d / "a.caption").write_text("portrait")
    scan = scan_records(scan_subsets(tmp_path)[0], ".caption", strict=False)
    assert scan.records[0].caption == "portrait"  # nothing prepended


def test_warning_when_no_caption_files_but_txt_exist(tmp_path):
    d = tmp_path / "10_dog"
    for name in ["a", "b"]:
        _image(d / f"{name}.png")
        (d / f"{name}.txt").write_text("a dog")
    scan = scan_records(scan_subsets(tmp_path)[0], ".caption", strict=False)
    assert [r.caption for r in scan.records] == ["dog", "dog"]  # class tokens, the .txt files are not read
    (warning,) = scan.warnings
    assert "no .caption caption files" in warning and str(d.resolve()) in warning
    assert "data.caption_extension=.txt" in warning


def test_warning_when_no_caption_files_at_all(tmp_path):
    d = tmp_path / "10_dog"
    _image(d / "a.png")
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt", strict=False)
    (warning,) = scan.warnings
    assert "no .txt caption files" in warning and "class tokens" in warning
    assert "caption_extension=" not in warning  # nothing to suggest


def test_no_warning_per_subset_with_captions(tmp_path):
    with_captions, without = tmp_path / "1_a", tmp_path / "1_b"
    _image(with_captions / "x.png")
    (with_captions / "x.txt").write_text("x")
    _image(without / "y.png")
    scan = scan_records(scan_subsets(tmp_path)[0], ".txt", strict=False)
    assert len(scan.warnings) == 1 and str(without.resolve()) in scan.warnings[0]


def test_invalid_utf8_caption_stops_the_scan(tmp_path):
    d = tmp_path / "2_dog"
    _image(d / "a.png")
    (d / "a.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SdloraError, match=r"a\.txt"):
        scan_records(scan_subsets(tmp_path)[0], ".txt", strict=False)
