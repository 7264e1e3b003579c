"""ReMoS relevant model slicing: keep the teacher's weights that the student's task uses.

1. `profile_coverage` (one forward pass of the student's training data through the teacher)
   counts how often each input / output unit of every conv, dense and einsum-dense layer
   (also those inside a transformer block) is covered.
2. Weight coverage: the weight joining input unit i to output unit j has
   `cov = in_cov[i] + out_cov[j]` (all kernel taps of that pair share it). A token
   embedding table (optional) is a kernel from vocabulary entries to features: a row's
   input coverage is the number of student sentences containing that token, and its
   output coverage is counted over those sentences (the only ones the row takes part in).
3. Ordinal scores: `rank(cov) - rank(|w|)`, both ascending ranks over all sliced layers
   together.
4. The weights with the lowest scores, i.e. large weights that the student's data hardly
   exercises (where an inherited defect hides), leave the slice; `ratio` is the share
   REMOVED (ratio 0.03 removes 3 %). Those weights are set to zero (default, as the
   reference code does) or re-initialised (as the paper describes).

Two rankings (`ranking`):

- `"reference"` (default), the reference code's (`nc_weight_rank_pruner.py`): 0-based
  ordinal ranks, ties in order. Coverage ranks (input unit, output unit) pairs in layer order,
  input-major; every kernel tap of a pair takes the rank of the pair's first tap (the pair's
  block starts there). Magnitude ranks weights in layer order, output-major then input then
  taps (PyTorch's `[out, in, kh, kw]` layout). The threshold is the score at position
  `int(total * ratio)` of the sorted scores, and every weight scoring AT OR BELOW it is
  removed: at least `int(total * ratio) + 1` weights, more when scores tie at the threshold.
- `"exact-share"`: average ranks (equal values score alike) and exactly
  `round(total * ratio)` weights removed (among equal scores the larger |w| first), so the
  kept share is `1 - ratio` to one weight.
5. Ordinary fine-tuning of all weights follows; `ReMoSSlicing` applies the masks at the
   start of `fit`.

Example:
>>> masks = remos_slice(teacher, x_student, ratio=0.03)                       # doctest: +SKIP
>>> student = student_from_teacher(teacher, num_classes=10)                   # doctest: +SKIP
>>> student.fit(x_student, y_student, callbacks=[ReMoSSlicing(masks)])        # doctest: +SKIP
"""

from __future__ import annotations

import keras
import numpy as np
from scipy.stats import rankdata

from kerastl.errors import InputError
from kerastl.safety.coverage import LayerCoverage, find_layer, profile_coverage, sliceable_layers, sliced_weights

SLICE_MODES = ("zero", "reinit")
RANKINGS = ("reference", "exact-share")


def weight_coverage(kernel_shape: tuple[int, ...], coverage: LayerCoverage) -> np.ndarray:
    """`in_cov[i] + out_cov[j]` broadcast to a kernel of shape `[..., *input units, *output
    units]` (leading axes, e.g. a conv's taps, share the pair's value). A token table uses
    its output coverage counted where each weight is used (`output_where_used[v, j]`)."""
    inputs, outputs = coverage.input.shape, coverage.output.shape
    units = tuple(inputs) + tuple(outputs)
    if len(units) > len(kernel_shape) or tuple(kernel_shape[len(kernel_shape) - len(units):]) != units:
        raise ValueError(f"coverage of {inputs} -> {outputs} units does not fit a kernel of shape {kernel_shape}")
    output_side = coverage.output if coverage.output_where_used is None else coverage.output_where_used
    pair = coverage.input.reshape(tuple(inputs) + (1,) * len(outputs)) + output_side
    return np.broadcast_to(pair, kernel_shape).astype(np.float64)


