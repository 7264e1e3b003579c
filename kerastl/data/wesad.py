"""WESAD (wearable stress and affect detection): the per-subject pickle layout.

`S2/S2.pkl` ... `S17/S17.pkl`, each a dict (pickled by Python 2, read with latin1):
`signal` -> `chest` (RespiBAN, every channel at 700 Hz: `ACC` [n, 3], `ECG`, `EMG`, `EDA`,
`Temp`, `Resp` [n, 1]) and `wrist` (Empatica E4: `ACC` [m, 3] at 32 Hz, `BVP` at 64 Hz,
`EDA` and `TEMP` at 4 Hz), and `label` [n] at 700 Hz: 0 not defined / transient,
1 baseline, 2 stress, 3 amusement, 4 meditation, 5-7 to be ignored.

`load_wesad(folder, device)` gives `Recordings` for anomaly detection: every stretch of one
of the labels 1-4 of one subject is a recording, its channels resampled to one rate (default
32 Hz, the wrist accelerometer's). The pickles are read by an unpickler that builds NumPy
arrays, dicts, lists, strings and numbers only, so a file cannot run code.

Example:
>>> recordings = load_wesad("~/data/WESAD", device="wrist")            # doctest: +SKIP
>>> recordings.channel_names                                           # doctest: +SKIP
['ACC_x', 'ACC_y', 'ACC_z', 'BVP', 'EDA', 'TEMP']
"""

from __future__ import annotations

import glob
import os
import pickle
import re

import numpy as np

from kerastl.data.recordings import Recordings, array_reader, channel_indices, cut_spans
from kerastl.errors import InputError

LABEL_RATE = 700.0
WESAD_CONDITIONS = {1: "baseline", 2: "stress", 3: "amusement", 4: "meditation"}
# Device -> (key, sampling rate in Hz, channel names) of each sensor, in the pickle's order.
WESAD_SENSORS = {
    "chest": [("ACC", 700.0, ("ACC_x", "ACC_y", "ACC_z")), ("ECG", 700.0, ("ECG",)), ("EMG", 700.0, ("EMG",)),
              ("EDA", 700.0, ("EDA",)), ("Temp", 700.0, ("Temp",)), ("Resp", 700.0, ("Resp",))],
    "wrist": [("ACC", 32.0, ("ACC_x", "ACC_y", "ACC_z")), ("BVP", 64.0, ("BVP",)), ("EDA", 4.0, ("EDA",)),
              ("TEMP", 4.0, ("TEMP",))],
}
WESAD_RATE = 32.0


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers only (WESAD's content)."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" or (module, name) == ("_codecs", "encode"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a WESAD pickle does not hold")


def subject_files(folder: str, given: str | None = None) -> list[str]:
    """The `S*/S*.pkl` files under `folder`, in subject order; `given`: how the user named the
    folder, for messages (default `--data-dir FOLDER`)."""
    given = given or f"--data-dir {folder}"
    if folder is None or not os.path.isdir(folder):
        raise InputError(f"{given}: not a folder, expected WESAD's S2/S2.pkl ... S17/S17.pkl")
    files = [path for path in glob.glob(os.path.join(folder, "S*", "S*.pkl"))
             if re.fullmatch(r"S\d+", os.path.basename(os.path.dirname(path)))]
    if not files:
        raise InputError(f"{given}: no S*/S*.pkl subject files, expected WESAD's S2/S2.pkl ...")
    return sorted(files, key=lambda p: int(re.findall(r"\d+", os.path.basename(os.path.dirname(p)))[0]))


def read_subject(path: str, device: str = "chest") -> tuple[list, np.ndarray]:
    """`(sources, labels)` of one subject: `sources` are `(values [n, k], rate)` per sensor of
    `device` (see `WESAD_SENSORS`), `labels` the 700 Hz condition labels."""
    try:
        with open(path, "rb") as f:
            content = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError, IndexError) as err:
        raise InputError(f"{path}: not a readable WESAD pickle ({type(err).__name__}: {err})") from None
    keys = [key for key, _, _ in WESAD_SENSORS[device]]
    expected = f"expected WESAD's dict 'signal' -> '{device}' -> {', '.join(keys)}, and 'label'"
    if not isinstance(content, dict) or "label" not in content or "signal" not in content:
        found = ", ".join(map(repr, content)) if isinstance(content, dict) else type(content).__name__
        raise InputError(f"{path}: holds {found or 'an empty dict'}; {expected}")
    sensors = content["signal"].get(device) if isinstance(content["signal"], dict) else None
    if not isinstance(sensors, dict):
        raise InputError(f"{path}: no '{device}' entry in 'signal'; {expected}")
    missing = [key for key in keys if key not in sensors]
    if missing:
        raise InputError(f"{path}: no {missing[0]!r} in 'signal' -> '{device}'; {expected}")
    labels = np.asarray(content["label"]).reshape(-1)
    sources = []
    for key, rate, names in WESAD_SENSORS[device]:
        values = np.asarray(sensors[key], np.float64)
        values = values.reshape(len(values), -1) if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[1] != len(names):
            raise InputError(f"{path}: signal {device} {key} has shape {values.shape}, expected "
                             f"[samples, {len(names)}]")
        if abs(len(values) / rate - len(labels) / LABEL_RATE) > 1.0:
            raise InputError(f"{path}: signal {device} {key} lasts {len(values) / rate:.1f} s at {rate:g} Hz but the "
                             f"labels {len(labels) / LABEL_RATE:.1f} s at 700 Hz; expected the same span")
        sources.append((values, rate))
    return sources, labels


