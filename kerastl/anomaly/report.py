"""How detections are reported: AMSL's metrics and the plots a person looks at.

`detection_metrics` gives accuracy, macro precision and recall over the two classes
{normal, abnormal} (`mpre`, `mrec`), two F1 scores and the threshold-free AUROC:

- `mf1`, the headline, as the AMSL paper and its evaluate.py compute it: the harmonic mean
  of macro precision and macro recall, 2 mpre mrec / (mpre + mrec);
- `macro_f1`: the mean of the per-class F1 scores (scikit-learn's macro F1). It is at most
  `mf1` and equal when both classes have the same precision / recall balance.

`plot_score_histograms` and `plot_roc_curves` write PNGs.

Example:
>>> m = detection_metrics(scores=[0.1, 0.2, 0.9, 0.3], is_abnormal=[0, 0, 1, 1], threshold=0.5)
>>> m["accuracy"], m["mpre"], m["mrec"], round(m["mf1"], 4), round(m["macro_f1"], 4), m["auroc"]
(0.75, 0.8333333333333333, 0.75, 0.7895, 0.7333, 1.0)
"""

from __future__ import annotations

import numpy as np

from kerastl.plots import pyplot, save_figure

METRIC_KEYS = ("accuracy", "mpre", "mrec", "mf1", "macro_f1", "auroc")


def detection_metrics(scores, is_abnormal, threshold: float) -> dict[str, float]:
    """Metrics of `score > threshold` as the anomaly decision, against `is_abnormal` (0/1):
    `METRIC_KEYS` (see the module docstring for the two F1 scores)."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    scores = np.asarray(scores, np.float64)
    truth = np.asarray(is_abnormal).astype(np.int64)
    if set(np.unique(truth)) != {0, 1}:
        raise ValueError("detection_metrics needs both normal (0) and abnormal (1) windows")
    predicted = (scores > threshold).astype(np.int64)
    precision, recall, f1, _ = precision_recall_fscore_support(truth, predicted, labels=[0, 1], average="macro",
                                                               zero_division=0)
    harmonic = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"accuracy": float(np.mean(predicted == truth)), "mpre": float(precision), "mrec": float(recall),
            "mf1": float(harmonic), "macro_f1": float(f1), "auroc": float(roc_auc_score(truth, scores))}


def plot_score_histograms(scores: dict[str, np.ndarray], is_abnormal, thresholds: dict[str, float], path: str,
                          title: str = "") -> str:
    """One panel per method: histograms of normal vs abnormal test scores and the threshold."""
    plt = pyplot()
    truth = np.asarray(is_abnormal).astype(bool)
    columns = min(3, len(scores))
    rows = -(-len(scores) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for ax, (method, values) in zip(axes.flat, scores.items()):
        values = np.asarray(values)
        bins = np.histogram_bin_edges(values, bins=40)
        ax.hist(values[~truth], bins=bins, alpha=0.6, label="normal", color="tab:blue")
        ax.hist(values[truth], bins=bins, alpha=0.6, label="abnormal", color="tab:red")
        ax.axvline(thresholds[method], color="black", linestyle="--", label="threshold")
        ax.set(title=method, xlabel="anomaly score", ylabel="test windows")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(scores):]:
        ax.axis("off")
    return save_figure(fig, path, title, dpi=100)


def plot_roc_curves(scores: dict[str, np.ndarray], is_abnormal, path: str, title: str = "") -> str:
    """ROC curves of every method on one axes, AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for method, values in scores.items():
        fpr, tpr, _ = roc_curve(is_abnormal, values)
        ax.plot(fpr, tpr, label=f"{method} (AUROC {roc_auc_score(is_abnormal, values):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title or "ROC, test windows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=100)
