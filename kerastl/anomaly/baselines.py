"""Baseline detectors beside AMSL, under the same `AnomalyDetector` interface, and their registry.

- `OCSVMDetector`: scikit-learn's one-class SVM (RBF) on flattened windows; score = minus
  its decision function.
- `KernelPCADetector`: RBF kernel PCA; score = the window's reconstruction error through the
  pre-image map (`fit_inverse_transform`).
- `ConvAEDetector` / `ConvAutoencoder`: AMSL's encoder and one decoder, no views, no memory.
- `LSTMAEDetector` / `LSTMAutoencoder`: LSTM encoder -> repeated code -> LSTM decoder.

The two kernel methods are O(N^2) in the training windows: `max_train` caps them with a
seeded subsample.

`BASELINES` maps a name to its `Baseline` (a builder and a one-line description); apps and
benchmarks take their choices and help from it. A new baseline is a detector and one
`register_baseline` call; nothing else changes.

Example:
>>> class MeanDistance(AnomalyDetector):
...     name = "mean_distance"
...     def _fit(self, x):
...         self.mean_ = x.mean(axis=0)
...     def _score(self, x):
...         return np.abs(x - self.mean_).mean(axis=(1, 2))
>>> register_baseline("mean_distance", lambda options: MeanDistance(options.percentile),
...                   "mean absolute distance to the mean training window")
>>> build_baseline("mean_distance").fit(np.zeros((4, 8, 2))).decision_function(np.ones((1, 8, 2)))
array([1.])
>>> sorted(BASELINES)
['conv_ae', 'kpca', 'lstm_ae', 'mean_distance', 'ocsvm']
>>> del BASELINES["mean_distance"]   # the example leaves the registry as it found it
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from kerastl.anomaly.detector import AnomalyDetector, KerasDetector
from kerastl.anomaly.model import conv_decoder, conv_encoder


class _KernelDetector(AnomalyDetector):
    def __init__(self, percentile: float = 98.0, max_train: int = 2000, seed: int = 0):
        super().__init__(percentile)
        self.max_train, self.seed = int(max_train), int(seed)

    def _subsample(self, x):
        if len(x) <= self.max_train:
            return x
        keep = np.sort(np.random.default_rng(self.seed).choice(len(x), self.max_train, replace=False))
        return x[keep]


class OCSVMDetector(_KernelDetector):
    """One-class SVM (RBF, gamma='scale') on flattened windows; `nu` bounds the training
    outlier fraction."""

    name = "ocsvm"

    def __init__(self, nu: float = 0.1, percentile: float = 98.0, max_train: int = 2000, seed: int = 0):
        super().__init__(percentile, max_train, seed)
        self.nu = float(nu)

    def _fit(self, x, **keras_options):  # no training loop: Keras options (verbose, ...) do not apply
        from sklearn.svm import OneClassSVM

        flat = self._subsample(x).reshape(-1, int(np.prod(x.shape[1:])))
        self.svm = OneClassSVM(kernel="rbf", gamma="scale", nu=self.nu).fit(flat)

    def _score(self, x):
        return -self.svm.decision_function(x.reshape(len(x), -1))


class KernelPCADetector(_KernelDetector):
    """RBF kernel PCA with a learned pre-image map; score = squared reconstruction error."""

    name = "kpca"

    def __init__(self, n_components: int = 32, alpha: float = 0.1, percentile: float = 98.0,
                 max_train: int = 2000, seed: int = 0):
        super().__init__(percentile, max_train, seed)
        self.n_components, self.alpha = int(n_components), float(alpha)

    def _fit(self, x, **keras_options):  # no training loop: Keras options (verbose, ...) do not apply
        from sklearn.decomposition import KernelPCA

        flat = self._subsample(x).reshape(-1, int(np.prod(x.shape[1:])))
        self.kpca = KernelPCA(n_components=min(self.n_components, len(flat) - 1), kernel="rbf",
                              fit_inverse_transform=True, alpha=self.alpha, random_state=self.seed).fit(flat)

    def _score(self, x):
        flat = x.reshape(len(x), -1)
        return np.mean(np.square(flat - self.kpca.inverse_transform(self.kpca.transform(flat))), axis=1)


@keras.saving.register_keras_serializable("kerastl")
class ConvAutoencoder(keras.Model):
    """AMSL's conv encoder and decoder on the window as a one-channel image, nothing else.

    Example:
    >>> import numpy as np
    >>> windows = np.random.rand(32, 16, 6).astype("float32")
    >>> model = ConvAutoencoder(filters=(8, 16))
    >>> model.compile(optimizer="adam", loss="mse")
    >>> _ = model.fit(windows, windows, epochs=1, verbose=0)
    >>> model.score(windows).shape
    TensorShape([32])
    """

    def __init__(self, filters=(32, 64), **kwargs):
        super().__init__(**kwargs)
        self.filters = tuple(int(f) for f in filters)

    def build(self, input_shape):
        steps, channels = int(input_shape[1]), int(input_shape[2])
        self.encoder = conv_encoder(steps, channels, self.filters)
        self.encoder.build((None, steps, channels, 1))
        latent = self.encoder.compute_output_shape((None, steps, channels, 1))
        # The decoder's first layer takes twice the features in AMSL (z and the memory read);
        # here z alone.
        self.decoder = conv_decoder(steps, channels, self.filters)
        self.decoder.build(latent)
        self.built = True

    def call(self, windows, training=False):
        return self.decoder(self.encoder(windows[..., None], training=training), training=training)[..., 0]

    def score(self, windows):
        """Per-window reconstruction MSE [batch]."""
        return tf.reduce_mean(tf.square(windows - self(windows, training=False)), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "filters": list(self.filters)}


@keras.saving.register_keras_serializable("kerastl")
class LSTMAutoencoder(keras.Model):
    """LSTM encoder (`units`) -> the last state repeated over time -> LSTM decoder -> Dense.

    Example:
    >>> import numpy as np
    >>> windows = np.random.rand(32, 16, 6).astype("float32")
    >>> model = LSTMAutoencoder(units=8)
    >>> model.compile(optimizer="adam", loss="mse")
    >>> _ = model.fit(windows, windows, epochs=1, verbose=0)
    >>> model.score(windows).shape
    TensorShape([32])
    """

    def __init__(self, units: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.units = int(units)
        self.encoder = keras.layers.LSTM(self.units, name="encoder")
        self.decoder = keras.layers.LSTM(self.units, return_sequences=True, name="decoder")

    def build(self, input_shape):
        steps, channels = int(input_shape[1]), int(input_shape[2])
        self.steps = steps
        self.encoder.build((None, steps, channels))
        self.decoder.build((None, steps, self.units))
        self.output_layer = keras.layers.Dense(channels, name="output")
        self.output_layer.build((None, steps, self.units))
        self.built = True

    def call(self, windows, training=False):
        code = self.encoder(windows, training=training)
        repeated = tf.repeat(code[:, None], tf.shape(windows)[1], axis=1)
        return self.output_layer(self.decoder(repeated, training=training))

    def score(self, windows):
        """Per-window reconstruction MSE [batch]."""
        return tf.reduce_mean(tf.square(windows - self(windows, training=False)), axis=[1, 2])

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class ConvAEDetector(KerasDetector):
    name = "conv_ae"
    uses_targets = True

    def __init__(self, filters=(32, 64), **options):
        super().__init__(**options)
        self.filters = tuple(filters)

    def build_model(self):
        return ConvAutoencoder(filters=self.filters)

    def compile_options(self):
        return {"loss": "mse"}


class LSTMAEDetector(KerasDetector):
    name = "lstm_ae"
    uses_targets = True

    def __init__(self, units: int = 64, **options):
        super().__init__(**options)
        self.units = int(units)

    def build_model(self):
        return LSTMAutoencoder(units=self.units)

    def compile_options(self):
        return {"loss": "mse"}


@dataclasses.dataclass(frozen=True)
class BaselineOptions:
    """The training options a baseline is built with; each baseline takes those that apply
    to it (the kernel methods: percentile and seed)."""

    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-3
    seed: int = 0
    percentile: float = 98.0
    filters: tuple = (32, 64)   # conv autoencoder widths
    units: int = 64             # LSTM autoencoder width

    def keras_options(self) -> dict:
        """The `KerasDetector` arguments."""
        return dict(epochs=self.epochs, batch_size=self.batch_size, learning_rate=self.learning_rate,
                    seed=self.seed, percentile=self.percentile)


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A registered baseline: `build(BaselineOptions) -> AnomalyDetector` and a one-line
    description (an app's `--help`)."""

    build: Callable[[BaselineOptions], AnomalyDetector]
    description: str


