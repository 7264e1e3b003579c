"""Multichannel sensor datasets: the readers, and per-channel scaling.

- `load_watch()`: the smartwatch exercise recordings shipped in seglearn (offline, real):
  140 recordings, 6 channels (3-axis accelerometer + gyroscope) at 50 Hz, 7 shoulder
  exercises (PEN, ABD, FEL, IR, ER, TRAP, ROW), 10 subjects.
- `load_dsads(folder)`: the Daily and Sports Activities Data Set's folder layout,
  `a01..a19/p1..p8/s01..s60.txt`, each file 125 rows (5 s at 25 Hz) x 45 comma-separated
  columns (5 units x 9 channels); every file is one recording.
- PAMAP2 (`kerastl.data.pamap2`), WESAD (`kerastl.data.wesad`) and CAP sleep recordings
  (`kerastl.data.cap`): long sessions cut into stretches of one class.
- `load_recordings(dataset)`: `watch`, or `NAME:DIR` for the folder datasets, as
  `Recordings` (`kerastl.data.recordings`, with `make_windows` and the resampling the
  format readers share).
- `read_npz_windows(path)`: arrays `x` (windows [N, time, channels]) and `y` (class labels)
  and optional `class_names`, checked.
- `ChannelScaler`: per-channel min-max or standardisation, fitted on the windows given.

How these become an anomaly-detection split (normal classes, train on normal only):
`kerastl.anomaly.protocol`.

Example:
>>> recordings = load_recordings("watch")
>>> recordings.class_names[recordings.labels[0]], recordings.series[0].shape, recordings.sample_rate
('PEN', (1333, 6), 50.0)
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from kerastl.data.arrays import check_windows
from kerastl.data.cap import load_cap
from kerastl.data.files import read_npz
from kerastl.data.pamap2 import load_pamap2
from kerastl.data.recordings import Recordings
from kerastl.data.wesad import load_wesad
from kerastl.errors import InputError

WATCH_CLASSES = ("PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW")
DSADS_SEGMENT_SHAPE = (125, 45)
FOLDER_DATASETS = ("dsads", "pamap2", "wesad", "cap")


def load_watch() -> Recordings:
    """seglearn's smartwatch exercise recordings (see the module docstring)."""
    from seglearn.datasets import load_watch as seglearn_watch

    data = seglearn_watch()
    return Recordings(name="watch", series=[np.asarray(s, np.float32) for s in data["X"]],
                      labels=np.asarray(data["y"], np.int64), class_names=list(data["y_labels"]),
                      groups=np.asarray(data["subject"], np.int64), channel_names=list(data["X_labels"]),
                      sample_rate=50.0)


def load_dsads(folder: str, segment_shape: tuple[int, int] = DSADS_SEGMENT_SHAPE,
               given: str | None = None) -> Recordings:
    """Reads DSADS from `folder/aNN/pN/sNN.txt` (one recording per file, `segment_shape`);
    `given`: how the user named the folder, for messages (default `--data-dir FOLDER`)."""
    given = given or f"--data-dir {folder}"
    if folder is None:
        raise InputError("--dataset dsads: give --data-dir, the folder holding DSADS's a01..a19 folders")
    if not os.path.isdir(folder):
        raise InputError(f"{given}: not a folder, expected DSADS's a01..a19/p1..p8/s01..s60.txt")
    activities = sorted(d for d in os.listdir(folder) if re.fullmatch(r"a\d\d", d) and os.path.isdir(os.path.join(folder, d)))
    if not activities:
        raise InputError(f"{given}: no activity folders a01..a19, expected DSADS's "
                         "a01..a19/p1..p8/s01..s60.txt")
    series, labels, groups = [], [], []
    for label, activity in enumerate(activities):
        people = sorted(d for d in os.listdir(os.path.join(folder, activity)) if re.fullmatch(r"p\d+", d))
        if not people:
            raise InputError(f"{os.path.join(folder, activity)}: no person folders p1..p8, expected "
                             f"{activity}/pN/sNN.txt")
        for person in people:
            files = sorted(glob.glob(os.path.join(folder, activity, person, "s[0-9][0-9].txt")))
            if not files:
                raise InputError(f"{os.path.join(folder, activity, person)}: no segment files s01.txt..s60.txt")
            for path in files:
                try:
                    values = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
                except ValueError as err:
                    raise InputError(f"{path}: not comma-separated numbers ({str(err).splitlines()[0]})") from None
                if values.shape != tuple(segment_shape):
                    raise InputError(f"{path}: {values.shape[0]} rows x {values.shape[1]} columns, expected "
                                     f"{segment_shape[0]} x {segment_shape[1]} (a DSADS segment)")
                if not np.isfinite(values).all():
                    raise InputError(f"{path}: holds NaN or infinite values, expected finite numbers")
                series.append(values)
                labels.append(label)
                groups.append(int(person[1:]))
    units = ("torso", "right_arm", "left_arm", "right_leg", "left_leg")
    sensors = [f"{axis}{kind}" for kind in ("acc", "gyro", "mag") for axis in "xyz"]
    channels = [f"{u}_{s}" for u in units for s in sensors] if segment_shape[1] == 45 else \
        [f"c{i}" for i in range(segment_shape[1])]
    return Recordings(name="dsads", series=series, labels=np.asarray(labels, np.int64), class_names=activities,
                      groups=np.asarray(groups, np.int64), channel_names=channels, sample_rate=25.0)


