"""Distances between two batches of features, differentiable, usable as Keras losses.

Every function takes `source` `[..., N, D]` and `target` `[..., M, D]` (N and M samples of D
features, any leading dimensions) and returns the distance per leading index, shape `[...]`.
The leading dimensions are how AdaRNN evaluates all time steps and all segment pairs in one
call instead of a Python loop.

`DISTANCES` is the registry by name (the apps derive their choices from it): a stateless
distance is a function; one with trainable or random parts (the adversarial discriminator,
MINE's statistics network, the reference's untrained discriminator) is a Keras layer class,
made once per use with its own weights, and cannot characterise segments in TDC.
Adding a distance is its function or layer plus one `Distance` entry.

| name | measures | sees |
|---|---|---|
| `mmd_linear` | squared distance of the batch means | mean shifts |
| `mmd_rbf` | multi-kernel (5 Gaussian bandwidths) MMD^2 | any change of distribution |
| `coral` | ||C_s - C_t||_F^2 / (4 D^2) of the covariances | covariance shifts |
| `cosine` | 1 - cos(mean_s, mean_t) | changes of the mean's direction |
| `kl`, `js` | KL / Jensen-Shannon of the batch-averaged softmax over features | mean and spread shifts |
| `pairwise` | Frobenius norm of the matrix of squared distances between every source and target sample | any difference, and the spread of each batch (not 0 for identical batches) |
| `adversarial` | max(0, 2 log 2 - BCE) of a trained discriminator | what the discriminator learns |
| `adversarial_untrained` | BCE of a fresh, untrained discriminator at every call, features through gradient reversal (the reference's `adv`) | nothing: its value stays near 2 log 2 whatever the batches, its gradient is noise |
| `mine` | minus the MINE lower bound of the mutual information between source and target rows paired by position, with a statistics network trained with the model | dependence between paired rows |

Example:
>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
>>> float(coral(x, x))
0.0
>>> distance = get_distance("mmd_rbf")
>>> bool(distance(x, x + 1.0) > distance(x, x))
True
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import keras
import tensorflow as tf

_EPS = 1e-8


def _as_float(source, target):
    """Both batches in float64 when either is float64 (a float64 model measures without
    float32 rounding), else in float32 (half-precision features are measured in float32)."""
    source, target = tf.convert_to_tensor(source), tf.convert_to_tensor(target)
    dtype = tf.float64 if tf.float64 in (source.dtype, target.dtype) else tf.float32
    return tf.cast(source, dtype), tf.cast(target, dtype)


def mmd_linear(source, target):
    """||mean(source) - mean(target)||^2 (the linear-kernel MMD)."""
    source, target = _as_float(source, target)
    delta = tf.reduce_mean(source, axis=-2) - tf.reduce_mean(target, axis=-2)
    return tf.reduce_sum(tf.square(delta), axis=-1)


def mmd_rbf(source, target, kernel_mul: float = 2.0, kernel_num: int = 5):
    """Multi-kernel MMD^2 with Gaussian kernels.

    Bandwidths: the mean pairwise squared distance of the pooled samples, times
    kernel_mul^k for k = -(kernel_num // 2) .. kernel_num // 2 (the reference's
    `guassian_kernel`). The bandwidth is a statistic of the data, not something to optimise:
    it is held constant for the gradient (otherwise the features could shrink the distance by
    inflating the bandwidth). Unlike the reference, the MMD itself keeps its gradient.
    """
    source, target = _as_float(source, target)
    n, m = tf.shape(source)[-2], tf.shape(target)[-2]
    pooled = tf.concat([source, target], axis=-2)
    squared_norms = tf.reduce_sum(tf.square(pooled), axis=-1)
    squared_distances = tf.maximum(
        squared_norms[..., :, None] + squared_norms[..., None, :]
        - 2.0 * tf.matmul(pooled, pooled, transpose_b=True), 0.0)
    total = tf.cast(n + m, source.dtype)
    bandwidth = tf.stop_gradient(tf.reduce_sum(squared_distances, axis=[-2, -1]) / (total * total - total))
    bandwidth = tf.maximum(bandwidth, _EPS)[..., None, None] / (kernel_mul ** (kernel_num // 2))
    kernels = tf.add_n([tf.exp(-squared_distances / (bandwidth * kernel_mul ** k)) for k in range(kernel_num)])
    xx = tf.reduce_mean(kernels[..., :n, :n], axis=[-2, -1])
    yy = tf.reduce_mean(kernels[..., n:, n:], axis=[-2, -1])
    xy = tf.reduce_mean(kernels[..., :n, n:], axis=[-2, -1])
    return xx + yy - 2.0 * xy


def _covariance(x):
    count = tf.cast(tf.shape(x)[-2], x.dtype)
    centred = x - tf.reduce_mean(x, axis=-2, keepdims=True)
    return tf.matmul(centred, centred, transpose_a=True) / tf.maximum(count - 1.0, 1.0)


def coral(source, target):
    """CORAL: ||C_source - C_target||_F^2 / (4 D^2), C the unbiased feature covariances."""
    source, target = _as_float(source, target)
    dims = tf.cast(tf.shape(source)[-1], source.dtype)
    difference = _covariance(source) - _covariance(target)
    return tf.reduce_sum(tf.square(difference), axis=[-2, -1]) / (4.0 * dims * dims)


def cosine(source, target):
    """1 - cosine similarity of the two batch means (per batch, not over the whole tensor)."""
    source, target = _as_float(source, target)
    mean_s = tf.reduce_mean(source, axis=-2)
    mean_t = tf.reduce_mean(target, axis=-2)
    # Each norm at least _EPS, as PyTorch's cosine_similarity (the reference's): not a sum.
    similarity = tf.reduce_sum(mean_s * mean_t, axis=-1) / (
        tf.maximum(tf.norm(mean_s, axis=-1), _EPS) * tf.maximum(tf.norm(mean_t, axis=-1), _EPS))
    return 1.0 - similarity


def _feature_distribution(x):
    # Each sample's softmax over the features, averaged over the batch: a proper
    # distribution (the reference takes the log of raw, possibly negative, features).
    return tf.reduce_mean(tf.nn.softmax(x, axis=-1), axis=-2)


def _kl(p, q):
    return tf.reduce_sum(p * (tf.math.log(p + _EPS) - tf.math.log(q + _EPS)), axis=-1)


def kl(source, target):
    """KL(P_source || P_target) of the batch-averaged softmax distributions over features."""
    source, target = _as_float(source, target)
    return tf.maximum(_kl(_feature_distribution(source), _feature_distribution(target)), 0.0)


def js(source, target):
    """Jensen-Shannon divergence of the batch-averaged softmax distributions over features."""
    source, target = _as_float(source, target)
    p, q = _feature_distribution(source), _feature_distribution(target)
    middle = 0.5 * (p + q)
    return tf.maximum(0.5 * _kl(p, middle) + 0.5 * _kl(q, middle), 0.0)


@keras.saving.register_keras_serializable("kerastl")
class AdversarialDistance(keras.layers.Layer):
    """A domain discriminator that measures how separable two batches are.

    `layer(source, target)` returns max(0, 2 log 2 - BCE), where BCE is the discriminator's
    binary cross-entropy (source labelled 1, target 0, averaged per domain and summed). That
    is a lower bound of 2 x the Jensen-Shannon divergence, tight for the best discriminator:
    0 when the discriminator cannot tell the batches apart, up to 2 log 2 when it separates
    them perfectly.

    Gradients, so that one optimiser step on `task loss + lambda * distance` trains both
    sides (the role of DANN's gradient reversal): the features receive the gradient of the
    distance (minimising it makes the domains indistinguishable) through a copy of the
    discriminator whose weights are held constant; the discriminator receives the gradient
    of its own BCE on the features held constant (it learns to separate them). The features
    stop being pushed once the discriminator does no better than chance (the max with 0):
    unlike plain gradient reversal, they cannot run off making it confidently wrong.

    The discriminator (MLP hidden -> hidden -> 1) is created once, one per AdaRNN layer, and
    trained with the model, unlike the reference, which builds a fresh, untrained one at
    every call. Its output layer starts at zero, so an untrained discriminator answers 1/2
    everywhere and the distance starts at exactly 0.

    Example:
    >>> layer = AdversarialDistance(hidden_units=16)
    >>> float(layer(np.zeros((8, 4), "float32"), np.ones((8, 4), "float32")))
    0.0
    """

    def __init__(self, hidden_units: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units

    def build(self, source_shape, target_shape=None):
        dims = [source_shape[-1], self.hidden_units, self.hidden_units, 1]
        self.kernels, self.biases = [], []
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            last = index == len(dims) - 2
            self.kernels.append(self.add_weight(
                shape=(fan_in, fan_out), name=f"kernel_{index}",
                initializer="zeros" if last else keras.initializers.GlorotUniform()))
            self.biases.append(self.add_weight(shape=(fan_out,), name=f"bias_{index}", initializer="zeros"))
        self.built = True

    def discriminate(self, features, frozen: bool = False):
        """Logits of 'source' for features `[..., D]`; `frozen` holds the weights constant."""
        hidden = features
        for index, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            kernel, bias = tf.convert_to_tensor(kernel), tf.convert_to_tensor(bias)
            if frozen:
                kernel, bias = tf.stop_gradient(kernel), tf.stop_gradient(bias)
            hidden = tf.tensordot(hidden, kernel, axes=1) + bias
            if index < len(self.kernels) - 1:
                hidden = tf.nn.relu(hidden)
        return hidden[..., 0]

    @staticmethod
    def _bce(logits_source, logits_target):
        return (tf.reduce_mean(tf.nn.softplus(-logits_source), axis=-1)  # -log sigmoid(l): label 1
                + tf.reduce_mean(tf.nn.softplus(logits_target), axis=-1))  # -log(1 - sigmoid(l)): label 0

    def call(self, source, target):
        source, target = _as_float(source, target)
        # What the features minimise (discriminator weights constant) ...
        bce_features = self._bce(self.discriminate(source, frozen=True), self.discriminate(target, frozen=True))
        distance = tf.maximum(2.0 * math.log(2.0) - bce_features, 0.0)
        # ... plus a zero-valued term whose gradient trains the discriminator on fixed features.
        bce_discriminator = self._bce(self.discriminate(tf.stop_gradient(source)),
                                      self.discriminate(tf.stop_gradient(target)))
        return distance + (bce_discriminator - tf.stop_gradient(bce_discriminator))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units}


def pairwise(source, target):
    """sqrt(sum_ij ||s_i - t_j||^4): the Frobenius norm of the matrix of squared Euclidean
    distances between every source and every target sample (the reference's `pairwise`).
    Not 0 for identical batches: it also measures each batch's spread."""
    source, target = _as_float(source, target)
    squared = tf.reduce_sum(tf.square(source[..., :, None, :] - target[..., None, :, :]), axis=-1)
    total = tf.reduce_sum(tf.square(squared), axis=[-2, -1])
    # sqrt has no finite gradient at 0 (both batches one and the same point).
    positive = total > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, total, 1.0)), 0.0)


