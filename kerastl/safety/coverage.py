"""Neuron coverage profiling: which units of a network the student's data exercises.

ReMoS asks, for every conv / dense layer of the teacher, how often each unit (channel) is
*covered* by the student's training data: each sample's activation tensor is min-max scaled
over the whole layer, and a unit counts as covered when its mean over the positional axes
(pixels, tokens) exceeds `alpha` (0.5). `profile_coverage` counts this for the input and
the output of each profiled layer; the output is taken before a fused activation
(`Conv2D(..., activation="relu")`), as the reference code sees a PyTorch conv's output.

How the activations are reached: for the duration of one forward pass per batch, each
profiled layer's `call` is wrapped (`tapped_calls`) so that it also hands its input and
output to a `ChannelCoverage` measurement. This reaches layers anywhere in the model, also
those that are not nodes of the functional graph, such as the query / key / value /
attention-output `EinsumDense` and the two feed-forward `Dense` layers inside each
keras-hub `TransformerEncoder` of a `BertBackbone`. Layers inside other layers are named
by their path, e.g. `backbone/transformer_layer_0/self_attention_layer/query`.

Units of a layer are the kernel axes it contracts (input) and produces (output): one
channel axis for `Conv*D` / `Dense`, and for `EinsumDense` the trailing axes its equation
shares with the kernel, e.g. `[batch, tokens, heads, head_dim]` for an attention query
(units = heads x head_dim, the same units as BERT's query matrix with hidden = heads x
head_dim). Sequences: when the model's input is integer token ids (0 = padding), every
tapped activation `[batch, tokens, ...]` leaves the padding positions out of the min-max
and of the mean over tokens.

Token embeddings (the NLP setting) can be sliced too: their input units are vocabulary
entries, and a token counts as covered by a sentence that contains it (`TokenCoverage`; a
min-max threshold on one-hot inputs would never fire). Unlike a kernel weight, which takes
part in every sample's computation, the weight (token v, feature j) takes part only in
sentences containing v; so its output-side coverage is counted over those sentences
(`LayerCoverage.output_where_used`). A token the student's data lacks, or hardly uses,
such as the rare trigger word of a text backdoor, has a row of (almost) zero coverage.

Example:
>>> teacher = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="c"),
...                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="d")])
>>> counts = profile_coverage(teacher, np.random.rand(16, 8, 8, 1), ["c", "d"])
>>> counts["c"].input.shape, counts["c"].output.shape, counts["d"].output.shape
((1,), (4,), (3,))
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import keras
import numpy as np
from keras import ops

#: Layer types whose kernels ReMoS slices (kernel axes [..., input units, output units]).
KERNEL_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
                keras.layers.EinsumDense)


@keras.saving.register_keras_serializable("kerastl")
class ChannelCoverage(keras.layers.Layer):
    """Per-sample unit coverage of an activation `[batch, *positions, *units]`, where the
    last `unit_axes` axes are the units (1 for conv / dense channels; 2 for an attention
    projection's `[heads, head_dim]`).

    Each sample's tensor is min-max scaled to [0, 1] over all its elements; a unit is
    covered (1.0) when the mean of its scaled values over the positional axes exceeds
    `alpha`, else 0.0. A constant tensor (max == min) covers nothing. With a padding `mask`
    `[batch, tokens]` (one positional axis, the tokens), padding positions take part in
    neither the min-max nor the mean. Output: float32 `[batch, *units]`; summing it over a
    dataset gives the coverage counts.

    Example:
    >>> activation = np.array([[[0.0, 4.0], [2.0, 4.0]]])       # 1 sample, 2 positions, 2 channels
    >>> ChannelCoverage(alpha=0.5)(activation).numpy().tolist()  # means 0.25 and 1.0
    [[0.0, 1.0]]
    """

    def __init__(self, alpha: float = 0.5, unit_axes: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.unit_axes = int(unit_axes)

    def call(self, activation, mask=None):
        activation = ops.cast(activation, "float32")
        rank = len(activation.shape)
        sample_axes = tuple(range(1, rank))
        position_axes = tuple(range(1, rank - self.unit_axes))
        if mask is not None and len(position_axes) == 1:
            # Sequences (text): padding positions take part neither in the min-max nor in the mean.
            valid = ops.reshape(ops.cast(mask, "float32"), tuple(ops.shape(mask)) + (1,) * self.unit_axes)
            low = ops.min(ops.where(valid > 0, activation, np.inf), axis=sample_axes, keepdims=True)
            high = ops.max(ops.where(valid > 0, activation, -np.inf), axis=sample_axes, keepdims=True)
        else:
            valid = None
            low = ops.min(activation, axis=sample_axes, keepdims=True)
            high = ops.max(activation, axis=sample_axes, keepdims=True)
        spread = high - low
        # A constant tensor has no "high" unit: divide by 1 there so that it scales to 0.
        scaled = (activation - low) / ops.where(spread > 0, spread, ops.ones_like(spread))
        if valid is not None:
            unit_mean = ops.sum(scaled * valid, axis=1) / ops.maximum(ops.sum(valid, axis=1), 1.0)
        else:
            unit_mean = ops.mean(scaled, axis=position_axes) if position_axes else scaled
        return ops.cast(unit_mean > self.alpha, "float32")

    def compute_mask(self, inputs, mask=None):
        return None  # one value per unit: the sequence mask ends here

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[len(input_shape) - self.unit_axes:])

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "unit_axes": self.unit_axes}


@keras.saving.register_keras_serializable("kerastl")
class TokenCoverage(keras.layers.Layer):
    """Which vocabulary entries each token-id sequence contains: `[batch, length]` ids ->
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


def child_layers(layer) -> list:
    """The layers directly inside `layer`: a model's `layers` in graph order; for any other
    layer, the layers its attributes hold (directly, or in lists, tuples and dicts), in
    attribute order, each once. Keras has no public listing of a plain layer's sub-layers,
    and its attributes are where a layer keeps them (e.g. a keras-hub TransformerEncoder's
    attention and feed-forward layers)."""
    if isinstance(layer, keras.Model):
        return list(layer.layers)
    found, seen = [], {id(layer)}
    for value in vars(layer).values():
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, keras.layers.Layer) and id(item) not in seen:
                seen.add(id(item))
                found.append(item)
    return found


