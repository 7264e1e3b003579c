"""Detection metrics on hand-computed examples, and the plots."""

import os

import numpy as np
import pytest

from kerastl.anomaly.report import detection_metrics, plot_roc_curves, plot_score_histograms


def test_metrics_by_hand():
    # truth:      N    N    N    A    A
    # predicted:  N    A    N    A    N      (threshold 0.5)
    scores = [0.1, 0.6, 0.2, 0.9, 0.4]
    truth = [0, 0, 0, 1, 1]
    m = detection_metrics(scores, truth, threshold=0.5)
    # normal: precision 2/3, recall 2/3; abnormal: precision 1/2, recall 1/2.
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["mpre"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["mrec"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["mf1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # AUROC: of the 6 (abnormal, normal) pairs, the abnormal score is higher in 5.
    assert m["auroc"] == pytest.approx(5 / 6)
    assert set(m) == {"accuracy", "mpre", "mrec", "mf1", "auroc"}


def test_everything_flagged_gives_half_macro_recall():
    m = detection_metrics([1.0, 2.0, 3.0, 4.0], [0, 0, 1, 1], threshold=0.0)
    assert (m["accuracy"], m["mrec"], m["mpre"]) == (0.5, 0.5, 0.25)
    with pytest.raises(ValueError, match="both normal"):
        detection_metrics([1.0, 2.0], [0, 0], 0.5)


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    truth = np.array([0] * 50 + [1] * 50)
    scores = {"amsl": rng.normal(size=100) + truth, "ocsvm": rng.normal(size=100)}
    hist = plot_score_histograms(scores, truth, {"amsl": 0.5, "ocsvm": 1.0}, str(tmp_path / "h.png"), "t")
    roc = plot_roc_curves(scores, truth, str(tmp_path / "r.png"))
    assert os.path.getsize(hist) > 5000 and os.path.getsize(roc) > 5000
