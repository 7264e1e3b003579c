"""The student builders compared in ReMoS's evaluation, all fine-tuned by the same loop.

- `finetune`: the teacher's weights, a new classification head, fine-tune everything.
- `magprune`: like finetune, after removing the `ratio` share of smallest-magnitude weights.
- `scratch`: the teacher's architecture with fresh random weights.
- `reinit`: like finetune, with the top `reinit_layers` conv / dense layers re-initialised.
- `remos`: like finetune, after removing the `ratio` share of weights outside the ReMoS
  slice (`kerastl.safety.slicing`).

`prepare_student` returns the student and the callbacks that set it up at the start of
`fit`, so every method trains with the same `model.fit` call.

Example:
>>> prepared = prepare_student("remos", teacher, num_classes=10, x_student=x, ratio=0.03)  # doctest: +SKIP
>>> prepared.model.compile(...); prepared.model.fit(x, y, callbacks=prepared.callbacks)    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from kerastl.errors import InputError
from kerastl.safety.coverage import find_layer, sliceable_layers, sliced_weights
from kerastl.safety.slicing import ReMoSSlicing, check_ratio, layer_kernels, masks_from_scores, remos_slice

METHODS = ("finetune", "magprune", "scratch", "reinit", "remos")
HEAD_NAME = "student_logits"
STUDENT_SEED_OFFSET = 10_000


def student_from_teacher(teacher: keras.Model, num_classes: int, copy_weights: bool = True, seed: int = 0,
                         name: str = "student") -> keras.Model:
    """A copy of `teacher` whose last layer is replaced by a new dense head of `num_classes`
    logits (layer `student_logits`). `copy_weights=False` keeps the fresh random weights of
    the copy (training from scratch). Layer names are the teacher's, so slice masks apply."""
    # A seed stream apart from the teacher's: with the same seed, a scratch student would
    # start from the very initialisation the teacher was trained from.
    keras.utils.set_random_seed(STUDENT_SEED_OFFSET + seed)
    backbone = keras.models.clone_model(teacher)
    if copy_weights:
        backbone.set_weights(teacher.get_weights())
    features = backbone.layers[-1].input
    logits = keras.layers.Dense(num_classes, kernel_initializer=keras.initializers.GlorotNormal(seed),
                                name=HEAD_NAME)(features)
    return keras.Model(backbone.inputs, logits, name=name)


def magnitude_masks(model: keras.Model, ratio: float, layer_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Magnitude pruning at the same ratio: keep-masks dropping the `ratio` share of weights
    with the smallest |w|, over all sliced layers together."""
    check_ratio(ratio)
    layer_names = sliceable_layers(model) if layer_names is None else layer_names
    magnitudes = {name: np.abs(kernel) for name, kernel in layer_kernels(model, layer_names).items()}
    return masks_from_scores(magnitudes, ratio)


def top_layer_masks(model: keras.Model, count: int, layer_names: list[str] | None = None) -> dict[str, np.ndarray]:
    """All-False masks (= re-initialise every weight) for the top `count` sliced layers."""
    layer_names = sliceable_layers(model) if layer_names is None else layer_names
    if not 1 <= count <= len(layer_names):
        raise InputError(f"--reinit-layers {count}: expected 1..{len(layer_names)} (the teacher's conv / dense "
                         "layers below its head)")
    return {name: np.zeros(sliced_weights(find_layer(model, name)).shape, bool) for name in layer_names[-count:]}


@dataclasses.dataclass
class PreparedStudent:
    """A student ready for `fit`: the model, the callbacks that set it up at the start of
    training, the keep-masks applied (None for finetune / scratch) and the seconds spent
    computing them (ReMoS's coverage profiling and ranking)."""

    model: keras.Model
    callbacks: list
    masks: dict[str, np.ndarray] | None
    preparation_seconds: float


def prepare_student(method: str, teacher: keras.Model, num_classes: int, x_student=None, ratio: float = 0.03,
                    slice_mode: str = "zero", reinit_layers: int = 2, alpha: float = 0.5,
                    seed: int = 0, slice_embeddings: bool = False) -> PreparedStudent:
    """Builds the student of `method` (one of METHODS) from `teacher`.

    `x_student` (the student's training images, float in [0, 1] or a dataset of them) is
    needed by `remos` only: it is profiled through the teacher. `slice_embeddings` adds
    token embedding tables to the sliced (and magnitude-pruned) layers.
    """
    if method not in METHODS:
        raise InputError(f"--method {method!r}: expected one of {', '.join(METHODS)}")
    start = time.perf_counter()
    layer_names = sliceable_layers(teacher, include_embeddings=slice_embeddings)
    model = student_from_teacher(teacher, num_classes, copy_weights=method != "scratch", seed=seed)
    masks, mode = None, slice_mode
    if method == "remos":
        if x_student is None:
            raise ValueError("remos needs the student's training images (x_student) to profile coverage")
        masks = remos_slice(teacher, x_student, ratio=ratio, alpha=alpha, layer_names=layer_names)
    elif method == "magprune":
        masks = magnitude_masks(teacher, ratio, layer_names)
    elif method == "reinit":
        masks, mode = top_layer_masks(teacher, reinit_layers, layer_names), "reinit"
    callbacks = [ReMoSSlicing(masks, mode=mode, seed=seed)] if masks is not None else []
    return PreparedStudent(model, callbacks, masks, time.perf_counter() - start)
