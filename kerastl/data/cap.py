"""CAP Sleep Database-style recordings: EDF polysomnography scored in sleep stages.

A folder of `NAME.edf` files (one night each), every one scored in 30 s epochs either by
- the CAP annotation file `NAME.txt` beside it: a few header lines, then a tab-separated
  table whose header row starts with `Sleep Stage` and has the columns `Time [hh:mm:ss]`
  (clock time of the epoch's start; `hh.mm.ss` is read too), `Event` (`SLEEP-S0` wake,
  `SLEEP-S1` .. `SLEEP-S4`, `SLEEP-REM`, `SLEEP-MT` movement time; rows of other events,
  such as the CAP A-phases `MCAP-A1`, are skipped) and `Duration[s]`; or by
- EDF+ annotations inside the file, with those event names or Sleep-EDF's (`Sleep stage W`,
  `Sleep stage 1` .. `4`, `Sleep stage R`, `Movement time`).

The classes are the stages W, S1, S2, S3, S4 and R (movement time and unscored epochs are
dropped); every stretch of one stage in one night is a recording, its channels resampled
to one rate (default 64 Hz: EEG up to 32 Hz, the sleep-staging bands). The EDF files are
read with edfio, which maps them into memory: only the scored stretches of the chosen
channels are read.

Example:
>>> recordings = load_cap("~/data/capslpdb", channels="C4-A1,ROC-LOC,EMG1-EMG2")  # doctest: +SKIP
>>> recordings.class_names, recordings.sample_rate                                  # doctest: +SKIP
(['W', 'S1', 'S2', 'S3', 'S4', 'R'], 64.0)
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from kerastl.data.recordings import Recordings, cut_spans
from kerastl.errors import InputError

CAP_STAGES = ("W", "S1", "S2", "S3", "S4", "R")
# Event name -> stage; None: scored, but not a sleep stage (dropped).
STAGE_OF_EVENT = {"SLEEP-S0": "W", "SLEEP-S1": "S1", "SLEEP-S2": "S2", "SLEEP-S3": "S3", "SLEEP-S4": "S4",
                  "SLEEP-REM": "R", "SLEEP-MT": None, "SLEEP-UNSCORED": None,
                  "Sleep stage W": "W", "Sleep stage 1": "S1", "Sleep stage 2": "S2", "Sleep stage 3": "S3",
                  "Sleep stage 4": "S4", "Sleep stage R": "R", "Movement time": None, "Sleep stage ?": None}
CAP_RATE = 64.0
EPOCH_SECONDS = 30.0
_CLOCK = re.compile(r"(\d{1,2})[:.](\d{2})[:.](\d{2}(?:\.\d+)?)")


def read_stage_table(path: str) -> list[tuple[float, float, str | None]]:
    """`(clock time of day in s, duration in s, stage or None)` of every sleep-stage row of a
    CAP annotation file."""
    with open(path, encoding="latin1") as f:
        lines = f.read().splitlines()
    header = next((i for i, line in enumerate(lines) if line.strip().startswith("Sleep Stage")), None)
    if header is None:
        raise InputError(f"{path}: no table header row starting with 'Sleep Stage', expected the CAP annotation "
                         "layout (Sleep Stage, Time [hh:mm:ss], Event, Duration[s] ...)")
    columns = [cell.strip() for cell in lines[header].split("\t")]
    wanted = {"time": "Time", "event": "Event", "duration": "Duration"}
    found = {key: next((i for i, c in enumerate(columns) if c.startswith(prefix)), None)
             for key, prefix in wanted.items()}
    missing = [wanted[key] for key, index in found.items() if index is None]
    if missing:
        raise InputError(f"{path}: the table has no {missing[0]!r} column; expected Time [hh:mm:ss], Event and "
                         f"Duration[s] (found: {', '.join(columns)})")
    rows = []
    for number, line in enumerate(lines[header + 1:], header + 2):
        cells = [cell.strip() for cell in line.split("\t")]
        if not line.strip() or len(cells) <= found["event"] or cells[found["event"]] not in STAGE_OF_EVENT:
            continue
        clock = _CLOCK.fullmatch(cells[found["time"]]) if len(cells) > found["time"] else None
        try:
            duration = float(cells[found["duration"]])
        except (IndexError, ValueError):
            duration = None
        if clock is None or duration is None:
            raise InputError(f"{path}: line {number}: expected a time hh:mm:ss and a duration in seconds, got "
                             f"{line.strip()!r}")
        seconds = int(clock[1]) * 3600 + int(clock[2]) * 60 + float(clock[3])
        rows.append((seconds, duration, STAGE_OF_EVENT[cells[found["event"]]]))
    return rows


def stage_spans(epochs, duration: float) -> list[tuple[float, float, str]]:
    """Stretches `(start_s, end_s, stage)` of consecutive epochs `(onset_s, duration_s,
    stage)` of one stage, inside `[0, duration]`; epochs without a stage end a stretch.

    Example:
    >>> stage_spans([(0, 30, "W"), (30, 30, "W"), (60, 30, None), (90, 30, "S2")], duration=100)
    [(0, 60, 'W'), (90, 100, 'S2')]
    """
    spans = []
    for onset, length, stage in sorted(epochs, key=lambda e: e[0]):
        start, end = max(onset, 0), min(onset + length, duration)
        if stage is None or end <= start:
            continue
        if spans and spans[-1][2] == stage and abs(spans[-1][1] - start) < 1e-6:
            spans[-1] = (spans[-1][0], end, stage)
        else:
            spans.append((start, end, stage))
    return spans


def _read_edf(path: str):
    import edfio

    try:
        return edfio.read_edf(path, header_encoding="latin1")
    except (ValueError, OSError, IndexError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable EDF file ({type(err).__name__}: {err})") from None


def night_epochs(path: str, edf) -> tuple[list, str]:
    """Scored epochs `(onset_s from the recording start, duration_s, stage or None)` of one
    night, and the file they come from: `NAME.txt` beside the EDF, else its EDF+ annotations."""
    table = os.path.splitext(path)[0] + ".txt"
    if os.path.isfile(table):
        start = edf.starttime
        start_seconds = start.hour * 3600 + start.minute * 60 + start.second
        return [((clock - start_seconds) % 86400, length, stage)
                for clock, length, stage in read_stage_table(table)], table
    try:
        annotations = edf.annotations
    except ValueError as err:
        raise InputError(f"{path}: unreadable EDF+ annotations ({err})") from None
    epochs = [(a.onset, a.duration or EPOCH_SECONDS, STAGE_OF_EVENT[a.text.strip()])
              for a in annotations if a.text.strip() in STAGE_OF_EVENT]
    if not epochs:
        raise InputError(f"{path}: no sleep-stage annotation file {os.path.basename(table)} beside it and no "
                         "sleep-stage EDF+ annotations in it; expected one of the two")
    return epochs, path


def load_cap(folder: str, channels: str | None = None, sample_rate: float | None = None,
             given: str | None = None) -> Recordings:
    """Every stretch of one sleep stage of one night as a recording at `sample_rate` Hz
    (default 64); `channels`: comma-separated signal labels (default: those every night
    has); groups = night index; `given`: how the user named the folder, for messages
    (default `--data-dir FOLDER`)."""
    given = given or f"--data-dir {folder}"
    if folder is None or not os.path.isdir(folder):
        raise InputError(f"{given}: not a folder, expected CAP-style NAME.edf files with NAME.txt "
                         "sleep-stage annotations")
    paths = sorted(set(glob.glob(os.path.join(folder, "*.edf")) + glob.glob(os.path.join(folder, "*.EDF"))))
    if not paths:
        raise InputError(f"{given}: no .edf files, expected CAP-style NAME.edf files with NAME.txt "
                         "sleep-stage annotations")
    nights = []
    for path in paths:
        edf = _read_edf(path)
        epochs, source = night_epochs(path, edf)
        spans = stage_spans(epochs, edf.duration)
        if not spans:
            raise InputError(f"{source}: no epoch scored W, S1-S4 or REM inside the recording; this night has "
                             "no data")
        nights.append((path, edf, spans))
    labels_of = [[signal.label.strip() for signal in edf.signals] for _, edf, _ in nights]
    if channels is None:
        names = [name for name in labels_of[0] if all(name in labels for labels in labels_of)]
        if not names:
            raise InputError(f"{given}: no signal label is shared by every night; choose signals "
                             "with --channels")
    else:
        names = list(dict.fromkeys(name.strip() for name in channels.split(",") if name.strip()))
        if not names:
            raise InputError(f"--channels {channels!r}: expected comma-separated signal labels")
        for (path, _, _), labels in zip(nights, labels_of):
            unknown = [name for name in names if name not in labels]
            if unknown:
                raise InputError(f"--channels {channels}: {path} has no signal {unknown[0]!r}; it has "
                                 f"{', '.join(labels)}")
    rate = float(sample_rate or CAP_RATE)
    series, stages, groups = [], [], []
    for night, ((path, edf, spans), labels) in enumerate(zip(nights, labels_of)):
        sources = [(edf.signals[labels.index(name)].get_data_slice, edf.signals[labels.index(name)].sampling_frequency)
                   for name in names]
        series.extend(cut_spans(sources, [(start, end) for start, end, _ in spans], rate))
        stages.extend(stage for _, _, stage in spans)
        groups.extend([night] * len(spans))
    present = [stage for stage in CAP_STAGES if stage in stages]
    return Recordings(name="cap", series=series, labels=np.array([present.index(s) for s in stages], np.int64),
                      class_names=present, groups=np.asarray(groups, np.int64), channel_names=names,
                      sample_rate=rate, drop_short=True)
