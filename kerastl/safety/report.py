"""Figures of a ReMoS run: ACC vs DIR per method, and what the slice keeps per layer.

The second figure is the paper's interpretability view: per sliced layer, the share of
weights kept, and the magnitude distribution of kept vs removed weights (ReMoS removes
large weights that the student's data does not exercise, unlike magnitude pruning).

Example:
>>> plot_acc_vs_dir({"finetune": (0.95, 0.61), "remos": (0.93, 0.05)}, "plots/acc_vs_dir.png")  # doctest: +SKIP
>>> plot_slice(teacher_kernels, masks, "plots/slice_layers.png")                                # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure


def plot_acc_vs_dir(results: dict[str, tuple[float, float]], path: str, title: str = "") -> str:
    """Scatter of test accuracy (x) against defect inheritance rate (y), one point per method."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5, 4))
    for method, (acc, dir_) in results.items():
        axis.scatter(100 * acc, 100 * dir_, s=50)
        axis.annotate(method, (100 * acc, 100 * dir_), textcoords="offset points", xytext=(5, 5))
    axis.set_xlabel("student accuracy (%)")
    axis.set_ylabel("defect inheritance rate (%)")
    axis.set_ylim(-5, 105)
    axis.set_title(title or "ACC vs DIR (right and low is better)")
    axis.grid(alpha=0.3)
    return save_figure(figure, path, dpi=100)


def slice_summary(kernels: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per layer: kept share, mean |w| of the kept and of the removed weights."""
    summary = {}
    for name, mask in masks.items():
        magnitude = np.abs(kernels[name])
        summary[name] = {
            "kept_share": float(mask.mean()),
            "kept_mean_abs": float(magnitude[mask].mean()) if mask.any() else None,
            "removed_mean_abs": float(magnitude[~mask].mean()) if (~mask).any() else None,
        }
    return summary


def short_layer_names(paths: list[str]) -> list[str]:
    """Layer paths without the leading components they all share (e.g. `backbone/`).

    Example:
    >>> short_layer_names(["backbone/layer_0/query", "backbone/pooled_dense"])
    ['layer_0/query', 'pooled_dense']
    """
    parts = [path.split("/") for path in paths]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return ["/".join(p[common:]) for p in parts]


def plot_slice(kernels: dict[str, np.ndarray], masks: dict[str, np.ndarray], path: str, title: str = "") -> str:
    """Per-layer kept share (bars) and the |w| distribution of kept vs removed weights."""
    names = list(masks)
    plt = pyplot()
    figure, (shares, histogram) = plt.subplots(1, 2, figsize=(12, max(4.0, 0.3 * len(names) + 1.5)),
                                               gridspec_kw={"width_ratios": [1, 1]})
    # Horizontal bars leave room for long layer paths (nested layers inside a backbone).
    shares.barh(range(len(names)), [100 * masks[n].mean() for n in names], color="tab:blue")
    shares.set_yticks(range(len(names)), short_layer_names(names), fontsize=7)
    shares.invert_yaxis()  # graph order, top to bottom
    shares.set_xlabel("weights kept (%)")
    shares.set_xlim(min(100 * masks[n].mean() for n in names) - 5, 100.5)
    shares.set_title("share kept per layer")
    kept = np.concatenate([np.abs(kernels[n])[masks[n]] for n in names])
    removed = np.concatenate([np.abs(kernels[n])[~masks[n]] for n in names])
    positive = np.concatenate([kept, removed])
    positive = positive[positive > 0]
    bins = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 40) if positive.size else 40
    # Each group sums to 1 (shares, not densities: log-spaced bins would distort densities).
    for values, label in ((kept, "kept"), (removed, "removed")):
        values = values[values > 0]
        if values.size:
            histogram.hist(values, bins=bins, alpha=0.6, label=f"{label} ({values.size})",
                           weights=np.full(values.size, 1.0 / values.size))
    histogram.set_xscale("log")
    histogram.set_xlabel("|w| (teacher)")
    histogram.set_ylabel("share of the group's weights")
    histogram.set_title("magnitude of kept and removed weights")
    histogram.legend()
    return save_figure(figure, path, title, dpi=100)
