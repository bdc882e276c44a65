"""The dataset tools (kohya_ss "Dataset Preparation"): folder preparation and balancing, on temporary folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from sdlora.data.folders import parse_folder_name
from sdlora.errors import SdloraError
from sdlora.tools.balance import apply_balance, balanced_repeats, plan_balance
from sdlora.tools.balance import main as balance_main
from sdlora.tools.prepare import main as prepare_main
from sdlora.tools.prepare import prepare_folders
from tests.helpers.config import ROOT


def _images(folder: Path, n: int, captions: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (16, 16), (i * 20 % 256, 0, 0)).save(folder / f"{i:02d}.png")
        if captions:
            (folder / f"{i:02d}.txt").write_text(f"caption {i}")
    return folder


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- prepare ----------------------------------------------------------------------------------------------------------


def test_prepare_creates_kohyas_layout(tmp_path):
    instance, reg = _images(tmp_path / "photos", 3), _images(tmp_path / "regs", 2, captions=False)
    (instance / "nested").mkdir()
    source_before = tree(instance)
    out = tmp_path / "out"
    plans = prepare_folders(out, instance, "sks", "dog", repeats=20, reg_dir=reg, reg_repeats=2)
    train_folder, reg_folder = out / "img" / "20_sks dog", out / "reg" / "2_dog"
    assert [p.target for p in plans] == [train_folder, reg_folder]
    assert sorted(p.name for p in train_folder.iterdir()) == [
        "00.png",
        "00.txt",
        "01.png",
        "01.txt",
        "02.png",
        "02.txt",
    ]
    assert sorted(p.name for p in reg_folder.iterdir()) == ["00.png", "01.png"]
    assert (out / "log").is_dir() and (out / "model").is_dir()
    assert tree(instance) == source_before  # sources are only read
    assert parse_folder_name(train_folder.name) == (20, "sks dog")
    assert not [p for p in out.rglob(".*")]  # no temporary folder left


def test_prepare_refuses_a_non_empty_target_unless_overwrite(tmp_path):
    instance = _images(tmp_path / "photos", 2)
    out = tmp_path / "out"
    prepare_folders(out, instance, "sks", "dog", repeats=5)
    target = out / "img" / "5_sks dog"
    (target / "stale.png").write_bytes(b"old")
    with pytest.raises(SdloraError, match=r"5_sks dog already exists and is not empty: pass --overwrite"):
        prepare_folders(out, instance, "sks", "dog", repeats=5)
    assert (target / "stale.png").exists()  # nothing deleted
    prepare_folders(out, instance, "sks", "dog", repeats=5, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["00.png", "00.txt", "01.png", "01.txt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"instance_dir": "missing"}, "--instance-dir="),
        ({"instance_prompt": " "}, "--instance-prompt must not be empty"),
        ({"repeats": 0}, "must be ≥ 1"),
        ({"reg_dir": "regs", "class_prompt": ""}, "--class-prompt is required with --reg-dir"),
        ({"instance_dir": "empty"}, "has no images"),
    ],
)
def test_prepare_bad_input(tmp_path, kwargs, message):
    _images(tmp_path / "photos", 1)
    _images(tmp_path / "regs", 1)
    (tmp_path / "empty").mkdir()
    args = {"instance_dir": "photos", "instance_prompt": "sks", "class_prompt": "dog", **kwargs}
    for key in ("instance_dir", "reg_dir"):
        if key in args:
            args[key] = tmp_path / args[key]
    with pytest.raises(SdloraError, match=message):
        prepare_folders(tmp_path / "out", **args)


def test_prepare_cli(tmp_path, capsys):
    instance = _images(tmp_path / "photos", 2)
    out = tmp_path / "out"
    code = prepare_main(
        ["--out", str(out), "--instance-dir", str(instance), "--instance-prompt", "ohwx", "--class-prompt", "man"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "40_ohwx man: 2 images" in printed and f"data.train_dir={out / 'img'}" in printed
    assert (
        prepare_main(
            ["--out", str(out), "--instance-dir", str(instance), "--instance-prompt", "ohwx", "--class-prompt", "man"]
        )
        == 1
    )
    assert "pass --overwrite" in capsys.readouterr().err


# --- balance ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "images", "multiplier", "expected"),
    [
        (100, 10, 1, 10),
        (100, 30, 1, 3),
        (100, 300, 1, 1),
        (100, 40, 1, 2),
        (100, 8, 1, 12),
        (100, 10, 2, 20),
        (100, 60, 1.5, 2),
    ],
)
def test_balanced_repeats(target, images, multiplier, expected):
    assert balanced_repeats(target, images, multiplier) == expected


@pytest.fixture
def concepts(tmp_path) -> Path:
    root = tmp_path / "data"
    _images(root / "5_dog", 10)
    _images(root / "1_cat", 25)
    _images(root / "{2}3_bird", 5)
    _images(root / "notes", 4)
    (root / "7_empty").mkdir()
    return root


def test_balance_plan_and_rename(concepts):
    plan = {r.folder.name: r for r in plan_balance(concepts, 100)}
    assert (plan["5_dog"].repeats, plan["5_dog"].new_name) == (10, "10_dog")
    assert (plan["1_cat"].repeats, plan["1_cat"].new_name) == (4, "4_cat")  # round(4.0)
    assert (plan["{2}3_bird"].repeats, plan["{2}3_bird"].new_name) == (40, "40_bird")  # 100/5 × 2
    assert plan["notes"].repeats is None and "--insecure" in plan["notes"].note
    assert plan["7_empty"].repeats is None and "no images" in plan["7_empty"].note
    apply_balance(list(plan.values()))
    assert sorted(p.name for p in concepts.iterdir()) == ["10_dog", "40_bird", "4_cat", "7_empty", "notes"]
    assert len(list((concepts / "10_dog").glob("*.png"))) == 10


def test_balance_insecure_includes_plain_folders(concepts):
    plan = {r.folder.name: r for r in plan_balance(concepts, 100, insecure=True)}
    assert plan["notes"].new_name == "25_notes"


def test_balance_swaps_and_collisions(tmp_path):
    root = tmp_path / "data"
    _images(root / "5_a", 2)  # → 50_a
    _images(root / "50_b", 50)  # → 2_b
    apply_balance(plan_balance(root, 100))
    assert sorted(p.name for p in root.iterdir()) == ["2_b", "50_a"]
    _images(root / "2_a", 50)  # 50_a (2 images) → 50_a unchanged; 2_a (50 images) → 2_a: fine
    _images(root / "9_b", 2)  # → 50_b … no clash; 2_b → 2_b
    plan = plan_balance(root, 100)
    assert {r.folder.name: r.new_name for r in plan} == {"2_a": "2_a", "2_b": "2_b", "50_a": "50_a", "9_b": "50_b"}
    _images(root / "3_c", 50)
    _images(root / "7_c", 50)  # both → 2_c: refused before anything is renamed
    with pytest.raises(SdloraError, match="would collide"):
        plan_balance(root, 100)
    assert (root / "3_c").is_dir() and (root / "7_c").is_dir()


def test_balance_cli_dry_run_renames_nothing(concepts, capsys):
    before = sorted(p.name for p in concepts.iterdir())
    assert balance_main([str(concepts), "--target", "100", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "5_dog" in out and "→ 10_dog" in out and "dry run: nothing renamed" in out
    assert sorted(p.name for p in concepts.iterdir()) == before
    assert balance_main([str(concepts / "missing"), "--target", "100"]) == 1


def test_scripts_are_thin_wrappers(concepts, tmp_path):
    for script in ("prepare_dataset.py", "balance_dataset.py"):
        result = subprocess.run(
            [sys.executable, f"scripts/{script}", "--help"], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0 and "usage:" in result.stdout
    result = subprocess.run(
        [sys.executable, "scripts/balance_dataset.py", str(concepts), "--target", "50"], cwd=ROOT, capture_output=True,
        text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (concepts / "5_dog").is_dir() and (concepts / "20_bird").is_dir()  # 5_dog stays (50/10 = 5)
