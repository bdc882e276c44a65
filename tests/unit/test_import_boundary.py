"""The import boundary (docs/design.md §7): checking a config, ``--help``, ``--cfg job`` and ``dry_run=true`` import
neither Lightning nor diffusers nor transformers — nor torch, on a machine without a GPU and with the shipped optimizer
presets; they are imported when a model is loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.config import EXAMPLE_DATA, ROOT

HEAVY = ("lightning", "diffusers", "transformers", "torch")


# runs train.py as ``python train.py <args>`` would and prints the top-level modules loaded when it has finished
# (``sys.modules`` is exact; ``-X importtime`` can miss a package whose import began while another import was running)
PROBE = """
import runpy, sys
sys.argv = ["train.py", *sys.argv[1:]]
try:
    runpy.run_path("train.py", run_name="__main__")
except SystemExit:
    pass
finally:
    print("MODULES:" + ",".join(sorted({name.partition('.')[0] for name in sys.modules})))
"""


def imported_packages(*args: str) -> set[str]:
    """Top-level packages ``python train.py <args>`` imported."""
    result = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("MODULES:")]
    assert lines, result.stdout[-2000:] + result.stderr[-2000:]
    return set(lines[-1].removeprefix("MODULES:").split(","))


@pytest.mark.parametrize(
    "args",
    [
        ("--cfg", "job"),
        ("model=tiny", "data.train_dir=/no/such/folder"),  # a config error
        ("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", "dry_run=true"),
    ],
    ids=["cfg_job", "config_error", "dry_run"],
)
def test_no_heavy_imports_before_a_model_is_loaded(args, tmp_path):
    imported = imported_packages(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert not [name for name in HEAVY if name in imported]
    if args[1].startswith("data.train_dir=/no/such"):
        assert "numpy" not in imported  # a config error ends before the data modules are imported


def test_a_changed_optimizer_argument_is_still_checked_by_building_it(tmp_path):
    """Leaving the presets costs the torch import (the value check builds the optimizer), and finds the mistake."""
    args = ("model=tiny", f"data.train_dir={EXAMPLE_DATA}", "data.caption_extension=.txt", "dry_run=true",
            "optimizer.betas=[1.5,0.999]", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert "torch" in imported_packages(*args)