def walk_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer, object]]:
    """`(path, layer, parent)` for every layer inside `model`, depth first in graph /
    creation order; a path joins the names from the outermost layer with "/"."""
    for layer in child_layers(model):
        path = f"{prefix}{layer.name}"
        yield path, layer, model
        yield from walk_layers(layer, path + "/")


def find_layer(model: keras.Model, path: str) -> keras.layers.Layer:
    """The layer at `path` (a top-level name, or names joined by "/" into nested layers)."""
    layer = model
    for name in path.split("/"):
        matches = [child for child in child_layers(layer) if child.name == name]
        if not matches:
            raise ValueError(f"no layer {path!r} in model {model.name!r} ({name!r} not found)")
        layer = matches[0]
    return layer


def is_token_table(layer, parent) -> bool:
    """An embedding whose rows are vocabulary entries. A keras-hub backbone names its token
    table `token_embedding`; its other tables (segments, positions) are not token tables."""
    if not isinstance(layer, keras.layers.Embedding):
        return False
    designated = getattr(parent, "token_embedding", None)
    return designated is None or designated is layer


def token_table(model: keras.Model) -> keras.layers.Embedding:
    """The model's (first) token embedding table."""
    for _, layer, parent in walk_layers(model):
        if is_token_table(layer, parent):
            return layer
    raise ValueError(f"model {model.name!r} has no token embedding table")


