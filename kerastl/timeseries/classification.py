"""Window classification under temporal shift: the metrics of AdaRNN's UCI HAR table and its
gradient-boosted trees baseline.

Metrics (`classification_scores`), as the paper reports them (ACC, P, R, F1, AUC):
- `acc`: the share of windows whose most probable class is the true one;
- `precision`, `recall`, `f1`: macro averages of the per-class values (F1 is the mean of
  the per-class F1, not the harmonic mean of macro P and R), over the classes that occur in
  the truth or the predictions; a class never predicted has precision 0 (scikit-learn's
  `average="macro"`, `zero_division=0`);
- `auc`: one-vs-rest ROC AUC of each class's probability, averaged over the classes present
  in the truth (a class absent from the test windows has no AUC).

`WindowStatisticsGBT` is the LightGBM-style baseline: histogram gradient-boosted trees
(scikit-learn's `HistGradientBoostingClassifier`, 31 leaves as LightGBM's default) on
per-window statistics (`window_statistics`), the number of boosting rounds chosen on the
validation windows.

Example:
>>> scores = classification_scores([0, 0, 1, 2], [[0.8, 0.1, 0.1], [0.4, 0.5, 0.1],
...                                               [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
>>> scores["acc"], round(scores["f1"], 4), scores["auc"]
(0.75, 0.7778, 1.0)
>>> scores["confusion_matrix"]
[[1, 1, 0], [0, 1, 0], [0, 0, 1]]
"""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("acc", "precision", "recall", "f1", "auc")


