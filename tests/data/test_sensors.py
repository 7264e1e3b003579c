"""Sensor data for anomaly detection: windows, scaling, the watch and DSADS loaders, splits, npz."""

import os

import numpy as np
import pytest

from kerastl import InputError
from kerastl.data import sensors


def test_make_windows_by_hand():
    series = np.arange(20, dtype="float32").reshape(10, 2)     # step t holds (2t, 2t + 1)
    w = sensors.make_windows(series, window=4, stride=3)
    assert w.shape == (3, 4, 2)
    assert w[:, 0, 0].tolist() == [0, 6, 12] and w[2, -1].tolist() == [18, 19]
    assert sensors.make_windows(series, 10, 1).shape == (1, 10, 2)
    with pytest.raises(InputError, match="--window 11: longer than a recording of 10 steps"):
        sensors.make_windows(series, 11, 1)


def test_channel_scaler_fits_on_the_data_it_is_given():
    train = np.array([[[0.0, 5.0, 1.0], [4.0, 15.0, 1.0]]])
    scaler = sensors.ChannelScaler().fit(train)
    assert scaler.offset.tolist() == [0.0, 5.0, 1.0] and scaler.scale.tolist() == [4.0, 10.0, 1.0]  # constant: 1
    np.testing.assert_allclose(scaler.transform(np.array([[[8.0, 0.0, 3.0]]])), [[[2.0, -0.5, 2.0]]])
    standard = sensors.ChannelScaler("standard").fit(train)
    np.testing.assert_allclose(standard.transform(train)[0, :, 0], [-1.0, 1.0])


def test_watch_recordings_layout():
    watch = sensors.load_watch()
    assert len(watch.series) == 140 and all(s.shape[1] == 6 for s in watch.series)
    assert watch.class_names == list(sensors.WATCH_CLASSES)
    assert np.bincount(watch.labels).tolist() == [20] * 7
    assert sorted(set(watch.groups.tolist())) == list(range(1, 11))
    assert min(len(s) for s in watch.series) == 947


