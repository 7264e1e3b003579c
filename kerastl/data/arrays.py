"""Arrays checked once, at the edge: `ImageData` (a labelled image dataset held as NumPy
arrays, with `as_images` and `as_labels`) and `check_windows` (multichannel windows
`[N, time, channels]`, the input of every sensor model)."""

from __future__ import annotations

import dataclasses

import numpy as np

from kerastl.errors import InputError


@dataclasses.dataclass
class ImageData:
    """Images and integer labels, split into train and test.

    Images are `uint8` in [0, 255] (or float32 in [0, 1]) with shape `[N, H, W, C]`;
    labels are `int64` in `0..num_classes-1`.

    Attributes:
        name: dataset name, as the user gave it (e.g. `"svhn"`, `"npz:/data/x.npz"`).
        x_train, y_train: training images and labels.
        x_test, y_test: held-out images and labels.
        num_classes: number of classes C.
        x_unlabeled: extra images without labels (STL-10's unlabeled split, an npz's
            `x_unlabeled`), or None.
        client: per-training-example client id for federated splits, or None.
        class_names: optional names of the C classes.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    x_unlabeled: np.ndarray | None = None
    client: np.ndarray | None = None
    class_names: list[str] | None = None

    def __post_init__(self):
        self.x_train = as_images(self.x_train, f"{self.name}: x_train")
        self.x_test = as_images(self.x_test, f"{self.name}: x_test")
        if self.x_unlabeled is not None:
            self.x_unlabeled = as_images(self.x_unlabeled, f"{self.name}: x_unlabeled")
            if self.x_unlabeled.shape[1:] != self.x_train.shape[1:]:
                raise InputError(
                    f"{self.name}: x_unlabeled has images of shape {self.x_unlabeled.shape[1:]}, "
                    f"expected the shape of x_train's images {self.x_train.shape[1:]}")
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise InputError(
                f"{self.name}: x_test has images of shape {self.x_test.shape[1:]}, "
                f"expected the shape of x_train's images {self.x_train.shape[1:]}")
        self.y_train = as_labels(self.y_train, self.num_classes, f"{self.name}: y_train")
        self.y_test = as_labels(self.y_test, self.num_classes, f"{self.name}: y_test")
        for x, y, what in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if len(x) != len(y):
                raise InputError(f"{self.name}: {len(x)} {what} images but {len(y)} {what} labels, "
                                 "expected one label per image")
        if self.client is not None:
            self.client = np.asarray(self.client)
            if self.client.shape != self.y_train.shape or not np.issubdtype(self.client.dtype, np.integer):
                raise InputError(f"{self.name}: client must be one integer id per training example "
                                 f"(shape {self.y_train.shape}), got {self.client.dtype} {self.client.shape}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise InputError(f"{self.name}: {len(self.class_names)} class names for "
                             f"{self.num_classes} classes, expected one name per class")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])


def as_images(x, what: str) -> np.ndarray:
    """Checks images: rank 4 `[N, H, W, C]` (rank 3 `[N, H, W]` gets a channel axis).

    `uint8` stays as is; other numeric types become float32 and must lie in [0, 1] or
    [0, 255] (the latter is converted to uint8 when integral).
    """
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise InputError(f"{what}: images of rank {x.ndim} (shape {x.shape}), expected rank 4 "
                         "[N, height, width, channels] or rank 3 [N, height, width]")
    if x.shape[-1] not in (1, 3, 4):
        raise InputError(f"{what}: images with {x.shape[-1]} channels (shape {x.shape}), "
                         "expected 1, 3 or 4 channels in the last axis")
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise InputError(f"{what}: images of dtype {x.dtype}, expected uint8 or a float type")
    if x.size and not np.all(np.isfinite(x)):
        raise InputError(f"{what}: images contain NaN or infinite values")
    lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 1.0)
    if lo >= 0 and hi <= 1 and np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    if lo >= 0 and hi <= 255 and np.all(np.mod(x, 1) == 0):
        return x.astype(np.uint8)
    raise InputError(f"{what}: pixel values in [{lo:g}, {hi:g}], expected uint8 0..255 or floats in [0, 1]")


def as_labels(y, num_classes: int | None, what: str) -> np.ndarray:
    """Checks labels: a vector of integers in `0..num_classes-1`; returns int64."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InputError(f"{what}: labels of shape {y.shape}, expected a vector of class indices")
    if y.size and np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{what}: labels of dtype {y.dtype}, expected integer class indices")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or (num_classes is not None and y.max() >= num_classes)):
        top = "C-1" if num_classes is None else str(num_classes - 1)
        raise InputError(f"{what}: labels in [{y.min()}, {y.max()}], expected 0..{top}")
    return y


def check_windows(x, name: str = "windows", shape: tuple[int, int] | None = None) -> np.ndarray:
    """Returns `x` as float32 `[N, time, channels]`, or raises `InputError` naming `name`:
    wrong rank, no windows, NaN/inf values, or a window shape other than `shape`.

    Example:
    >>> check_windows(np.zeros((2, 8, 3), np.float64), "x").dtype
    dtype('float32')
    >>> check_windows(np.zeros((2, 24)), "x")
    Traceback (most recent call last):
    ...
    kerastl.errors.InputError: x: array of rank 2 (shape (2, 24)), expected windows of rank 3 [windows, time, channels]
    """
    x = np.asarray(x)
    if x.ndim != 3:
        raise InputError(f"{name}: array of rank {x.ndim} (shape {x.shape}), expected windows of rank 3 "
                         "[windows, time, channels]")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"{name}: dtype {x.dtype}, expected numbers")
    if len(x) == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise InputError(f"{name}: shape {x.shape} holds no data, expected [windows, time, channels] with each > 0")
    bad = ~np.isfinite(x)
    if bad.any():
        first = int(np.argwhere(bad.any(axis=(1, 2)))[0, 0])
        raise InputError(f"{name}: {int(bad.any(axis=(1, 2)).sum())} window(s) hold NaN or infinite values "
                         f"(first: window {first}), expected finite numbers")
    if shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise InputError(f"{name}: windows of shape {tuple(x.shape[1:])}, expected {tuple(shape)} "
                         "(the shape the detector was fitted on)")
    return x.astype(np.float32, copy=False)