def confusion_matrix(labels, predicted, num_classes: int) -> np.ndarray:
    """`[C, C]` counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (np.asarray(labels, np.int64), np.asarray(predicted, np.int64)), 1)
    return matrix


def _average_ranks(values: np.ndarray) -> np.ndarray:
    # 1-based ranks; tied values share the mean of their ranks.
    unique, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def binary_auc(is_positive, scores) -> float:
    """ROC AUC = P(score of a random positive > score of a random negative) (ties count 1/2),
    from the rank-sum (Mann-Whitney) statistic."""
    is_positive = np.asarray(is_positive, bool)
    positives, negatives = int(is_positive.sum()), int((~is_positive).sum())
    if not positives or not negatives:
        return float("nan")
    ranks = _average_ranks(np.asarray(scores, np.float64))
    return float((ranks[is_positive].sum() - positives * (positives + 1) / 2.0) / (positives * negatives))


def classification_scores(labels, probabilities, class_names=None) -> dict:
    """ACC, macro P / R / F1, one-vs-rest macro AUC (see the module docstring), the
    per-class values and the confusion matrix, for `labels` `[N]` and `probabilities` `[N, C]`."""
    labels = np.asarray(labels, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    num_classes = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    matrix = confusion_matrix(labels, predicted, num_classes)
    hits = np.diag(matrix).astype(np.float64)
    support, predicted_count = matrix.sum(axis=1), matrix.sum(axis=0)
    precision = np.divide(hits, predicted_count, out=np.zeros(num_classes), where=predicted_count > 0)
    recall = np.divide(hits, support, out=np.zeros(num_classes), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(num_classes),
                   where=precision + recall > 0)
    seen = (support > 0) | (predicted_count > 0)
    auc = np.array([binary_auc(labels == c, probabilities[:, c]) for c in range(num_classes)])
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    return {"acc": float(hits.sum() / max(len(labels), 1)), "precision": float(precision[seen].mean()),
            "recall": float(recall[seen].mean()), "f1": float(f1[seen].mean()),
            "auc": float(np.nanmean(auc)) if np.isfinite(auc).any() else float("nan"),
            "per_class": {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                                 "auc": None if np.isnan(auc[c]) else float(auc[c]), "support": int(support[c])}
                          for c, name in enumerate(names)},
            "confusion_matrix": matrix.tolist()}


def window_statistics(windows) -> np.ndarray:
    """Per-window features `[N, 8 * C + C * (C - 1) / 2]`: for each channel the mean, standard
    deviation, minimum, 25th / 50th / 75th percentile, maximum and mean absolute step
    (|x_t - x_{t-1}|), then the correlation of every pair of channels.

    Example:
    >>> window_statistics(np.arange(8.0).reshape(1, 4, 2)).shape
    (1, 17)
    """
    windows = np.asarray(windows, np.float64)
    quantiles = np.percentile(windows, [25, 50, 75], axis=1)  # [3, N, C]
    per_channel = [windows.mean(axis=1), windows.std(axis=1), windows.min(axis=1), *quantiles,
                   windows.max(axis=1), np.abs(np.diff(windows, axis=1)).mean(axis=1)]
    centred = windows - windows.mean(axis=1, keepdims=True)
    norms = np.sqrt((centred ** 2).sum(axis=1))  # [N, C]
    covariance = np.einsum("ntc,ntd->ncd", centred, centred)
    correlation = covariance / np.maximum(norms[:, :, None] * norms[:, None, :], 1e-12)
    upper = np.triu_indices(windows.shape[2], k=1)
    return np.concatenate([*per_channel, correlation[:, upper[0], upper[1]]], axis=1).astype(np.float32)


class WindowStatisticsGBT:
    """Gradient-boosted trees on `window_statistics` (the paper's LightGBM baseline).

    `fit(x, y, x_valid, y_valid)` grows up to `max_rounds` trees and keeps the number of rounds
    with the lowest validation log-loss (LightGBM's early stopping on a validation set);
    `predict_proba(x)` uses that many. The trees grow on `threads` OpenMP threads (default 1:
    on a busy 2-core machine, scikit-learn's default pool took 66 s for what one thread does
    in 5 s).

    Example:
    >>> model = WindowStatisticsGBT(max_rounds=50, seed=0).fit(x_train, y_train, x_valid, y_valid)  # doctest: +SKIP
    >>> model.predict_proba(x_test).shape                                                          # doctest: +SKIP
    (n_test, n_classes)
    """

    def __init__(self, max_rounds: int = 300, learning_rate: float = 0.1, max_leaf_nodes: int = 31, seed: int = 0,
                 threads: int = 1):
        self.max_rounds, self.learning_rate, self.max_leaf_nodes, self.seed = (max_rounds, learning_rate,
                                                                              max_leaf_nodes, seed)
        self.threads = threads
        self.best_rounds = None
        self.valid_log_loss = []

    def fit(self, x, y, x_valid, y_valid, num_classes: int | None = None) -> "WindowStatisticsGBT":
        from sklearn.ensemble import HistGradientBoostingClassifier
        from threadpoolctl import threadpool_limits

        self.num_classes = num_classes or int(max(np.max(y), np.max(y_valid))) + 1
        self.trees = HistGradientBoostingClassifier(max_iter=self.max_rounds, learning_rate=self.learning_rate,
                                                    max_leaf_nodes=self.max_leaf_nodes, early_stopping=False,
                                                    random_state=self.seed)
        with threadpool_limits(self.threads):
            self.trees.fit(window_statistics(x), np.asarray(y))
        rows = np.arange(len(y_valid))
        for probabilities in self._staged(x_valid):
            chosen = self._all_classes(probabilities)[rows, np.asarray(y_valid)]
            self.valid_log_loss.append(float(-np.log(np.maximum(chosen, 1e-15)).mean()))
        self.best_rounds = int(np.argmin(self.valid_log_loss)) + 1
        return self

    def _all_classes(self, probabilities):
        # Columns for the classes the training windows had; 0 for the others.
        full = np.zeros((len(probabilities), self.num_classes))
        full[:, self.trees.classes_] = probabilities
        return full

    def _staged(self, x):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(self.threads):
            yield from self.trees.staged_predict_proba(window_statistics(x))

    def predict_proba(self, x) -> np.ndarray:
        for rounds, probabilities in enumerate(self._staged(x), 1):
            if rounds == self.best_rounds:
                return self._all_classes(probabilities)
        raise RuntimeError("predict_proba before fit")
