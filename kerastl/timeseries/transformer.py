"""AdaTransformer: TDC + TDM on the per-position representations of a Transformer encoder."""

from __future__ import annotations

import keras

from kerastl.timeseries.matching import TemporalMatchingModel


@keras.saving.register_keras_serializable("kerastl")
class PositionalProjection(keras.layers.Layer):
    """Projects each time step's features to `model_dim` and adds a learned position embedding.

    Example:
    >>> PositionalProjection(24, 32)(np.zeros((4, 24, 6), "float32")).shape
    (4, 24, 32)
    """

    def __init__(self, len_seq: int, model_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.len_seq = len_seq
        self.model_dim = model_dim
        self.projection = keras.layers.Dense(model_dim, name="projection")

    def build(self, input_shape):
        self.projection.build(input_shape)
        self.positions = self.add_weight(shape=(self.len_seq, self.model_dim), name="positions",
                                         initializer=keras.initializers.RandomNormal(0.0, 0.02))
        self.built = True

    def call(self, windows):
        return self.projection(windows) + self.positions[None]

    def get_config(self):
        return {**super().get_config(), "len_seq": self.len_seq, "model_dim": self.model_dim}


@keras.saving.register_keras_serializable("kerastl")
class EncoderBlock(keras.layers.Layer):
    """Post-norm Transformer encoder block: self-attention and a feed-forward layer, each with
    a residual connection and LayerNorm. `[B, T, D]` -> `[B, T, D]`.

    Example:
    >>> EncoderBlock(model_dim=32, num_heads=4, ff_dim=64)(np.zeros((2, 24, 32), "float32")).shape
    (2, 24, 32)
    """

    def __init__(self, model_dim: int, num_heads: int = 4, ff_dim: int = 128, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.model_dim, self.num_heads, self.ff_dim, self.dropout_rate = model_dim, num_heads, ff_dim, dropout
        self.attention = keras.layers.MultiHeadAttention(num_heads, model_dim // num_heads, dropout=dropout,
                                                         name="attention")
        self.norm_1 = keras.layers.LayerNormalization(name="norm_1")
        self.feed_forward_1 = keras.layers.Dense(ff_dim, activation="relu", name="feed_forward_1")
        self.feed_forward_2 = keras.layers.Dense(model_dim, name="feed_forward_2")
        self.norm_2 = keras.layers.LayerNormalization(name="norm_2")
        self.dropout = keras.layers.Dropout(dropout)

    def build(self, input_shape):
        self.attention.build(input_shape, input_shape)
        self.norm_1.build(input_shape)
        self.feed_forward_1.build(input_shape)
        self.feed_forward_2.build((*input_shape[:-1], self.ff_dim))
        self.norm_2.build(input_shape)
        self.built = True

    def call(self, hidden, training=None):
        attended = self.attention(hidden, hidden, training=training)
        hidden = self.norm_1(hidden + self.dropout(attended, training=training))
        transformed = self.feed_forward_2(self.feed_forward_1(hidden))
        return self.norm_2(hidden + self.dropout(transformed, training=training))

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim, "num_heads": self.num_heads,
                "ff_dim": self.ff_dim, "dropout": self.dropout_rate}


@keras.saving.register_keras_serializable("kerastl")
class AdaTransformer(TemporalMatchingModel):
    """A Transformer encoder forecaster; TDM matches each block's per-position outputs.

    The input projection (with position embedding) is the first matched "layer", followed by
    `num_layers` encoder blocks, so the importance weights have `num_layers + 1` rows. With
    `matching="none"` it is the vanilla Transformer baseline.

    Example:
    >>> model = AdaTransformer(len_seq=24, num_features=6, num_domains=3, model_dim=32)
    >>> model.compile(optimizer=keras.optimizers.Adam(5e-4, clipvalue=3.0))
    >>> model.build((None, 24, 6))
    >>> model.fit(segment_batches(...), steps_per_epoch=50, epochs=60,       # doctest: +SKIP
    ...           callbacks=[TDMCallback(pre_epoch=40)])
    """

    def __init__(self, len_seq: int, num_features: int, num_domains: int = 2, model_dim: int = 64,
                 num_layers: int = 2, num_heads: int = 4, ff_dim: int = 128, matching: str = "tdm",
                 distance: str = "adversarial", tdm_lambda: float = 0.5, use_gate: bool = True,
                 bottleneck_width: int | None = 64, dropout: float = 0.0,
                 residual_index: int | None = None, num_classes: int | None = None, **kwargs):
        super().__init__(len_seq, num_features, num_domains, matching, distance, tdm_lambda, use_gate,
                         bottleneck_width, dropout, residual_index, num_classes=num_classes, **kwargs)
        self.model_dim, self.num_layers, self.num_heads, self.ff_dim = model_dim, num_layers, num_heads, ff_dim
        self.hidden_sizes = [model_dim] * (num_layers + 1)
        self.encoder_layers = [PositionalProjection(len_seq, model_dim, name="embedding")] + [
            EncoderBlock(model_dim, num_heads, ff_dim, dropout, name=f"block_{i}") for i in range(num_layers)]
        self._create_matching()

    def hidden_sequences(self, windows, training=None):
        hidden = self.encoder_layers[0](windows)
        outputs = [hidden]
        for block in self.encoder_layers[1:]:
            hidden = block(hidden, training=training)
            outputs.append(hidden)
        return outputs

    def get_config(self):
        return {**super().get_config(), "model_dim": self.model_dim, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "ff_dim": self.ff_dim}
