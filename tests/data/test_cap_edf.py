"""CAP-style EDF sleep recordings: stage tables and EDF+ annotations, channels, bad files."""

import datetime

import numpy as np
import pytest
from sensor_files import write_cap

from kerastl import InputError
from kerastl.data import cap


def test_stage_table_nights_become_stage_stretches(tmp_path):
    # Starts one minute before midnight: the table's clock times wrap to 00:00:30 and on.
    write_cap(tmp_path, "n1", ["W", "S1", "S2", "S2", "R", "MT", "S3"])
    write_cap(tmp_path, "n2", ["S4", "W", "R"], skip_first=1, table=False, edf_annotations=True,
              start=datetime.time(22, 0, 0))
    rec = cap.load_cap(str(tmp_path), sample_rate=16)
    assert rec.class_names == ["W", "S1", "S2", "S3", "S4", "R"] and rec.channel_names == ["C4-A1", "ROC-LOC", "SaO2"]
    # n1: W, S1, S2 (two epochs, one stretch), R, [MT dropped], S3; n2: [unscored], S4, W, R.
    assert [rec.class_names[c] for c in rec.labels] == ["W", "S1", "S2", "R", "S3", "S4", "W", "R"]
    assert rec.groups.tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert [len(s) for s in rec.series] == [480, 480, 960, 480, 480, 480, 480, 480]
    # Signal k holds 100 k + t (s from the recording start); the S2 stretch of n1 spans 60-120 s.
    t = 60 + np.arange(960) / 16
    np.testing.assert_allclose(rec.series[2][4:-4], (100.0 * np.arange(3) + t[:, None])[4:-4], atol=0.03)
    np.testing.assert_allclose(rec.series[5][4:-4, 2], (200 + 30 + np.arange(480) / 16)[4:-4], atol=0.03)
    assert rec.sample_rate == 16.0 and all(s.dtype == np.float32 for s in rec.series)


def test_read_stage_table_skips_other_events(tmp_path):
    write_cap(tmp_path, "n1", ["W", "R"], start=datetime.time(23, 59, 45))
    rows = cap.read_stage_table(str(tmp_path / "n1.txt"))
    assert rows == [(23 * 3600 + 59 * 60 + 45, 30.0, "W"), (15, 30.0, "R")]
    assert cap.stage_spans([(0, 30, "W"), (30, 30, "W"), (60, 30, None), (90, 30, "S2")], 100) == \
        [(0, 60, "W"), (90, 100, "S2")]


@pytest.mark.parametrize("case, message", [
    ("no folder", r"--data-dir .*nowhere: not a folder, expected CAP-style NAME.edf files"),
    ("no edf", r"--data-dir .*: no .edf files"),
    ("not an edf", r"n1.edf: not a readable EDF file"),
    ("no annotations", r"n1.edf: no sleep-stage annotation file n1.txt beside it and no sleep-stage EDF\+ "
                       r"annotations in it"),
    ("table without header", r"n1.txt: no table header row starting with 'Sleep Stage'"),
    ("table without Event", r"n1.txt: the table has no 'Event' column; expected Time \[hh:mm:ss\], Event and "
                            r"Duration\[s\]"),
    ("bad time", r"n1.txt: line 9: expected a time hh:mm:ss and a duration in seconds"),
    ("only movement", r"n1.txt: no epoch scored W, S1-S4 or REM inside the recording; this night has no data"),
    ("unknown channel", r"--channels C4-A1,ROC-LOC: .*n2.edf has no signal 'ROC-LOC'; it has C4-A1, SaO2"),
    ("no shared channel", r"--data-dir .*: no signal label is shared by every night; choose signals with --channels"),
])
def test_bad_files(case, message, tmp_path):
    folder = tmp_path / "nowhere" if case == "no folder" else tmp_path
    if case not in ("no folder", "no edf"):
        write_cap(tmp_path, "n1", ["MT"] if case == "only movement" else ["W", "S2"], table=case != "no annotations")
    table = tmp_path / "n1.txt"
    if case == "not an edf":
        (tmp_path / "n1.edf").write_bytes(b"0       patient x" + bytes(100))
    elif case == "table without header":
        table.write_text(table.read_text().replace("Sleep Stage\t", "Stage\t"))
    elif case == "table without Event":
        table.write_text(table.read_text().replace("\tEvent\t", "\tType\t"))
    elif case == "bad time":
        table.write_text(table.read_text().replace("23:59:00", "late"))
    elif case == "unknown channel":
        write_cap(tmp_path, "n2", ["S1"], rates=(("C4-A1", 16), ("SaO2", 4)))
    elif case == "no shared channel":
        write_cap(tmp_path, "n2", ["S1"], rates=(("Fp2-F4", 16),))
    with pytest.raises(InputError, match=message):
        cap.load_cap(str(folder), channels="C4-A1,ROC-LOC" if case == "unknown channel" else None)
