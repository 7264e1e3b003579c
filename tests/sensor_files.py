"""Tiny DSADS, PAMAP2, WESAD and CAP files in their real formats, written for the loader and app tests.

Every channel of a written file is a known function of time, so tests can check loaded (and
resampled) values by hand: see each writer.
"""

import datetime
import os
import pickle

import numpy as np

from kerastl.data.pamap2 import PAMAP2_CHANNELS


def write_dsads(root, activities=("a01", "a02", "a05"), people=("p1", "p2"), segments=3, shape=(125, 45)):
    """`root/aNN/pN/sNN.txt` for `activities` x `people` x `segments` files of `shape`
    comma-separated values: noise around 10 a for the a-th activity."""
    rng = np.random.default_rng(0)
    for a, activity in enumerate(activities):
        for person in people:
            os.makedirs(root / activity / person)
            for s in range(1, segments + 1):
                values = rng.normal(size=shape) + 10 * a
                np.savetxt(root / activity / person / f"s{s:02d}.txt", values, delimiter=",", fmt="%.5f")
    return str(root)


def write_pamap2(folder, subject, segments, nan_rows=()):
    """`folder/Protocol/subject{subject}.dat`: rows at 100 Hz of `segments` [(activity id,
    rows)], 54 columns. IMU column `PAMAP2_CHANNELS[c]` holds `c + subject + t` (t = time in s);
    heart rate is NaN except every 10th row; `nan_rows` lose their first IMU channel."""
    activity = np.concatenate([np.full(rows, a) for a, rows in segments])
    t = np.arange(len(activity)) / 100.0
    table = np.full((len(t), 54), 7.0)
    table[:, 0], table[:, 1] = t, activity
    table[:, 2] = np.where(np.arange(len(t)) % 10 == 0, 80.0, np.nan)
    for c, column in enumerate(PAMAP2_CHANNELS):
        table[:, column] = c + subject + t
    table[list(nan_rows), PAMAP2_CHANNELS[0]] = np.nan
    (folder / "Protocol").mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "Protocol" / f"subject{subject}.dat", table, fmt="%.6f")
    return table


WESAD_WRIST_RATES = {"ACC": 32, "BVP": 64, "EDA": 4, "TEMP": 4}
# Seconds per condition: 0 transient, 1 baseline, 2 stress, 3 amusement, 4 meditation, 6 ignored.
WESAD_SESSION_WITH_GAPS = [(0, 1), (1, 4), (0, 0.5), (2, 3), (3, 2), (6, 1), (4, 2.5)]


def wesad_content(subject, segments):
    """WESAD's dict for `segments` [(label, seconds)]: labels at 700 Hz; every chest channel
    k (ACC x, y, z, ECG, EMG, EDA, Temp, Resp) holds `k + subject + t`, every wrist channel
    k (ACC x, y, z, BVP, EDA, TEMP) `10 + k + t`, each at its own rate."""
    labels = np.concatenate([np.full(int(seconds * 700), label) for label, seconds in segments])
    t = np.arange(len(labels)) / 700.0
    chest = {key: np.stack([k + subject + t for k in ks], axis=1)
             for key, ks in (("ACC", (0, 1, 2)), ("ECG", (3,)), ("EMG", (4,)), ("EDA", (5,)), ("Temp", (6,)),
                             ("Resp", (7,)))}
    wrist = {}
    for key, ks in (("ACC", (0, 1, 2)), ("BVP", (3,)), ("EDA", (4,)), ("TEMP", (5,))):
        tw = np.arange(int(len(labels) / 700 * WESAD_WRIST_RATES[key])) / WESAD_WRIST_RATES[key]
        wrist[key] = np.stack([10.0 + k + tw for k in ks], axis=1)
    return {"signal": {"chest": chest, "wrist": wrist}, "label": labels, "subject": f"S{subject}"}


def write_wesad(folder, subject, segments, content=None):
    """`folder/S{subject}/S{subject}.pkl` holding `content` (default `wesad_content`),
    pickled with protocol 2 as WESAD's Python 2 files are."""
    (folder / f"S{subject}").mkdir(parents=True, exist_ok=True)
    path = folder / f"S{subject}" / f"S{subject}.pkl"
    with open(path, "wb") as f:
        pickle.dump(wesad_content(subject, segments) if content is None else content, f, protocol=2)
    return path


CAP_EVENTS = {"W": "SLEEP-S0", "S1": "SLEEP-S1", "S2": "SLEEP-S2", "S3": "SLEEP-S3", "S4": "SLEEP-S4",
              "R": "SLEEP-REM", "MT": "SLEEP-MT"}


def write_cap(folder, name, stages, rates=(("C4-A1", 128), ("ROC-LOC", 128), ("SaO2", 8)),
              start=datetime.time(23, 59, 0), table=True, edf_annotations=False, skip_first=0):
    """`folder/NAME.edf`: one 30 s epoch per entry of `stages` (after `skip_first` unscored
    epochs), starting at clock time `start`; signal k of `rates` [(label, Hz)] holds
    `100 * k + t` (t = time in s from the recording start). Scored by `NAME.txt` in CAP's
    layout (`table`), with CAP A-phase rows between, and/or by EDF+ annotations."""
    import edfio

    duration = 30 * (len(stages) + skip_first)
    signals = [edfio.EdfSignal(100.0 * k + np.arange(duration * rate) / rate, sampling_frequency=rate, label=label,
                               physical_range=(-1000.0, 1000.0))
               for k, (label, rate) in enumerate(rates)]
    epochs = [(30.0 * (skip_first + i), stage) for i, stage in enumerate(stages)]
    annotations = [edfio.EdfAnnotation(onset, 30.0, CAP_EVENTS[stage]) for onset, stage in epochs] \
        if edf_annotations else None
    edfio.Edf(signals, starttime=start, annotations=annotations, data_record_duration=1.0).write(folder / f"{name}.edf")
    if table:
        lines = ["Patient Information:", "Diagnosis: none", "", "Events Included:", "SLEEP-S0", "MCAP-A1", "",
                 "Sleep Stage\tPosition\tTime [hh:mm:ss]\tEvent\tDuration[s]\tLocation"]
        clock = datetime.datetime.combine(datetime.date(2000, 1, 1), start)
        for onset, stage in epochs:
            time = (clock + datetime.timedelta(seconds=onset)).strftime("%H:%M:%S")
            lines.append(f"{stage}\tSupine\t{time}\t{CAP_EVENTS[stage]}\t30\tROC-LOC")
            lines.append(f"{stage}\tSupine\t{time}\tMCAP-A1\t4\tFp2-F4")
        (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return folder / f"{name}.edf"
