"""Shared fixtures: composing the real Hydra config, tiny models, temporary kohya datasets. Everything is offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may reach the Hugging Face hub

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
EXAMPLE_DATA = ROOT / "examples" / "data"


def compose_config(*overrides: str):
    """The real ``conf/train.yaml`` composed with ``overrides`` (as ``python train.py <overrides>`` would)."""
    from hydra import compose, initialize_config_dir

    import sdlora.config  # noqa: F401  (registers the schemas)

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def tiny_overrides(train_dir: Path | str, *extra: str, model: str = "tiny") -> list[str]:
    """Overrides for a short CPU run of a tiny model on ``train_dir`` (a few steps, every scalar logged)."""
    return [
        f"model={model}",
        f"data.train_dir={train_dir}",
        "data.caption_extension=.txt",
        "data.resolution=64",
        "data.min_bucket_reso=64",  # 64-px images also for model=sd15/sdxl loaded from tiny checkpoints
        "data.batch_size=2",
        "trainer.max_steps=4",
        "trainer.log_every_n_steps=1",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        *extra,
    ]


@pytest.fixture
def example_data(tmp_path: Path) -> Path:
    """A private copy of the bundled example dataset (tests may not touch ``examples/``)."""
    target = tmp_path / "data"
    shutil.copytree(EXAMPLE_DATA, target)
    return target


@pytest.fixture
def small_dataset(tmp_path: Path) -> Path:
    """A kohya folder with 4 small images of different sizes and .txt captions."""
    from PIL import Image

    folder = tmp_path / "small" / "2_tok"
    folder.mkdir(parents=True)
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    sizes = [(64, 64), (96, 64), (64, 96), (80, 80)]
    for i, (color, size) in enumerate(zip(colors, sizes, strict=True)):
        Image.new("RGB", size, color).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"tok, color {i}", encoding="utf-8")
    return folder.parent
