"""``data.resolution``: the training area as text, ``"512"`` (square) or ``"768,512"`` (W,H) [kohya: resolution]."""

from __future__ import annotations


def parse_resolution(value: str | int) -> tuple[int, int]:
    """``"512"`` → (512, 512), ``"768,512"`` or ``"768x512"`` → (768, 512); sides ≥ 64 and multiples of 8, else a
    ValueError saying so."""
    parts = [p.strip() for p in str(value).replace("x", ",").split(",")]
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or any(s < 64 or s % 8 for s in sizes):
        raise ValueError(f"data.resolution={value!r} must be 'N' or 'W,H' with sides ≥ 64 and multiples of 8")
    return sizes[0], sizes[-1]
