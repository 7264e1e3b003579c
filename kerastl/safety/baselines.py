"""The student builders compared in ReMoS's evaluation, all fine-tuned by the same loop.

`METHODS` is the registry by name (`apps.remos` takes its choices and help from it). Every
method copies the teacher (or, `from_teacher=False`, only its architecture), puts a new
classification head on it and fine-tunes every weight; they differ in what they remove first:

- `finetune`: nothing.
- `magprune`: the `ratio` share of smallest-magnitude weights.
- `scratch`: everything (fresh random weights).
- `reinit`: the top `reinit_layers` conv / dense layers, re-initialised.
- `remos`: the `ratio` share of weights outside the ReMoS slice (`kerastl.safety.slicing`).

A method is a `StudentMethod` entry whose `masks(teacher, layer_names, options)` returns the
keep-masks of the weights it removes (or None for no masks).

`prepare_student` returns the student and the callbacks that set it up at the start of
`fit`, so every method trains with the same `model.fit` call.

Example:
>>> prepared = prepare_student("remos", teacher, num_classes=10, x_student=x, ratio=0.03)  # doctest: +SKIP
>>> prepared.model.compile(...); prepared.model.fit(x, y, callbacks=prepared.callbacks)    # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import keras
import numpy as np

from kerastl.errors import InputError
from kerastl.safety.coverage import find_layer, sliceable_layers, sliced_weights
from kerastl.safety.slicing import ReMoSSlicing, check_ratio, layer_kernels, masks_from_scores, remos_slice

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


@dataclasses.dataclass(frozen=True)
class SliceOptions:
    """What a method's masks may depend on: the student's training inputs (profiled by
    remos), the share to remove, the coverage threshold, the number of layers reinit resets
    and remos's ranking (`kerastl.safety.slicing.RANKINGS`)."""

    x_student: object = None
    ratio: float = 0.03
    alpha: float = 0.5
    reinit_layers: int = 2
    ranking: str = "reference"


@dataclasses.dataclass(frozen=True)
class StudentMethod:
    """A registered way of making a student from the teacher.

    Attributes:
        description: one line for `--help`: what is removed, what is trained.
        masks: `masks(teacher, layer_names, SliceOptions)` -> keep-masks of the sliced layers
            (False: removed before fine-tuning); None removes nothing.
        from_teacher: the student starts from the teacher's weights (False: fresh random ones).
        reinitialise: removed weights are re-initialised, whatever the slice mode says.
        removes_ratio: the masks remove the `ratio` share of the weights (their kept share and
            per-layer slice are reported).
    """

    name: str
    description: str
    masks: Callable | None = None
    from_teacher: bool = True
    reinitialise: bool = False
    removes_ratio: bool = False


def _remos_masks(teacher, layer_names, options: SliceOptions):
    if options.x_student is None:
        raise ValueError("remos needs the student's training images (x_student) to profile coverage")
    return remos_slice(teacher, options.x_student, ratio=options.ratio, alpha=options.alpha, layer_names=layer_names,
                       ranking=options.ranking)


METHODS: dict[str, StudentMethod] = {method.name: method for method in (
    StudentMethod("finetune", "copy the teacher, new head, fine-tune every weight"),
    StudentMethod("magprune", "remove the --ratio share of smallest-|w| weights, then fine-tune",
                  masks=lambda teacher, names, options: magnitude_masks(teacher, options.ratio, names),
                  removes_ratio=True),
    StudentMethod("scratch", "the teacher's architecture with random weights, trained", from_teacher=False),
    StudentMethod("reinit", "re-initialise the top --reinit-layers conv / dense layers, then fine-tune",
                  masks=lambda teacher, names, options: top_layer_masks(teacher, options.reinit_layers, names),
                  reinitialise=True),
    StudentMethod("remos", "remove the --ratio share of weights ranked lowest by rank(coverage on the student's "
                  "data) - rank(|w|), then fine-tune", masks=_remos_masks, removes_ratio=True),
)}


def get_method(name: str) -> StudentMethod:
    """The registered method `name`; an unknown name is an `InputError` listing the others."""
    if name not in METHODS:
        raise InputError(f"--method {name!r}: expected one of {', '.join(METHODS)}")
    return METHODS[name]


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
                    seed: int = 0, slice_embeddings: bool = False, ranking: str = "reference") -> PreparedStudent:
    """Builds the student of `method` (a name in METHODS) from `teacher`.

    `x_student` (the student's training images, float in [0, 1] or a dataset of them) is
    needed by `remos` only: it is profiled through the teacher. `slice_embeddings` adds
    token embedding tables to the sliced (and magnitude-pruned) layers. `ranking`: remos's
    ranking and removal rule (`"reference"` or `"exact-share"`, see kerastl.safety.slicing).
    """
    spec = get_method(method)
    start = time.perf_counter()
    layer_names = sliceable_layers(teacher, include_embeddings=slice_embeddings)
    model = student_from_teacher(teacher, num_classes, copy_weights=spec.from_teacher, seed=seed)
    options = SliceOptions(x_student, ratio, alpha, reinit_layers, ranking)
    masks = spec.masks(teacher, layer_names, options) if spec.masks is not None else None
    mode = "reinit" if spec.reinitialise else slice_mode
    callbacks = [ReMoSSlicing(masks, mode=mode, seed=seed)] if masks is not None else []
    return PreparedStudent(model, callbacks, masks, time.perf_counter() - start)
