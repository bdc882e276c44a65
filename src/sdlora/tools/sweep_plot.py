"""``sweep.png``: one bar per job of a sweep — its best ``val/loss`` (or final train loss where the sweep has no
validation loss); the best job highlighted, failed jobs marked. Drawn with matplotlib's Agg backend (no display)."""

from __future__ import annotations

from pathlib import Path

from sdlora.errors import SdloraError
from sdlora.utils.atomic import atomic_write


def _short(override: str) -> str:
    """``network.rank=16`` → ``rank=16``, ``optimizer.lr=0.000112076`` → ``lr=0.0001121`` (short tick labels)."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
        value = value if number.is_integer() else f"{number:.4g}"
    except ValueError:
        pass
    return f"{key.rsplit('.', 1)[-1]}={value}" if value else key


def _label(row) -> str:
    parts = [_short(o) for o in row.shown_overrides]
    text = "\n".join(parts[:4]) + ("\n…" if len(parts) > 4 else "")
    return f"#{row.job}\n{text}" if row.job is not None else text or row.folder.name[:20]


def plot_sweep(summary, path: Path) -> Path:
    """Draw the sweep's bars into ``path`` (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SdloraError("sweep.png needs matplotlib: pip install -e '.[sweep]' (or pass --no-plot)") from None

    rows, best = summary.rows, summary.best
    scores = [row.score if row.status == "completed" else None for row in rows]
    known = [s for s in scores if s is not None]
    width = max(6.0, 1.1 * len(rows) + 2)
    fig, ax = plt.subplots(figsize=(width, 5), dpi=100)
    try:
        positions = range(len(rows))
        colors = ["tab:green" if row is best else "tab:blue" for row in rows]
        ax.bar(positions, [s if s is not None else 0.0 for s in scores], color=colors)
        floor = min(known) * 0.98 if known else 0.0
        for x, (row, score) in enumerate(zip(rows, scores, strict=True)):
            if score is None:
                ax.text(x, floor, row.status or "no result", color="tab:red", ha="center", va="bottom", rotation=90)
            else:
                ax.text(x, score, f"{score:.5g}", ha="center", va="bottom", fontsize=8)
        if known:
            top = max(known)
            ax.set_ylim(floor, top + (top - floor) * 0.15 + 1e-12)
        ax.set_xticks(list(positions), [_label(row) for row in rows], fontsize=7)
        ax.set_ylabel(summary.metric_name)
        ax.set_title(f"{summary.folder.name}: {summary.metric_name} per job (best in green)")
        fig.tight_layout()
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
    return path
