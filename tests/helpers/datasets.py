"""Small kohya datasets written for a test (never inside ``examples/``)."""

from __future__ import annotations

from pathlib import Path


def write_small_dataset(root: Path) -> Path:
    """A kohya folder under ``root`` with 4 small images of different sizes and .txt captions; its path."""
    from PIL import Image

    folder = root / "small" / "2_tok"
    folder.mkdir(parents=True)
    colors = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
    sizes = [(64, 64), (96, 64), (64, 96), (80, 80)]
    for i, (color, size) in enumerate(zip(colors, sizes, strict=True)):
        Image.new("RGB", size, color).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"tok, color {i}", encoding="utf-8")
    return folder.parent
