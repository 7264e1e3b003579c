"""Confidence thresholds for pseudo-labels: fixed (FixMatch) and curriculum (FlexMatch's CPL).

A threshold is a Keras layer called as `mask = threshold(max_probs, pseudo_labels, index)`
inside the training step. Its state is made of non-trainable variables, so checkpoints and
`.keras` files carry it.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kerastl.ssl.precision import loss_dtype

MAPPINGS = ("convex", "linear", "concave")


@keras.saving.register_keras_serializable("kerastl")
class FixedThreshold(keras.layers.Layer):
    """`mask = max_probs >= tau` (FixMatch, Pseudo-Label, UDA).

    Example:
    >>> FixedThreshold(0.9)(tf.constant([0.95, 0.5]), tf.constant([1, 2]), tf.constant([0, 1]))
    <tf.Tensor: shape=(2,), dtype=float32, numpy=array([1., 0.], dtype=float32)>
    """

    def __init__(self, tau: float = 0.95, **kwargs):
        kwargs.setdefault("dtype", "float32")  # thresholds stay float32 under mixed precision
        kwargs.setdefault("autocast", False)  # float64 probabilities are not rounded to float32
        super().__init__(**kwargs)
        self.tau = float(tau)

    def call(self, max_probs, pseudo_labels, index):
        # The mask in the loss dtype: float32, float64 for float64 probabilities.
        return tf.cast(max_probs >= self.tau, loss_dtype(max_probs.dtype))

    def get_config(self):
        return {**super().get_config(), "tau": self.tau}


@keras.saving.register_keras_serializable("kerastl")
class CurriculumThreshold(keras.layers.Layer):
    """Curriculum Pseudo Labeling (FlexMatch, Zhang et al., NeurIPS 2021).

    Per-class thresholds `tau * M(beta_c)`, where the learning effect `beta_c` is the number of
    unlabeled examples whose latest confident (max prob >= tau) prediction is class c,
    normalised by the largest count:

    ```
    cnt  = bincount(selected_label + 1, minlength=C+1)     # bucket 0: never confidently predicted
    beta = cnt[1:] / max(cnt)        (warmup: the unused bucket takes part)
           cnt[1:] / max(cnt[1:])    (no warmup)
    mask = max_probs >= tau * M(beta[pseudo_label])
    then selected_label[index] = pseudo_label where max_probs >= tau   (never reset to -1)
    ```
    `beta` is recomputed before masking from the state left by earlier steps, and is left
    unchanged while every example is still in one bucket. `M` is convex `x / (2 - x)`
    (default), linear `x`, or concave `ln(x + 1) / ln 2` (the paper's three mappings).

    Under `tf.distribute`, every replica's selections are gathered before the update, so
    all replicas hold the same state.

    Args:
        num_unlabeled: size of the unlabeled set (indices are 0..num_unlabeled-1).
        num_classes: C.
        tau: the fixed upper threshold (0.95).
        warmup: threshold warm-up (default True, as in the paper).
        mapping: "convex", "linear" or "concave".

    Example:
    >>> cpl = CurriculumThreshold(num_unlabeled=4, num_classes=2, tau=0.9)
    >>> mask = cpl(tf.constant([0.95, 0.6]), tf.constant([0, 1]), tf.constant([0, 1]))
    >>> cpl.selected_label.numpy().tolist()     # example 0 passed the fixed tau
    [0, -1, -1, -1]
    """

    def __init__(self, num_unlabeled: int, num_classes: int, tau: float = 0.95, warmup: bool = True,
                 mapping: str = "convex", **kwargs):
        kwargs.setdefault("dtype", "float32")  # counts and beta stay float32 under mixed precision
        kwargs.setdefault("autocast", False)  # float64 probabilities are not rounded to float32
        super().__init__(**kwargs)
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping {mapping!r}: expected one of {', '.join(MAPPINGS)}")
        self.num_unlabeled = int(num_unlabeled)
        self.num_classes = int(num_classes)
        self.tau = float(tau)
        self.warmup = bool(warmup)
        self.mapping = mapping
        self.selected_label = self.add_weight(
            shape=(self.num_unlabeled,), dtype="int32", initializer=keras.initializers.Constant(-1),
            trainable=False, name="selected_label", aggregation="only_first_replica")
        self.classwise_acc = self.add_weight(
            shape=(self.num_classes,), dtype="float32", initializer="zeros", trainable=False,
            name="classwise_acc", aggregation="only_first_replica")
        self.built = True

    def learning_effect(self) -> tf.Tensor:
        """beta from the current `selected_label` (what the next step's mask will use)."""
        counts = tf.math.bincount(self.selected_label + 1, minlength=self.num_classes + 1,
                                  maxlength=self.num_classes + 1, dtype=tf.float32)
        denom = tf.reduce_max(counts) if self.warmup else tf.maximum(tf.reduce_max(counts[1:]), 1.0)
        moving = tf.reduce_max(counts) < self.num_unlabeled
        return tf.where(moving, counts[1:] / denom, tf.convert_to_tensor(self.classwise_acc))

    def mapped(self, beta: tf.Tensor) -> tf.Tensor:
        if self.mapping == "convex":
            return beta / (2.0 - beta)
        if self.mapping == "linear":
            return beta
        return tf.math.log1p(beta) / math.log(2.0)

    def call(self, max_probs, pseudo_labels, index):
        self.classwise_acc.assign(self.learning_effect())
        beta = tf.gather(self.classwise_acc, pseudo_labels)
        # beta and its mapping stay float32 (as USB's classwise_acc), compared with and
        # masking in the probabilities' dtype (float64 for a float64 network).
        threshold = tf.cast(self.tau * self.mapped(beta), max_probs.dtype)
        mask = tf.cast(max_probs >= threshold, loss_dtype(max_probs.dtype))
        self._record(max_probs >= self.tau, tf.cast(pseudo_labels, tf.int32), tf.cast(index, tf.int32))
        return mask

    def _record(self, select, pseudo_labels, index):
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Collectives take no booleans: gather the selection as integers.
            select = tf.cast(context.all_gather(tf.cast(select, tf.int32), axis=0), tf.bool)
            pseudo_labels = context.all_gather(pseudo_labels, axis=0)
            index = context.all_gather(index, axis=0)
        chosen = tf.boolean_mask(index, select)
        labels = tf.boolean_mask(pseudo_labels, select)
        updated = tf.tensor_scatter_nd_update(tf.convert_to_tensor(self.selected_label), chosen[:, None], labels)
        self.selected_label.assign(updated)

    def get_config(self):
        return {**super().get_config(), "num_unlabeled": self.num_unlabeled, "num_classes": self.num_classes,
                "tau": self.tau, "warmup": self.warmup, "mapping": self.mapping}
