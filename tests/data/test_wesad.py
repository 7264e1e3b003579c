"""WESAD per-subject pickles: conditions, chest and wrist channels, resampling, bad files."""

import pickle

import numpy as np
import pytest
from sensor_files import WESAD_SESSION_WITH_GAPS as SESSION, wesad_content, write_wesad

from kerastl import InputError
from kerastl.data import wesad


def test_chest_stretches_at_32_hz(tmp_path):
    write_wesad(tmp_path, 2, SESSION)
    write_wesad(tmp_path, 10, SESSION[:4])
    rec = wesad.load_wesad(str(tmp_path))
    assert rec.class_names == ["baseline", "stress", "amusement", "meditation"]
    assert rec.channel_names == ["ACC_x", "ACC_y", "ACC_z", "ECG", "EMG", "EDA", "Temp", "Resp"]
    assert rec.labels.tolist() == [0, 1, 2, 3, 0, 1] and rec.groups.tolist() == [2, 2, 2, 2, 10, 10]
    assert [len(s) for s in rec.series] == [128, 96, 64, 80, 128, 96] and rec.sample_rate == 32.0
    # Channel k of subject s holds k + s + t; the stress stretch starts at t = 5.5 s and sample
    # i of it, at 32 Hz, is i / 32 s later (a straight line comes through resampling exactly).
    t = 5.5 + np.arange(96) / 32
    np.testing.assert_allclose(rec.series[1], np.arange(8) + 2 + t[:, None], atol=1e-4)


def test_wrist_sensors_at_their_own_rates_meet_on_one_clock(tmp_path):
    write_wesad(tmp_path, 3, SESSION)
    rec = wesad.load_wesad(str(tmp_path), device="wrist", channels="EDA,ACC_x,BVP", sample_rate=8)
    assert rec.channel_names == ["EDA", "ACC_x", "BVP"] and rec.name == "wesad (wrist)"
    assert [len(s) for s in rec.series] == [32, 24, 16, 20]
    t = 1.0 + np.arange(32) / 8                      # the baseline stretch, from 1 s
    np.testing.assert_allclose(rec.series[0], [14.0, 10.0, 13.0] + t[:, None], atol=1e-3)


class Unexpected:
    """Not something a WESAD pickle holds."""


@pytest.mark.parametrize("case, message", [
    ("no folder", r"--data-dir .*nowhere: not a folder, expected WESAD's S2/S2.pkl"),
    ("no subjects", r"--data-dir .*: no S\*/S\*.pkl subject files"),
    ("not a pickle", r"S2.pkl: not a readable WESAD pickle \(UnpicklingError"),
    ("foreign object", r"S2.pkl: not a readable WESAD pickle \(UnpicklingError: refers to .*Unexpected, which a "
                       r"WESAD pickle does not hold\)"),
    ("no label", r"S2.pkl: holds 'signal'; expected WESAD's dict 'signal' -> 'chest' -> ACC, ECG, EMG, EDA, "
                 r"Temp, Resp, and 'label'"),
    ("no chest", r"S2.pkl: no 'chest' entry in 'signal'"),
    ("no Resp", r"S2.pkl: no 'Resp' in 'signal' -> 'chest'"),
    ("two-axis ACC", r"S2.pkl: signal chest ACC has shape \(7000, 2\), expected \[samples, 3\]"),
    ("short ECG", r"S2.pkl: signal chest ECG lasts 5.0 s at 700 Hz but the labels 10.0 s at 700 Hz"),
    ("no labelled sample", r"S2.pkl: no sample is labelled 1-4 \(baseline, stress, amusement, meditation\); "
                           r"this subject has no data"),
    ("unknown channel", r"--channels ECG,BVP: 'BVP' is not a channel of wesad \(chest\)"),
])
def test_bad_files(case, message, tmp_path):
    content = wesad_content(2, [(1, 5), (2, 5)])
    chest = content["signal"]["chest"]
    if case == "no label":
        del content["label"], content["subject"]
    elif case == "no chest":
        del content["signal"]["chest"]
    elif case == "no Resp":
        del chest["Resp"]
    elif case == "two-axis ACC":
        chest["ACC"] = chest["ACC"][:, :2]
    elif case == "short ECG":
        chest["ECG"] = chest["ECG"][:3500]
    elif case == "no labelled sample":
        content["label"][:] = 0
    elif case == "foreign object":
        content["subject"] = Unexpected()
    if case not in ("no folder", "no subjects"):
        path = write_wesad(tmp_path, 2, None, content)
        if case == "not a pickle":
            path.write_text("subject,label\n2,1\n")
    folder = tmp_path / "nowhere" if case == "no folder" else tmp_path
    with pytest.raises(InputError, match=message):
        wesad.load_wesad(str(folder), channels="ECG,BVP" if case == "unknown channel" else None)


def test_the_pickle_is_read_as_latin1_python2_data(tmp_path):
    """Python 2 pickled str as bytes; latin1 maps every byte, so such keys and arrays load."""
    path = write_wesad(tmp_path, 2, [(1, 2)])
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:2] == b"\x80\x02"                     # protocol 2, as WESAD's files
    sources, labels = wesad.read_subject(str(path), "chest")
    assert len(labels) == 1400 and [s[0].shape for s in sources][:2] == [(1400, 3), (1400, 1)]
    with open(path, "rb") as f:
        assert pickle.load(f, encoding="latin1")["subject"] == "S2"
