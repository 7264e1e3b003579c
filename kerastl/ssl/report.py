"""How SSL runs are reported: TorchSSL's best accuracy, the final one, FixMatch's median."""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure

MAX_CLASS_LINES = 20  # more classes are drawn as a band (one line each would be unreadable)


def error_summary(accuracies: list[float]) -> dict[str, float]:
    """Test error in % from the accuracies of successive evaluations.

    `test_error_best` (TorchSSL: best accuracy seen), `test_error_final` (last evaluation)
    and `test_error_median_last20` (official FixMatch: median of the last 20 evaluations).

    Example:
    >>> error_summary([0.5, 0.9, 0.8])
    {'test_error_best': 10.0, 'test_error_final': 20.0, 'test_error_median_last20': 20.0}
    """
    acc = np.asarray(accuracies, dtype=np.float64)
    if acc.size == 0:
        raise ValueError("no evaluations to summarise")
    return {"test_error_best": round(100.0 * (1.0 - acc.max()), 4),
            "test_error_final": round(100.0 * (1.0 - acc[-1]), 4),
            "test_error_median_last20": round(100.0 * (1.0 - float(np.median(acc[-20:]))), 4)}


def plot_learning(history: dict, steps_per_eval, path: str, title: str = "") -> str:
    """Two panels: test accuracy over iterations, and each class's learning effect (CPL's
    `classwise_acc`) over iterations when the history has it (beyond `MAX_CLASS_LINES`
    classes: their median and 10-90 % band). `steps_per_eval`: the iterations between
    evaluations, or the list of iterations at which they were made."""
    plt = pyplot()

    curriculum = history.get("classwise_acc")
    fig, axes = plt.subplots(1, 2 if curriculum else 1, figsize=(11 if curriculum else 5.5, 3.8), squeeze=False)
    accuracy = history.get("val_accuracy", [])
    steps = (list(steps_per_eval) if isinstance(steps_per_eval, (list, tuple))
             else [steps_per_eval * (i + 1) for i in range(len(accuracy))])
    axes[0, 0].plot(steps, [100 * a for a in accuracy], marker="o", markersize=3)
    axes[0, 0].set(xlabel="iteration", ylabel="test accuracy (%)", title="test accuracy (EMA model)")
    axes[0, 0].grid(alpha=0.3)
    if curriculum:
        values = np.asarray(curriculum)
        if values.shape[1] <= MAX_CLASS_LINES:
            for c in range(values.shape[1]):
                axes[0, 1].plot(steps[:len(values)], values[:, c], label=str(c))
            axes[0, 1].legend(fontsize=7, ncol=2)
        else:  # e.g. ImageNet's 1,000 classes: the spread over classes, not one line each
            low, median, high = np.percentile(values, [10, 50, 90], axis=1)
            axes[0, 1].fill_between(steps[:len(values)], low, high, alpha=0.3, label="10-90 % of classes")
            axes[0, 1].plot(steps[:len(values)], median, label="median class")
            axes[0, 1].legend(fontsize=7)
        axes[0, 1].set(xlabel="iteration", ylabel="learning effect beta_c", ylim=(0, 1.05),
                       title="per-class learning effect (CPL)")
        axes[0, 1].grid(alpha=0.3)
    return save_figure(fig, path, title, dpi=100)
