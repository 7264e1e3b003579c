"""What every semi-supervised algorithm shares: the interface and the pseudo-labelling hooks.

An algorithm is a Keras layer that turns the unlabeled logits of one training step into an
unsupervised loss. `SemiSupervisedModel.train_step` does everything else (one forward pass
over labeled + unlabeled views, the supervised loss, the optimizer, EMA, metrics), so a new
algorithm is one short file:

```python
class MyAlgorithm(SSLAlgorithm):
    views = ("weak", "strong")             # which unlabeled views the step feeds

    def unsupervised_loss(self, logits, index, step):
        pseudo, mask = self.confident_pseudo_labels(logits["weak"], index)
        return masked_mean(cross_entropy(pseudo, logits["strong"]), mask), mask
```
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.thresholds import FixedThreshold


class SSLAlgorithm(keras.layers.Layer):
    """Base class. Subclasses set `views` and implement `unsupervised_loss`.

    Attributes:
        views: the unlabeled views the algorithm needs, a subset of ("weak", "strong") in
            the order the data stream yields them; empty for the supervised baseline.
        threshold: the confidence threshold layer (`FixedThreshold(default_tau)` unless
            one is given, e.g. a `CurriculumThreshold`); None when `default_tau` is None.
        lambda_u: weight of the unsupervised loss.
    """

    views: tuple[str, ...] = ("weak", "strong")
    default_tau: float | None = 0.95

    def __init__(self, threshold=None, lambda_u: float = 1.0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # losses are computed in float32 under mixed precision
        super().__init__(**kwargs)
        if isinstance(threshold, dict):
            threshold = keras.saving.deserialize_keras_object(threshold)
        if threshold is None and self.default_tau is not None:
            threshold = FixedThreshold(self.default_tau)
        self.threshold = threshold
        self.lambda_u = float(lambda_u)

    def confident_pseudo_labels(self, logits_weak: tf.Tensor, index: tf.Tensor):
        """Hard pseudo-labels of the weak view and the threshold's mask (which may update
        the threshold's state, e.g. CPL's counters)."""
        probs, pseudo = hard_pseudo_labels(logits_weak)
        return pseudo, self.threshold(tf.reduce_max(probs, axis=-1), pseudo, index)

    def unsupervised_loss(self, logits: dict[str, tf.Tensor], index: tf.Tensor, step: tf.Tensor):
        """Returns `(loss, mask)`: a scalar loss and the float mask of examples that count."""
        raise NotImplementedError

    def loss_weight(self, step: tf.Tensor) -> tf.Tensor:
        """Weight of the unsupervised loss at `step` (a ramp-up overrides this)."""
        return tf.constant(self.lambda_u, tf.float32)

    def get_config(self):
        threshold = None if self.threshold is None else keras.saving.serialize_keras_object(self.threshold)
        return {**super().get_config(), "lambda_u": self.lambda_u, "threshold": threshold}


def hard_pseudo_labels(logits: tf.Tensor, temperature: float = 1.0):
    """`(probs, argmax)` of `softmax(logits / T)`, with no gradient flowing into the targets."""
    probs = tf.nn.softmax(tf.stop_gradient(tf.cast(logits, tf.float32)) / temperature, axis=-1)
    return probs, tf.argmax(probs, axis=-1, output_type=tf.int32)


def cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example CE: integer targets, or soft targets (a distribution per row)."""
    logits = tf.cast(logits, tf.float32)
    if targets.shape.rank == logits.shape.rank:
        return -tf.reduce_sum(targets * tf.nn.log_softmax(logits, axis=-1), axis=-1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def masked_mean(per_example: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over ALL examples of `loss * mask` (divided by the batch, not by sum(mask))."""
    return tf.reduce_mean(per_example * mask)


def linear_rampup(step: tf.Tensor, rampup_steps: int) -> tf.Tensor:
    """min(1, step / rampup_steps); 1 when rampup_steps is 0."""
    if rampup_steps <= 0:
        return tf.constant(1.0)
    return tf.clip_by_value(tf.cast(step, tf.float32) / float(rampup_steps), 0.0, 1.0)
