"""A synthetic kohya-layout dataset of small images for the scaling benchmarks (nothing here is sdlora code).

``make_dataset(root, n)`` writes ``n`` images: 80 % training images in four ``<repeats>_<tokens>`` folders under
``root/train`` and 20 % regularisation images in ``root/reg/1_person``. Images are 48–96 px in seven aspect ratios
(1:1, 4:3, 3:4, 3:2, 2:3, 16:9, 9:16), PNG and JPEG in turn; each file is different (colours and noise follow its
index) and file lengths vary — though small files have few lengths to choose from: of 100k, 88k share their length
and size with another (photos rarely do). Nine in ten training images have a ``.txt`` caption of a few tags; the
others fall back to their folder's class tokens. A finished dataset is marked with ``.complete`` and reused.

    python benchmarks/make_dataset.py /tmp/sdlora_bench/10000 --images 10000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(64, 64), (80, 60), (60, 80), (96, 64), (64, 96), (96, 54), (54, 96)]
TRAIN_FOLDERS = ["10_sks woman", "5_sks dog", "3_style", "1_misc"]
REG_FOLDER = "1_person"
TAGS = ["portrait", "outdoors", "smiling", "red hair", "studio light", "bokeh", "sitting", "from side", "night"]


def _image(index: int) -> Image.Image:
    """A gradient in colours that follow ``index``, with ``index``-seeded noise on a part of it whose height varies,
    so that files differ in content and in length."""
    w, h = SIZES[index % len(SIZES)]
    base = np.array([index % 251, (index // 251) % 253, (index // 63_253) % 255], dtype=np.float32)
    ramp = np.linspace(0, 60, w, dtype=np.float32)[None, :, None]
    pixels = (base + ramp + np.zeros((h, 1, 1), np.float32)) % 256  # [H, W, 3]
    rows = 1 + index % (h - 1)
    noise = np.random.default_rng(index).integers(0, 48, (rows, w, 3))
    pixels[:rows] = (pixels[:rows] + noise) % 256
    return Image.fromarray(pixels.astype(np.uint8))


def _caption(index: int) -> str:
    return ", ".join(TAGS[(index + k * 3) % len(TAGS)] for k in range(1 + index % 4))


def make_dataset(root: Path, n: int) -> Path:
    """Write (or reuse) ``n`` images under ``root`` (see the module docstring); returns ``root``."""
    root = Path(root)
    if (root / ".complete").is_file() and (root / ".complete").read_text() == str(n):
        return root
    n_reg = n // 5
    folders = [root / "train" / name for name in TRAIN_FOLDERS] + [root / "reg" / REG_FOLDER]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        reg = i >= n - n_reg
        folder = folders[-1] if reg else folders[i % len(TRAIN_FOLDERS)]
        suffix = ".png" if (i // len(TRAIN_FOLDERS)) % 2 == 0 else ".jpg"
        _image(i).save(folder / f"{i:07d}{suffix}", **({"quality": 90} if suffix == ".jpg" else {}))
        if not reg and i % 10:
            (folder / f"{i:07d}.txt").write_text(_caption(i))
    (root / ".complete").write_text(str(n))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()
    print(make_dataset(args.root, args.images))


if __name__ == "__main__":
    main()
