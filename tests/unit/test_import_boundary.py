"""The import boundary (docs/design.md §7): checking a config, ``--help``, ``--cfg job`` and ``dry_run=true`` import
neither Lightning nor diffusers nor transformers; they are imported when a model is loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.config import EXAMPLE_DATA, ROOT

HEAVY = ("lightning", "diffusers", "transformers")


def imported_packages(*args: str) -> set[str]:
    """Top-level packages ``python -X importtime train.py <args>`` imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", "train.py", *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert lines, result.stderr[-2000:]
    return {line.rsplit("|", 1)[-1].strip() for line in lines}


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
