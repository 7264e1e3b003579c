"""Sensor data: scaling, the watch and DSADS loaders, the docstring examples."""

import doctest
import os

import numpy as np
import pytest
from sensor_files import write_dsads

from kerastl import InputError
from kerastl.data import sensors


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
        sensors.load_recordings("dsads", target)


def test_docstring_examples():
    result = doctest.testmod(sensors, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
