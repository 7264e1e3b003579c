"""The supervised baseline: labeled data only, no unlabeled view and no unsupervised loss."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm


@keras.saving.register_keras_serializable("kerastl")
class Supervised(SSLAlgorithm):
    """Trains on the labeled batch alone (the unlabeled stream is not read)."""

    views = ()
    default_tau = None

    def unsupervised_loss(self, logits, index, step):
        return tf.constant(0.0), tf.zeros([0])
