"""The loss and learning-rate charts of a run's panel, drawn as pictures with matplotlib (one line per TensorBoard
tag). Not Gradio's LinePlot: in Gradio 6 a LinePlot updated while a run writes new tags and steps kept drawing the
first value it got (its colour scale and points), so a chart of a run that had just started stayed empty."""

from __future__ import annotations

import functools
import io
from typing import Any

Series = tuple[tuple[str, tuple[tuple[int, float], ...]], ...]  # (tag, ((step, value), ...)), ...


def series(scalars: dict[str, list[tuple[int, float, float]]], prefix: str) -> Series:
    """The scalars whose tag starts with ``prefix`` (``loss/``, ``lr/``; not ``loss/epoch``), steps counted from 1."""
    return tuple(
        (tag, tuple((step + 1, value) for step, value, _ in sorted(points)))
        for tag, points in sorted(scalars.items())
        if tag.startswith(prefix) and tag != "loss/epoch" and points
    )


@functools.lru_cache(maxsize=16)  # the page asks every few seconds; a chart is drawn again only when it changed
def chart(title: str, lines: Series) -> Any:
    """A PIL picture of ``lines`` (None when there is nothing to draw or matplotlib is missing)."""
    if not lines:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.0), dpi=100)
    for tag, points in lines:
        steps, values = zip(*points, strict=True)
        ax.plot(steps, values, label=tag, marker="." if len(points) < 30 else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return picture(fig)


def picture(fig) -> Any:
    """A matplotlib figure as an RGB PIL image (the figure is closed)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
