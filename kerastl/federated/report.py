"""Plots of a federated run: FedAP's client similarity matrix, per-client accuracy bars."""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure


def plot_similarity(matrix: np.ndarray, names: list[str], path: str) -> str:
    """Heatmap of FedAP's aggregation weights W (row i: what client i takes from each client)."""
    plt = pyplot()

    size = max(4.0, 0.35 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("from client j")
    ax.set_ylabel("client i")
    ax.set_title("FedAP aggregation weights W_ij")
    fig.colorbar(image, ax=ax)
    return save_figure(fig, path, dpi=110)


def plot_client_accuracy(accuracies: dict[str, list[float]], names: list[str], path: str) -> str:
    """Grouped bars: each client's test accuracy under each algorithm (mean in the legend)."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(names) * max(1, len(accuracies)) ** 0.5 + 3), 4))
    width = 0.8 / max(1, len(accuracies))
    positions = np.arange(len(names))
    for k, (algorithm, values) in enumerate(accuracies.items()):
        ax.bar(positions + k * width, values, width, label=f"{algorithm} (mean {np.mean(values):.3f})")
    ax.set_xticks(positions + 0.4 - width / 2, names, rotation=90, fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("per-client test accuracy at the best-validation round")
    return save_figure(fig, path, dpi=110)
