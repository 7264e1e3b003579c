"""The anomaly-detection protocol (AMSL's): which classes are normal, what trains, what tests.

Classes named by `normal_classes` are normal, the rest abnormal. Normal *recordings* are
split 60 / 40 into train / test (by recording, so overlapping windows of one recording never
land on both sides); every abnormal recording goes to test. Windows are scaled per channel
by a `ChannelScaler` fitted on the training normal windows only. `DEFAULT_ABNORMAL` holds
the default abnormal classes of each dataset.

- `anomaly_split(recordings, ...)`: the protocol over any `Recordings`
  (`kerastl.data.sensors`).
- `load_anomaly_data(dataset, ...)`: `watch`, `dsads`, `pamap2`, `wesad`, `cap` or
  `npz:PATH` -> `AnomalyData`. npz windows are taken as they are: normal windows are split
  60 / 40 at random (stratified), abnormal ones go to test.

Example:
>>> data = load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=64, stride=64)
>>> data.x_train.shape[1:], data.summary()["abnormal_classes"]
((64, 6), ['PEN', 'ABD', 'FEL'])
>>> parse_classes("ROW,0", ["PEN", "ABD", "ROW"], "watch")
[0, 2]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from kerastl.data.recordings import Recordings, make_windows
from kerastl.data.sensors import ChannelScaler, load_recordings, read_npz_windows
from kerastl.data.splits import stratified_holdout
from kerastl.errors import InputError

# The AMSL paper's DSADS protocol: 14 normal activities; abnormal are ascending (a05) and
# descending (a06) stairs, treadmill running (a12), jumping (a18) and basketball (a19).
DSADS_ABNORMAL = ("a05", "a06", "a12", "a18", "a19")
# Default abnormal classes; every other class of the dataset is normal. Only the DSADS choice
# is AMSL's (the text giving its PAMAP2 / WESAD / CAP classes was not found); the others
# follow it: PAMAP2's vigorous activities (the kinds of DSADS's five), WESAD's stress
# condition (the dataset's own stress vs non-stress task), CAP's wake and REM epochs against
# NREM sleep (stages S1-S4).
DEFAULT_ABNORMAL = {"dsads": DSADS_ABNORMAL,
                    "pamap2": ("running", "ascending stairs", "descending stairs", "rope jumping"),
                    "wesad": ("stress",),
                    "cap": ("W", "R")}
DEFAULT_NORMAL = {"watch": "IR,ER,TRAP,ROW", "npz": "0"}


@dataclasses.dataclass
class AnomalyData:
    """Scaled windows for one normal / abnormal split.

    `x_train`: normal training windows [N, time, channels]; `x_test`, `is_abnormal` (1 =
    abnormal), `test_classes` (class index of each test window); `scaler` maps raw windows
    to the model's units.
    """

    name: str
    x_train: np.ndarray
    x_test: np.ndarray
    is_abnormal: np.ndarray
    test_classes: np.ndarray
    class_names: list
    normal_classes: list
    scaler: ChannelScaler
    channel_names: list
    sample_rate: float | None = None

    def summary(self) -> dict:
        return {"dataset": self.name, "normal_classes": [self.class_names[c] for c in self.normal_classes],
                "abnormal_classes": [n for i, n in enumerate(self.class_names) if i not in self.normal_classes],
                "train_windows": int(len(self.x_train)), "test_windows": int(len(self.x_test)),
                "test_abnormal_windows": int(self.is_abnormal.sum()),
                "window_shape": list(self.x_train.shape[1:]), "channels": list(self.channel_names),
                "sample_rate": self.sample_rate}


def parse_classes(spec: str, class_names: list, dataset: str, option: str = "--normal-classes") -> list[int]:
    """Class indices from a comma-separated list of class names or indices."""
    chosen = []
    for item in [part.strip() for part in str(spec).split(",") if part.strip()]:
        if item in class_names:
            index = class_names.index(item)
        elif item.lstrip("-").isdigit() and 0 <= int(item) < len(class_names):
            index = int(item)
        else:
            raise InputError(f"{option} {spec}: {item!r} is not a class of {dataset}; expected names among "
                             f"{', '.join(map(str, class_names))} or indices 0..{len(class_names) - 1}")
        if index not in chosen:
            chosen.append(index)
    if not chosen:
        raise InputError(f"{option} {spec!r}: expected at least one class name or index")
    if len(chosen) == len(class_names):
        raise InputError(f"{option} {spec}: every class of {dataset} is normal, nothing is left to detect; "
                         "leave at least one class out")
    return sorted(chosen)


def _split_normal(labels: np.ndarray, normal: list[int], test_fraction: float, seed: int):
    """Indices (train, test) of items: each normal class split `1 - test_fraction` / `test_fraction`
    (at least one item each side when a class has two; `stratified_holdout`), every other item to test."""
    is_normal = np.isin(labels, normal)
    normal_items = np.flatnonzero(is_normal)
    train, test = stratified_holdout(labels[is_normal], test_fraction, seed)
    return normal_items[train], np.sort(np.concatenate([normal_items[test], np.flatnonzero(~is_normal)]))


def anomaly_split(recordings: Recordings, normal_classes: str, window: int, stride: int, seed: int = 0,
                  test_fraction: float = 0.4, scaling: str = "minmax") -> AnomalyData:
    """AMSL's protocol over recordings (see the module docstring); windows are scaled with a
    `ChannelScaler` fitted on the training normal windows only. Recordings shorter than a
    window are refused, or left out when `recordings.drop_short` (stretches of long sessions)."""
    normal = parse_classes(normal_classes, recordings.class_names, recordings.name)
    if window < 1 or stride < 1:
        raise InputError(f"--window {window} / --stride {stride}: expected positive integers")
    lengths = np.array([len(s) for s in recordings.series])
    kept = np.flatnonzero(lengths >= window)
    if recordings.drop_short:
        is_normal = np.isin(recordings.labels[kept], normal)
        for missing, kind in ((not is_normal.any(), "normal"), (is_normal.all(), "abnormal")):
            if missing:
                longest = lengths[np.isin(recordings.labels, normal) == (kind == "normal")].max()
                raise InputError(f"--window {window}: no {kind} stretch of {recordings.name} lasts that long; "
                                 f"expected at most {longest} steps")
    elif len(kept) < len(lengths):
        shortest = int(np.argmin(lengths))
        raise InputError(f"--window {window}: longer than recording {shortest} of {recordings.name} "
                         f"({recordings.class_names[recordings.labels[shortest]]}, {lengths[shortest]} steps); "
                         f"expected at most {lengths[shortest]}")
    train, test = _split_normal(recordings.labels[kept], normal, test_fraction, seed)
    train, test = kept[train], kept[test]

    def windows_of(indices):
        parts = [make_windows(recordings.series[i], window, stride) for i in indices]
        classes = np.concatenate([np.full(len(p), recordings.labels[i]) for p, i in zip(parts, indices)])
        return np.concatenate(parts).astype(np.float32), classes.astype(np.int64)

    x_train, _ = windows_of(train)
    x_test, test_classes = windows_of(test)
    return _scaled(recordings.name, x_train, x_test, test_classes, recordings.class_names, normal,
                   recordings.channel_names, scaling, recordings.sample_rate)


def _scaled(name, x_train, x_test, test_classes, class_names, normal, channel_names, scaling, sample_rate=None):
    scaler = ChannelScaler(scaling).fit(x_train)
    return AnomalyData(name=name, x_train=scaler.transform(x_train), x_test=scaler.transform(x_test),
                       is_abnormal=(~np.isin(test_classes, normal)).astype(np.int64), test_classes=test_classes,
                       class_names=list(class_names), normal_classes=normal, scaler=scaler,
                       channel_names=list(channel_names), sample_rate=sample_rate)


def default_normal_classes(dataset: str, class_names: list | None = None) -> str:
    """The default `--normal-classes` of a dataset: every class but `DEFAULT_ABNORMAL`'s (DSADS:
    the paper's 14 normal activities)."""
    name = dataset.partition(":")[0]
    if name in DEFAULT_ABNORMAL:
        return ",".join(c for c in (class_names or []) if c not in DEFAULT_ABNORMAL[name])
    return DEFAULT_NORMAL[name]


