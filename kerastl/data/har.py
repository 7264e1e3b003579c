"""Windows of activity recordings for classification under temporal shift (AdaRNN's UCI HAR
setting): loaders, the cross-time split, and batches drawn from K time segments.

Sources (`load_windows(dataset, ...)`):
- `uci-har:DIR`: the UCI HAR Dataset folder layout. `DIR/train/Inertial Signals/` and
  `DIR/test/Inertial Signals/` hold nine files per part, `{body_acc,body_gyro,total_acc}_
  {x,y,z}_{train,test}.txt`, one window per row (128 space-separated samples, 2.56 s at
  50 Hz; consecutive windows of a subject overlap by half); `DIR/train/y_train.txt`,
  `DIR/test/y_test.txt` hold the activity of each row (1..6), `subject_train.txt`,
  `subject_test.txt` its subject; `DIR/activity_labels.txt` ("1 WALKING" per line) is
  optional. Channels in the order body_acc x, y, z, body_gyro x, y, z, total_acc x, y, z.
- `watch`: the smartwatch exercise recordings shipped in seglearn (offline, real; see
  `kerastl.data.sensors.load_watch`): 140 recordings of one exercise each, cut into windows
  of `window` samples every `stride` samples.

Splits (`time_split`), for each group of windows (a UCI HAR subject, a watch recording), its
n windows taken in time order (UCI HAR: file order, the dataset's recording order of a
subject; rows of the train file before rows of the test file):
- `time` (cross-time, the paper's setting): windows [0, a) train, [a, b) validate, [b, n)
  test, with a = round(n (train_fraction - valid_fraction)) and b = round(n train_fraction):
  training on a recording's early part, testing on its late part. Windows that overlap a
  window of the previous part are dropped (UCI HAR: the first window after each boundary;
  watch windows with stride < window: as many as overlap), so no sample is both trained on
  and tested on; every test window is later than every training and validation window of
  its group.
- `original` (UCI HAR only): its own train / test files (subjects disjoint); validation is
  the last `valid_fraction` of each training subject's windows (the same overlap rule).

Example:
>>> windows = load_windows("watch", window=64, stride=64)
>>> split = time_split(windows, "time", train_fraction=0.7, valid_fraction=0.1)
>>> len(split.train), len(split.valid), len(split.test)
(2249, 375, 1121)
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings

import numpy as np

from kerastl.errors import InputError

DATASETS = ("watch", "uci-har:DIR")
TEST_SPLITS = ("time", "original")
UCI_HAR_SIGNALS = tuple(f"{kind}_{axis}" for kind in ("body_acc", "body_gyro", "total_acc") for axis in "xyz")
UCI_HAR_LENGTH = 128
UCI_HAR_CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")


@dataclasses.dataclass
class Windows:
    """Labelled windows of several recordings, on their original scale.

    Attributes:
        name: "uci-har" or "watch".
        x: float32 `[N, length, channels]`.
        y: int64 `[N]`, class indices 0..C-1.
        groups: int64 `[N]`: the subject (UCI HAR) or recording (watch) of each window.
        position: int64 `[N]`: the window's place in its group's time order (0, 1, ...).
        class_names, channel_names: C and `channels` names.
        group_names: group -> how messages name it (e.g. "subject 7 (.../subject_train.txt)").
        overlap: how many neighbours on each side share samples with a window (dropped at the
            boundaries of the cross-time split).
        part: `[N]` "train" / "test": UCI HAR's own split (None for watch).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    position: np.ndarray
    class_names: list
    channel_names: list
    group_names: dict
    overlap: int = 0
    part: np.ndarray | None = None


