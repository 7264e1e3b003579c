"""PNG plots of training runs (matplotlib, headless)."""

from __future__ import annotations

import math


def plot_history(history: dict[str, list[float]], path: str, title: str = "") -> str:
    """One panel per metric (training and `val_` curves together), saved as PNG.

    Example:
    >>> plot_history(model.fit(...).history, "run/plots/history.png")   # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [k for k in history if not k.startswith("val_")]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in history]
    cols = min(3, max(1, len(names)))
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for key, style in ((name, "-"), (f"val_{name}", "--")):
            if key in history:
                values = history[key]
                ax.plot(range(1, len(values) + 1), values, style, marker="o", markersize=3, label=key)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
