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
    # Per-class F1 = 2/3 and 1/2: their mean is macro_f1; mf1 (the AMSL paper's) is the harmonic
    # mean of mpre and mrec, here equal because each class has precision = recall.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["mf1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # AUROC: of the 6 (abnormal, normal) pairs, the abnormal score is higher in 5.
    assert m["auroc"] == pytest.approx(5 / 6)
    assert set(m) == {"accuracy", "mpre", "mrec", "mf1", "macro_f1", "auroc"}


def test_mf1_is_the_harmonic_mean_of_macro_precision_and_recall():
    # truth:      N    N    N    N    A    A
    # predicted:  N    N    N    A    A    A      (threshold 0.5)
    m = detection_metrics([0.1, 0.2, 0.3, 0.7, 0.8, 0.9], [0, 0, 0, 0, 1, 1], threshold=0.5)
    # normal: precision 3/3, recall 3/4; abnormal: precision 2/3, recall 2/2.
    mpre, mrec = (1 + 2 / 3) / 2, (3 / 4 + 1) / 2
    assert (m["mpre"], m["mrec"]) == (pytest.approx(mpre), pytest.approx(mrec))
    assert m["mf1"] == pytest.approx(2 * mpre * mrec / (mpre + mrec))          # 0.8484...
    f1_normal, f1_abnormal = 2 * 1 * 0.75 / 1.75, 2 * (2 / 3) * 1 / (5 / 3)     # 6/7, 4/5
    assert m["macro_f1"] == pytest.approx((f1_normal + f1_abnormal) / 2)       # 0.8285...
    assert m["macro_f1"] < m["mf1"]


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
