"""Run ``python train.py`` the way a user does (a separate process, so Lightning can start the extra processes of a
distributed run by re-running the command line)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_train_py(args: list[str], run_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """``python train.py <args> hydra.run.dir=<run_dir>`` from the repository root (``env``: extra environment
    variables); asserts it succeeded without a traceback and returns its output."""
    result = subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output
