"""One teacher -> student transfer, trained with `model.fit` and measured for ACC and DIR.

Used by `apps.remos`, the benchmark and the tests, so all three measure the same thing.

Example:
>>> teacher = train_teacher(x_poisoned, y_poisoned, 10, TeacherConfig(epochs=4))      # doctest: +SKIP
>>> result = transfer("remos", teacher, task, FineTuneConfig(steps=300), ratio=0.03,
...                   defect=BackdoorDefect(BackdoorTrigger(), target_class=0))       # doctest: +SKIP
>>> result.accuracy, result.dir                                                        # doctest: +SKIP
(0.93, 0.08)
"""

from __future__ import annotations

import dataclasses
import time

import keras
import numpy as np

from kerastl.checkpoint import TrainingCheckpoint
from kerastl.data.pipeline import eval_dataset, labeled_stream, to_float_images
from kerastl.nets import small_cnn
from kerastl.safety.attacks import (BackdoorTrigger, feature_extractor, penultimate_hotflip, penultimate_pgd,
                                    random_substitutions)
from kerastl.safety.baselines import prepare_student
from kerastl.safety.coverage import token_table
from kerastl.safety.dir import accuracy, adversarial_dir, backdoor_dir, backdoor_dir_clean_correct, false_target_rate


@dataclasses.dataclass
class TeacherConfig:
    """Training of the (possibly poisoned) teacher: Adam on `small_cnn`."""

    epochs: int = 4
    batch_size: int = 64
    lr: float = 1e-3
    width: int = 16


@dataclasses.dataclass
class FineTuneConfig:
    """Student fine-tuning: SGD with momentum and decoupled weight decay (ReMoS's paper CV
    setting: 10,000 steps, batch 64, lr 5e-3, momentum 0, weight decay 1e-4), or AdamW."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_every: int = 100
    optimizer: str = "sgd"  # or "adamw" (transformers fine-tune poorly with plain SGD)


@dataclasses.dataclass
class BackdoorDefect:
    """The backdoor the teacher carries: its trigger and target class."""

    trigger: BackdoorTrigger
    target_class: int
    kind: str = "backdoor"


@dataclasses.dataclass
class AdversarialDefect:
    """Adversarial examples of the student's test inputs, crafted on the teacher, and
    optionally a control: the same budget spent at random (its DIR is the floor)."""

    x_adversarial: np.ndarray
    kind: str = "adversarial"
    x_control: np.ndarray | None = None


@dataclasses.dataclass
class TransferResult:
    method: str
    accuracy: float
    dir: float
    seconds: float
    preparation_seconds: float
    masks: dict | None
    model: keras.Model
    dir_floor: float | None = None  # see kerastl.safety.dir: DIR without the inherited defect
    dir_clean_correct: float | None = None  # the reference's denominator (kerastl.safety.dir)


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 0..1 (what the networks take)."""
    return keras.ops.convert_to_numpy(to_float_images(images))


def model_inputs(x: np.ndarray) -> np.ndarray:
    """What a network takes: images as float32 (uint8 scaled to [0, 1]); token ids stay
    integers (int32), so that coverage profiling can tell padding (id 0) apart."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) and x.dtype != np.uint8:
        return x.astype(np.int32)
    return to_unit_float(x)


def train_teacher(x: np.ndarray, y: np.ndarray, num_classes: int, config: TeacherConfig, seed: int = 0,
                  callbacks=(), verbose: int = 0, validation=None, model: keras.Model | None = None) -> keras.Model:
    """Trains `small_cnn` (or the given `model`) on `(x, y)` with Adam; returns it."""
    keras.utils.set_random_seed(seed)
    if model is None:
        model = small_cnn(x.shape[1:], num_classes, width=config.width, name="teacher")
    model.compile(optimizer=keras.optimizers.Adam(config.lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    steps = max(1, len(x) // config.batch_size)
    # The stream is shuffled (seeded) already; fit's own shuffle does not apply to a tf.data input.
    model.fit(labeled_stream(x, y, config.batch_size, seed=seed), epochs=config.epochs, steps_per_epoch=steps,
              validation_data=validation, callbacks=list(callbacks), verbose=verbose, shuffle=False)
    return model


def compile_student(model: keras.Model, config: FineTuneConfig) -> keras.Model:
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(config.lr, momentum=config.momentum, weight_decay=config.weight_decay or None)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def adversarial_defect(teacher: keras.Model, x_test: np.ndarray, eps=0.1, steps: int = 40, step_size=0.01,
                       seed: int = 0) -> AdversarialDefect:
    """Penultimate-guided PGD examples of `x_test`, crafted on the teacher's features (`eps`
    and `step_size` in [0, 1] pixels, scalars or per channel: see `pixel_budget`)."""
    return AdversarialDefect(penultimate_pgd(feature_extractor(teacher), x_test, eps, steps, step_size, seed=seed))


def text_adversarial_defect(teacher: keras.Model, x_test: np.ndarray, flips: int = 3, excluded_ids=(0,),
                            seed: int = 0) -> AdversarialDefect:
    """Penultimate-guided HotFlip substitutions of the token ids `x_test`, crafted on the
    teacher's features, with random substitutions of the same number as the control."""
    table = token_table(teacher)
    adversarial = penultimate_hotflip(feature_extractor(teacher), table, x_test, flips, seed=seed,
                                      excluded_ids=excluded_ids)
    control = random_substitutions(x_test, flips, table.input_dim, excluded_ids, seed=seed)
    return AdversarialDefect(adversarial, x_control=control)