def sliceable_layers(model: keras.Model, include_head: bool = False, include_embeddings: bool = False) -> list[str]:
    """Paths of the conv / dense / einsum-dense layers (and, if `include_embeddings`, token
    embedding tables) of `model`, nested ones included, in graph order.
    The last kernel layer is the head; it is left out unless `include_head`, since the
    student replaces it."""
    found = list(walk_layers(model))
    kernels = [path for path, layer, _ in found if isinstance(layer, KERNEL_TYPES) and unit_axes(layer) is not None]
    head = None if include_head or not kernels else kernels[-1]
    sliced = set(kernels) - {head}
    return [path for path, layer, parent in found if path in sliced or (
        include_embeddings and is_token_table(layer, parent))]


def unit_axes(layer) -> tuple[int, int] | None:
    """How many trailing axes of the layer's input and output are units, i.e. the kernel's
    `[..., *input units, *output units]` layout; None for an einsum whose kernel is laid
    out otherwise (it is not sliced)."""
    if not isinstance(layer, keras.layers.EinsumDense):
        return 1, 1  # conv / dense channels; a token table's vocabulary rows and feature columns
    inputs, rest = layer.equation.split(",")
    kernel, outputs = rest.split("->")
    contracted = _trailing_shared(inputs, kernel)
    produced = _trailing_shared(outputs, kernel)
    return (len(contracted), len(produced)) if contracted + produced == kernel else None


def _trailing_shared(axes: str, kernel: str) -> str:
    """The trailing letters of `axes` that also name kernel axes."""
    count = 0
    while count < len(axes) and axes[len(axes) - 1 - count] in kernel:
        count += 1
    return axes[len(axes) - count:]


def sliced_weights(layer):
    """The variable ReMoS slices in `layer`: a kernel `[..., input units, output units]`,
    or a token embedding table `[vocabulary, features]`."""
    return layer.embeddings if isinstance(layer, keras.layers.Embedding) else layer.kernel


@dataclasses.dataclass
class LayerCoverage:
    """Coverage counts of one layer: how many samples covered each input and output unit
    (arrays of the unit shapes, e.g. `(channels,)` or `(heads, head_dim)`).

    `output_where_used` is for token tables only: per (token, feature), the number of
    samples that contain the token AND cover the feature, i.e. the output coverage counted
    over the samples in which that weight takes part. A kernel weight takes part in every
    sample, so for kernels it is just `output` (None)."""

    input: np.ndarray
    output: np.ndarray
    samples: int
    output_where_used: np.ndarray | None = None


@contextlib.contextmanager
def tapped_calls(layers: dict[str, keras.layers.Layer], on_call: Callable, before_activation: bool = False):
    """Within the block, a call of `layers[path]` also runs `on_call(path, inputs, outputs)`;
    when that returns a value other than None, the layer returns it instead of `outputs`.
    With `before_activation`, a layer with a fused activation (`Conv2D(..., activation="relu")`,
    a keras-hub feed-forward `Dense` with gelu) hands `on_call` its output BEFORE that
    activation (what a PyTorch conv / linear module outputs) and still returns the activated one.

    Each layer's `call` is replaced by a wrapper on the instance (Keras's `__call__` looks
    `call` up on the instance) and restored on exit, also after an error; blocks nest.

    Example:
    >>> seen = {}
    >>> with tapped_calls({"d": model.get_layer("d")},
    ...                   lambda path, x, y: seen.setdefault(path, y.shape)):   # doctest: +SKIP
    ...     model(batch)                                                         # doctest: +SKIP
    """
    saved = []  # (layer, its own instance-level call or None), to restore in reverse order
    for path, layer in layers.items():
        original = layer.call
        saved.append((layer, layer.__dict__.get("call")))

        activation = getattr(layer, "activation", None) if before_activation else None
        if activation is keras.activations.linear:
            activation = None

        def call(inputs, *args, _original=original, _path=path, _layer=layer, _activation=activation, **kwargs):
            if _activation is None:
                outputs = _original(inputs, *args, **kwargs)
                replaced = on_call(_path, inputs, outputs)
                return outputs if replaced is None else replaced
            # The layer's own `activation` attribute, set to identity for this call only.
            object.__setattr__(_layer, "activation", keras.activations.linear)
            try:
                linear = _original(inputs, *args, **kwargs)
            finally:
                object.__setattr__(_layer, "activation", _activation)
            replaced = on_call(_path, inputs, linear)
            return _activation(linear if replaced is None else replaced)

        object.__setattr__(layer, "call", call)
    try:
        yield
    finally:
        for layer, previous in reversed(saved):
            if previous is None:
                layer.__dict__.pop("call", None)
            else:
                object.__setattr__(layer, "call", previous)


