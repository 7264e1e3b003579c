"""Neuron coverage profiling: which channels of a network the student's data exercises.

ReMoS asks, for every conv / dense layer of the teacher, how often each channel (unit) is
*covered* by the student's training data: each sample's activation tensor is min-max scaled
over the whole layer, and a channel counts as covered when its spatial mean exceeds `alpha`
(0.5). Counting is done by `ChannelCoverage` layers attached to a functional sub-model of
the teacher, so profiling is one batched forward pass, no per-sample loop.

Token embeddings (the NLP setting) can be sliced too: their input "channels" are vocabulary
entries, and a token counts as covered by a sentence that contains it (`TokenCoverage`; a
min-max threshold on one-hot inputs would never fire). The trigger word of a text backdoor
is absent from the student's data, so its embedding row is uncovered.

Example:
>>> teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c"),
...                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="d")])
>>> counts = profile_coverage(teacher, np.random.rand(16, 8, 8, 1), ["c", "d"])
>>> counts["c"].input.shape, counts["c"].output.shape, counts["d"].output.shape
((1,), (4,), (3,))
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
from keras import ops

#: Layer types whose kernels ReMoS slices (kernel axes [..., inputs, outputs]).
SLICEABLE_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)


@keras.saving.register_keras_serializable("kerastl")
class ChannelCoverage(keras.layers.Layer):
    """Per-sample channel coverage of an activation tensor `[batch, ..., channels]`.

    Each sample's tensor is min-max scaled to [0, 1] over all its elements; a channel is
    covered (1.0) when the mean of its scaled values over the positional axes exceeds
    `alpha`, else 0.0. A constant tensor (max == min) covers nothing. For sequences with a
    padding mask, padding positions are left out. Output: float32 `[batch, channels]`;
    summing it over a dataset gives the coverage counts.

    Example:
    >>> activation = np.array([[[0.0, 4.0], [2.0, 4.0]]])       # 1 sample, 2 positions, 2 channels
    >>> ChannelCoverage(alpha=0.5)(activation).numpy().tolist()  # means 0.25 and 1.0
    [[0.0, 1.0]]
    """

    def __init__(self, alpha: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, activation, mask=None):
        activation = ops.cast(activation, "float32")
        rank = len(activation.shape)
        sample_axes = tuple(range(1, rank))
        if mask is not None and rank == 3:
            # Sequences (text): padding positions take part neither in the min-max nor in the mean.
            valid = ops.cast(mask, "float32")[..., None]
            low = ops.min(ops.where(valid > 0, activation, np.inf), axis=sample_axes, keepdims=True)
            high = ops.max(ops.where(valid > 0, activation, -np.inf), axis=sample_axes, keepdims=True)
        else:
            valid = None
            low = ops.min(activation, axis=sample_axes, keepdims=True)
            high = ops.max(activation, axis=sample_axes, keepdims=True)
        spread = high - low
        # A constant tensor has no "high" channel: divide by 1 there so that it scales to 0.
        scaled = (activation - low) / ops.where(spread > 0, spread, ops.ones_like(spread))
        if valid is not None:
            channel_mean = ops.sum(scaled * valid, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1.0)
        else:
            channel_mean = ops.mean(scaled, axis=tuple(range(1, rank - 1))) if rank > 2 else scaled
        return ops.cast(channel_mean > self.alpha, "float32")

    def compute_mask(self, inputs, mask=None):
        return None  # one value per channel: the sequence mask ends here

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable("kerastl")
class TokenCoverage(keras.layers.Layer):
    """Which vocabulary entries each token-id sequence contains: `[batch, length]` ints ->
    float32 `[batch, vocabulary_size]` of 0 / 1 (id 0, the padding, never counts).

    Example:
    >>> TokenCoverage(vocabulary_size=5)(np.array([[3, 1, 3, 0]])).numpy().tolist()
    [[0.0, 1.0, 0.0, 1.0, 0.0]]
    """

    def __init__(self, vocabulary_size: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)

    def call(self, token_ids):
        counts = ops.bincount(ops.cast(token_ids, "int32"), minlength=self.vocabulary_size)
        present = ops.cast(counts[:, :self.vocabulary_size] > 0, "float32")
        not_padding = ops.concatenate([ops.zeros((1,)), ops.ones((self.vocabulary_size - 1,))])
        return present * not_padding

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.vocabulary_size)

    def get_config(self):
        return {**super().get_config(), "vocabulary_size": self.vocabulary_size}


def token_embedding(layer) -> keras.layers.Embedding | None:
    """The token table of an embedding layer (keras `Embedding`, or a layer holding one as
    `token_embedding` such as keras-hub's `TokenAndPositionEmbedding`), else None."""
    if isinstance(layer, keras.layers.Embedding):
        return layer
    inner = getattr(layer, "token_embedding", None)
    return inner if isinstance(inner, keras.layers.Embedding) else None


def sliced_weights(layer):
    """The variable ReMoS slices in `layer`: a kernel `[..., inputs, outputs]`, or a token
    embedding table `[vocabulary, features]`."""
    table = token_embedding(layer)
    return table.embeddings if table is not None else layer.kernel


@dataclasses.dataclass
class LayerCoverage:
    """Coverage counts of one layer: how many samples covered each input and output channel."""

    input: np.ndarray
    output: np.ndarray
    samples: int


def sliceable_layers(model: keras.Model, include_head: bool = False, include_embeddings: bool = False) -> list[str]:
    """Names of the conv / dense layers (and, if `include_embeddings`, token embeddings) of
    `model` in graph order.
    The last conv / dense layer is the head; it is left out unless `include_head`, since
    the student replaces it."""
    dense = [layer.name for layer in model.layers if isinstance(layer, SLICEABLE_TYPES)]
    head = None if include_head or not dense else dense[-1]
    return [layer.name for layer in model.layers if layer.name != head and (
        isinstance(layer, SLICEABLE_TYPES) or (include_embeddings and token_embedding(layer) is not None))]


def coverage_profiler(model: keras.Model, layer_names: list[str], alpha: float = 0.5) -> keras.Model:
    """A functional sub-model of `model` returning, per named layer, the per-sample coverage
    of its input and of its output (`[batch, channels]` each, in `layer_names` order)."""
    outputs = []
    for name in layer_names:
        layer = model.get_layer(name)
        table = token_embedding(layer)
        if table is not None:
            outputs.append(TokenCoverage(table.input_dim, name=f"{name}_input_coverage")(layer.input))
        else:
            outputs.append(ChannelCoverage(alpha, name=f"{name}_input_coverage")(layer.input))
        outputs.append(ChannelCoverage(alpha, name=f"{name}_output_coverage")(layer.output))
    return keras.Model(model.inputs, outputs, name=f"{model.name}_coverage")


def profile_coverage(model: keras.Model, data, layer_names: list[str] | None = None, alpha: float = 0.5,
                     batch_size: int = 256) -> dict[str, LayerCoverage]:
    """Counts, over `data` (an array or a `tf.data.Dataset` of model inputs), how many samples
    cover each input and output channel of each layer in `layer_names` (default: every
    sliceable layer but the head). One forward pass through `coverage_profiler`, batch by
    batch (`batch_size` for arrays); counts are floats (sample counts).
    """
    layer_names = sliceable_layers(model) if layer_names is None else list(layer_names)
    profiler = coverage_profiler(model, layer_names, alpha)
    totals = [0.0] * (2 * len(layer_names))
    samples = 0
    # Batches run eagerly: a single pass needs no compiled predict function (tracing one
    # would cost more than the pass itself on a small student set).
    for batch in _batches(data, batch_size):
        # A single-input model takes its inputs as a one-element list (its `inputs` structure).
        covered = profiler(batch if isinstance(batch, (dict, list)) else [batch], training=False)
        covered = covered if isinstance(covered, (list, tuple)) else [covered]
        totals = [total + ops.convert_to_numpy(ops.sum(c, axis=0)) for total, c in zip(totals, covered)]
        samples += int(ops.shape(covered[0])[0])
    result = {}
    for index, name in enumerate(layer_names):
        channels_in, channels_out = profiler.outputs[2 * index].shape[-1], profiler.outputs[2 * index + 1].shape[-1]
        result[name] = LayerCoverage(input=np.broadcast_to(totals[2 * index], (channels_in,)).astype(np.float64),
                                     output=np.broadcast_to(totals[2 * index + 1], (channels_out,)).astype(np.float64),
                                     samples=samples)
    return result


def _batches(data, batch_size: int):
    """Batches of model inputs from an array or a `tf.data.Dataset` (of inputs, or of
    `(inputs, labels)` pairs)."""
    if isinstance(data, np.ndarray) or hasattr(data, "__array__") and not hasattr(data, "element_spec"):
        data = np.asarray(data)
        for start in range(0, len(data), batch_size):
            yield data[start:start + batch_size]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, tuple) else batch