@dataclasses.dataclass
class WindowSplit:
    """Indices into `Windows.x` of the three parts, and each window's relative time in its
    group (`position / group size`, in [0, 1)), which orders the training windows for TDC."""

    method: str
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    relative_time: np.ndarray
    train_fraction: float
    valid_fraction: float

    def to_dict(self, windows: Windows) -> dict:
        parts = {"train": self.train, "valid": self.valid, "test": self.test}
        return {"method": self.method, "train_fraction": self.train_fraction, "valid_fraction": self.valid_fraction,
                "windows": {name: int(len(rows)) for name, rows in parts.items()},
                "class_counts": {name: np.bincount(windows.y[rows], minlength=len(windows.class_names)).tolist()
                                 for name, rows in parts.items()},
                "groups": int(len(np.unique(windows.groups)))}


# ---------------------------------------------------------------------------------------
# UCI HAR


def _read_rows(path: str, dtype, width: int | None) -> np.ndarray:
    """Whitespace-separated numbers, `width` per row (None: one per row); ragged rows are named."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found, expected UCI HAR's layout (train/ and test/ folders with "
                         "'Inertial Signals/', y_*.txt and subject_*.txt)")
    expected = width or 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy warns about an empty file: reported below
            values = np.loadtxt(path, dtype=dtype, ndmin=2)
    except ValueError:
        with open(path) as f:
            lengths = [(number, len(line.split())) for number, line in enumerate(f, 1) if line.strip()]
        ragged = next(((number, n) for number, n in lengths if n != expected), None)
        if ragged:
            raise InputError(f"{path}: line {ragged[0]} has {ragged[1]} values, expected {expected}") from None
        kind = "integers" if np.issubdtype(dtype, np.integer) else "numbers"
        raise InputError(f"{path}: not whitespace-separated {kind}") from None
    if values.size == 0:
        raise InputError(f"{path}: empty, expected one row per window")
    if values.shape[1] != expected:
        raise InputError(f"{path}: rows have {values.shape[1]} values, expected {expected}")
    if not np.isfinite(values).all():
        row = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise InputError(f"{path}: row {row + 1} holds NaN or infinite values, expected finite numbers")
    return values if width else values[:, 0]


def _activity_labels(folder: str) -> list[str] | None:
    path = os.path.join(folder, "activity_labels.txt")
    if not os.path.exists(path):
        return None
    names = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or not fields[0].isdigit():
                raise InputError(f"{path}: line {number} is {line.strip()!r}, expected '<label number> <name>'")
            names[int(fields[0])] = fields[1]
    if sorted(names) != list(range(1, len(names) + 1)):
        raise InputError(f"{path}: label numbers {sorted(names)}, expected 1..{len(names)}")
    return [names[i] for i in range(1, len(names) + 1)]


def load_uci_har(folder: str | None) -> Windows:
    """Reads the UCI HAR folder layout (see the module docstring): both parts, file order kept."""
    if not folder:
        raise InputError("--dataset uci-har:DIR: give the UCI HAR Dataset folder (holding train/ and test/)")
    if not os.path.isdir(folder):
        raise InputError(f"--dataset uci-har:{folder}: not a folder, expected the UCI HAR Dataset folder "
                         "(holding train/ and test/)")
    class_names = _activity_labels(folder) or list(UCI_HAR_CLASSES)
    xs, ys, subjects, parts, names = [], [], [], [], {}
    for part in ("train", "test"):
        signals = []
        for signal in UCI_HAR_SIGNALS:
            path = os.path.join(folder, part, "Inertial Signals", f"{signal}_{part}.txt")
            values = _read_rows(path, np.float32, UCI_HAR_LENGTH)
            if signals and len(values) != len(signals[0][1]):
                raise InputError(f"{path}: {len(values)} rows, expected {len(signals[0][1])} as in "
                                 f"{signals[0][0]} (one row per window)")
            signals.append((path, values))
        rows = len(signals[0][1])
        labels_path = os.path.join(folder, part, f"y_{part}.txt")
        subject_path = os.path.join(folder, part, f"subject_{part}.txt")
        labels, subject = _read_rows(labels_path, np.int64, None), _read_rows(subject_path, np.int64, None)
        for path, values in ((labels_path, labels), (subject_path, subject)):
            if len(values) != rows:
                raise InputError(f"{path}: {len(values)} rows, expected {rows}, one per window of {signals[0][0]}")
        if labels.min() < 1 or labels.max() > len(class_names):
            bad = int(labels[(labels < 1) | (labels > len(class_names))][0])
            raise InputError(f"{labels_path}: label {bad}, expected 1..{len(class_names)} (activity_labels.txt)")
        xs.append(np.stack([values for _, values in signals], axis=-1))
        ys.append(labels - 1)
        subjects.append(subject)
        parts.append(np.full(rows, part))
        names.update({int(s): f"subject {s} ({subject_path})" for s in np.unique(subject)})
    subject = np.concatenate(subjects)
    # A subject's windows in file order (train file first): its recording order.
    position = np.zeros(len(subject), np.int64)
    for s in np.unique(subject):
        rows = np.flatnonzero(subject == s)
        position[rows] = np.arange(len(rows))
    return Windows("uci-har", np.concatenate(xs), np.concatenate(ys), subject, position, class_names,
                   list(UCI_HAR_SIGNALS), names, overlap=1, part=np.concatenate(parts))


# ---------------------------------------------------------------------------------------
# watch


def load_watch_windows(window: int, stride: int) -> Windows:
    """seglearn's watch recordings cut into windows (every recording is one exercise)."""
    from kerastl.data.recordings import make_windows
    from kerastl.data.sensors import load_watch

    recordings = load_watch()
    xs, ys, groups, positions, names = [], [], [], [], {}
    for index, (series, label, subject) in enumerate(zip(recordings.series, recordings.labels, recordings.groups)):
        cut = make_windows(series, window, stride)
        xs.append(cut)
        ys.append(np.full(len(cut), label))
        groups.append(np.full(len(cut), index))
        positions.append(np.arange(len(cut)))
        names[index] = f"watch recording {index} ({recordings.class_names[label]}, subject {subject})"
    return Windows("watch", np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64),
                   np.concatenate(groups).astype(np.int64), np.concatenate(positions).astype(np.int64),
                   recordings.class_names, recordings.channel_names, names,
                   overlap=math.ceil(window / stride) - 1)


