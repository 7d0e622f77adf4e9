"""Pictures of a run: training and validation curves from the metrics history."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """One panel per quantity (loss, nce, mse, acc, ...): training rows as lines over
    steps, validation rows as markers. Written with matplotlib's Agg backend."""
    from ..errors import require

    matplotlib = require("matplotlib", "plotting training curves")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    quantities = sorted({k.split("_", 1)[1] for row in history for k in row
                         if k.startswith(("train_", "valid_"))})
    if not quantities:
        raise ValueError("nothing to plot: the history has no train_ or valid_ values")
    cols = min(3, len(quantities))
    rows = -(-len(quantities) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, quantities):
        for split, style in (("train", "-"), ("valid", "o-")):
            points = [(r["step"], r[f"{split}_{name}"]) for r in history if f"{split}_{name}" in r]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, style, label=split, markersize=4)
        ax.set_title(name)
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        ax.legend()
    for ax in list(axes.flat)[len(quantities):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
