"""Anomaly detectors with the shape PyOD users know: fit on normal windows, score, predict.

`fit(x_normal)` trains on normal windows only and sets `threshold_` to the `percentile`-th
percentile of the training windows' scores (default 98, the AMSL paper's choice);
`decision_function(x)` gives one score per window (higher = more anomalous); `predict(x)`
gives 1 (anomaly) where the score exceeds the threshold, else 0.

`AMSLDetector` wraps the `AMSL` model; `KerasDetector` is the common part for every Keras
detector (the autoencoder baselines in `kerastl.anomaly.baselines` use it too): training
through `model.fit` on a resumable stream of windows, scoring in batches, and
`export_scorer`, which writes a SavedModel taking raw `windows` and returning `score` and
`is_anomaly` with the scaling and the fitted threshold baked in.

Example:
>>> detector = AMSLDetector(epochs=5, num_slots=100)          # doctest: +SKIP
>>> detector.fit(x_train_normal)                              # doctest: +SKIP
>>> scores = detector.decision_function(x_test)               # doctest: +SKIP
>>> labels = detector.predict(x_test)                         # 1 = anomaly  # doctest: +SKIP
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np

from kerastl.data.arrays import check_windows
from kerastl.errors import InputError


class AnomalyDetector:
    """Base class: subclasses implement `_fit(x)` and `_score(x)`.

    Attributes after `fit`: `threshold_`, `train_scores_`, `fit_seconds_`, `window_shape_`.
    """

    name = "detector"

    def __init__(self, percentile: float = 98.0):
        if not 0.0 < percentile < 100.0:
            raise InputError(f"--percentile {percentile}: expected a number strictly between 0 and 100")
        self.percentile = float(percentile)
        self.threshold_ = None
        self.window_shape_ = None

    def fit(self, x_normal, **fit_options) -> "AnomalyDetector":
        x = check_windows(x_normal, f"{self.name} training windows")
        self.window_shape_ = tuple(x.shape[1:])
        start = time.perf_counter()
        self._fit(x, **fit_options)
        self.fit_seconds_ = time.perf_counter() - start
        self.train_scores_ = self.decision_function(x)
        self.threshold_ = float(np.percentile(self.train_scores_, self.percentile))
        return self

    def decision_function(self, x) -> np.ndarray:
        """One anomaly score per window, float64 [N] (higher = more anomalous)."""
        if self.window_shape_ is None:
            raise RuntimeError(f"{self.name}: call fit() before scoring")
        x = check_windows(x, f"{self.name} windows", self.window_shape_)
        return np.asarray(self._score(x), np.float64).reshape(len(x))

    def predict(self, x) -> np.ndarray:
        """1 where the score is above the fitted threshold (anomaly), else 0; int64 [N]."""
        if self.threshold_ is None:
            raise RuntimeError(f"{self.name}: call fit() before predict()")
        return (self.decision_function(x) > self.threshold_).astype(np.int64)

    def _fit(self, x: np.ndarray, **fit_options):
        raise NotImplementedError

    def _score(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def window_stream(x: np.ndarray, batch_size: int, seed: int, start_step: int = 0, with_targets: bool = False):
    """Infinite shuffled batches of windows (or `(windows, windows)` for autoencoders with a
    standard loss), a pure function of `(seed, step)` so that a resumed run continues the
    same order (`kerastl.data.pipeline.index_stream`)."""
    import tensorflow as tf

    from kerastl.data.pipeline import index_stream

    windows = tf.constant(x)
    batches = index_stream(len(x), seed, start_step * batch_size).map(
        lambda position, index: tf.gather(windows, index))
    batches = batches.batch(batch_size, drop_remainder=True)
    if with_targets:
        batches = batches.map(lambda w: (w, w))
    return batches.prefetch(tf.data.AUTOTUNE)


class KerasDetector(AnomalyDetector):
    """A detector around a Keras model with a `score(windows)` method, trained with `model.fit`.

    Subclasses implement `build_model()`; `prepare(x)` builds, adapts and compiles it, so that
    an app can restore a checkpoint before `fit(x, start_step=...)`.

    Args:
        epochs, batch_size, learning_rate: Adam training on normal windows.
        seed: initialisation, data order and training views.
        percentile: threshold percentile of the training scores.
    """

    uses_targets = False  # True: the model trains on (windows, windows) with its compiled loss

    def __init__(self, epochs: int = 100, batch_size: int = 16, learning_rate: float = 1e-3, seed: int = 0,
                 percentile: float = 98.0, score_batch_size: int = 256):
        super().__init__(percentile)
        self.epochs, self.batch_size, self.learning_rate = int(epochs), int(batch_size), float(learning_rate)
        self.seed, self.score_batch_size = int(seed), int(score_batch_size)
        self.model = None
        self._score_function = None

    def build_model(self):
        raise NotImplementedError

    def compile_options(self) -> dict:
        return {}

    def prepare(self, x_normal) -> "KerasDetector":
        """Builds and compiles the model for windows like `x_normal` (and adapts its scaling)."""
        import keras

        x = check_windows(x_normal, f"{self.name} training windows")
        if len(x) < self.batch_size:
            raise InputError(f"{self.name}: {len(x)} training windows, fewer than one batch of {self.batch_size}; "
                             "use more data, a smaller --stride or a smaller batch size")
        keras.utils.set_random_seed(self.seed)
        self.model = self.build_model()
        self.model.build((None, *x.shape[1:]))
        if hasattr(self.model, "adapt"):
            self.model.adapt(x)
        self.model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), **self.compile_options())
        return self

    def _fit(self, x, callbacks: Sequence = (), verbose: int = 0, start_step: int = 0):
        if self.model is None:
            self.prepare(x)
        steps_per_epoch = len(x) // self.batch_size
        stream = window_stream(x, self.batch_size, self.seed, start_step, self.uses_targets)
        self.model.fit(stream, epochs=self.epochs, steps_per_epoch=steps_per_epoch,
                       initial_epoch=start_step // steps_per_epoch, callbacks=list(callbacks), verbose=verbose,
                       shuffle=False)  # the stream is already shuffled, resumably

    def fit(self, x_normal, callbacks: Sequence = (), verbose: int = 0, start_step: int = 0):
        """Trains on normal windows (restore a checkpoint after `prepare` and pass its step as
        `start_step` to continue a run), then fits the threshold."""
        return super().fit(x_normal, callbacks=callbacks, verbose=verbose, start_step=start_step)

    def _score(self, x):
        import tensorflow as tf

        if self._score_function is None:
            self._score_function = tf.function(self.model.score, reduce_retracing=True)
        return np.concatenate([self._score_function(tf.constant(x[start:start + self.score_batch_size])).numpy()
                               for start in range(0, len(x), self.score_batch_size)])

    def export_scorer(self, path: str, offset=None, scale=None, metadata: dict | None = None,
                      overwrite: bool = False) -> str:
        """Writes a SavedModel (`kerastl.export.export_model`): input `windows` float32
        [batch, time, channels] in the units of the data before scaling; outputs `score`
        (float32 [batch]) and `is_anomaly` (bool [batch], score > the fitted threshold).

        `offset`, `scale` ([channels]): the per-channel scaling applied before the model,
        `(windows - offset) / scale` (from `kerastl.data.sensors.ChannelScaler`).
        """
        import tensorflow as tf

        from kerastl.export import export_model

        if self.threshold_ is None:
            raise RuntimeError(f"{self.name}: fit() before export_scorer()")
        steps, channels = self.window_shape_
        offset = tf.constant(np.zeros(channels) if offset is None else offset, tf.float32)
        scale = tf.constant(np.ones(channels) if scale is None else scale, tf.float32)
        threshold = tf.constant(self.threshold_, tf.float32)
        model = self.model

        def outputs(windows):
            score = model.score((windows - offset) / scale)
            return {"score": score, "is_anomaly": score > threshold}

        facts = {"task": "anomaly_detection", "detector": self.name, "threshold": self.threshold_,
                 "percentile": self.percentile, "window_shape": [steps, channels],
                 "scaling": {"offset": offset.numpy().tolist(), "scale": scale.numpy().tolist()},
                 "outputs": {"score": "float32 [batch]: anomaly score (higher = more anomalous)",
                             "is_anomaly": "bool [batch]: score > threshold"}, **(metadata or {})}
        return export_model(model, path, {"windows": tf.TensorSpec([None, steps, channels], tf.float32)},
                            outputs, facts, overwrite)


class AMSLDetector(KerasDetector):
    """AMSL (`kerastl.anomaly.model.AMSL`) as a detector; model options pass through.

    Example:
    >>> detector = AMSLDetector(epochs=10, memory="global", num_slots=100)  # doctest: +SKIP
    >>> detector.fit(x_normal).threshold_                                    # doctest: +SKIP
    """

    name = "amsl"

    def __init__(self, epochs: int = 100, batch_size: int = 16, learning_rate: float = 1e-3, seed: int = 0,
                 percentile: float = 98.0, name: str = "amsl", **model_options):
        super().__init__(epochs, batch_size, learning_rate, seed, percentile)
        self.name = name
        self.model_options = model_options

    def build_model(self):
        from kerastl.anomaly.model import AMSL

        return AMSL(seed=self.seed, **self.model_options)


def throughput(score: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int = 2) -> float:
    """Scoring throughput in windows per second (best of `repeats`, after one warm-up call)."""
    score(x[: min(len(x), 64)])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        score(x)
        best = min(best, time.perf_counter() - start)
    return len(x) / best
