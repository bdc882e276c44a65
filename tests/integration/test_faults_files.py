"""Faults in files and places (through ``python train.py``): damaged training states and cache files, a full disk,
file names that are not UTF-8, a run folder inside the dataset, a huge caption file. One clear message, no
traceback, nothing partial or non-finite left, the dataset folder untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from sdlora.network.io import load_lora
from sdlora.sweep.record import read_record
from tests.helpers.cli import assert_clean_failure, run_cli, run_train_py
from tests.helpers.config import ROOT, tiny_overrides
from tests.helpers.datasets import write_small_dataset
from tests.helpers.processes import run_python


def tree_digest(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder`` with its bytes' SHA-256 (folders: "dir")."""
    return {
        str(p.relative_to(folder)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
    }


# --- training states --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_with_states(tmp_path_factory) -> tuple[list[str], Path]:
    """A 3-step run with a state after every step, trained once for the module; the arguments without the step
    limit."""
    dataset = write_small_dataset(tmp_path_factory.mktemp("data"))
    args = [a for a in tiny_overrides(dataset, "save.state=true", "save.every_n_steps=1") if "max_steps" not in a]
    run_dir = tmp_path_factory.mktemp("states") / "run"
    run_train_py([*args, "trainer.max_steps=3"], run_dir)
    return args, run_dir


@pytest.fixture
def run_with_states(trained_with_states, tmp_path) -> tuple[list[str], Path]:
    """A copy of the module's run, for one test to damage."""
    args, trained = trained_with_states
    shutil.copytree(trained, tmp_path / "run")
    return args, tmp_path / "run"


@pytest.mark.xdist_group("damaged_states")  # one worker, so the run above is trained once
@pytest.mark.parametrize(
    ("damage", "file"),
    [
        ("truncate", "training_state.pt"),
        ("empty", "training_state.pt"),
        ("truncate", "state.json"),
        ("delete", "lora.safetensors"),
        ("flip", "lora.safetensors"),
    ],
)
def test_a_damaged_state_is_one_message_and_resume_falls_back(run_with_states, tmp_path, damage, file):
    args, run_dir = run_with_states
    newest = run_dir / "last-state"
    path = newest / file
    data = path.read_bytes()
    if damage == "delete":
        path.unlink()
    elif damage == "flip":  # one bit inside the tensor data, the header intact
        path.write_bytes(data[:-9] + bytes([data[-9] ^ 0x10]) + data[-8:])
    else:
        path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"")
    result, out = run_cli(tmp_path / "direct", *args, f"resume={newest}", "trainer.max_steps=4")
    assert_clean_failure(result, out, f"resume='{newest}' cannot be used", file)
    # the run folder: the newest intact state is used instead, and the damaged one is named
    output = run_train_py([*args, f"resume={run_dir}", "trainer.max_steps=4"], tmp_path / "fallback")
    assert "skipped the damaged state last-state" in output
    assert f"Resuming from {run_dir / 'last-step00000003-state'}" in output


# --- cache files ------------------------------------------------------------------------------------------------------


def test_an_overwritten_cache_file_is_recomputed_and_said(small_dataset, tmp_path):
    cache = tmp_path / "cache"
    args = tiny_overrides(small_dataset, "data.cache_latents=disk", f"data.cache_dir={cache}")
    run_train_py(args, tmp_path / "first")
    victim = sorted((cache / "latents").glob("*.safetensors"))[0]
    data = bytearray(victim.read_bytes())
    data[-64:] = torch.full((16,), float("nan")).numpy().tobytes()  # the header stays intact
    victim.write_bytes(bytes(data))
    output = run_train_py(args, tmp_path / "second")
    assert "did not match their checksum" in output and str(victim) in output
    first, _ = load_lora(tmp_path / "first" / "last.safetensors")
    second, _ = load_lora(tmp_path / "second" / "last.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)


# --- a full disk ------------------------------------------------------------------------------------------------------

FULL_DISK = """
import errno, os, safetensors.torch
_save, _calls = safetensors.torch.save_file, [0]
def save_file(tensors, filename, metadata=None):
    _calls[0] += 1
    if _calls[0] > int(os.environ["SDLORA_TEST_DISK_FULL_AFTER"]):
        with open(filename, "wb") as f:
            f.write(b"\\0" * 100)  # part of the file, then the device is full
        raise OSError(errno.ENOSPC, "No space left on device")
    return _save(tensors, filename, metadata=metadata)
safetensors.torch.save_file = save_file
"""


def test_a_full_disk_is_one_message_naming_the_last_state(small_dataset, tmp_path):
    """The disk fills up after 4 successful writes (two step files and their states)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(FULL_DISK)
    env = {**os.environ, "PYTHONPATH": f"{hook}:{ROOT}", "SDLORA_TEST_DISK_FULL_AFTER": "4"}
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    overrides = tiny_overrides(small_dataset, "save.state=true", "save.every_n_steps=1", f"hydra.run.dir={run_dir}")
    result = subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert "no space left on the device" in output and "last-step00000003.safetensors" in output
    assert f"The last good training state is {run_dir / 'last-step00000002-state'}" in output
    assert not [p for p in run_dir.rglob(".*tmp-*")]
    for path in run_dir.rglob("*.safetensors"):
        load_lora(path)  # every visible file is whole
    assert read_record(run_dir)["status"] == "failed"


# --- names, places, sizes ---------------------------------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_is_skipped_with_a_warning(small_dataset, tmp_path):
    folder = small_dataset / "2_tok"
    bad = os.fsdecode(bytes(folder) + b"/caf\xe9.png")  # latin-1 é: not UTF-8
    Image.new("RGB", (64, 64), (9, 9, 9)).save(bad)
    output = run_train_py(tiny_overrides(small_dataset, "trainer.max_steps=1"), tmp_path / "run")
    assert "caf\\xe9.png: its file name is not valid UTF-8" in output
    plan = json.loads((tmp_path / "run" / "data_plan.json").read_text(encoding="utf-8"))
    assert plan["num_images"] == 4 and any("caf\\xe9.png" in w for w in plan["warnings"])


def test_a_run_folder_inside_the_dataset_is_refused_and_leaves_it_untouched(small_dataset, tmp_path):
    before = tree_digest(small_dataset)
    overrides = tiny_overrides(small_dataset, f"hydra.run.dir={small_dataset}/2_tok/runs/x")
    result = run_python(["train.py", *overrides], timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "is inside the image folder data.train_dir" in output
    assert tree_digest(small_dataset) == before


def test_a_huge_caption_file_is_cut_and_the_metadata_stays_small(small_dataset, tmp_path):
    tags = ", ".join(f"tag{i}" for i in range(400_000))  # about 3.6 MB on one line
    (small_dataset / "2_tok" / "img0.txt").write_text(tags, encoding="utf-8")
    output = run_train_py(tiny_overrides(small_dataset, "trainer.max_steps=1"), tmp_path / "run")
    assert "longer than data.max_caption_bytes=65536 and were cut" in output
    path = tmp_path / "run" / "last.safetensors"
    _, metadata = load_lora(path)
    assert path.stat().st_size < 1_000_000
    assert max(len(t) for t in json.loads(metadata["ss_tag_frequency"]).values()) <= 1000