class ChannelScaler:
    """Per-channel scaling fitted on training windows: `(x - offset) / scale`.

    `method="minmax"` maps the training range of each channel to [0, 1]; `"standard"` to
    zero mean, unit variance. Constant channels get scale 1.

    Example:
    >>> scaler = ChannelScaler().fit(np.array([[[0.0, 10.0], [2.0, 30.0]]]))
    >>> scaler.transform(np.array([[[1.0, 20.0]]]))
    array([[[0.5, 0.5]]], dtype=float32)
    """

    def __init__(self, method: str = "minmax"):
        if method not in ("minmax", "standard"):
            raise ValueError(f"method={method!r}: expected 'minmax' or 'standard'")
        self.method = method
        self.offset = self.scale = None

    def fit(self, windows: np.ndarray) -> "ChannelScaler":
        flat = np.asarray(windows, np.float64).reshape(-1, np.shape(windows)[-1])
        if self.method == "minmax":
            self.offset, spread = flat.min(axis=0), flat.max(axis=0) - flat.min(axis=0)
        else:
            self.offset, spread = flat.mean(axis=0), flat.std(axis=0)
        self.scale = np.where(spread > 1e-12, spread, 1.0)
        return self

    def transform(self, windows: np.ndarray) -> np.ndarray:
        return ((np.asarray(windows, np.float64) - self.offset) / self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {"method": self.method, "offset": self.offset.tolist(), "scale": self.scale.tolist()}


def read_npz_windows(path: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """`(x, labels, class_names)` of an npz file: `x` windows [N, time, channels] (checked,
    float32), `y` class labels (integers, or strings), optional `class_names` (for integer
    labels 0..C-1); `labels` are int64 indices into `class_names`."""
    arrays = read_npz(path)
    x = check_windows(arrays["x"], f"{path}: x")
    y = np.asarray(arrays["y"])
    if y.ndim != 1 or len(y) != len(x):
        raise InputError(f"{path}: y has shape {y.shape}, expected one label per window of x ({len(x)})")
    if "class_names" in arrays:
        class_names = [str(c) for c in arrays["class_names"]]
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= len(class_names):
            raise InputError(f"{path}: y must hold integers 0..{len(class_names) - 1} (one per class_names entry)")
        labels = y.astype(np.int64)
    else:
        values, labels = np.unique(y, return_inverse=True)
        class_names = [str(v) for v in values]
    return x, labels, class_names


def load_recordings(dataset: str, data_dir: str | None = None, channels: str | None = None,
                    sample_rate: float | None = None, wesad_device: str = "chest") -> Recordings:
    """`watch`, or a folder dataset given as `NAME:DIR` (or NAME with `data_dir`): dsads,
    pamap2, wesad (`wesad_device` chest or wrist) or cap. `channels` (comma-separated names)
    and `sample_rate` (Hz) apply to pamap2, wesad and cap."""
    name, _, folder = dataset.partition(":")
    if name == "watch" and not folder:
        return load_watch()
    if name not in FOLDER_DATASETS:
        raise InputError(f"--dataset {dataset!r} is unknown; expected watch, {', '.join(FOLDER_DATASETS)} "
                         "(as NAME:DIR) or npz:PATH")
    given = f"--dataset {dataset}" if folder else f"--data-dir {data_dir}"
    folder = os.path.expanduser(folder or data_dir or "")
    if not folder:
        raise InputError(f"--dataset {name}: give --data-dir DIR, or the folder as --dataset {name}:DIR")
    if name == "dsads":
        return load_dsads(folder, given=given)
    if name == "pamap2":
        return load_pamap2(folder, channels, sample_rate, given)
    if name == "wesad":
        return load_wesad(folder, wesad_device, channels, sample_rate, given)
    return load_cap(folder, channels, sample_rate, given)
