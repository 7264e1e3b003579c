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
   together (ties get their average rank, so equal values always score alike).
4. The `ratio` share of weights with the lowest scores, i.e. large weights that the
   student's data hardly exercises (where an inherited defect hides), leaves the slice:
   `ratio` is the share REMOVED (the reference code's and the spec's meaning; ratio 0.03
   removes 3 %), and the kept share is exactly `1 - ratio` (to one weight). Those weights
   are set to zero (default, as the reference code does) or re-initialised (as the paper
   describes).
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


def ordinal_scores(kernels: dict[str, np.ndarray], coverage: dict[str, LayerCoverage]) -> dict[str, np.ndarray]:
    """ReMoS scores `rank(cov) - rank(|w|)` for every weight of `kernels` (name -> kernel),
    ranked globally over all of them. Returns name -> scores of the kernel's shape.

    Example (one 1x2 dense kernel; input coverage [3], output coverage [0, 2]):
    >>> scores = ordinal_scores({"d": np.array([[0.5, -0.1]])},
    ...                         {"d": LayerCoverage(np.array([3]), np.array([0, 2]), 4)})
    >>> scores["d"].tolist()    # cov 3, 5 -> ranks 1, 2; |w| 0.5, 0.1 -> ranks 2, 1
    [[-1.0, 1.0]]
    """
    names = list(kernels)
    covs = [weight_coverage(kernels[name].shape, coverage[name]).ravel() for name in names]
    magnitudes = [np.abs(kernels[name]).ravel() for name in names]
    score = rankdata(np.concatenate(covs), method="average") - rankdata(np.concatenate(magnitudes), method="average")
    return _split_like(score, kernels)


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


def remos_slice(teacher: keras.Model, student_data, ratio: float = 0.03, alpha: float = 0.5,
                layer_names: list[str] | None = None, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The ReMoS slice of `teacher` for the task of `student_data` (model inputs: an array or
    a `tf.data.Dataset` of batches).

    Args:
        teacher: the pretrained model (white box).
        student_data: the student's training inputs (labels are not needed).
        ratio: share of the sliced layers' weights to REMOVE (paper: 0.03 in the backdoor
            setting, 0.1 in the adversarial one); the slice keeps `1 - ratio` of them.
        alpha: coverage threshold on the min-max scaled activation.
        layer_names: layers to slice (paths); default every conv / dense / einsum-dense layer
            but the head.

    Returns:
        layer name -> boolean keep-mask of its kernel's shape (True = in the slice).

    Example:
    >>> masks = remos_slice(teacher, x_student, ratio=0.1)                   # doctest: +SKIP
    >>> round(1 - kept_share(masks), 3)                                       # doctest: +SKIP
    0.1
    """
    check_ratio(ratio)
    layer_names = sliceable_layers(teacher) if layer_names is None else list(layer_names)
    coverage = profile_coverage(teacher, student_data, layer_names, alpha, batch_size)
    kernels = layer_kernels(teacher, layer_names)
    scores = ordinal_scores(kernels, coverage)
    return masks_from_scores(scores, ratio, tie_break={name: np.abs(k) for name, k in kernels.items()})


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
