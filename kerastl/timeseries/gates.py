"""The AdaRNN gate: importance weights over time steps for one pair of hidden sequences."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("kerastl")
class TemporalGate(keras.layers.Layer):
    """alpha = softmax_t( mean_batch( sigmoid( BN( Dense_T( flatten([h_s ; h_t]) ) ) ) ) ).

    Used during AdaRNN's pre-training phase to weight the per-time-step distances. Called
    with `source`, `target` of shape `[..., batch, len_seq, hidden]` (any leading dimensions,
    e.g. segment pairs), it returns `[..., len_seq]`: a softmax over time for each leading
    index. Initialisation as in the reference: kernel N(0, 0.05), bias 0; its batch norm has
    PyTorch's epsilon 1e-5.

    Example:
    >>> gate = TemporalGate(len_seq=24)
    >>> alpha = gate(np.zeros((36, 24, 64), "float32"), np.ones((36, 24, 64), "float32"))
    >>> alpha.shape, float(ops.sum(alpha))
    ((24,), 1.0)
    """

    def __init__(self, len_seq: int, **kwargs):
        super().__init__(**kwargs)
        self.len_seq = len_seq
        self.dense = keras.layers.Dense(len_seq, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.05),
                                        bias_initializer="zeros", name="dense")
        # PyTorch's BatchNorm1d defaults, as the reference: momentum 0.1 (Keras 0.9), eps 1e-5.
        self.norm = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="norm")

    def build(self, source_shape, target_shape=None):
        flat = source_shape[-2] * source_shape[-1] * 2
        self.dense.build((*source_shape[:-2], flat))
        self.norm.build((None, self.len_seq))
        self.built = True

    def call(self, source, target, training=None):
        joined = ops.concatenate([source, target], axis=-1)
        shape = ops.shape(joined)
        flat = ops.reshape(joined, (*shape[:-2], shape[-2] * shape[-1]))
        logits = self.dense(flat)
        # BatchNorm over all samples of all leading indices (it is built for rank-2 input).
        normed = ops.reshape(self.norm(ops.reshape(logits, (-1, self.len_seq)), training=training), ops.shape(logits))
        return ops.softmax(ops.mean(ops.sigmoid(normed), axis=-2), axis=-1)

    def get_config(self):
        return {**super().get_config(), "len_seq": self.len_seq}
