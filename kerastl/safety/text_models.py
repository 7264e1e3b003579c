"""A small BERT-style text classifier whose dense layers ReMoS can profile and slice.

Post-norm BERT blocks (multi-head self-attention, add & norm, GELU feed-forward, add &
norm) on keras-hub's `TokenAndPositionEmbedding`, mean-pooled over the non-padding tokens,
then a classification layer. It is built from Keras layers in one functional graph, not
with keras-hub's `BertBackbone`: the backbone's `TransformerEncoder` keeps its feed-forward
`Dense` layers inside itself, out of the functional graph, so a coverage sub-model cannot
read their inputs and outputs. Here every feed-forward dense layer is a graph node.

Example:
>>> model = small_bert_classifier(vocabulary_size=5000, sequence_length=40)
>>> model.output_shape
(None, 2)
"""

from __future__ import annotations

import warnings

import keras
import keras_hub

# keras-hub's TokenAndPositionEmbedding hands its masked token embeddings to an inner
# PositionEmbedding that ignores masks, and Keras warns on every call; the outer layer's
# output keeps the padding mask (checked), so the warning says nothing about this model.
warnings.filterwarnings("ignore", message="Layer 'position_embedding' .* does not support masking",
                        category=UserWarning)


def small_bert_classifier(vocabulary_size: int, sequence_length: int = 40, num_layers: int = 2,
                          hidden_dim: int = 64, num_heads: int = 2, intermediate_dim: int = 128,
                          num_classes: int = 2, dropout: float = 0.1, name: str = "small_bert") -> keras.Model:
    """Token ids `[batch, sequence_length]` (0 = padding) -> class logits `[batch, num_classes]`."""
    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, hidden_dim, mask_zero=True,
                                                   name="embeddings")(token_ids)
    x = keras.layers.LayerNormalization(epsilon=1e-12, name="embeddings_norm")(x)
    for index in range(num_layers):
        attention = keras.layers.MultiHeadAttention(num_heads, hidden_dim // num_heads, dropout=dropout,
                                                    name=f"layer{index}_attention")(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-12, name=f"layer{index}_attention_norm")(
            keras.layers.Add()([x, keras.layers.Dropout(dropout)(attention)]))
        hidden = keras.layers.Dense(intermediate_dim, activation="gelu", name=f"layer{index}_intermediate")(x)
        hidden = keras.layers.Dense(hidden_dim, name=f"layer{index}_output")(hidden)
        x = keras.layers.LayerNormalization(epsilon=1e-12, name=f"layer{index}_output_norm")(
            keras.layers.Add()([x, keras.layers.Dropout(dropout)(hidden)]))
    pooled = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    pooled = keras.layers.Dense(hidden_dim, activation="tanh", name="pooler")(pooled)
    logits = keras.layers.Dense(num_classes, name="logits")(keras.layers.Dropout(dropout)(pooled))
    return keras.Model(token_ids, logits, name=name)


def export_text_classifier(model: keras.Model, vectorizer, export_dir: str, app: str, version: int | None = None,
                           overwrite: bool = False, metadata: dict | None = None) -> str:
    """Exports `vectorizer` + `model` as one SavedModel: input `texts` (string `[batch]`),
    outputs `probabilities` (float32 `[batch, C]`) and `classes` (int64 `[batch]`).

    Example:
    >>> export_text_classifier(student, vectorizer, "saved_models", "remos")   # doctest: +SKIP
    'saved_models/remos/1'
    """
    import tensorflow as tf

    from kerastl.export import export_model, version_dir

    path, version = version_dir(export_dir, app, version, overwrite)
    texts = keras.Input(shape=(), dtype="string", name="texts")
    serving = keras.Model(texts, model(vectorizer(texts)), name=f"{model.name}_serving")

    def outputs(texts):
        probabilities = tf.nn.softmax(tf.cast(serving(texts, training=False), tf.float32), axis=-1)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    facts = {"app": app, "version": version, "task": "text classification",
             "outputs": {"probabilities": "float32 [batch, classes]", "classes": "int64 [batch]"},
             **(metadata or {})}
    return export_model(serving, path, {"texts": tf.TensorSpec([None], tf.string)}, outputs, facts, overwrite)
