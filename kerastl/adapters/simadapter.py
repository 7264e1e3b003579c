"""SimAdapter: attention over the outputs of several language adapters (Hou et al. 2022).

For the encoder output z of one layer and the outputs a_1..a_S of S language adapters on it:

    q = z W_Q + b_Q,   k_i = a_i W_K + b_K,   v_i = a_i W_V          (W_V: no bias)
    attn = softmax_i(q . k_i / tau)                                   (no sqrt(d) scaling)
    out  = sum_i attn_i v_i + LN(z)

W_V starts at the identity with 1e-6 off the diagonal, so at initialisation `out` is the
attention-weighted mix of the adapters' outputs plus LN(z).

Two losses are added with `add_loss` at every call (so `model.fit` trains with them):
- the stability regulariser `stability_weight * ||I - W_V||^2` (sum of squares; 0.01 in
  the paper), which keeps W_V near the identity;
- the fusion-guide loss `guide_weight * -log(mean attention on guide_index)`: the attention
  is averaged over the batch and the (unpadded) frames, then scored by cross-entropy against
  the target language's own adapter (`guide_index`). The reference implementation feeds
  exp(mean attention) as logits to a softmax cross-entropy; here the mean attention is
  used as the probability itself, the plain cross-entropy the paper describes. The weight is
  a variable: `set_guide_weight` changes it between or during training steps (decay).

The batch- and frame-averaged attention of the last call is kept in the non-trainable
variable `attention` (`last_attention` reads it), for plots of which languages a target
borrows from.

Example:
>>> import numpy as np
>>> fusion = SimAdapter(guide_weight=0.1, guide_index=2)
>>> z = np.random.rand(2, 5, 16).astype("float32")
>>> adapter_outputs = np.random.rand(2, 5, 3, 16).astype("float32")   # [B, T, S, D]
>>> tuple(fusion(z, adapter_outputs).shape), fusion.last_attention.shape, len(fusion.losses)
((2, 5, 16), (3,), 2)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

# W_V's initial off-diagonal entries (the reference's value).
OFF_DIAGONAL = 1e-6


def near_identity(shape, dtype=None):
    """Identity with OFF_DIAGONAL everywhere off the diagonal (SimAdapter's W_V initialiser)."""
    rows, cols = shape
    matrix = np.full((rows, cols), OFF_DIAGONAL) + (1.0 - OFF_DIAGONAL) * np.eye(rows, cols)
    return tf.constant(matrix, dtype=dtype or "float32")


def masked_mean_attention(attention, padding_mask=None):
    """Attention [B, T, S] averaged over the batch and the valid frames -> [S]."""
    if padding_mask is None:
        return tf.reduce_mean(attention, axis=[0, 1])
    weights = tf.cast(padding_mask, attention.dtype)[..., None]
    return tf.reduce_sum(attention * weights, axis=[0, 1]) / tf.maximum(tf.reduce_sum(weights), 1.0)


@keras.saving.register_keras_serializable("kerastl")
class SimAdapter(keras.layers.Layer):
    """Attention fusion of language adapters (see the module docstring for the formulas).

    Args:
        temperature: tau of the softmax (paper: 1).
        stability_weight: weight of ||I - W_V||^2 (paper: 0.01).
        guide_weight: initial weight of the fusion-guide loss (paper: 0.1; 0 = off).
        guide_index: index, among the adapter outputs, of the target language's own adapter;
            None = no guide loss.
        dropout: dropout on the attention weights.
        epsilon: the LayerNorm epsilon.

    `call(z, adapter_outputs, padding_mask=None, training=None)` with z `[B, T, D]`,
    adapter_outputs `[B, T, S, D]` and an optional boolean padding_mask `[B, T]` (padded frames
    are left out of the averaged attention).

    Example (fusing ru, it and the target ro in a functional model):
    >>> z = keras.Input((None, 256))
    >>> stacked = keras.Input((None, 3, 256))       # adapters of ru, it, ro on z
    >>> out = SimAdapter(guide_weight=0.1, guide_index=2)(z, stacked)
    """

    def __init__(self, temperature: float = 1.0, stability_weight: float = 0.01, guide_weight: float = 0.0,
                 guide_index: int | None = None, dropout: float = 0.0, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature {temperature}: expected a positive number")
        self.temperature = float(temperature)
        self.stability_weight = float(stability_weight)
        self.guide_weight = float(guide_weight)
        self.guide_index = None if guide_index is None else int(guide_index)
        self.dropout = float(dropout)
        self.epsilon = float(epsilon)

    def build(self, z_shape, adapter_outputs_shape=None, padding_mask_shape=None):
        if adapter_outputs_shape is None:
            raise ValueError("SimAdapter.build needs adapter_outputs_shape [B, T, S, D] to know S")
        dim, sources = int(z_shape[-1]), int(adapter_outputs_shape[-2])
        if self.guide_index is not None and not 0 <= self.guide_index < sources:
            raise ValueError(f"guide_index {self.guide_index}: expected an index among the {sources} adapters")
        self.num_sources = sources
        self.query = keras.layers.Dense(dim, name="query")
        self.key = keras.layers.Dense(dim, name="key")
        self.layer_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="layer_norm")
        self.attention_dropout = keras.layers.Dropout(self.dropout, name="attention_dropout")
        self.query.build(z_shape)
        self.key.build(adapter_outputs_shape)
        self.layer_norm.build(z_shape)
        self.value_kernel = self.add_weight(name="value_kernel", shape=(dim, dim), initializer=near_identity)
        self.attention = self.add_weight(name="attention", shape=(sources,), initializer="zeros", trainable=False)
        self.guide_weight_variable = self.add_weight(
            name="guide_weight", shape=(), initializer=keras.initializers.Constant(self.guide_weight), trainable=False)
        self.built = True

    @property
    def state_variables(self) -> list:
        """Bookkeeping variables that are not model parameters (averaged attention, guide weight)."""
        return [self.attention, self.guide_weight_variable]

    @property
    def last_attention(self) -> np.ndarray:
        """The attention of the last call, averaged over batch and valid frames, `[S]`."""
        return np.asarray(self.attention.numpy())

    def set_guide_weight(self, weight: float) -> None:
        self.guide_weight_variable.assign(float(weight))

    def stability_loss(self):
        """stability_weight * ||I - W_V||^2."""
        identity = tf.eye(tf.shape(self.value_kernel)[0], dtype=self.value_kernel.dtype)
        return self.stability_weight * tf.reduce_sum(tf.square(identity - self.value_kernel))

    def guide_loss(self, mean_attention):
        """guide_weight * cross-entropy of the averaged attention [S] with label guide_index."""
        probability = tf.gather(mean_attention, self.guide_index)
        return self.guide_weight_variable * -tf.math.log(probability + 1e-9)

    def attention_weights(self, z, adapter_outputs):
        """softmax over the adapters of q . k_i / tau: `[B, T, S]`."""
        q = self.query(z)
        k = self.key(adapter_outputs)
        scores = tf.einsum("btd,btsd->bts", q, k) / self.temperature
        return tf.nn.softmax(scores, axis=-1)

    def call(self, z, adapter_outputs, padding_mask=None, training=None):
        attention = self.attention_weights(z, adapter_outputs)
        mean_attention = masked_mean_attention(tf.cast(attention, tf.float32), padding_mask)
        self.attention.assign(mean_attention)
        self.add_loss(self.stability_loss())
        if self.guide_index is not None:
            self.add_loss(self.guide_loss(mean_attention))
        attention = self.attention_dropout(attention, training=training)
        # sum_i attn_i (a_i W_V) = (sum_i attn_i a_i) W_V: mix first, one matmul.
        mixed = tf.einsum("bts,btsd->btd", attention, adapter_outputs)
        return tf.einsum("btd,de->bte", mixed, tf.cast(self.value_kernel, mixed.dtype)) + self.layer_norm(z)

    def compute_output_shape(self, z_shape, adapter_outputs_shape=None, padding_mask_shape=None):
        return z_shape

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, stability_weight=self.stability_weight,
                      guide_weight=self.guide_weight, guide_index=self.guide_index, dropout=self.dropout,
                      epsilon=self.epsilon)
        return config
