"""Run ``python train.py`` the way a user does (a separate process, so Lightning can start the extra processes of a
distributed run by re-running the command line). Runs to completion start from the pre-imported zygote
(``tests/helpers/processes.py``), and so do those started in the background that the test signals while they
train: the forked child is a process of its own, with Python's own signal handling."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

from tests.helpers.processes import ForkedProcess, run_python, start_python


def run_train_py(args: list[str], run_dir: Path, env: Mapping[str, str] | None = None) -> str:
    """``python train.py <args> hydra.run.dir=<run_dir>`` from the repository root (``env``: extra environment
    variables); asserts it succeeded without a traceback and returns its output."""
    result = run_python(["train.py", *args, f"hydra.run.dir={run_dir}"], env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    return output


def run_cli(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    run_dir = tmp_path / "run"
    result = run_python(["train.py", *overrides, f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"],
                        timeout=300)  # fmt: skip
    return result, run_dir


def assert_clean_failure(result: subprocess.CompletedProcess, run_dir: Path, *expected: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    for text in expected:
        assert text in output, output
    assert not list(run_dir.rglob("*.safetensors")), "no LoRA file may be written"
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output


def start_train_py(args: list[str], run_dir: Path, env: dict | None = None) -> subprocess.Popen | ForkedProcess:
    """Start ``python train.py <args> hydra.run.dir=<run_dir>`` in the background (output in ``process.stdout``)."""
    return start_python(["train.py", *args, f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"], env=env)


def wait_for(process: subprocess.Popen, folder: Path, pattern: str, timeout: float = 300) -> None:
    """Wait until a file matching ``pattern`` appears in ``folder`` (e.g. the first step's LoRA: training runs)."""
    import time

    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        if process.poll() is not None:
            raise AssertionError(f"train.py ended before {pattern} appeared:\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{pattern} did not appear in {folder} within {timeout} s")
        time.sleep(0.1)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    """The output of a background run once it ends (no traceback allowed)."""
    output, _ = process.communicate(timeout=timeout)
    assert "Traceback" not in output, output[-4000:]
    return output
