"""PAMAP2 Physical Activity Monitoring, Protocol sessions: the one reader of every app.

`Protocol/subject101.dat` ... `subject109.dat`: one row per 10 ms (100 Hz), 54
space-separated columns: time (s), activity id, heart rate (bpm; about 9 Hz, NaN between its
samples), then 17 columns for each of the hand, chest and ankle IMUs: temperature,
acceleration ±16 g (3), acceleration ±6 g (3), gyroscope (3), magnetometer (3), orientation
(4, invalid in this release). NaN marks a lost wireless sample. Activity 0 marks transient
rows between activities.

- `read_session(path)`: the 27 acceleration (±16 g), gyroscope and magnetometer channels,
  gaps filled by linear interpolation, and the activity id of each row.
- `load_pamap2(folder)`: `Recordings` for anomaly detection: every stretch of one activity
  of one subject is a recording (activity 0 dropped).
- `read_pamap2(folder, window, stride)`: windows per subject (federated clients).

Example:
>>> recordings = load_pamap2("~/data/PAMAP2_Dataset")                  # doctest: +SKIP
>>> recordings.class_names[:3], recordings.series[0].shape             # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import re
import warnings

import numpy as np

from kerastl.data.recordings import Recordings, channel_indices, make_windows, resample
from kerastl.errors import InputError

PAMAP2_RATE = 100.0
PAMAP2_ACTIVITIES = {1: "lying", 2: "sitting", 3: "standing", 4: "walking", 5: "running", 6: "cycling",
                     7: "nordic walking", 12: "ascending stairs", 13: "descending stairs", 16: "vacuum cleaning",
                     17: "ironing", 24: "rope jumping"}
# Per IMU (17 columns from column 3, 20 and 37): temperature, acc ±16 g (3), acc ±6 g (3),
# gyroscope (3), magnetometer (3), orientation (4, invalid in this release).
_IMU_CHANNELS = [1, 2, 3, 7, 8, 9, 10, 11, 12]
PAMAP2_CHANNELS = [start + offset for start in (3, 20, 37) for offset in _IMU_CHANNELS]
PAMAP2_CHANNEL_NAMES = [f"{imu}_{sensor}_{axis}" for imu in ("hand", "chest", "ankle")
                        for sensor in ("acc", "gyro", "mag") for axis in "xyz"]


def session_files(folder: str, given: str | None = None) -> list[str]:
    """The `subject*.dat` files of `folder/Protocol` (or of `folder` itself); `given`: how the
    user named the folder, for messages (default `--data-dir FOLDER`)."""
    given = given or f"--data-dir {folder}"
    if folder is None or not os.path.isdir(folder):
        raise InputError(f"{given}: not a folder, expected PAMAP2's Protocol/subject101.dat ...")
    protocol = os.path.join(folder, "Protocol") if os.path.isdir(os.path.join(folder, "Protocol")) else folder
    files = sorted(glob.glob(os.path.join(protocol, "subject*.dat")))
    if not files:
        raise InputError(f"{given}: no Protocol/subject10N.dat files")
    return files


def read_session(path: str) -> tuple[np.ndarray, np.ndarray]:
    """`(channels [rows, 27] float64, activity ids [rows])` of one Protocol file; gaps in
    the IMU channels are filled by linear interpolation."""
    try:
        with warnings.catch_warnings():  # an empty file is reported below
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as err:
        raise InputError(f"{path}: not space-separated numbers ({str(err).splitlines()[0]})") from None
    if table.size == 0:
        raise InputError(f"{path}: no rows, expected PAMAP2's 54 columns; this subject has no data")
    if table.shape[1] != 54:
        raise InputError(f"{path}: {table.shape[1]} columns, expected 54 (PAMAP2's Protocol format)")
    if np.isnan(table[:, 1]).any():
        raise InputError(f"{path}: the activity id column (2nd) holds NaN, expected an id on every row")
    channels = table[:, PAMAP2_CHANNELS]
    for c in range(channels.shape[1]):
        column, missing = channels[:, c], np.isnan(channels[:, c])
        if missing.all():
            raise InputError(f"{path}: IMU column {PAMAP2_CHANNELS[c]} has no values")
        if missing.any():
            column[missing] = np.interp(np.flatnonzero(missing), np.flatnonzero(~missing), column[~missing])
    return channels, table[:, 1].astype(int)


def activity_segments(activity: np.ndarray) -> list[tuple[int, int, int]]:
    """`(start, end, activity)` of every run of one activity other than 0 (transient).

    Example:
    >>> activity_segments(np.array([0, 1, 1, 0, 4, 4, 4]))
    [(1, 3, 1), (4, 7, 4)]
    """
    cuts = np.flatnonzero(np.diff(activity)) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(activity)]])
    return [(int(s), int(e), int(activity[s])) for s, e in zip(starts, ends) if activity[s] != 0]


def _subject_number(path: str, fallback: int) -> int:
    digits = re.findall(r"\d+", os.path.basename(path))
    return int(digits[-1]) if digits else fallback


def load_pamap2(folder: str, channels: str | None = None, sample_rate: float | None = None,
                given: str | None = None) -> Recordings:
    """Every stretch of one activity of one subject as a recording, classes = the activities
    present (ordered by id), groups = subject numbers; `channels` picks channels by name
    (`PAMAP2_CHANNEL_NAMES`), `sample_rate` resamples from 100 Hz."""
    keep = channel_indices(PAMAP2_CHANNEL_NAMES, channels, "pamap2")
    rate = float(sample_rate or PAMAP2_RATE)
    series, activities, groups = [], [], []
    for number, path in enumerate(session_files(folder, given)):
        values, activity = read_session(path)
        segments = activity_segments(activity)
        if not segments:
            raise InputError(f"{path}: every row is activity 0 (transient); this subject has no data")
        for start, end, label in segments:
            series.append(resample(values[start:end, keep], PAMAP2_RATE, rate).astype(np.float32))
            activities.append(label)
            groups.append(_subject_number(path, number))
    ids = sorted(set(activities))
    return Recordings(name="pamap2", series=series, labels=np.array([ids.index(a) for a in activities], np.int64),
                      class_names=[PAMAP2_ACTIVITIES.get(a, str(a)) for a in ids],
                      groups=np.asarray(groups, np.int64), channel_names=[PAMAP2_CHANNEL_NAMES[i] for i in keep],
                      sample_rate=rate, drop_short=True)


def read_pamap2(folder: str, window: int = 200, stride: int = 100) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """PAMAP2 Protocol files -> per subject `(name, windows, activity_ids)`; windows never span
    an activity change and activity 0 (transient) is dropped."""
    subjects = []
    for path in session_files(folder):
        values, activity = read_session(path)
        xs, ys = [], []
        for start, end, label in activity_segments(activity):
            if end - start < window:
                continue
            cut = make_windows(values[start:end], window, stride).astype(np.float32)
            xs.append(cut)
            ys.append(np.full(len(cut), label))
        if not xs:
            raise InputError(f"{path}: no activity lasts a whole --window {window} samples; this subject has no data")
        subjects.append((os.path.splitext(os.path.basename(path))[0], np.concatenate(xs), np.concatenate(ys)))
    return subjects