def measure_dir_floor(model, x_test: np.ndarray, y_test: np.ndarray, defect) -> float | None:
    """The DIR a student without the inherited defect would show (None if not defined)."""
    if defect.kind == "backdoor":
        return false_target_rate(model, x_test, y_test, defect.target_class)
    if defect.x_control is not None:
        return adversarial_dir(model, x_test, defect.x_control, y_test)
    return None


def measure_dir(model, x_test: np.ndarray, y_test: np.ndarray, defect) -> float:
    if defect.kind == "backdoor":
        return backdoor_dir(model, x_test, y_test, defect.trigger, defect.target_class)
    return adversarial_dir(model, x_test, defect.x_adversarial, y_test)


def measure_dir_clean_correct(model, x_test: np.ndarray, y_test: np.ndarray, defect) -> float:
    """The DIR over the reference's denominator, the clean-correct inputs (the adversarial
    DIR already counts over them)."""
    if defect.kind == "backdoor":
        return backdoor_dir_clean_correct(model, x_test, y_test, defect.trigger, defect.target_class)
    return adversarial_dir(model, x_test, defect.x_adversarial, y_test)


def transfer(method: str, teacher: keras.Model, task, config: FineTuneConfig, defect, ratio: float = 0.03,
             slice_mode: str = "zero", reinit_layers: int = 2, alpha: float = 0.5, seed: int = 0,
             callbacks=(), verbose: int = 0, checkpoint_dir: str | None = None,
             resume: bool = False, slice_embeddings: bool = False, ranking: str = "reference") -> TransferResult:
    """Builds the student of `method`, fine-tunes it on the task's labeled images with
    `model.fit` for `config.steps` steps and measures its test accuracy and DIR.

    With `checkpoint_dir`, a `TrainingCheckpoint` saves the student after every evaluation
    interval; `resume=True` continues from the latest one (the slice is not applied again:
    `ReMoSSlicing` acts only before the first step). `seconds` is the wall time of building
    (including ReMoS's profiling) and fine-tuning, without the final evaluation.
    """
    start = time.perf_counter()
    prepared = prepare_student(method, teacher, task.num_classes, model_inputs(task.x_student), ratio=ratio,
                               slice_mode=slice_mode, reinit_layers=reinit_layers, alpha=alpha, seed=seed,
                               slice_embeddings=slice_embeddings, ranking=ranking)
    student = compile_student(prepared.model, config)
    extra, start_step = list(callbacks), 0
    if checkpoint_dir is not None:
        checkpoint = TrainingCheckpoint(checkpoint_dir, student)
        start_step = checkpoint.restore() if resume else 0
        extra.append(checkpoint)
    epochs = max(1, config.steps // config.eval_every)
    keras.utils.set_random_seed(seed)
    student.fit(labeled_stream(task.x_student, task.y_student, config.batch_size, seed=seed, start_step=start_step),
                epochs=epochs, steps_per_epoch=config.eval_every, initial_epoch=start_step // config.eval_every,
                validation_data=eval_dataset(task.x_test, task.y_test), callbacks=prepared.callbacks + extra,
                verbose=verbose, shuffle=False)
    seconds = time.perf_counter() - start
    return TransferResult(method, accuracy(student, task.x_test, task.y_test),
                          measure_dir(student, task.x_test, task.y_test, defect), seconds,
                          prepared.preparation_seconds, prepared.masks, student,
                          measure_dir_floor(student, task.x_test, task.y_test, defect),
                          measure_dir_clean_correct(student, task.x_test, task.y_test, defect))
