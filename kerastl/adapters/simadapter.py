"""SimAdapter: attention over the outputs of several language adapters (Hou et al. 2022).

For the output z of one frozen Transformer layer, the outputs a_1..a_S of S language
adapters on it, and the layer's own feed-forward input r = LN2(h) (h: the stream after
self-attention; `ASREncoder.run_layer` returns it):

    q = z W_Q + b_Q,   k_i = a_i W_K + b_K,   v_i = a_i W_V          (W_V: no bias)
    attn = softmax_i(q . k_i / tau)                                   (no sqrt(d) scaling)
    out  = sum_i attn_i v_i + r

as the reference implementation (NeuralSpeech AdapterASR, e2e_asr_adaptertransformer.py:
`SimAdapter.forward` adds `residual=x_norm`, the frozen layer's pre-feed-forward normalised
stream; the layer has no LayerNorm of its own). W_V starts at the identity with 1e-6 off the
diagonal.

Two losses are added with `add_loss` in training calls only (`training=True`; the
reference adds neither to its validation loss):
- the stability regulariser `stability_weight * ||I - W_V||^2` (sum of squares; 0.01 in
  the paper), which keeps W_V near the identity;
- the fusion-guide loss `guide_weight * CE(exp(mean attention), guide_index)`: the attention
  is averaged over the batch and the (unpadded) frames to m [S], and, as the reference's
  `get_fusion_guide_loss`, exp(m) is scored as logits by a softmax cross-entropy against
  the target language's own adapter: -exp(m_g) + log sum_j exp(exp(m_j)). The weight is a
  variable: `set_guide_weight` changes it between or during training steps
  (`GuideWeightDecay` decays it linearly, as the reference's schedule).

The batch- and frame-averaged attention of the last call is kept in the non-trainable
variable `attention` (`last_attention` reads it), for plots of which languages a target
borrows from.

Example:
>>> import numpy as np
>>> fusion = SimAdapter(guide_weight=0.1, guide_index=2)
>>> z = np.random.rand(2, 5, 16).astype("float32")
>>> adapter_outputs = np.random.rand(2, 5, 3, 16).astype("float32")   # [B, T, S, D]
>>> residual = np.random.rand(2, 5, 16).astype("float32")
>>> out = fusion(z, adapter_outputs, residual, training=True)
>>> tuple(out.shape), fusion.last_attention.shape, len(fusion.losses)
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

    `call(z, adapter_outputs, residual=None, padding_mask=None, training=None)` with z
    `[B, T, D]`, adapter_outputs `[B, T, S, D]`, the residual `[B, T, D]` added to the fused
    values (the frozen layer's feed-forward input; None = no residual) and an optional
    boolean padding_mask `[B, T]` (padded frames are left out of the averaged attention).

    Example (fusing ru, it and the target ro in a functional model):
    >>> z = keras.Input((None, 256))
    >>> stacked = keras.Input((None, 3, 256))       # adapters of ru, it, ro on z
    >>> normalized = keras.Input((None, 256))       # the layer's feed-forward input
    >>> out = SimAdapter(guide_weight=0.1, guide_index=2)(z, stacked, normalized)
    """

    def __init__(self, temperature: float = 1.0, stability_weight: float = 0.01, guide_weight: float = 0.0,
                 guide_index: int | None = None, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature {temperature}: expected a positive number")
        self.temperature = float(temperature)
        self.stability_weight = float(stability_weight)
        self.guide_weight = float(guide_weight)
        self.guide_index = None if guide_index is None else int(guide_index)
        self.dropout = float(dropout)

    def build(self, z_shape, adapter_outputs_shape=None, residual_shape=None, padding_mask_shape=None):
        if adapter_outputs_shape is None:
            raise ValueError("SimAdapter.build needs adapter_outputs_shape [B, T, S, D] to know S")
        dim, sources = int(z_shape[-1]), int(adapter_outputs_shape[-2])
        if self.guide_index is not None and not 0 <= self.guide_index < sources:
            raise ValueError(f"guide_index {self.guide_index}: expected an index among the {sources} adapters")
        self.num_sources = sources
        self.query = keras.layers.Dense(dim, name="query")
        self.key = keras.layers.Dense(dim, name="key")
        self.attention_dropout = keras.layers.Dropout(self.dropout, name="attention_dropout")
        self.query.build(z_shape)
        self.key.build(adapter_outputs_shape)
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
        """guide_weight * softmax cross-entropy of the logits exp(mean attention) [S] with the
        label guide_index (the reference's loss)."""
        logits = tf.exp(mean_attention)
        cross_entropy = tf.reduce_logsumexp(logits) - tf.gather(logits, self.guide_index)
        return self.guide_weight_variable * cross_entropy

    def attention_weights(self, z, adapter_outputs):
        """softmax over the adapters of q . k_i / tau: `[B, T, S]`."""
        q = self.query(z)
        k = self.key(adapter_outputs)
        scores = tf.einsum("btd,btsd->bts", q, k) / self.temperature
        return tf.nn.softmax(scores, axis=-1)

    def call(self, z, adapter_outputs, residual=None, padding_mask=None, training=None):
        attention = self.attention_weights(z, adapter_outputs)
        mean_attention = masked_mean_attention(tf.cast(attention, self.attention.dtype), padding_mask)
        self.attention.assign(mean_attention)
        if training:
            self.add_loss(self.stability_loss())
            if self.guide_index is not None:
                self.add_loss(self.guide_loss(mean_attention))
        attention = self.attention_dropout(attention, training=training)
        # sum_i attn_i (a_i W_V) = (sum_i attn_i a_i) W_V: mix first, one matmul.
        mixed = tf.einsum("bts,btsd->btd", attention, adapter_outputs)
        out = tf.einsum("btd,de->bte", mixed, tf.cast(self.value_kernel, mixed.dtype))
        return out if residual is None else out + tf.cast(residual, out.dtype)

    def compute_output_shape(self, z_shape, adapter_outputs_shape=None, residual_shape=None, padding_mask_shape=None):
        return z_shape

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, stability_weight=self.stability_weight,
                      guide_weight=self.guide_weight, guide_index=self.guide_index, dropout=self.dropout)
        return config


class GuideWeightDecay(keras.callbacks.Callback):
    """The reference's guide-weight schedule: weight * max(0, 1 - step / decay_steps) at every
    training step (step counted from 0 over the whole fit); decay_steps 0 = constant.

    Example:
    >>> decay = GuideWeightDecay(fusion_layers, weight=0.1, decay_steps=1000)   # doctest: +SKIP
    >>> recognizer.fit(train, epochs=10, callbacks=[decay])                     # doctest: +SKIP
    """

    def __init__(self, layers, weight: float, decay_steps: int = 0):
        super().__init__()
        if decay_steps < 0:
            raise ValueError(f"decay_steps {decay_steps}: expected 0 (no decay) or more")
        self.layers, self.weight, self.decay_steps, self.step = list(layers), float(weight), int(decay_steps), 0

    def weight_at(self, step: int) -> float:
        if self.decay_steps == 0:
            return self.weight
        return self.weight * max(0.0, 1.0 - step / self.decay_steps)

    def on_train_batch_begin(self, batch, logs=None):
        for layer in self.layers:
            layer.set_guide_weight(self.weight_at(self.step))
        self.step += 1