BASELINES: dict[str, Baseline] = {}


def register_baseline(name: str, build: Callable[[BaselineOptions], AnomalyDetector], description: str) -> None:
    """Registers the baseline `name`: `build(options)` returns an unfitted detector
    (see the module docstring's example)."""
    if name in BASELINES:
        raise ValueError(f"baseline {name!r} is already registered")
    BASELINES[name] = Baseline(build, description)


register_baseline("ocsvm", lambda options: OCSVMDetector(percentile=options.percentile, seed=options.seed),
                  "one-class SVM (RBF) on flattened windows, scikit-learn")
register_baseline("kpca", lambda options: KernelPCADetector(percentile=options.percentile, seed=options.seed),
                  "RBF kernel PCA, score = reconstruction error through the pre-image map")
register_baseline("conv_ae", lambda options: ConvAEDetector(filters=options.filters, **options.keras_options()),
                  "AMSL's conv encoder and one decoder: no views, no memory")
register_baseline("lstm_ae", lambda options: LSTMAEDetector(units=options.units, **options.keras_options()),
                  "LSTM encoder -> repeated code -> LSTM decoder")


def build_baseline(name: str, epochs: int = 100, batch_size: int = 16, learning_rate: float = 1e-3,
                   seed: int = 0, percentile: float = 98.0, filters=(32, 64), units: int = 64) -> AnomalyDetector:
    """The baseline registered as `name` (`BASELINES`), built with the shared training options."""
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")
    return BASELINES[name].build(BaselineOptions(epochs, batch_size, learning_rate, seed, percentile,
                                                 tuple(filters), units))
