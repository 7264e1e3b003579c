"""Plots a person would rather look at than read: the TDC segmentation, the forecast on the
test period, the learned importance weights, and (classification) the confusion matrix.

Example:
>>> plot_segmentation(series.time, series.values[:, 0], segmentation, split, "plots/tdc.png")  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure


def plot_segmentation(time, target, boundaries, split, path: str, title: str = "", label: str = "target") -> str:
    """The target series with the K training segments shaded and the validation / test periods marked."""
    plt = pyplot()
    axis_x = np.asarray(time) if time is not None else np.arange(len(target))
    figure, axis = plt.subplots(figsize=(11, 3.6))
    axis.plot(axis_x, target, linewidth=0.5, color="0.25")
    colours = plt.get_cmap("tab10")
    for k, (start, end) in enumerate(zip(boundaries[:-1], boundaries[1:])):
        axis.axvspan(axis_x[start], axis_x[end - 1], color=colours(k % 10), alpha=0.18,
                     label=f"segment {k + 1}")
    for name, start, end in (("validation", split.train_end, split.valid_end), ("test", split.valid_end, split.length)):
        axis.axvspan(axis_x[start], axis_x[end - 1], facecolor="none", edgecolor="black", hatch="//" if
                     name == "test" else "..", linewidth=0.0, label=name)
    axis.set_ylabel(label)
    axis.set_title(title or "TDC segmentation of the training period")
    axis.legend(loc="upper left", fontsize=7, ncol=6)
    figure.autofmt_xdate()
    return save_figure(figure, path, dpi=110)


def plot_forecast(time, truth, prediction, path: str, baseline=None, title: str = "", label: str = "target") -> str:
    """Prediction vs truth on the test period (and the persistence baseline, if given)."""
    plt = pyplot()
    axis_x = np.asarray(time) if time is not None else np.arange(len(truth))
    figure, axis = plt.subplots(figsize=(11, 3.6))
    axis.plot(axis_x, truth, linewidth=0.8, color="black", label="truth")
    if baseline is not None:
        axis.plot(axis_x, baseline, linewidth=0.6, color="tab:gray", alpha=0.7, label="persistence")
    axis.plot(axis_x, prediction, linewidth=0.8, color="tab:red", label="forecast")
    axis.set_ylabel(label)
    axis.set_title(title or "test period: forecast vs truth")
    axis.legend(loc="upper left", fontsize=8)
    figure.autofmt_xdate()
    return save_figure(figure, path, dpi=110)


def plot_importance_weights(weights, path: str, gate_weights=None, title: str = "") -> str:
    """The TDM importance weights W[layer, time step] (and the gates' weights it started from)."""
    plt = pyplot()
    weights = np.asarray(weights)
    rows = 2 if gate_weights is not None else 1
    figure, axes = plt.subplots(rows, 1, figsize=(9, 2.2 + 1.6 * rows), squeeze=False)
    panels = [("importance weights W (after boosting)", weights)]
    if gate_weights is not None:
        panels.append(("gate weights (last pre-training batch)", np.asarray(gate_weights)))
    for axis, (name, values) in zip(axes[:, 0], panels):
        for layer, row in enumerate(values):
            axis.plot(np.arange(1, len(row) + 1), row, marker="o", markersize=3, label=f"layer {layer + 1}")
        axis.axhline(1.0 / values.shape[1], color="0.6", linestyle="--", linewidth=0.8, label="uniform")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("time step in the window")
        axis.legend(fontsize=7)
    return save_figure(figure, path, title or "temporal distribution matching", dpi=110)


def plot_confusion_matrix(matrix, class_names, path: str, title: str = "") -> str:
    """The test confusion matrix: counts, shaded by the share of each true class (row)."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.55 * len(class_names)
    figure, axis = plt.subplots(figsize=(size + 1.2, size))
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=8,
                  color="white" if shares[row, column] > 0.5 else "black")
    ticks = np.arange(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    return save_figure(figure, path, title or "test confusion matrix", dpi=110)
