"""A Transformer speech encoder over log-mel filterbanks (ESPnet's Transformer encoder, in Keras).

features `[batch, frames, 80]` -> two 3x3 convolutions with stride 2 and ReLU (time and
frequency subsampled 4x) -> a linear projection to `hidden_dim`, scaled by sqrt(hidden_dim),
plus sinusoidal positions -> `num_layers` keras-hub `TransformerEncoder` layers (pre-norm,
ReLU feed-forward, padded frames masked) -> a final LayerNorm.

`ASREncoder.encode` runs the same stack with a hook called after every Transformer layer:
that is where the adapter models insert per-language adapters (`kerastl.adapters.model`).
The hook also receives the layer's feed-forward input, LN(h) of the stream h after
self-attention (ESPnet's `x_norm`): SimAdapter adds it as its residual.

Example:
>>> import numpy as np
>>> encoder = ASREncoder(num_layers=2, hidden_dim=64, num_heads=4, intermediate_dim=256)
>>> features = np.random.rand(3, 100, 80).astype("float32")
>>> hidden, lengths = encoder(features, np.array([100, 60, 7]))
>>> tuple(hidden.shape), lengths.numpy().tolist()
((3, 24, 64), [24, 14, 1])
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf


def subsampled_lengths(lengths):
    """Frames left after the two stride-2 'valid' 3x3 convolutions: ((L - 1) // 2 - 1) // 2.

    Exactly the output frames that see only real (unpadded) input frames; 0 below 7 frames.
    Accepts python ints, numpy arrays or tensors (returns the same kind).

    >>> subsampled_lengths(100), subsampled_lengths(7), subsampled_lengths(6)
    (24, 1, 0)
    """
    if isinstance(lengths, int):
        return max(((lengths - 1) // 2 - 1) // 2, 0)
    if tf.is_tensor(lengths):
        lengths = tf.cast(lengths, tf.int32)
        return tf.maximum(((lengths - 1) // 2 - 1) // 2, 0)
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.maximum(((lengths - 1) // 2 - 1) // 2, 0)


@keras.saving.register_keras_serializable("kerastl")
class ASREncoder(keras.layers.Layer):
    """Conv subsampling (4x in time) + projection + positions + Transformer layers + LayerNorm.

    Args:
        num_layers: Transformer encoder layers (paper: 12).
        hidden_dim: model width d_model (paper: 256).
        num_heads: attention heads (paper: 4); must divide `hidden_dim`.
        intermediate_dim: feed-forward width (paper: 2048).
        dropout: dropout after the positions and inside every Transformer layer (paper: 0.1).
        input_dim: feature size per frame (80 log-mel bins).
        layer_norm_epsilon: epsilon of every LayerNorm.

    `call(features, lengths=None, training=None)` returns `(hidden [B, T', hidden_dim],
    hidden_lengths [B])`; `lengths` are the valid feature frames of each utterance (default:
    all frames), and padded positions are masked in self-attention.

    Example:
    >>> encoder = ASREncoder(num_layers=12, hidden_dim=256, num_heads=4, intermediate_dim=2048)
    >>> encoder.build((None, None, 80))
    >>> encoder.count_params() > 1e7
    True
    """

    def __init__(self, num_layers: int = 2, hidden_dim: int = 64, num_heads: int = 4, intermediate_dim: int = 256,
                 dropout: float = 0.1, input_dim: int = 80, layer_norm_epsilon: float = 1e-5, **kwargs):
        import keras_hub  # here, so that importing kerastl.nets does not load keras-hub

        super().__init__(**kwargs)
        if num_layers < 1 or hidden_dim < 1 or num_heads < 1 or hidden_dim % num_heads:
            raise ValueError(f"num_layers {num_layers}, hidden_dim {hidden_dim}, num_heads {num_heads}: expected "
                             "positive sizes with num_heads dividing hidden_dim")
        if input_dim < 7:
            raise ValueError(f"input_dim {input_dim}: the two stride-2 convolutions need at least 7 features")
        self.num_layers = int(num_layers)
        self.hidden_dim = int(hidden_dim)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.dropout = float(dropout)
        self.input_dim = int(input_dim)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.subsample_conv1 = keras.layers.Conv2D(hidden_dim, 3, strides=2, activation="relu", name="subsample_conv1")
        self.subsample_conv2 = keras.layers.Conv2D(hidden_dim, 3, strides=2, activation="relu", name="subsample_conv2")
        self.projection = keras.layers.Dense(hidden_dim, name="projection")
        self.positions = keras_hub.layers.SinePositionEncoding(name="positions")
        self.embedding_dropout = keras.layers.Dropout(dropout, name="embedding_dropout")
        self.transformer_layers = [
            keras_hub.layers.TransformerEncoder(intermediate_dim, num_heads, dropout=dropout, activation="relu",
                                                layer_norm_epsilon=layer_norm_epsilon, normalize_first=True,
                                                name=f"encoder_layer_{i}")
            for i in range(num_layers)]
        self.final_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="final_norm")

    @property
    def subsampled_bins(self) -> int:
        return subsampled_lengths(self.input_dim)

    def build(self, input_shape=None):
        self.subsample_conv1.build((None, None, self.input_dim, 1))
        self.subsample_conv2.build((None, None, (self.input_dim - 1) // 2, self.hidden_dim))
        self.projection.build((None, None, self.subsampled_bins * self.hidden_dim))
        hidden = (None, None, self.hidden_dim)
        self.positions.build(hidden)
        for layer in self.transformer_layers:
            layer.build(hidden)
        self.final_norm.build(hidden)
        self.built = True

    def embed(self, features, lengths=None, training=None):
        """The input stage: returns `(x [B, T', D], padding_mask [B, T'] bool, lengths' [B])`."""
        features = tf.convert_to_tensor(features, self.compute_dtype)
        if features.shape[-1] is not None and features.shape[-1] != self.input_dim:
            raise ValueError(f"features with {features.shape[-1]} values per frame: "
                             f"this encoder expects {self.input_dim}")
        if lengths is None:
            lengths = tf.fill(tf.shape(features)[:1], tf.shape(features)[1])
        x = self.subsample_conv2(self.subsample_conv1(features[..., None]))
        x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], self.subsampled_bins * self.hidden_dim])
        x = self.projection(x) * math.sqrt(self.hidden_dim)
        x = self.embedding_dropout(x + self.positions(x), training=training)
        hidden_lengths = subsampled_lengths(lengths)
        return x, tf.sequence_mask(hidden_lengths, tf.shape(x)[1]), hidden_lengths

    def run_layer(self, i, x, padding_mask=None, training=None):
        """Transformer layer i on x: `(output, feed_forward_input)`, where feed_forward_input
        is LN(h) of the stream h after self-attention (what the layer's feed-forward block
        reads). The output equals `transformer_layers[i](x, padding_mask=...)`: the same
        pre-norm block written out over the keras-hub layer's own sublayers (keras-hub's
        call does not return LN(h); the sublayer names are those of the pinned keras-hub)."""
        layer = self.transformer_layers[i]
        mask = None if padding_mask is None else tf.cast(padding_mask[:, None, :], "int32")
        h = layer._self_attention_layer_norm(x)
        h = layer._self_attention_layer(query=h, value=h, attention_mask=mask, training=training)
        h = x + layer._self_attention_dropout(h, training=training)
        normalized = layer._feedforward_layer_norm(h)
        y = layer._feedforward_output_dense(layer._feedforward_intermediate_dense(normalized))
        return h + layer._feedforward_dropout(y, training=training), normalized

    def encode(self, features, lengths=None, after_layer=None, training=None):
        """The whole stack; `after_layer(i, x, padding_mask, training, feed_forward_input) -> x`
        runs after layer i (feed_forward_input: see `run_layer`).

        Returns `(hidden [B, T', D], hidden_lengths [B])`.
        """
        if not self.built:
            self.build()
        x, padding_mask, hidden_lengths = self.embed(features, lengths, training=training)
        for i, layer in enumerate(self.transformer_layers):
            if after_layer is None:
                x = layer(x, padding_mask=padding_mask, training=training)
            else:
                x, normalized = self.run_layer(i, x, padding_mask, training)
                x = after_layer(i, x, padding_mask, training, normalized)
        return self.final_norm(x), hidden_lengths

    def call(self, features, lengths=None, training=None):
        return self.encode(features, lengths, training=training)

    def compute_output_shape(self, features_shape, lengths_shape=None):
        time = None if features_shape[1] is None else subsampled_lengths(int(features_shape[1]))
        return (features_shape[0], time, self.hidden_dim), (features_shape[0],)

    def get_config(self):
        config = super().get_config()
        config.update(num_layers=self.num_layers, hidden_dim=self.hidden_dim, num_heads=self.num_heads,
                      intermediate_dim=self.intermediate_dim, dropout=self.dropout, input_dim=self.input_dim,
                      layer_norm_epsilon=self.layer_norm_epsilon)
        return config
