"""PAMAP2 Protocol files: stretches, values, gaps, the federated reader, bad files."""

import numpy as np
import pytest
from sensor_files import write_pamap2

from kerastl import InputError
from kerastl.data import pamap2


def test_every_activity_stretch_of_every_subject_is_a_recording(tmp_path):
    table = write_pamap2(tmp_path, 101, [(0, 20), (1, 300), (0, 50), (5, 250), (1, 120)], nan_rows=(30, 31))
    write_pamap2(tmp_path, 102, [(5, 200), (24, 150)])
    rec = pamap2.load_pamap2(str(tmp_path))
    assert rec.class_names == ["lying", "running", "rope jumping"]          # ids 1, 5, 24 in id order
    assert [len(s) for s in rec.series] == [300, 250, 120, 200, 150]       # activity 0 rows dropped
    assert rec.labels.tolist() == [0, 1, 0, 1, 2] and rec.groups.tolist() == [101, 101, 101, 102, 102]
    assert rec.channel_names[:4] == ["hand_acc_x", "hand_acc_y", "hand_acc_z", "hand_gyro_x"]
    assert len(rec.channel_names) == 27 and rec.sample_rate == 100.0 and rec.drop_short
    # Channel c of subject s holds c + s + t: the first lying row is row 20 (t = 0.2 s).
    np.testing.assert_allclose(rec.series[0][0], np.arange(27) + 101 + 0.2, atol=1e-4)
    np.testing.assert_allclose(rec.series[1][:, 5], table[370:620, pamap2.PAMAP2_CHANNELS[5]], atol=1e-4)
    # Rows 30 and 31 lost channel 0: filled on the line between rows 29 and 32.
    np.testing.assert_allclose(rec.series[0][10:12, 0], [101.30, 101.31], atol=1e-4)
    assert all(s.dtype == np.float32 and np.isfinite(s).all() for s in rec.series)


def test_channels_and_sample_rate(tmp_path):
    write_pamap2(tmp_path, 101, [(1, 400), (4, 400)])
    rec = pamap2.load_pamap2(str(tmp_path), channels="ankle_mag_z, chest_acc_x", sample_rate=25)
    assert rec.channel_names == ["ankle_mag_z", "chest_acc_x"] and rec.sample_rate == 25.0
    assert [s.shape for s in rec.series] == [(100, 2), (100, 2)]
    # Sample i at 25 Hz is at t = i / 25 s of its stretch; a straight line survives resampling.
    t = np.arange(100) / 25
    np.testing.assert_allclose(rec.series[1][:, 0], 26 + 101 + 4.0 + t, atol=1e-3)
    np.testing.assert_allclose(rec.series[1][:, 1], 9 + 101 + 4.0 + t, atol=1e-3)


def test_the_federated_reader_shares_the_files(tmp_path):
    write_pamap2(tmp_path, 101, [(1, 300), (0, 50), (4, 300)], nan_rows=(10, 11))
    (name, x, y), = pamap2.read_pamap2(str(tmp_path), window=100, stride=100)
    rec = pamap2.load_pamap2(str(tmp_path))
    assert name == "subject101" and x.shape == (6, 100, 27) and y.tolist() == [1] * 3 + [4] * 3
    np.testing.assert_array_equal(x[3], rec.series[1][:100])


def write_rows(tmp_path, table):
    (tmp_path / "Protocol").mkdir(exist_ok=True)
    np.savetxt(tmp_path / "Protocol" / "subject101.dat", table, fmt="%.3f")


@pytest.mark.parametrize("case, message", [
    ("no folder", r"--data-dir .*nowhere: not a folder, expected PAMAP2's Protocol/subject101.dat"),
    ("no files", r"--data-dir .*: no Protocol/subject10N.dat files"),
    ("wrong columns", r"subject101.dat: 53 columns, expected 54 \(PAMAP2's Protocol format\)"),
    ("text", r"subject101.dat: not space-separated numbers"),
    ("empty", r"subject101.dat: no rows, expected PAMAP2's 54 columns; this subject has no data"),
    ("only transient", r"subject101.dat: every row is activity 0 \(transient\); this subject has no data"),
    ("dead sensor", r"subject101.dat: IMU column 4 has no values"),
    ("no activity id", r"subject101.dat: the activity id column \(2nd\) holds NaN"),
    ("unknown channel", r"--channels hand_acc_x,wrist_acc_x: 'wrist_acc_x' is not a channel of pamap2; "
                        r"expected names among hand_acc_x"),
])
def test_bad_files(case, message, tmp_path):
    folder = tmp_path / "nowhere" if case == "no folder" else tmp_path
    table = np.ones((5, 54))
    if case == "wrong columns":
        write_rows(tmp_path, table[:, :53])
    elif case == "text":
        (tmp_path / "Protocol").mkdir()
        (tmp_path / "Protocol" / "subject101.dat").write_text("0.0 1 NaN hello\n")
    elif case == "empty":
        (tmp_path / "Protocol").mkdir()
        (tmp_path / "Protocol" / "subject101.dat").write_text("")
    elif case in ("only transient", "dead sensor", "no activity id"):
        table[:, 1] = 0 if case == "only transient" else 1
        table[:, 4] = np.nan if case == "dead sensor" else 1
        table[2, 1] = np.nan if case == "no activity id" else table[2, 1]
        write_rows(tmp_path, table)
    elif case == "unknown channel":
        write_rows(tmp_path, table)
    with pytest.raises(InputError, match=message):
        pamap2.load_pamap2(str(folder), channels="hand_acc_x,wrist_acc_x" if case == "unknown channel" else None)
