"""FreeMatch (Wang et al., ICLR 2023): self-adaptive thresholds and a fairness term.

FixMatch's loss, with the fixed threshold replaced by self-adaptive ones (SAT). Every step,
before masking, the weak view's probabilities p_i (n examples, C classes) move three
exponential moving averages (momentum `ema_p`, each starting at 1/C):

```
tau_t = m tau_t + (1 - m) mean_i max_c p_ic            global threshold
p_t   = m p_t   + (1 - m) mean_i p_i                   class confidences (a vector)
h_t   = m h_t   + (1 - m) hist(argmax_c p_ic) / n      pseudo-label histogram
mask_i = max_c p_ic >= tau_t * p_t[y_i] / max_c p_t[c]   with y_i = argmax_c p_ic
```

The self-adaptive fairness term is computed on the strong views that passed the mask, with
q their mean probability and h the histogram of their argmax (SumNorm(x) = x / sum(x), and
1/0 read as 0, as in USB):
`L_f = sum_c SumNorm(p_t / h_t)_c * log SumNorm(q / h)_c`, 0 when no example passed. The
step minimises `CE_labeled + lambda_u * L_u + lambda_f * L_f`.

Defaults are USB's (semilearn 0.3.2) classic-CV configs: lambda_u 1, lambda_f 0.001
(`ent_loss_ratio`; the code's default is 0.01, TorchSSL's configs 0 or 0.01), ema_p 0.999,
no clipping of tau_t (USB's SVHN configs clip it at 0.95: `clip_threshold=True`), the
mean max-confidence rather than a quantile (`use_quantile` False), uratio 7.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm, cross_entropy, hard_pseudo_labels, masked_mean
from kerastl.ssl.algorithms.registry import register_algorithm
from kerastl.ssl.precision import in_loss_dtype


@keras.saving.register_keras_serializable("kerastl")
class FreeMatch(SSLAlgorithm):
    """Self-adaptive global and class-wise thresholds, plus the fairness term.

    The moving averages are non-trainable variables (`global_threshold`, `class_confidence`,
    `label_histogram`), so checkpoints and `.keras` files carry them.

    Example:
    >>> algorithm = FreeMatch(num_classes=10)          # USB's defaults
    >>> float(algorithm.global_threshold.numpy())      # tau_0 = 1 / C
    0.1
    """

    views = ("weak", "strong")
    default_tau = None  # the thresholds adapt; there is no fixed one to set

    def __init__(self, num_classes: int, lambda_u: float = 1.0, lambda_f: float = 0.001, ema_p: float = 0.999,
                 clip_threshold: bool = False, **kwargs):
        super().__init__(None, lambda_u, **kwargs)
        self.num_classes = int(num_classes)
        self.lambda_f = float(lambda_f)
        self.ema_p = float(ema_p)
        self.clip_threshold = bool(clip_threshold)
        start = 1.0 / self.num_classes
        self.global_threshold = state_variable(self, "global_threshold", (), start)
        self.class_confidence = state_variable(self, "class_confidence", (self.num_classes,), start)
        self.label_histogram = state_variable(self, "label_histogram", (self.num_classes,), start)

    def update(self, probs: tf.Tensor) -> None:
        """Moves tau_t, p_t and h_t with this step's weak probabilities (every replica's)."""
        probs = all_replicas(probs)
        m = self.ema_p

        def moved(state, value):  # in the probabilities' dtype, stored in the state's
            return tf.cast(m * tf.cast(state, value.dtype) + (1.0 - m) * value, state.dtype)

        tau = moved(self.global_threshold, tf.reduce_mean(tf.reduce_max(probs, axis=-1)))
        self.global_threshold.assign(tf.clip_by_value(tau, 0.0, 0.95) if self.clip_threshold else tau)
        self.class_confidence.assign(moved(self.class_confidence, tf.reduce_mean(probs, axis=0)))
        self.label_histogram.assign(moved(self.label_histogram, histogram(probs, self.num_classes)))

    def class_thresholds(self) -> tf.Tensor:
        """tau_t(c) = tau_t * p_t(c) / max_c p_t(c), from the current state."""
        confidence = tf.convert_to_tensor(self.class_confidence)
        return self.global_threshold * (confidence / tf.reduce_max(confidence))

    def unsupervised_loss(self, logits, index, step):
        probs, pseudo = hard_pseudo_labels(logits["weak"])
        self.update(probs)
        thresholds = tf.cast(tf.gather(self.class_thresholds(), pseudo), probs.dtype)
        mask = tf.cast(tf.reduce_max(probs, axis=-1) >= thresholds, probs.dtype)
        return masked_mean(cross_entropy(pseudo, logits["strong"]), mask), mask

    def fairness_loss(self, logits_strong: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
        """L_f over the masked strong views (0 when the mask is empty); gradients reach the
        strong logits through their mean probability only."""
        probs = tf.nn.softmax(in_loss_dtype(logits_strong), axis=-1)
        mask = tf.cast(mask, probs.dtype)
        count = tf.reduce_sum(mask)
        # Masked sums rather than a boolean selection: static shapes, so XLA compiles it.
        mean_probs = tf.math.divide_no_nan(tf.reduce_sum(probs * mask[:, None], axis=0), count)
        hist = histogram(probs, self.num_classes, mask)
        confidence, label_histogram = (tf.cast(state, probs.dtype)
                                       for state in (self.class_confidence, self.label_histogram))
        one = tf.constant(1.0, probs.dtype)
        target = sum_normalised(confidence * tf.math.divide_no_nan(one, label_histogram))
        predicted = sum_normalised(mean_probs * tf.math.divide_no_nan(one, hist))
        loss = tf.reduce_sum(target * tf.math.log(predicted + 1e-12))
        return tf.where(count > 0, loss, tf.zeros_like(loss))

    def compute_losses(self, nets, x_lb, y_lb, index, views, step):
        # The default step's single forward pass, plus the fairness term on the strong views.
        num_lb = tf.shape(x_lb)[0]
        logits = nets(tf.concat([x_lb, *views], axis=0))
        weak, strong = tf.split(logits[num_lb:], 2, axis=0)
        sup_loss = tf.reduce_mean(cross_entropy(tf.cast(y_lb, tf.int32), logits[:num_lb]))
        unsup_loss, mask = self.unsupervised_loss({"weak": weak, "strong": strong}, index, step)
        fairness = self.fairness_loss(strong, mask)
        return {"loss": sup_loss + self.lambda_u * unsup_loss + self.lambda_f * fairness, "sup_loss": sup_loss,
                "unsup_loss": unsup_loss, "fairness_loss": fairness, "mask": mask}

    def logged_state(self) -> dict:
        """What the apps log per evaluation: tau_t and the class-wise thresholds."""
        return {"global_threshold": float(self.global_threshold.numpy()),
                "class_thresholds": self.class_thresholds().numpy().tolist()}

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "lambda_f": self.lambda_f,
                "ema_p": self.ema_p, "clip_threshold": self.clip_threshold}


def state_variable(layer: keras.layers.Layer, name: str, shape, value: float):
    """A non-trainable variable of `layer` holding a moving average, starting at `value`."""
    return layer.add_weight(shape=shape, initializer=keras.initializers.Constant(value), trainable=False,
                            name=name, aggregation="only_first_replica")


def all_replicas(values: tf.Tensor) -> tf.Tensor:
    """`values` of every replica concatenated along the batch (as USB gathers its
    statistics across processes); the local values without tf.distribute."""
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
        return context.all_gather(values, axis=0)
    return values


def histogram(probs: tf.Tensor, num_classes: int, weights: tf.Tensor | None = None) -> tf.Tensor:
    """Share of the (weighted) rows whose argmax is each class; zeros when no row counts."""
    counts = tf.one_hot(tf.argmax(probs, axis=-1), num_classes, dtype=probs.dtype)
    if weights is not None:
        counts = counts * weights[:, None]
    return sum_normalised(tf.reduce_sum(counts, axis=0))


def sum_normalised(x: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(x, tf.reduce_sum(x, axis=-1, keepdims=True))


register_algorithm("freematch", FreeMatch, lambda s: FreeMatch(s.num_classes),
                   "FreeMatch: self-adaptive global and class-wise thresholds from EMAs of the weak view's "
                   "confidence, plus a class-fairness term")
