"""The suite's own set-up: ``--dist loadgroup`` (pyproject's addopts) must keep the tests of one ``xdist_group`` on one
worker. The DDP, FSDP and parallel-sweep tests rely on it (each starts several training processes; two at once
overload a small machine), and modules that train once for many tests (``test_network_types_train``, the damaged
states of ``test_faults_files``) would train once per worker. pytest 9.2 broke it without an error
(pytest-dev/pytest-xdist#1386)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GROUPED = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("i", range(6))
def test_reports_its_worker(i):
    print(f"worker={os.environ['PYTEST_XDIST_WORKER']}")
"""


def test_tests_of_one_xdist_group_run_on_one_worker(tmp_path: Path):
    (tmp_path / "test_grouped.py").write_text(GROUPED, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-n", "2", "--dist", "loadgroup",
         "-v", "-s", "--rootdir", str(tmp_path), str(tmp_path / "test_grouped.py")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    workers = re.findall(r"\[(gw\d+)\] .*PASSED", result.stdout)
    assert len(workers) == 6, result.stdout[-3000:]
    assert len(set(workers)) == 1, f"the group was spread over {sorted(set(workers))}"
