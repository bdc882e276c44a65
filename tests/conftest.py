"""Shared fixtures: temporary kohya datasets. Helpers (configs, CLI runs, tiny networks) live in tests/helpers/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hugging Face hub
# One torch thread per test process (and the train.py processes tests start): xdist already runs one worker per core,
# and oversubscribed torch threads make tiny-model steps an order of magnitude slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests.helpers.config import EXAMPLE_DATA
from tests.helpers.datasets import write_small_dataset


@pytest.fixture
def example_data(tmp_path: Path) -> Path:
    """A private copy of the bundled example dataset (tests may not touch ``examples/``)."""
    target = tmp_path / "data"
    shutil.copytree(EXAMPLE_DATA, target)
    return target


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A kohya folder with 4 small images of different sizes and .txt captions."""
    return write_small_dataset(tmp_path)