def _torch_linear_init(generator, shape, fan_in):
    # PyTorch's nn.Linear default: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    bound = 1.0 / math.sqrt(fan_in)
    return keras.random.uniform(shape, -bound, bound, seed=generator)


@keras.saving.register_keras_serializable("kerastl")
class UntrainedAdversarialDistance(keras.layers.Layer):
    """The reference's adversarial distance: at every call a new discriminator (Linear(D, 32),
    ReLU, Linear(32, 1), sigmoid; PyTorch's default initialisation) that is never trained,
    its binary cross-entropy (source 1, target 0, mean per domain, summed) as the distance,
    and the features passed through gradient reversal.

    Its value is close to 2 log 2 whatever the batches are (a random discriminator answers
    near 1/2), so as a loss it is a constant plus gradient noise; kept to reproduce the
    reference (`--distance adversarial_untrained`). `AdversarialDistance` is the trained one.
    Every leading index (segment pair, time step) gets its own discriminator, as the
    reference builds one per call. `weights=(w1, b1, w2, b2)` (leading dimensions included)
    fixes the draws, for comparing with the reference step by step.

    Example:
    >>> layer = UntrainedAdversarialDistance(seed=0)
    >>> value = float(layer(np.zeros((8, 4), "float32"), np.ones((8, 4), "float32")))
    >>> 1.0 < value < 1.8
    True
    """

    def __init__(self, hidden_units: int = 32, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def draw(self, leading_shape, dims):
        """Fresh discriminator weights `(w1, b1, w2, b2)` for every leading index."""
        leading = tuple(leading_shape)
        units = self.hidden_units
        return (_torch_linear_init(self.generator, leading + (dims, units), dims),
                _torch_linear_init(self.generator, leading + (units,), dims),
                _torch_linear_init(self.generator, leading + (units, 1), units),
                _torch_linear_init(self.generator, leading + (1,), units))

    def call(self, source, target, weights=None):
        source, target = _as_float(source, target)
        if weights is None:
            weights = self.draw(source.shape[:-2], source.shape[-1])
        w1, b1, w2, b2 = (tf.cast(w, source.dtype) for w in weights)

        def logits(features):
            reversed_features = 2.0 * tf.stop_gradient(features) - features  # value x, gradient -1
            hidden = tf.nn.relu(tf.matmul(reversed_features, w1) + b1[..., None, :])
            return (tf.matmul(hidden, w2) + b2[..., None, :])[..., 0]

        return AdversarialDistance._bce(logits(source), logits(target))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "seed": self.seed}


