"""The apps' figures: matplotlib on its file-only backend, and one way to save a figure.

Example:
>>> plt = pyplot()
>>> figure, ax = plt.subplots()
>>> save_figure(figure, "curve.png", title="loss")      # doctest: +SKIP
'curve.png'
"""

from __future__ import annotations


def pyplot():
    """`matplotlib.pyplot` on the Agg backend: files only, so apps run on servers without a display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str, title: str = "", dpi: int = 100) -> str:
    """Adds `title` (if any), lays the figure out, writes it to `path` and frees it."""
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    pyplot().close(figure)
    return path