def padding_mask(batch):
    """`ids != 0` for a batch of integer token ids `[batch, tokens]`, else None."""
    if isinstance(batch, (list, tuple, dict)) or len(getattr(batch, "shape", ())) != 2:
        return None
    dtype = keras.backend.standardize_dtype(batch.dtype)
    return ops.not_equal(batch, 0) if "int" in dtype else None


def _layer_meter(layer, alpha: float) -> Callable:
    """`(inputs, outputs, mask) -> per-sample coverage`: input and output `[batch, *units]`,
    and, for a token table, the per-batch (token, feature) counts of `output_where_used`."""
    input_axes, output_axes = unit_axes(layer)
    outputs_meter = ChannelCoverage(alpha, output_axes)
    if isinstance(layer, keras.layers.Embedding):
        inputs_meter = TokenCoverage(layer.input_dim)

        def measure_table(inputs, outputs, mask):
            present, covered = inputs_meter(inputs), outputs_meter(outputs, mask=_fit(mask, outputs))
            return present, covered, ops.matmul(ops.transpose(present), covered)

        return measure_table
    inputs_meter = ChannelCoverage(alpha, input_axes)
    return lambda inputs, outputs, mask: (inputs_meter(inputs, mask=_fit(mask, inputs)),
                                          outputs_meter(outputs, mask=_fit(mask, outputs)))


def _fit(mask, activation):
    """The padding mask if `activation` is `[batch, tokens, ...]` for those tokens."""
    if mask is None or len(activation.shape) < 3 or activation.shape[1] != mask.shape[1]:
        return None
    return mask


def profile_coverage(model: keras.Model, data, layer_names: list[str] | None = None, alpha: float = 0.5,
                     batch_size: int = 256) -> dict[str, LayerCoverage]:
    """Counts, over `data` (an array or a `tf.data.Dataset` of model inputs), how many samples
    cover each input and output unit of each layer in `layer_names` (paths; default: every
    sliceable layer but the head). One forward pass of the model per batch, with the layers'
    calls tapped (see the module docstring); counts are floats (sample counts).

    Batches run eagerly: a single pass needs no compiled function (tracing one would cost
    more than the pass itself on a small student set).
    """
    layer_names = sliceable_layers(model) if layer_names is None else list(layer_names)
    layers = {name: find_layer(model, name) for name in layer_names}
    meters = {name: _layer_meter(layer, alpha) for name, layer in layers.items()}
    totals: dict[str, list] = {}
    samples = 0
    for batch in _batches(data, batch_size):
        mask = padding_mask(batch)
        covered = {}

        def measure(path, inputs, outputs):
            if path not in covered:  # a shared layer counts at its first call
                covered[path] = meters[path](inputs, outputs, mask)

        with tapped_calls(layers, measure, before_activation=True):
            model(batch, training=False)
        missing = [name for name in layer_names if name not in covered]
        if missing:
            raise ValueError(f"layers {missing} of model {model.name!r} were not called in its forward pass")
        for name in layer_names:
            counts = covered[name]
            sums = [ops.convert_to_numpy(ops.sum(c, axis=0)).astype(np.float64) for c in counts[:2]]
            sums += [ops.convert_to_numpy(c).astype(np.float64) for c in counts[2:]]  # already summed
            totals[name] = sums if name not in totals else [t + s for t, s in zip(totals[name], sums)]
        samples += int(ops.shape(covered[layer_names[0]][0])[0]) if layer_names else len(batch)
    return {name: LayerCoverage(input=totals[name][0], output=totals[name][1], samples=samples,
                                output_where_used=totals[name][2] if len(totals[name]) > 2 else None)
            for name in layer_names}


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
