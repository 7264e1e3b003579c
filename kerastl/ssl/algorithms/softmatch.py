"""SoftMatch (Chen et al., ICLR 2023): truncated-Gaussian sample weights, uniform alignment.

FixMatch's loss with every unlabeled example kept, weighted by its confidence instead of
cut by a threshold. Every step, on the weak view's probabilities p_i (n examples, C classes):

```
p_model = m p_model + (1 - m) mean_i p_i       (the first step's batch mean at the start)
a_i     = SumNorm(p_i * (1/C + 1e-6) / (p_model + 1e-6))          uniform alignment
mu_t    = m mu_t + (1 - m) mean_i max_c a_ic                        starts at 1/C
var_t   = m var_t + (1 - m) var_i max_c a_ic   (unbiased, n - 1)    starts at 1
w_i     = exp(-min(max_c a_ic - mu_t, 0)^2 / (2 var_t / n_sigma^2))
L_u     = mean_i w_i * CE(argmax_c p_ic, strong view)
```

An example at least as confident as the running mean counts fully; below it, its weight
falls as a Gaussian in the confidence. The alignment only shapes the weights: the
pseudo-labels are the argmax of the weak view's own probabilities, as in USB. Defaults are
USB's (semilearn 0.3.2): lambda_u 1, n_sigma 2, ema_p 0.999, uniform alignment on, one
Gaussian for all classes, uratio 7. `mask_ratio` in the logs is the mean weight.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm, cross_entropy, hard_pseudo_labels, masked_mean
from kerastl.ssl.algorithms.freematch import all_replicas, state_variable
from kerastl.ssl.algorithms.registry import register_algorithm


@keras.saving.register_keras_serializable("kerastl")
class SoftMatch(SSLAlgorithm):
    """Weak-view pseudo-labels supervise the strong view, weighted by a truncated Gaussian
    of the (uniformly aligned) confidence.

    The moving averages are non-trainable variables (`confidence_mean`,
    `confidence_variance`, `class_prior`), so checkpoints and `.keras` files carry them.

    Example:
    >>> algorithm = SoftMatch(num_classes=10)          # USB's defaults
    >>> float(algorithm.confidence_mean.numpy()), float(algorithm.confidence_variance.numpy())
    (0.1, 1.0)
    """

    views = ("weak", "strong")
    default_tau = None  # weights, not a threshold

    def __init__(self, num_classes: int, lambda_u: float = 1.0, n_sigma: float = 2.0, ema_p: float = 0.999,
                 uniform_alignment: bool = True, **kwargs):
        super().__init__(None, lambda_u, **kwargs)
        self.num_classes = int(num_classes)
        self.n_sigma = float(n_sigma)
        self.ema_p = float(ema_p)
        self.uniform_alignment = bool(uniform_alignment)
        self.confidence_mean = state_variable(self, "confidence_mean", (), 1.0 / self.num_classes)
        self.confidence_variance = state_variable(self, "confidence_variance", (), 1.0)
        # Zeros until the first step sets it to that step's mean prediction.
        self.class_prior = state_variable(self, "class_prior", (self.num_classes,), 0.0)

    def align(self, probs: tf.Tensor) -> tf.Tensor:
        """Uniform alignment: moves `class_prior` with this step's mean prediction, returns
        `probs * (1/C) / class_prior` renormalised (each with 1e-6 added, as USB)."""
        mean = tf.reduce_mean(all_replicas(probs), axis=0)
        # The state is read and moved in the probabilities' dtype, stored in its own.
        prior = tf.cast(self.class_prior, probs.dtype)
        prior = tf.where(tf.reduce_sum(prior) > 0, self.ema_p * prior + (1.0 - self.ema_p) * mean, mean)
        self.class_prior.assign(tf.cast(prior, self.class_prior.dtype))
        aligned = probs * (1.0 / self.num_classes + 1e-6) / (prior + 1e-6)
        return aligned / tf.reduce_sum(aligned, axis=-1, keepdims=True)

    def update(self, max_probs: tf.Tensor) -> None:
        """Moves mu_t and var_t with this step's confidences (every replica's)."""
        max_probs = all_replicas(max_probs)
        mean = tf.reduce_mean(max_probs)
        count = tf.cast(tf.size(max_probs), max_probs.dtype)
        variance = tf.reduce_sum(tf.square(max_probs - mean)) / tf.maximum(count - 1.0, 1.0)
        m = self.ema_p
        for state, value in ((self.confidence_mean, mean), (self.confidence_variance, variance)):
            state.assign(tf.cast(m * tf.cast(state, value.dtype) + (1.0 - m) * value, state.dtype))

    def sample_weights(self, max_probs: tf.Tensor) -> tf.Tensor:
        """The truncated Gaussian: 1 at or above mu_t, exp(-(x - mu_t)^2 / (2 var_t / n_sigma^2)) below."""
        mean, variance = (tf.cast(state, max_probs.dtype)
                          for state in (self.confidence_mean, self.confidence_variance))
        below = tf.minimum(max_probs - mean, 0.0)
        return tf.exp(-tf.square(below) / (2.0 * variance / self.n_sigma ** 2))

    def unsupervised_loss(self, logits, index, step):
        probs, pseudo = hard_pseudo_labels(logits["weak"])
        confidence = tf.reduce_max(self.align(probs) if self.uniform_alignment else probs, axis=-1)
        self.update(confidence)
        weights = self.sample_weights(confidence)
        return masked_mean(cross_entropy(pseudo, logits["strong"]), weights), weights

    def logged_state(self) -> dict:
        """What the apps log per evaluation: the Gaussian's mean and variance."""
        return {"confidence_mean": float(self.confidence_mean.numpy()),
                "confidence_variance": float(self.confidence_variance.numpy())}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "n_sigma": self.n_sigma,
                "ema_p": self.ema_p, "uniform_alignment": self.uniform_alignment}


register_algorithm("softmatch", SoftMatch, lambda s: SoftMatch(s.num_classes),
                   "SoftMatch: every pseudo-label kept, weighted by a truncated Gaussian of its (uniformly "
                   "aligned) confidence")