def ordinal_scores(kernels: dict[str, np.ndarray], coverage: dict[str, LayerCoverage],
                   ties: str = "ordinal") -> dict[str, np.ndarray]:
    """ReMoS scores `rank(cov) - rank(|w|)` for every weight of `kernels` (name -> kernel
    `[..., *input units, *output units]`), ranked globally over all of them in dict order.
    Returns name -> scores of the kernel's shape.

    `ties="ordinal"` (the reference code's): 0-based ranks, ties in order; coverage ranks
    (input, output) pairs, each pair's taps sharing the rank of its block's first position;
    magnitude ranks weights output-major (see the module docstring). `ties="average"`:
    1-based average ranks of the weights' coverage and magnitude.

    Example (one 1x2 dense kernel; input coverage [3], output coverage [0, 2]):
    >>> coverage = {"d": LayerCoverage(np.array([3]), np.array([0, 2]), 4)}
    >>> ordinal_scores({"d": np.array([[0.5, -0.1]])}, coverage)["d"].tolist()  # cov ranks 0, 1; |w| ranks 1, 0
    [[-1, 1]]
    >>> ordinal_scores({"d": np.array([[0.5, -0.1]])}, coverage, ties="average")["d"].tolist()
    [[-1.0, 1.0]]
    """
    names = list(kernels)
    if ties == "average":
        covs = [weight_coverage(kernels[name].shape, coverage[name]).ravel() for name in names]
        magnitudes = [np.abs(kernels[name]).ravel() for name in names]
        score = rankdata(np.concatenate(covs), method="average") - rankdata(np.concatenate(magnitudes),
                                                                           method="average")
        return _split_like(score, kernels)
    if ties != "ordinal":
        raise ValueError(f"ties={ties!r}: expected 'ordinal' or 'average'")
    by_coverage, by_magnitude = coverage_ranks(kernels, coverage), magnitude_ranks(kernels, coverage)
    return {name: by_coverage[name] - by_magnitude[name] for name in names}


def _unit_shapes(coverage: LayerCoverage) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(coverage.input.shape), tuple(coverage.output.shape)