def condition_spans(labels: np.ndarray) -> list[tuple[float, float, int]]:
    """`(start_s, end_s, label)` of every run of one of the labels 1-4 (700 Hz labels).

    Example:
    >>> condition_spans(np.array([0] * 7 + [2] * 14 + [6] * 7))
    [(0.01, 0.03, 2)]
    """
    cuts = np.flatnonzero(np.diff(labels)) + 1
    starts, ends = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(labels)]])
    return [(s / LABEL_RATE, e / LABEL_RATE, int(labels[s])) for s, e in zip(starts, ends)
            if int(labels[s]) in WESAD_CONDITIONS]


def load_wesad(folder: str, device: str = "chest", channels: str | None = None,
               sample_rate: float | None = None, given: str | None = None) -> Recordings:
    """Every stretch of one condition (baseline, stress, amusement, meditation) of one subject
    as a recording at `sample_rate` Hz (default 32); groups = subject numbers; `channels`
    picks channels by name among the device's."""
    if device not in WESAD_SENSORS:
        raise InputError(f"--wesad-device {device}: expected chest or wrist")
    names = [name for _, _, sensor_names in WESAD_SENSORS[device] for name in sensor_names]
    files = subject_files(folder, given)
    keep = channel_indices(names, channels, f"wesad ({device})")
    rate = float(sample_rate or WESAD_RATE)
    series, conditions, groups = [], [], []
    for path in files:
        sources, labels = read_subject(path, device)
        spans = condition_spans(labels)
        if not spans:
            raise InputError(f"{path}: no sample is labelled 1-4 (baseline, stress, amusement, meditation); "
                             "this subject has no data")
        pieces = cut_spans([(array_reader(values, source_rate), source_rate) for values, source_rate in sources],
                           [(start, end) for start, end, _ in spans], rate)
        series.extend(piece[:, keep] for piece in pieces)
        conditions.extend(label for _, _, label in spans)
        groups.extend([int(re.findall(r"\d+", os.path.basename(path))[0])] * len(spans))
    present = sorted(set(conditions))
    return Recordings(name=f"wesad ({device})", series=series,
                      labels=np.array([present.index(c) for c in conditions], np.int64),
                      class_names=[WESAD_CONDITIONS[c] for c in present], groups=np.asarray(groups, np.int64),
                      channel_names=[names[i] for i in keep], sample_rate=rate, drop_short=True)