def load_windows(dataset: str, window: int = 128, stride: int = 64) -> Windows:
    """`watch` (windows of `window` samples every `stride`) or `uci-har:DIR` (its own windows)."""
    if dataset.startswith("uci-har:"):
        return load_uci_har(dataset[len("uci-har:"):])
    if dataset == "watch":
        if window < 1 or stride < 1:
            raise InputError(f"--window {window} / --stride {stride}: expected positive integers")
        return load_watch_windows(window, stride)
    raise InputError(f"--dataset {dataset!r} is unknown for --task classification; expected one of "
                     f"{', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------
# splits


def _cut(count: int, fractions, gap: int):
    """Row ranges of consecutive parts of `count` windows at the cumulative `fractions`,
    dropping `gap` windows after every inner boundary."""
    edges = [0] + [int(round(count * f)) for f in fractions] + [count]
    return [(start + (gap if index else 0), end) for index, (start, end) in enumerate(zip(edges[:-1], edges[1:]))]


def time_split(windows: Windows, method: str = "time", train_fraction: float = 0.7,
               valid_fraction: float = 0.1) -> WindowSplit:
    """The `time` (cross-time) or `original` split (see the module docstring)."""
    if method not in TEST_SPLITS:
        raise InputError(f"--test-split {method!r}: expected one of {', '.join(TEST_SPLITS)}")
    if not 0 < valid_fraction < train_fraction < 1:
        raise InputError(f"--train-fraction {train_fraction} / --valid-fraction {valid_fraction}: expected "
                         "0 < valid fraction < train fraction < 1")
    if method == "original" and windows.part is None:
        raise InputError(f"--test-split original: {windows.name} has no original train/test split; use --test-split "
                         "time")
    parts = {"train": [], "valid": [], "test": []}
    relative_time = np.zeros(len(windows.y))
    for group in np.unique(windows.groups):
        rows = np.flatnonzero(windows.groups == group)
        rows = rows[np.argsort(windows.position[rows], kind="stable")]
        relative_time[rows] = np.arange(len(rows)) / len(rows)
        if method == "original":
            parts["test"].append(rows[windows.part[rows] == "test"])
            rows = rows[windows.part[rows] == "train"]
            if not len(rows):
                continue
            # The validation share of a training subject is its last windows.
            ranges = _cut(len(rows), [1.0 - valid_fraction], windows.overlap)
            names = ("train", "valid")
        else:
            ranges = _cut(len(rows), [train_fraction - valid_fraction, train_fraction], windows.overlap)
            names = ("train", "valid", "test")
        if any(end <= start for start, end in ranges):
            needed = 2 * windows.overlap + len(names)
            raise InputError(f"{windows.group_names[int(group)]}: {len(rows)} window(s); the {method} split "
                             f"(--train-fraction {train_fraction}, --valid-fraction {valid_fraction}) leaves its "
                             f"{' / '.join(n for n, (a, b) in zip(names, ranges) if b <= a)} part empty; expected at "
                             f"least {needed} windows per {'subject' if windows.name == 'uci-har' else 'recording'}")
        for name, (start, end) in zip(names, ranges):
            parts[name].append(rows[start:end])
    train, valid, test = (np.sort(np.concatenate(parts[name])) for name in ("train", "valid", "test"))
    return WindowSplit(method, train, valid, test, relative_time, train_fraction, valid_fraction)


def window_batches(x, y, segments, batch_size: int, seed: int = 0, start_step: int = 0):
    """An endless, resumable tf.data stream of `([K, B, length, channels], [K, B])`: one batch
    of windows from each of the K `segments` (arrays of row indices into `x`) per step.

    The draw is `kerastl.data.series.segment_draws`: a pure function of the step, so
    `start_step` resumes a run exactly. An epoch is as many steps as the smallest segment fills.
    """
    import tensorflow as tf

    from kerastl.data.series import segment_draws, steps_per_epoch

    bank_x, bank_y = tf.constant(np.asarray(x, np.float32)), tf.constant(np.asarray(y, np.int64))
    domains = [tf.constant(np.asarray(s, np.int64)) for s in segments]
    per_epoch = steps_per_epoch(segments, batch_size)

    def batch_at(step):
        rows = segment_draws(step, domains, per_epoch, batch_size, seed)  # [K, B]
        return tf.gather(bank_x, rows), tf.gather(bank_y, rows)

    return tf.data.Dataset.counter(start_step).map(batch_at).prefetch(2)


def write_uci_har(folder: str, parts: dict, class_names=None) -> str:
    """Writes windows in the UCI HAR folder layout that `load_uci_har` reads.

    `parts` maps "train" and "test" to `(x, labels, subjects)`: x `[N, 128, 9]` in the channel
    order of `UCI_HAR_SIGNALS`, labels 1..C, subject numbers. `class_names` (optional) become
    `activity_labels.txt`. Numbers are written as the dataset writes them (space-padded,
    scientific notation). Returns `folder`.

    Example:
    >>> write_uci_har("har", {"train": (x, y, s), "test": (x2, y2, s2)}, UCI_HAR_CLASSES)  # doctest: +SKIP
    """
    for part, (x, labels, subjects) in parts.items():
        signals = os.path.join(folder, part, "Inertial Signals")
        os.makedirs(signals, exist_ok=True)
        for channel, signal in enumerate(UCI_HAR_SIGNALS):
            np.savetxt(os.path.join(signals, f"{signal}_{part}.txt"), np.asarray(x)[:, :, channel], fmt="%15.7e",
                       delimiter=" ")
        np.savetxt(os.path.join(folder, part, f"y_{part}.txt"), np.asarray(labels), fmt="%d")
        np.savetxt(os.path.join(folder, part, f"subject_{part}.txt"), np.asarray(subjects), fmt="%d")
    if class_names is not None:
        with open(os.path.join(folder, "activity_labels.txt"), "w") as f:
            f.writelines(f"{number} {name}\n" for number, name in enumerate(class_names, 1))
    return folder
