"""The anomaly protocol: normal classes, the split by recording, scaling on training normal
windows only, the default split of each dataset, npz windows."""

import numpy as np
import pytest
from sensor_files import WESAD_SESSION_WITH_GAPS, write_cap, write_dsads, write_pamap2, write_wesad

from kerastl import InputError
from kerastl.anomaly import protocol
from kerastl.data import sensors


def test_watch_split_follows_the_protocol_and_scales_on_training_normal_windows_only():
    data = protocol.load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=50, stride=25, seed=3)
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
    train, test = protocol._split_normal(watch.labels, [3, 4, 5, 6], 0.4, seed=3)
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
        protocol.load_anomaly_data("watch", spec, window=50, stride=50)


def test_window_longer_than_a_recording():
    with pytest.raises(InputError, match=r"--window 1000: longer than recording \d+ of watch \(\w+, 947 steps\); "
                                         r"expected at most 947"):
        protocol.load_anomaly_data("watch", "PEN", window=1000, stride=10)


def test_dsads_default_split_is_the_papers(tmp_path):
    folder = write_dsads(tmp_path / "DSADS")
    # The default split: a05 (stairs) is abnormal, as in the paper.
    data = protocol.load_anomaly_data("dsads", None, window=125, stride=125, data_dir=folder)
    assert data.normal_classes == [0, 1] and set(data.test_classes[data.is_abnormal == 1]) == {2}
    assert len(data.x_train) + len(data.x_test) == 18 and data.x_train.shape[1:] == (125, 45)
    with pytest.raises(InputError, match=r"--window 126: longer than recording 0 of dsads \(a01, 125 steps\)"):
        protocol.load_anomaly_data("dsads", None, window=126, stride=125, data_dir=folder)


def test_npz_windows(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 8, 2)).astype("float32")
    y = np.repeat(["walk", "run"], 25)
    np.savez(tmp_path / "w.npz", x=x, y=y)
    data = protocol.load_anomaly_data(f"npz:{tmp_path}/w.npz", "walk", window=99, stride=99, seed=1)
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
        protocol.load_anomaly_data(f"npz:{tmp_path}/bad.npz", spec, window=8, stride=8)


def test_pamap2_default_split_normal_activities(tmp_path):
    for subject in (101, 102, 103):
        write_pamap2(tmp_path, subject, [(1, 160), (4, 160), (0, 10), (12, 160), (5, 30)])
    data = protocol.load_anomaly_data(f"pamap2:{tmp_path}", None, window=40, stride=40, seed=0)
    # Running stretches (30 rows) are shorter than a window: left out, not refused.
    assert data.class_names == ["lying", "walking", "running", "ascending stairs"]
    assert data.summary()["normal_classes"] == ["lying", "walking"]
    assert data.summary()["abnormal_classes"] == ["running", "ascending stairs"]
    # 3 stretches per normal activity: 2 train, 1 test; 4 windows per stretch.
    assert data.x_train.shape == (2 * 2 * 4, 40, 27)
    assert np.bincount(data.test_classes).tolist() == [4, 4, 0, 12]
    np.testing.assert_array_equal(data.is_abnormal, data.test_classes == 3)
    assert data.x_train.min() == pytest.approx(0.0, abs=1e-6) and data.x_train.max() == pytest.approx(1.0, abs=1e-6)
    same = protocol.load_anomaly_data("pamap2", "lying,walking", window=40, stride=40, data_dir=str(tmp_path))
    np.testing.assert_array_equal(same.x_test, data.x_test)


def test_wesad_default_split_stress_abnormal(tmp_path):
    for subject in (2, 3, 4):
        write_wesad(tmp_path, subject, WESAD_SESSION_WITH_GAPS)
    data = protocol.load_anomaly_data(f"wesad:{tmp_path}", None, window=16, stride=16, seed=1)
    assert data.summary()["normal_classes"] == ["baseline", "amusement", "meditation"]
    assert data.summary()["abnormal_classes"] == ["stress"] and data.summary()["sample_rate"] == 32.0
    # Windows per stretch: baseline 128 // 16 = 8, stress 6, amusement 4, meditation 5;
    # each normal condition: 2 of 3 subjects train, 1 tests; every stress stretch tests.
    assert len(data.x_train) == 2 * (8 + 4 + 5) and data.x_train.shape[1:] == (16, 8)
    assert np.bincount(data.test_classes).tolist() == [8, 3 * 6, 4, 5]
    np.testing.assert_array_equal(data.is_abnormal, data.test_classes == 1)


def test_cap_default_split_wake_and_rem_abnormal(tmp_path):
    for night in ("n1", "n2", "n3"):
        write_cap(tmp_path, night, ["W", "S1", "S2", "S3", "S4", "R", "S2"], rates=(("C4-A1", 32), ("EMG1-EMG2", 32)))
    data = protocol.load_anomaly_data(f"cap:{tmp_path}", None, window=60, stride=60, seed=0, sample_rate=8,
                                      channels="EMG1-EMG2")
    assert data.summary()["normal_classes"] == ["S1", "S2", "S3", "S4"]
    assert data.summary()["abnormal_classes"] == ["W", "R"] and data.channel_names == ["EMG1-EMG2"]
    # A 30 s epoch at 8 Hz: 240 steps, 4 windows. Per night S1, S3, S4 one stretch each and S2
    # two; of 3 (S2: 6) stretches 2 (4) train.
    assert data.x_train.shape == ((2 + 4 + 2 + 2) * 4, 60, 1)
    assert np.bincount(data.test_classes).tolist() == [12, 4, 8, 4, 4, 12]
    np.testing.assert_array_equal(data.is_abnormal, np.isin(data.test_classes, [0, 5]))
