"""Generate the tiny bundled example dataset (kohya folder layout) used by `make demo` and the tests.

Writes ``<out>/10_shapes/``: 12 flat-colour geometric scenes (circles, squares, triangles on plain or
gradient backgrounds) in mixed aspect ratios, each with a same-stem ``.txt`` caption of booru-style tags
whose first tag is the trigger word ``shapes``. Output is fully determined by ``--seed``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

FOLDER = "10_shapes"  # <repeats>_<class tokens>
TRIGGER = "shapes"
SS = 4  # supersampling factor for anti-aliasing
COLORS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (245, 215, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 220),
    "purple": (130, 50, 180),
    "pink": (245, 130, 190),
    "white": (245, 245, 240),
    "black": (25, 25, 30),
}
SHAPES = ("circle", "square", "triangle")
SIZES = [(128, 128), (160, 128), (128, 160), (192, 128), (128, 192), (128, 128)] * 2  # 12 images
JPEG_INDEX = 5  # this one is saved as .jpg so both formats are exercised


def background(rng: random.Random, w: int, h: int) -> tuple[Image.Image, list[str], set[str]]:
    """Plain or vertical-gradient background; returns image, caption tags and the colour names used."""
    if rng.random() < 0.5:
        name = rng.choice(list(COLORS))
        return Image.new("RGB", (w, h), COLORS[name]), [f"{name} background"], {name}
    top, bottom = rng.sample(list(COLORS), 2)
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    arr = (1 - t) * np.array(COLORS[top], np.float32) + t * np.array(COLORS[bottom], np.float32)
    arr = np.broadcast_to(arr, (h, w, 3)).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB"), ["gradient background", f"{top} to {bottom} gradient"], {top, bottom}


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif kind == "square":
        s = r * 0.9
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)], fill=fill)


def make_scene(rng: random.Random, w: int, h: int) -> tuple[Image.Image, str]:
    """One scene: 1-3 non-overlapping shapes laid out along the longer axis, each in its own slot."""
    bg, bg_tags, used = background(rng, w * SS, h * SS)
    draw = ImageDraw.Draw(bg)
    n = rng.choice((1, 2, 2, 3, 3))
    free = [c for c in COLORS if c not in used]
    colors, kinds = rng.sample(free, n), [rng.choice(SHAPES) for _ in range(n)]
    horizontal = w >= h
    long_side, short_side = (w, h) if horizontal else (h, w)
    slot = long_side / n
    tags = []
    for i, (kind, color) in enumerate(zip(kinds, colors, strict=True)):
        r = min(slot, short_side) * rng.uniform(0.28, 0.42)
        along = slot * (i + 0.5) + rng.uniform(-0.08, 0.08) * slot
        across = short_side / 2 + rng.uniform(-0.08, 0.08) * short_side
        cx, cy = (along, across) if horizontal else (across, along)
        draw_shape(draw, kind, cx * SS, cy * SS, r * SS, COLORS[color])
        tags.append(f"{color} {kind}")
    img = bg.resize((w, h), Image.Resampling.LANCZOS)
    return img, ", ".join([TRIGGER, *tags, *bg_tags])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("examples/data"), help="parent of the 10_shapes folder")
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--force", action="store_true", help="replace an existing non-empty target folder")
    args = ap.parse_args(argv)

    target = args.out / FOLDER
    if target.exists() and any(target.iterdir()):
        if not args.force:
            print(f"error: {target} exists and is not empty (use --force to replace it)", file=sys.stderr)
            return 1
        shutil.rmtree(target)
    target.mkdir(parents=True, exist_ok=True)

    rng = random.Random(args.seed)
    for i, (w, h) in enumerate(SIZES):
        img, caption = make_scene(rng, w, h)
        stem = target / f"{TRIGGER}_{i:02d}"
        if i == JPEG_INDEX:
            img.save(stem.with_suffix(".jpg"), quality=90, optimize=True)
        else:
            img.save(stem.with_suffix(".png"), optimize=True)
        stem.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        print(f"{stem.name}: {w}x{h}  {caption}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