@keras.saving.register_keras_serializable("kerastl")
class MutualInformationDistance(keras.layers.Layer):
    """MINE (Belghazi et al., 2018) as the reference's `mine` transfer loss: minus the
    Donsker-Varadhan lower bound of the mutual information between source and target rows
    paired by position,

        -( mean_i T(s_i, t_i) - log mean_i exp T(s_i, t_pi(i)) ),

    with pi a random permutation of the rows (samples of the product of the marginals) and
    the statistics network T(x, y) = Dense_1(leaky_relu(Dense_x(x) + Dense_y(y), 0.01)),
    `hidden_units` 60 as the reference. Source and target need the same number of rows.
    Unlike the reference, which builds an untrained T at every call, T is created once per
    AdaRNN layer and trained with the model: minimising this loss trains T to tighten the
    bound and the features to raise it. The value can be negative.

    Example:
    >>> layer = MutualInformationDistance(hidden_units=8, seed=0)
    >>> x = np.ones((16, 4), "float32")
    >>> float(layer(x, np.random.default_rng(0).normal(size=(16, 4)).astype("float32"))) >= 0.0
    True
    """

    def __init__(self, hidden_units: int = 60, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = hidden_units
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.dense_x = keras.layers.Dense(hidden_units, name="dense_x", dtype=self.dtype_policy)
        self.dense_y = keras.layers.Dense(hidden_units, name="dense_y", dtype=self.dtype_policy)
        self.dense_out = keras.layers.Dense(1, name="dense_out", dtype=self.dtype_policy)

    def build(self, source_shape, target_shape=None):
        self.dense_x.build(source_shape)
        self.dense_y.build(target_shape or source_shape)
        self.dense_out.build((*source_shape[:-1], self.hidden_units))
        self.built = True

    def statistics(self, x, y):
        """T(x, y) per row: `[..., N]`."""
        return self.dense_out(tf.nn.leaky_relu(self.dense_x(x) + self.dense_y(y), alpha=0.01))[..., 0]

    def call(self, source, target):
        source, target = _as_float(source, target)
        rows = tf.shape(target)[-2]
        permutation = tf.argsort(keras.random.uniform([rows], seed=self.generator))
        joint = self.statistics(source, target)
        marginal = self.statistics(source, tf.gather(target, permutation, axis=-2))
        log_mean_exp = tf.reduce_logsumexp(marginal, axis=-1) - tf.math.log(tf.cast(rows, marginal.dtype))
        return -(tf.reduce_mean(joint, axis=-1) - log_mean_exp)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class Distance:
    """A registered distance: `build` is the function itself or, when `trainable`, the Keras
    layer class whose instances hold the trainable (or random) parts (called
    `layer(source, target)`)."""

    name: str
    build: Callable
    description: str
    trainable: bool = False


DISTANCES: dict[str, Distance] = {distance.name: distance for distance in (
    Distance("mmd_linear", mmd_linear, "squared distance of the batch means"),
    Distance("mmd_rbf", mmd_rbf, "multi-kernel Gaussian MMD^2: any change of distribution"),
    Distance("coral", coral, "distance of the feature covariances (CORAL)"),
    Distance("cosine", cosine, "1 - cosine similarity of the batch means"),
    Distance("kl", kl, "KL divergence of the batch-averaged softmax over features"),
    Distance("js", js, "Jensen-Shannon divergence of the batch-averaged softmax over features"),
    Distance("pairwise", pairwise, "Frobenius norm of all source-target squared distances (the reference's "
             "pairwise; not 0 for identical batches)"),
    Distance("adversarial", AdversarialDistance, "how well a domain discriminator, trained with the model, "
             "tells the batches apart", trainable=True),
    Distance("adversarial_untrained", UntrainedAdversarialDistance, "the reference's adv: cross-entropy of a new, "
             "untrained discriminator at every call, through gradient reversal (about 2 log 2 whatever the "
             "batches)", trainable=True),
    Distance("mine", MutualInformationDistance, "minus the MINE bound of the mutual information of source and "
             "target rows paired by position, statistics network trained with the model", trainable=True),
)}


def lookup(name: str) -> Distance:
    """The registry entry of `name`; an unknown name is a ValueError listing the others."""
    if name not in DISTANCES:
        raise ValueError(f"distance {name!r}: expected one of {', '.join(DISTANCES)}")
    return DISTANCES[name]


def stateless_names() -> list[str]:
    """The distances without trainable parts (those TDC and `DistributionDistance` take)."""
    return [name for name, distance in DISTANCES.items() if not distance.trainable]


def get_distance(name: str, /, **kwargs):
    """The distance called `name`: its function, or a new layer of a trainable distance.

    `kwargs` go to a trainable distance's layer (e.g. `hidden_units`, `name`); the functions
    take none.
    """
    distance = lookup(name)
    return distance.build(**kwargs) if distance.trainable else distance.build


@keras.saving.register_keras_serializable("kerastl")
class DistributionDistance(keras.losses.Loss):
    """A stateless distance as a Keras loss: `loss(y_true=source_batch, y_pred=target_batch)`.

    Useful to penalise the gap between two feature batches in `compile(loss=...)` or in a
    custom training step. (The adversarial distance has weights: use `AdversarialDistance`.)

    Example:
    >>> loss = DistributionDistance("coral")
    >>> float(loss(x, x))
    0.0
    """

    def __init__(self, distance: str = "mmd_rbf", name: str | None = None, reduction="sum_over_batch_size",
                 dtype=None):
        if lookup(distance).trainable:
            raise ValueError(f"distance {distance!r}: has trainable parts; expected one of "
                             f"{', '.join(stateless_names())}")
        super().__init__(name=name or distance, reduction=reduction, dtype=dtype)
        self.distance = distance

    def call(self, y_true, y_pred):
        return DISTANCES[self.distance].build(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "distance": self.distance}
