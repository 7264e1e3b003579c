"""Teacher and student tasks for measuring defect inheritance offline.

The CV setting: the teacher learns a digits task (its training set may be poisoned); the
student learns a related but different task from few labels — a disjoint share of the
digits, optionally under a domain shift (inverted contrast) — starting from the teacher.

Example:
>>> task = digit_transfer_task(load_image_dataset("mnist5k"), labels_per_class=20,
...                            shift="invert", seed=0)                          # doctest: +SKIP
>>> task.x_student.shape, task.x_test.shape                                       # doctest: +SKIP
((200, 28, 28, 1), (1000, 28, 28, 1))
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerastl.data.arrays import ImageData
from kerastl.data.splits import labeled_unlabeled_split, stratified_holdout
from kerastl.errors import InputError

SHIFTS = ("none", "invert")


def apply_shift(images: np.ndarray, shift: str) -> np.ndarray:
    """The student's domain shift: `none`, or `invert` (contrast inversion, 255 - x / 1 - x)."""
    if shift not in SHIFTS:
        raise InputError(f"--shift {shift!r}: expected one of {', '.join(SHIFTS)}")
    if shift == "none":
        return images
    return (255 - images) if images.dtype == np.uint8 else (1.0 - images).astype(images.dtype)


@dataclasses.dataclass
class TransferTask:
    """The arrays of one teacher -> student transfer.

    Attributes:
        x_teacher, y_teacher: the teacher's (clean) training images and labels.
        x_teacher_test, y_teacher_test: the teacher's test set (its own domain).
        x_student, y_student: the student's few labeled training images.
        x_test, y_test: the student's test set (its domain).
        num_classes: classes of the student's task (the teacher's are the same in the
            digit setting; a file teacher may have others).
    """

    x_teacher: np.ndarray | None
    y_teacher: np.ndarray | None
    x_teacher_test: np.ndarray | None
    y_teacher_test: np.ndarray | None
    x_student: np.ndarray
    y_student: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    description: str = ""


def digit_transfer_task(data: ImageData, labels_per_class: int = 20, teacher_share: float = 0.5,
                        shift: str = "invert", seed: int = 0) -> TransferTask:
    """Splits `data`'s training images into a teacher share and a disjoint student pool, takes
    `labels_per_class` labeled student images per class from the pool, and applies `shift`
    to the student's images (training and test).
    """
    if labels_per_class < 1:
        raise InputError(f"--labels-per-class {labels_per_class}: expected a positive integer")
    pool, teacher = stratified_holdout(data.y_train, teacher_share, seed)
    labeled, _ = labeled_unlabeled_split(data.y_train[pool], labels_per_class * data.num_classes, data.num_classes,
                                         seed)
    student = pool[labeled]
    return TransferTask(
        x_teacher=data.x_train[teacher], y_teacher=data.y_train[teacher],
        x_teacher_test=data.x_test, y_teacher_test=data.y_test,
        x_student=apply_shift(data.x_train[student], shift), y_student=data.y_train[student],
        x_test=apply_shift(data.x_test, shift), y_test=data.y_test, num_classes=data.num_classes,
        description=f"{data.name}: teacher {len(teacher)} images; student {len(student)} labeled disjoint images "
                    f"({labels_per_class} per class), shift {shift}")


def student_task(data: ImageData, teacher: TransferTask | None = None, labels_per_class: int | None = None,
                 seed: int = 0) -> TransferTask:
    """A student task from your own data (`--student-data npz:PATH`), optionally keeping the
    teacher's training arrays from `teacher` (so a teacher can still be trained)."""
    x, y = data.x_train, data.y_train
    if labels_per_class is not None:
        labeled, _ = labeled_unlabeled_split(y, labels_per_class * data.num_classes, data.num_classes, seed)
        x, y = x[labeled], y[labeled]
    keep = teacher or TransferTask(None, None, None, None, x, y, data.x_test, data.y_test, data.num_classes)
    return dataclasses.replace(keep, x_student=x, y_student=y, x_test=data.x_test, y_test=data.y_test,
                               num_classes=data.num_classes,
                               description=f"{data.name}: student {len(x)} labeled images")
