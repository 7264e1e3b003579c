"""Baselines: each detects obvious anomalies; the Keras autoencoders are proper Keras objects; the registry."""

import keras
import numpy as np
import pytest

from kerastl.anomaly import BASELINES, ConvAutoencoder, LSTMAutoencoder, build_baseline, detection_metrics
from kerastl.anomaly.baselines import register_baseline


def smooth_and_spiky(n_train=96, n_test=40, steps=16, channels=3, seed=0):
    """Normal: slow sines with random phase. Abnormal: the same with large random spikes."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)[None, :, None]

    def sines(n):
        return 0.5 + 0.3 * np.sin(t / 2.5 + rng.uniform(0, 6, (n, 1, channels)))

    spikes = sines(n_test // 2) + (rng.random((n_test // 2, steps, channels)) < 0.15) * rng.choice([-0.8, 0.8], (n_test // 2, steps, channels))
    x_test = np.concatenate([sines(n_test // 2), spikes]).astype("float32")
    return sines(n_train).astype("float32"), x_test, np.repeat([0, 1], n_test // 2)


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_separates_spiky_windows(name):
    x_train, x_test, truth = smooth_and_spiky()
    detector = build_baseline(name, epochs=15, batch_size=16, learning_rate=3e-3, seed=0, filters=(4, 8), units=16)
    detector.fit(x_train)
    scores = detector.decision_function(x_test)
    assert scores.shape == (40,)
    metrics = detection_metrics(scores, truth, detector.threshold_)
    assert metrics["auroc"] > 0.9, metrics
    assert detector.threshold_ == pytest.approx(np.percentile(detector.train_scores_, 98.0))


@pytest.mark.parametrize("model_class, options", [(ConvAutoencoder, {"filters": (4, 8)}), (LSTMAutoencoder, {"units": 8})])
def test_autoencoders_fit_and_score_the_reconstruction_error(model_class, options):
    x, _, _ = smooth_and_spiky(n_train=32)
    keras.utils.set_random_seed(0)
    model = model_class(**options)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    history = model.fit(x, x, epochs=3, batch_size=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model(x[:2]).shape == (2, 16, 3)
    np.testing.assert_allclose(model.score(x[:4]).numpy(), ((model(x[:4]).numpy() - x[:4]) ** 2).mean(axis=(1, 2)),
                               rtol=1e-5)


def test_unknown_baseline():
    with pytest.raises(ValueError, match="unknown baseline 'iforest'"):
        build_baseline("iforest")


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match="baseline 'ocsvm' is already registered"):
        register_baseline("ocsvm", lambda options: None, "another one-class SVM")
    assert BASELINES["ocsvm"].description == "one-class SVM (RBF) on flattened windows, scikit-learn"
    assert list(BASELINES) == ["ocsvm", "kpca", "conv_ae", "lstm_ae"]