def test_watch_split_follows_the_protocol_and_scales_on_training_normal_windows_only():
    data = sensors.load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=50, stride=25, seed=3)
    assert data.normal_classes == [3, 4, 5, 6]
    assert data.x_train.shape[1:] == (50, 6) and data.x_test.shape[1:] == (50, 6)
    np.testing.assert_array_equal(data.is_abnormal, ~np.isin(data.test_classes, [3, 4, 5, 6]))
    assert set(data.test_classes[data.is_abnormal == 1].tolist()) == {0, 1, 2}
    # Min-max fitted on the normal training windows: they span exactly [0, 1]; test data may not.
    assert data.x_train.min(axis=(0, 1)) == pytest.approx(np.zeros(6), abs=1e-6)
    assert data.x_train.max(axis=(0, 1)) == pytest.approx(np.ones(6), abs=1e-6)
    assert data.x_test.min() < 0 or data.x_test.max() > 1
    # 60 / 40 by recording: 12 of each normal class's 20 recordings train, 8 test; recordings
    # are whole, so the window counts add up recording by recording.
    watch = sensors.load_watch()
    train, test = sensors._split_normal(watch.labels, [3, 4, 5, 6], 0.4, seed=3)
    assert not set(train) & set(test) and len(train) + len(test) == 140
    assert np.bincount(watch.labels[train], minlength=7).tolist() == [0, 0, 0, 12, 12, 12, 12]
    windows_per = [(len(watch.series[i]) - 50) // 25 + 1 for i in range(140)]
    assert len(data.x_train) == sum(windows_per[i] for i in train)
    assert len(data.x_test) == sum(windows_per[i] for i in test)


@pytest.mark.parametrize("spec, message", [
    ("IR,SQUAT", r"--normal-classes IR,SQUAT: 'SQUAT' is not a class of watch; expected names among PEN, ABD"),
    ("7", r"'7' is not a class of watch; .* or indices 0\.\.6"),
    ("PEN,ABD,FEL,IR,ER,TRAP,ROW", r"every class of watch is normal, nothing is left to detect"),
    ("0,1,2,3,4,5,6", r"every class of watch is normal"),
    (" , ", r"expected at least one class name or index"),
])
def test_bad_normal_classes(spec, message):
    with pytest.raises(InputError, match=message):
        sensors.load_anomaly_data("watch", spec, window=50, stride=50)


def test_window_longer_than_a_recording():
    with pytest.raises(InputError, match=r"--window 1000: longer than recording \d+ of watch \(\w+, 947 steps\); "
                                         r"expected at most 947"):
        sensors.load_anomaly_data("watch", "PEN", window=1000, stride=10)


def write_dsads(root, activities=("a01", "a02", "a05"), people=("p1", "p2"), segments=3, shape=(125, 45)):
    rng = np.random.default_rng(0)
    for a, activity in enumerate(activities):
        for person in people:
            os.makedirs(root / activity / person)
            for s in range(1, segments + 1):
                values = rng.normal(size=shape) + 10 * a
                np.savetxt(root / activity / person / f"s{s:02d}.txt", values, delimiter=",", fmt="%.5f")
    return str(root)


def test_dsads_folder_loader(tmp_path):
    folder = write_dsads(tmp_path / "DSADS")
    recordings = sensors.load_dsads(folder)
    assert recordings.class_names == ["a01", "a02", "a05"]
    assert len(recordings.series) == 18 and recordings.series[0].shape == (125, 45)
    assert np.bincount(recordings.labels).tolist() == [6, 6, 6]
    assert sorted(set(recordings.groups.tolist())) == [1, 2]
    assert recordings.channel_names[0] == "torso_xacc" and len(recordings.channel_names) == 45
    # Activity a has mean 10 a: the files were read in their folders.
    assert recordings.series[-1].mean() == pytest.approx(20.0, abs=0.1)
    # The default split: a05 (stairs) is abnormal, as in the paper.
    data = sensors.load_anomaly_data("dsads", None, window=125, stride=125, data_dir=folder)
    assert data.normal_classes == [0, 1] and set(data.test_classes[data.is_abnormal == 1]) == {2}
    assert len(data.x_train) + len(data.x_test) == 18 and data.x_train.shape[1:] == (125, 45)
    with pytest.raises(InputError, match=r"--window 126: longer than recording 0 of dsads \(a01, 125 steps\)"):
        sensors.load_anomaly_data("dsads", None, window=126, stride=125, data_dir=folder)


@pytest.mark.parametrize("case, message", [
    ("no folder", r"--data-dir .*absent: not a folder, expected DSADS's a01..a19/p1..p8/s01..s60.txt"),
    ("no activities", r"--data-dir .*empty: no activity folders a01..a19"),
    ("no people", r"a03: no person folders p1..p8"),
    ("no segments", r"a01/p3: no segment files s01.txt..s60.txt"),
    ("wrong shape", r"a02/p1/s02.txt: 124 rows x 45 columns, expected 125 x 45"),
    ("not numbers", r"a02/p2/s01.txt: not comma-separated numbers"),
    ("NaN values", r"a05/p1/s01.txt: holds NaN or infinite values, expected finite numbers"),
    ("no data dir", r"--dataset dsads: give --data-dir"),
])
def test_dsads_missing_or_broken_files(case, message, tmp_path):
    folder = write_dsads(tmp_path / "DSADS", segments=2)
    target = {"no folder": str(tmp_path / "absent"), "no activities": str(tmp_path / "empty"),
              "no data dir": None}.get(case, folder)
    os.makedirs(tmp_path / "empty")
    if case == "no people":
        os.makedirs(tmp_path / "DSADS" / "a03")
    if case == "no segments":
        os.makedirs(tmp_path / "DSADS" / "a01" / "p3")
    if case == "wrong shape":
        np.savetxt(tmp_path / "DSADS" / "a02" / "p1" / "s02.txt", np.zeros((124, 45)), delimiter=",")
    if case == "NaN values":
        values = np.ones((125, 45))
        values[3, 7] = np.nan
        np.savetxt(tmp_path / "DSADS" / "a05" / "p1" / "s01.txt", values, delimiter=",")
    if case == "not numbers":
        (tmp_path / "DSADS" / "a02" / "p2" / "s01.txt").write_text("1,2,x\n")
    with pytest.raises(InputError, match=message):
        sensors.load_anomaly_data("dsads", None, window=125, stride=125, data_dir=target)


def test_npz_windows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8, 2)).astype("float32")
    y = np.repeat(["walk", "run"], 25)
    np.savez(tmp_path / "w.npz", x=x, y=y)
    data = sensors.load_anomaly_data(f"npz:{tmp_path}/w.npz", "walk", window=99, stride=99, seed=1)
    assert data.class_names == ["run", "walk"] and data.normal_classes == [1]
    assert len(data.x_train) == 15 and len(data.x_test) == 35 and data.is_abnormal.sum() == 25
    assert data.x_train.shape[1:] == (8, 2)   # npz windows are used as they are


@pytest.mark.parametrize("arrays, spec, message", [
    ({"y": np.zeros(4)}, "0", r"no array named 'x'"),
    ({"x": np.zeros((4, 8, 2))}, "0", r"no array named 'y'"),
    ({"x": np.zeros((4, 16)), "y": [0, 1, 0, 1]}, "0", r"x: array of rank 2 \(shape \(4, 16\)\), expected windows of rank 3"),
    ({"x": np.full((4, 8, 2), np.nan), "y": [0, 1, 0, 1]}, "0", r"x: 4 window\(s\) hold NaN"),
    ({"x": np.zeros((4, 8, 2)), "y": [0, 1, 0]}, "0", r"y has shape \(3,\), expected one label per window of x \(4\)"),
    ({"x": np.zeros((4, 8, 2)), "y": [0, 1, 0, 1]}, "2", r"'2' is not a class of npz:"),
    ({"x": np.zeros((4, 8, 2)), "y": [0, 1, 0, 1]}, "0,1", r"every class of npz:.* is normal"),
])
def test_bad_npz(arrays, spec, message, tmp_path):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(InputError, match=message):
        sensors.load_anomaly_data(f"npz:{tmp_path}/bad.npz", spec, window=8, stride=8)