def coverage_ranks(kernels: dict[str, np.ndarray], coverage: dict[str, LayerCoverage]) -> dict[str, np.ndarray]:
    """The reference's coverage rank of every weight (int64, kernel shapes): the (input,
    output) pairs of all layers, in layer order and input-major, sorted stably by
    `in_cov + out_cov`; a pair's rank is the number of weights (taps) of the pairs before
    it, and all its taps share it."""
    pair_covs, taps = [], []
    for name, kernel in kernels.items():
        inputs, outputs = _unit_shapes(coverage[name])
        pairs = weight_coverage(inputs + outputs, coverage[name]).ravel()
        pair_covs.append(pairs)
        taps.append(np.full(pairs.size, kernel.size // max(1, pairs.size), np.int64))
    pair_cov, sizes = np.concatenate(pair_covs), np.concatenate(taps)
    order = np.argsort(pair_cov, kind="stable")
    starts = np.empty_like(sizes)
    starts[order] = np.cumsum(sizes[order]) - sizes[order]
    ranks, offset = {}, 0
    for name, kernel in kernels.items():
        inputs, outputs = _unit_shapes(coverage[name])
        count = int(np.prod(inputs + outputs))
        ranks[name] = np.broadcast_to(starts[offset:offset + count].reshape(inputs + outputs), kernel.shape).copy()
        offset += count
    return ranks


def _output_major(kernel: np.ndarray, units: tuple[tuple[int, ...], tuple[int, ...]]) -> tuple[int, ...]:
    """The axis order `[*output units, *input units, *taps]` of a kernel laid out
    `[*taps, *input units, *output units]` (PyTorch's conv order `[out, in, kh, kw]`)."""
    inputs, outputs = len(units[0]), len(units[1])
    taps = kernel.ndim - inputs - outputs
    return (tuple(range(taps + inputs, kernel.ndim)) + tuple(range(taps, taps + inputs)) + tuple(range(taps)))


def magnitude_ranks(kernels: dict[str, np.ndarray], coverage: dict[str, LayerCoverage] | None = None
                    ) -> dict[str, np.ndarray]:
    """0-based ranks of |w| over all kernels (int64, kernel shapes), ties in layer order and,
    within a layer, output-major (then input unit, then taps). `coverage` gives the unit
    shapes (default: the last axis is the output, the one before it the input)."""
    orders = {name: _output_major(kernel, _unit_shapes(coverage[name]) if coverage else ((1,), (1,)))
              for name, kernel in kernels.items()}
    flat = np.concatenate([np.abs(kernel).transpose(orders[name]).ravel() for name, kernel in kernels.items()])
    order = np.argsort(flat, kind="stable")
    rank = np.empty(flat.size, np.int64)
    rank[order] = np.arange(flat.size)
    ranks, offset = {}, 0
    for name, kernel in kernels.items():
        transposed = kernel.transpose(orders[name]).shape
        block = rank[offset:offset + kernel.size].reshape(transposed)
        ranks[name] = block.transpose(np.argsort(orders[name]))
        offset += kernel.size
    return ranks


def threshold_masks(scores: dict[str, np.ndarray], ratio: float) -> dict[str, np.ndarray]:
    """The reference's removal: keep-masks that are True where the score is ABOVE the
    threshold, the value at position `int(total * ratio)` of all scores sorted ascending.
    Every weight at or below it is removed (at least `int(total * ratio) + 1`).

    Example:
    >>> threshold_masks({"x": np.array([3, 1, 1, 2, 5])}, 0.2)["x"].tolist()  # threshold: sorted[1] = 1
    [True, False, False, True, True]
    """
    check_ratio(ratio)
    flat = np.concatenate([np.asarray(scores[name]).ravel() for name in scores])
    index = min(int(flat.size * ratio), flat.size - 1)
    threshold = np.partition(flat, index)[index]
    return {name: np.asarray(score) > threshold for name, score in scores.items()}


def masks_from_scores(scores: dict[str, np.ndarray], ratio: float,
                      tie_break: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Boolean keep-masks that drop exactly `round(ratio * total)` weights: the lowest scores
    over all layers together. Among equal scores the larger `tie_break` value (default: none,
    then graph order) is dropped first, so the kept share is exact, not a tie-dependent
    threshold (the reference's `score > threshold` keeps fewer when scores tie).
    """
    check_ratio(ratio)
    names = list(scores)
    flat = np.concatenate([scores[name].ravel() for name in names])
    secondary = (np.concatenate([-np.asarray(tie_break[name], np.float64).ravel() for name in names])
                 if tie_break is not None else np.zeros_like(flat))
    order = np.lexsort((secondary, flat))  # ascending score, then descending tie_break
    keep = np.ones(flat.size, bool)
    keep[order[:int(round(ratio * flat.size))]] = False
    return _split_like(keep, scores)


def _split_like(flat: np.ndarray, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`flat` (the arrays' values concatenated in dict order) cut back into their shapes."""
    result, start = {}, 0
    for name, array in arrays.items():
        result[name] = flat[start:start + array.size].reshape(array.shape)
        start += array.size
    return result


def check_ratio(ratio: float, option: str = "--ratio") -> float:
    """Raises `InputError` unless 0 < ratio < 1."""
    if not (isinstance(ratio, (int, float)) and 0.0 < float(ratio) < 1.0):
        raise InputError(f"{option} {ratio}: expected the share of weights to slice away, strictly between 0 and 1")
    return float(ratio)


def layer_kernels(model: keras.Model, layer_names: list[str]) -> dict[str, np.ndarray]:
    """path -> kernel (as NumPy) of each named layer."""
    return {name: keras.ops.convert_to_numpy(sliced_weights(find_layer(model, name))) for name in layer_names}


def check_ranking(ranking: str) -> str:
    if ranking not in RANKINGS:
        raise InputError(f"--ranking {ranking!r}: expected one of {', '.join(RANKINGS)}")
    return ranking


def slice_masks(kernels: dict[str, np.ndarray], coverage: dict[str, LayerCoverage], ratio: float,
                ranking: str = "reference") -> dict[str, np.ndarray]:
    """Keep-masks from kernels and their coverage: `ranking="reference"` ranks ordinally and
    removes everything at or below the threshold (the reference code); `"exact-share"` ranks
    with average ties and removes exactly `round(ratio * total)` weights."""
    check_ranking(ranking)
    if ranking == "reference":
        return threshold_masks(ordinal_scores(kernels, coverage), ratio)
    scores = ordinal_scores(kernels, coverage, ties="average")
    return masks_from_scores(scores, ratio, tie_break={name: np.abs(k) for name, k in kernels.items()})


def remos_slice(teacher: keras.Model, student_data, ratio: float = 0.03, alpha: float = 0.5,
                layer_names: list[str] | None = None, batch_size: int = 256,
                ranking: str = "reference") -> dict[str, np.ndarray]:
    """The ReMoS slice of `teacher` for the task of `student_data` (model inputs: an array or
    a `tf.data.Dataset` of batches).

    Args:
        teacher: the pretrained model (white box).
        student_data: the student's training inputs (labels are not needed).
        ratio: share of the sliced layers' weights to REMOVE (paper: 0.03 in the backdoor
            setting, 0.1 in the adversarial one); the slice keeps `1 - ratio` of them (with
            the reference ranking, weights tied at the threshold go too).
        alpha: coverage threshold on the min-max scaled activation.
        layer_names: layers to slice (paths); default every conv / dense / einsum-dense layer
            but the head.
        ranking: "reference" (ordinal ranks, everything at or below the threshold removed)
            or "exact-share" (average ranks, exactly `round(ratio * total)` removed).

    Returns:
        layer name -> boolean keep-mask of its kernel's shape (True = in the slice).

    Example:
    >>> masks = remos_slice(teacher, x_student, ratio=0.1)                   # doctest: +SKIP
    >>> round(1 - kept_share(masks), 3)                                       # doctest: +SKIP
    0.1
    """
    check_ratio(ratio)
    check_ranking(ranking)
    layer_names = sliceable_layers(teacher) if layer_names is None else list(layer_names)
    coverage = profile_coverage(teacher, student_data, layer_names, alpha, batch_size)
    return slice_masks(layer_kernels(teacher, layer_names), coverage, ratio, ranking)


def apply_masks(model: keras.Model, masks: dict[str, np.ndarray], mode: str = "zero", seed: int = 0) -> None:
    """Sets the kernel weights outside `masks` to zero (`mode="zero"`) or to fresh values
    from each layer's own kernel initializer (`mode="reinit"`)."""
    if mode not in SLICE_MODES:
        raise InputError(f"--slice-mode {mode!r}: expected one of {', '.join(SLICE_MODES)}")
    for index, (name, mask) in enumerate(masks.items()):
        layer = find_layer(model, name)
        variable = sliced_weights(layer)
        kernel = keras.ops.convert_to_numpy(variable)
        if kernel.shape != mask.shape:
            raise ValueError(f"mask of shape {mask.shape} for layer {name} with a kernel of shape {kernel.shape}")
        if mode == "zero":
            replacement = np.zeros_like(kernel)
        else:
            # A seeded copy of the layer's own initializer: reproducible fresh weights.
            config = keras.initializers.serialize(layer.embeddings_initializer if isinstance(
                layer, keras.layers.Embedding) else layer.kernel_initializer)
            if "seed" in config.get("config", {}):
                config["config"]["seed"] = seed + index
            initializer = keras.initializers.deserialize(config)
            replacement = keras.ops.convert_to_numpy(initializer(kernel.shape, kernel.dtype))
        variable.assign(np.where(mask, kernel, replacement))


def kept_share(masks: dict[str, np.ndarray]) -> float:
    """Share of weights in the slice over all masked layers."""
    return float(sum(m.sum() for m in masks.values()) / max(1, sum(m.size for m in masks.values())))


@keras.saving.register_keras_serializable("kerastl")
class ReMoSSlicing(keras.callbacks.Callback):
    """Applies slice masks to the student at the start of `fit`, then lets fine-tuning run.

    Masks are applied only when the optimizer has taken no step yet, so a run resumed from
    a checkpoint keeps its fine-tuned weights. Any keep-masks work (ReMoS's from
    `remos_slice`, or magnitude pruning's), keyed by layer name.

    Example:
    >>> masks = remos_slice(teacher, x_student, ratio=0.03)                        # doctest: +SKIP
    >>> student.fit(x_student, y_student, epochs=5,
    ...             callbacks=[ReMoSSlicing(masks, mode="zero")])                  # doctest: +SKIP
    """

    def __init__(self, masks: dict[str, np.ndarray], mode: str = "zero", seed: int = 0):
        super().__init__()
        if mode not in SLICE_MODES:
            raise InputError(f"--slice-mode {mode!r}: expected one of {', '.join(SLICE_MODES)}")
        self.masks = {name: np.asarray(mask, bool) for name, mask in masks.items()}
        self.mode = mode
        self.seed = seed
        self.applied = False

    def on_train_begin(self, logs=None):
        optimizer = getattr(self.model, "optimizer", None)
        fresh = optimizer is None or int(keras.ops.convert_to_numpy(optimizer.iterations)) == 0
        if fresh and not self.applied:
            apply_masks(self.model, self.masks, self.mode, self.seed)
            self.applied = True

    def get_config(self):
        return {"masks": {name: mask.tolist() for name, mask in self.masks.items()}, "mode": self.mode,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls({name: np.asarray(mask, bool) for name, mask in config["masks"].items()},
                   config["mode"], config["seed"])