def load_npz_windows(path: str, normal_classes: str, seed: int = 0, test_fraction: float = 0.4,
                     scaling: str = "minmax") -> AnomalyData:
    """`npz:PATH` data (`kerastl.data.sensors.read_npz_windows`): normal windows are split
    `1 - test_fraction` / `test_fraction` at random, stratified by class; abnormal ones go to test."""
    x, labels, class_names = read_npz_windows(path)
    normal = parse_classes(normal_classes, class_names, f"npz:{path}")
    train, test = _split_normal(labels, normal, test_fraction, seed)
    return _scaled(f"npz:{path}", x[train], x[test], labels[test], class_names, normal,
                   [f"c{i}" for i in range(x.shape[2])], scaling)


def load_anomaly_data(dataset: str, normal_classes: str | None, window: int, stride: int, seed: int = 0,
                      data_dir: str | None = None, test_fraction: float = 0.4, scaling: str = "minmax",
                      channels: str | None = None, sample_rate: float | None = None,
                      wesad_device: str = "chest") -> AnomalyData:
    """`watch`, `dsads`, `pamap2`, `wesad`, `cap` (each but watch from `NAME:DIR` or
    `data_dir`; see `load_recordings`) or `npz:PATH` -> `AnomalyData` (windows of `window`
    steps every `stride` steps; npz windows are taken as they are)."""
    name = dataset.partition(":")[0]
    for option, value in (("--channels", channels), ("--sample-rate", sample_rate)):
        if value is not None and name not in ("pamap2", "wesad", "cap"):
            raise InputError(f"{option} {value}: applies to pamap2, wesad and cap, not {name}")
    if dataset.startswith("npz:"):
        return load_npz_windows(dataset[4:], normal_classes or default_normal_classes(dataset), seed,
                                test_fraction, scaling)
    recordings = load_recordings(dataset, data_dir, channels, sample_rate, wesad_device)
    spec = normal_classes or default_normal_classes(dataset, recordings.class_names)
    return anomaly_split(recordings, spec, window, stride, seed, test_fraction, scaling)
