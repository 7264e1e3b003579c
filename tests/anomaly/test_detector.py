"""Detectors: PyOD shape, percentile threshold, bad input, export round trip, learning on real data."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from kerastl import InputError
from kerastl.anomaly import AMSLDetector, AnomalyDetector, detection_metrics
from kerastl.anomaly.protocol import load_anomaly_data

TINY = dict(epochs=1, batch_size=8, num_slots=8, filters=(4, 8), head_units=8)


class MeanDetector(AnomalyDetector):
    """Score = a window's mean: every number below is known."""

    name = "mean"

    def _fit(self, x):
        pass

    def _score(self, x):
        return x.mean(axis=(1, 2))


def test_threshold_is_the_requested_percentile_of_training_scores():
    x = np.arange(100, dtype="float32")[:, None, None] * np.ones((1, 4, 2), "float32")   # scores 0..99
    for percentile in (50.0, 90.0, 98.0):
        detector = MeanDetector(percentile=percentile).fit(x)
        assert detector.threshold_ == pytest.approx(np.percentile(np.arange(100), percentile))
        np.testing.assert_allclose(detector.train_scores_, np.arange(100))
        # The share of training windows flagged is 1 - percentile / 100.
        assert detector.predict(x).mean() == pytest.approx(1 - percentile / 100, abs=0.011)
    assert detector.predict(x).dtype == np.int64
    with pytest.raises(InputError, match="--percentile 100.0: expected a number strictly between 0 and 100"):
        MeanDetector(percentile=100.0)


def test_windows_of_another_shape_than_fitted_are_refused():
    # The checks themselves: tests/data/test_arrays.py.
    good = np.zeros((4, 10, 3), "float32")
    detector = MeanDetector().fit(good)
    with pytest.raises(InputError, match="mean windows: windows of shape"):
        detector.decision_function(np.zeros((2, 11, 3)))


def test_amsl_detector_threshold_and_export_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    raw = (rng.normal(size=(40, 16, 3)) * [1.0, 5.0, 0.1] + [0.0, 100.0, -3.0]).astype("float32")
    offset, scale = raw.min(axis=(0, 1)), np.ptp(raw, axis=(0, 1))
    scaled = (raw - offset) / scale
    # Two views keep the traced graph small; the app test exports the full six-view model.
    detector = AMSLDetector(seed=1, percentile=90.0, transformations=("negation",), **TINY).fit(scaled)
    assert detector.threshold_ == pytest.approx(np.percentile(detector.decision_function(scaled), 90.0), rel=1e-6)
    path = detector.export_scorer(str(tmp_path / "amsl" / "1"), offset, scale, metadata={"dataset": "toy"})
    served = tf.saved_model.load(path).signatures["serving_default"](windows=tf.constant(raw))
    np.testing.assert_allclose(served["score"].numpy(), detector.decision_function(scaled), rtol=1e-4)
    np.testing.assert_array_equal(served["is_anomaly"].numpy().astype(int), detector.predict(scaled))
    assert served["is_anomaly"].dtype == tf.bool and 2 <= served["is_anomaly"].numpy().sum() <= 6
    with open(os.path.join(path, "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["threshold"] == pytest.approx(detector.threshold_)
    assert facts["inputs"]["windows"]["shape"] == [None, 16, 3] and facts["dataset"] == "toy"


def test_amsl_beats_a_random_scorer_on_real_smartwatch_data():
    # Normal: internal / external rotation, trapezius extension, upright row; abnormal: pendulum,
    # abduction, forward elevation. Held-out recordings, windows of 1.28 s.
    data = load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=64, stride=64, seed=0)
    assert data.x_train.shape[1:] == (64, 6) and 0.3 < data.is_abnormal.mean() < 0.7
    detector = AMSLDetector(epochs=3, batch_size=32, num_slots=20, filters=(8, 16), seed=0).fit(data.x_train)
    metrics = detection_metrics(detector.decision_function(data.x_test), data.is_abnormal, detector.threshold_)
    # Measured on this machine: AUROC 0.906, mRec 0.652 (a random scorer: 0.5, 0.5).
    assert metrics["auroc"] > 0.8, metrics
    assert metrics["mrec"] > 0.6, metrics   # the 98th-percentile threshold also beats chance
