"""Time series for forecasting under distribution shift (AdaRNN): loaders, date splits,
scaling fitted on the training period only, sliding windows and segment-pair batches.

Sources (`load_series(dataset, ...)`):
- `airquality`: the UCI Beijing multi-site air-quality files (PRSA format:
  `PRSA_Data_<Station>_20130301-20170228.csv` under `data_dir`), hourly; the paper's
  features PM2.5, PM10, SO2, NO2, CO, O3 and target PM2.5; the paper's date splits.
- `pvlib`: the hourly typical-meteorological-year weather of the three stations shipped in
  pvlib (`sand_point` AK, `greensboro` NC, `miami` FL; offline); target air temperature;
  train January-August, validate September, test October-December (a seasonal shift).
- `taylor`: half-hourly electricity demand of England and Wales, 5 June - 27 August 2000
  (pmdarima's `load_taylor`; offline); train 8 weeks, validate 1, test the last 3.
- `csv:PATH`: your file, with `time_col`, `target`, `features`; split 70 / 10 / 20 % in time
  unless dates are given.

Gaps: runs of up to `max_gap` missing values per column are filled by linear interpolation
in time; a longer run is an error (`InputError`, naming the file, column and row).

Example:
>>> series = load_series("pvlib", station="greensboro")
>>> series.values.shape, series.target
((8760, 7), 'temp_air')
>>> split = split_by_dates(series, None, None)
>>> scaler = MinMaxScaler.fit(series.values[:split.train_end])
"""

from __future__ import annotations

import dataclasses
import glob
import os

import numpy as np

from kerastl.errors import InputError

DATASETS = ("airquality", "pvlib", "taylor", "csv:PATH")
PRSA_COLUMNS = ("No", "year", "month", "day", "hour", "PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES",
                "DEWP", "RAIN", "wd", "WSPM", "station")
AIRQUALITY_STATIONS = ("Aotizhongxin", "Changping", "Dingling", "Dongsi", "Guanyuan", "Gucheng", "Huairou",
                       "Nongzhanguan", "Shunyi", "Tiantan", "Wanliu", "Wanshouxigong")
PAPER_STATIONS = ("Dongsi", "Tiantan", "Nongzhanguan", "Dingling")
AIRQUALITY_FEATURES = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3")
# The paper's periods: train 2013-03-01..2016-06-30, validation 2016-07-02..2016-10-30,
# test 2016-11-02..2017-02-28 (here contiguous: the two one-day gaps go to the next period).
AIRQUALITY_DATES = ("2016-07-01", "2016-11-01")
# pvlib's TMY files: (file in pvlib/data, format). TMY2 stores temperatures and wind in tenths.
PVLIB_STATIONS = {"sand_point": ("703165TY.csv", "tmy3"), "greensboro": ("723170TYA.CSV", "tmy3"),
                  "miami": ("12839.tm2", "tmy2")}
PVLIB_FEATURES = ("temp_air", "temp_dew", "relative_humidity", "wind_speed", "ghi", "dni", "dhi")
_TMY2_NAMES = {"DryBulb": ("temp_air", 0.1), "DewPoint": ("temp_dew", 0.1), "RHum": ("relative_humidity", 1.0),
               "Wspd": ("wind_speed", 0.1), "GHI": ("ghi", 1.0), "DNI": ("dni", 1.0), "DHI": ("dhi", 1.0)}
# A typical meteorological year stitches months of different years: the time axis is rebuilt
# as one calendar year (hourly, in file order), so that dates and splits are meaningful.
TMY_YEAR = 2001
PVLIB_DATES = (f"{TMY_YEAR}-09-01", f"{TMY_YEAR}-10-01")
TAYLOR_START = "2000-06-05"  # Monday 5 June 2000, half-hourly, 12 weeks
TAYLOR_DATES = ("2000-07-31", "2000-08-07")
DEFAULT_FRACTIONS = (0.7, 0.8)


@dataclasses.dataclass
class Series:
    """A multivariate series on its original scale.

    Attributes:
        name: where it came from (e.g. "pvlib:greensboro").
        values: float32 `[N, F]`, time along axis 0.
        feature_names: the F names; the target is one of them (its past values are inputs).
        target: the name of the forecast feature.
        time: `datetime64[ns]` `[N]`, increasing; None when the data has no time column.
        source: the file the values were read from (for messages).
    """

    name: str
    values: np.ndarray
    feature_names: list[str]
    target: str
    time: np.ndarray | None = None
    source: str = ""

    @property
    def target_index(self) -> int:
        return self.feature_names.index(self.target)


@dataclasses.dataclass
class DateSplit:
    """Row ranges: train `[0, train_end)`, validation `[train_end, valid_end)`, test `[valid_end, N)`."""

    train_end: int
    valid_end: int
    length: int
    dates: dict | None = None

    def to_dict(self) -> dict:
        return {"train": [0, self.train_end], "valid": [self.train_end, self.valid_end],
                "test": [self.valid_end, self.length], "dates": self.dates}


@dataclasses.dataclass
class MinMaxScaler:
    """Per-feature min-max scaling to [0, 1], fitted on the training period only.

    Later periods may fall outside [0, 1]: that is the distribution shift, not an error.
    A constant column is shifted to 0 and not divided (its range is taken as 1).
    """

    minimum: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, train_values) -> "MinMaxScaler":
        train_values = np.asarray(train_values, np.float64)
        minimum = train_values.min(axis=0)
        spread = train_values.max(axis=0) - minimum
        return cls(minimum.astype(np.float32), np.where(spread > 0, spread, 1.0).astype(np.float32))

    def transform(self, values):
        return ((np.asarray(values, np.float32) - self.minimum) / self.scale).astype(np.float32)

    def inverse(self, scaled, column: int):
        """Column `column`'s scaled values back on the original scale."""
        return np.asarray(scaled, np.float32) * self.scale[column] + self.minimum[column]

    def to_dict(self) -> dict:
        return {"minimum": self.minimum.tolist(), "scale": self.scale.tolist()}


# ---------------------------------------------------------------------------------------
# gap filling and checks


def fill_gaps(frame, max_gap: int, source: str, time=None):
    """Linear interpolation of runs of at most `max_gap` missing values per column.

    A longer run (or a column with no value) raises `InputError` naming `source`, the column
    and the first row of the run. Returns a float32 array.
    """
    import pandas as pd

    frame = frame.apply(pd.to_numeric, errors="coerce")
    for column in frame.columns:
        missing = frame[column].isna().to_numpy()
        if missing.all():
            raise InputError(f"{source}: column {column!r} has no values, expected numbers")
        if not missing.any():
            continue
        edges = np.diff(np.concatenate([[0], missing.astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        longest = int(np.argmax(ends - starts))
        if ends[longest] - starts[longest] > max_gap:
            row = int(starts[longest])
            when = f" ({np.datetime_as_string(time[row], 'm')})" if time is not None else ""
            raise InputError(f"{source}: column {column!r} has {ends[longest] - starts[longest]} consecutive missing "
                             f"values from row {row}{when}; --max-gap {max_gap} fills at most {max_gap} "
                             "(raise --max-gap or clean the file)")
    filled = frame.interpolate(limit_direction="both")
    return filled.to_numpy(np.float32)


def _check_increasing(time: np.ndarray, source: str, column: str):
    steps = np.diff(time.astype("datetime64[ns]").astype(np.int64))
    if len(steps) and (steps <= 0).any():
        row = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise InputError(f"{source}: time stamps in {column} are not increasing at row {row} "
                         f"({np.datetime_as_string(time[row - 1], 'm')} then {np.datetime_as_string(time[row], 'm')}); "
                         "expected one row per time step in time order")


# ---------------------------------------------------------------------------------------
# loaders


def load_airquality(data_dir: str | None, station: str = "Dongsi", features=None, target: str = "PM2.5",
                    max_gap: int = 24) -> Series:
    """One station of the UCI Beijing multi-site air-quality data (PRSA file format)."""
    import pandas as pd

    if station not in AIRQUALITY_STATIONS:
        raise InputError(f"--station {station!r} is unknown for --dataset airquality; expected one of "
                         f"{', '.join(AIRQUALITY_STATIONS)}")
    if data_dir is None:
        raise InputError("--dataset airquality needs --data-dir DIR holding the UCI PRSA files "
                         f"(PRSA_Data_{station}_20130301-20170228.csv)")
    pattern = f"PRSA_Data_{station}_*.csv"
    found = sorted(glob.glob(os.path.join(data_dir, pattern)) + glob.glob(os.path.join(data_dir, "*", pattern)))
    if not found:
        raise InputError(f"--data-dir {data_dir}: no file {pattern} (the UCI PRSA air-quality data for {station})")
    path = found[0]
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a readable CSV table ({type(err).__name__})") from None
    missing = [c for c in PRSA_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; expected the PRSA format "
                         f"{', '.join(PRSA_COLUMNS)}")
    features = list(features or AIRQUALITY_FEATURES)
    _check_selection(path, features, target, frame.columns)
    try:
        time = pd.to_datetime(frame[["year", "month", "day", "hour"]]).to_numpy("datetime64[ns]")
    except (ValueError, TypeError) as err:
        raise InputError(f"{path}: year/month/day/hour do not form valid dates ({err})") from None
    _check_increasing(time, path, "year/month/day/hour")
    values = fill_gaps(frame[features], max_gap, path, time)
    return Series(f"airquality:{station}", values, features, target, time, path)


def _check_selection(source, features, target, columns):
    absent = [c for c in features if c not in columns]
    if absent:
        raise InputError(f"{source}: no column {absent[0]!r} for --features; columns are "
                         f"{', '.join(map(str, columns))}")
    if target not in features:
        raise InputError(f"{source}: --target {target!r} must be one of the --features ({', '.join(features)}): "
                         "its past values are inputs")


def load_pvlib(station: str = "greensboro", features=None, target: str = "temp_air", max_gap: int = 24) -> Series:
    """Hourly TMY weather of a station shipped with pvlib (8,760 rows, offline)."""
    import warnings

    import pandas as pd
    import pvlib
    from pvlib.iotools import read_tmy2, read_tmy3

    if station not in PVLIB_STATIONS:
        raise InputError(f"--station {station!r} is unknown for --dataset pvlib; expected one of "
                         f"{', '.join(PVLIB_STATIONS)}")
    filename, kind = PVLIB_STATIONS[station]
    path = os.path.join(os.path.dirname(pvlib.__file__), "data", filename)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "tmy3":
            frame, _ = read_tmy3(path, map_variables=True)
        else:
            raw, _ = read_tmy2(path)
            frame = pd.DataFrame({name: raw[column] * factor for column, (name, factor) in _TMY2_NAMES.items()},
                                 index=raw.index)
    features = list(features or PVLIB_FEATURES)
    _check_selection(f"pvlib {station} ({filename})", features, target, frame.columns)
    first = frame.index[0]
    time = pd.date_range(f"{TMY_YEAR}-{first.month:02d}-{first.day:02d} {first.hour:02d}:00", periods=len(frame),
                         freq="h").to_numpy("datetime64[ns]")
    values = fill_gaps(frame[features].reset_index(drop=True), max_gap, path, time)
    return Series(f"pvlib:{station}", values, features, target, time, path)


def load_taylor() -> Series:
    """Half-hourly electricity demand (MW) of England and Wales, 4,032 steps (pmdarima)."""
    import pandas as pd
    from pmdarima.datasets import load_taylor as taylor

    demand = np.asarray(taylor(), np.float32)[:, None]
    time = pd.date_range(TAYLOR_START, periods=len(demand), freq="30min").to_numpy("datetime64[ns]")
    return Series("taylor", demand, ["demand"], "demand", time, "pmdarima.datasets.load_taylor")


def load_csv_series(path: str, time_col: str | None, target: str | None, features=None, max_gap: int = 24) -> Series:
    """Your series from a CSV file: a header row, one row per time step."""
    import pandas as pd

    from kerastl.data.files import read_csv_table

    if target is None:
        raise InputError(f"--dataset csv:{path} needs --target COLUMN (the series to forecast)")
    features = list(features) if features else None
    if features is not None and target not in features:
        features.append(target)
    # The shared reader checks the file, the columns and that they are numeric (it sorts by
    # time and interpolates without limit; order and gap length are checked below).
    table = read_csv_table(path, feature_columns=features, time_column=time_col, missing="interpolate")
    if target not in table.feature_names:
        raise InputError(f"{path}: --target {target!r} is not a numeric column; numeric columns are "
                         f"{', '.join(table.feature_names)}")
    raw = pd.read_csv(path)
    time = None
    if time_col is not None:
        time = pd.to_datetime(raw[time_col]).to_numpy("datetime64[ns]")
        _check_increasing(time, path, f"column {time_col!r}")
    values = fill_gaps(raw[table.feature_names], max_gap, path, time)
    return Series(f"csv:{path}", values, table.feature_names, target, time, path)


def load_series(dataset: str, data_dir: str | None = None, station: str | None = None, time_col: str | None = None,
                target: str | None = None, features=None, max_gap: int = 24) -> Series:
    """Loads `dataset` (`airquality`, `pvlib`, `taylor` or `csv:PATH`) as a `Series`."""
    if dataset.startswith("csv:"):
        return load_csv_series(dataset[4:], time_col, target, features, max_gap)
    if dataset == "airquality":
        return load_airquality(data_dir, station or "Dongsi", features, target or "PM2.5", max_gap)
    if dataset == "pvlib":
        return load_pvlib(station or "greensboro", features, target or "temp_air", max_gap)
    if dataset == "taylor":
        if station or features or (target not in (None, "demand")):
            raise InputError("--dataset taylor is one series (demand): it takes no --station, --features or --target")
        return load_taylor()
    raise InputError(f"--dataset {dataset!r} is unknown; expected one of {', '.join(DATASETS)}")


# ---------------------------------------------------------------------------------------
# splits, windows, batches


def default_split_dates(series: Series):
    """The published / documented (train end, validation end) dates for a series, or None."""
    if series.name.startswith("airquality"):
        return AIRQUALITY_DATES
    if series.name.startswith("pvlib"):
        return PVLIB_DATES
    if series.name == "taylor":
        return TAYLOR_DATES
    return None


def split_by_dates(series: Series, train_end: str | None, valid_end: str | None) -> DateSplit:
    """Row ranges of the train / validation / test periods.

    Dates (`YYYY-MM-DD[ HH:MM]`) are the first instant of the next period; without them the
    dataset's defaults apply, or 70 / 10 / 20 % of the rows for `csv:` data.
    """
    n = len(series.values)
    if (train_end is None) != (valid_end is None):
        raise InputError("--train-end and --valid-end: give both dates or neither")
    if train_end is None:
        defaults = default_split_dates(series)
        if defaults is None:
            a, b = (int(round(f * n)) for f in DEFAULT_FRACTIONS)
            return _finish_split(series, a, b)
        train_end, valid_end = defaults
    if series.time is None:
        raise InputError(f"--train-end {train_end}: {series.source} has no time column (pass --time-col)")
    bounds = []
    for option, text in (("--train-end", train_end), ("--valid-end", valid_end)):
        try:
            stamp = np.datetime64(np.datetime64(text.replace(" ", "T")), "ns")
        except ValueError:
            raise InputError(f"{option} {text!r}: expected a date YYYY-MM-DD or YYYY-MM-DD HH:MM") from None
        bounds.append(int(np.searchsorted(series.time, stamp)))
    return _finish_split(series, *bounds, option_text=(train_end, valid_end))


def _finish_split(series, train_end, valid_end, option_text=None):
    n = len(series.values)
    where = f" (--train-end {option_text[0]}, --valid-end {option_text[1]})" if option_text else ""
    if not 0 < train_end < valid_end < n:
        raise InputError(f"{series.source}: the split{where} leaves train {train_end}, validation "
                         f"{max(valid_end - train_end, 0)} and test {max(n - valid_end, 0)} of {n} rows; "
                         "expected every period non-empty")
    dates = None
    if series.time is not None:
        stamp = lambda i: str(np.datetime_as_string(series.time[i], "m"))  # noqa: E731
        dates = {"train": [stamp(0), stamp(train_end - 1)], "valid": [stamp(train_end), stamp(valid_end - 1)],
                 "test": [stamp(valid_end), stamp(n - 1)]}
    return DateSplit(train_end, valid_end, n, dates)


def window_starts(start: int, end: int, len_seq: int, horizon: int = 1, history_from: int | None = None) -> np.ndarray:
    """Start rows of the windows whose forecast target row lies in `[start, end)`.

    A window is rows `[s, s + len_seq)`, its target row `s + len_seq - 1 + horizon`. Inputs
    may reach back to `history_from` (default `start`: the window lies inside the period;
    evaluation periods pass 0 so that their first targets use the preceding history).
    """
    first = max(start if history_from is None else history_from, start - len_seq + 1 - horizon)
    last = end - len_seq - horizon + 1  # exclusive: the target row must be < end
    return np.arange(first, max(last, first), dtype=np.int64)


def windows(values, target_index: int, starts, len_seq: int, horizon: int = 1):
    """(inputs `[n, len_seq, F]`, targets `[n]`) for the given window starts."""
    values = np.asarray(values, np.float32)
    starts = np.asarray(starts, np.int64)
    rows = starts[:, None] + np.arange(len_seq)[None, :]
    return values[rows], values[starts + len_seq - 1 + horizon, target_index]


def steps_per_epoch(segment_starts, batch_size: int) -> int:
    """Batches per epoch: as many as the smallest segment fills (the reference zips the
    segments' loaders, so the shortest one ends the epoch)."""
    return max(1, min(len(s) for s in segment_starts) // batch_size)


def segment_batches(values, target_index: int, segment_starts, len_seq: int, batch_size: int, horizon: int = 1,
                    seed: int = 0, start_step: int = 0):
    """An endless, resumable tf.data stream of `([K, B, len_seq, F], [K, B])`: one batch from
    each of the K segments per step.

    Each segment's windows are reshuffled every epoch with a stateless seed of (seed, epoch,
    segment), so batch s is a pure function of s: `start_step` resumes a run exactly.
    `segment_starts` are the window starts of each segment (see `window_starts`).
    """
    import tensorflow as tf

    series = tf.constant(np.asarray(values, np.float32))
    per_epoch = steps_per_epoch(segment_starts, batch_size)
    domains = [tf.constant(np.asarray(s, np.int64)) for s in segment_starts]
    offsets = tf.range(len_seq, dtype=tf.int64)

    def batch_at(step):
        starts = segment_draws(step, domains, per_epoch, batch_size, seed)  # [K, B]
        inputs = tf.gather(series, starts[..., None] + offsets)  # [K, B, T, F]
        targets = tf.gather(series[:, target_index], starts + len_seq - 1 + horizon)
        return inputs, targets

    return tf.data.Dataset.counter(start_step).map(batch_at).prefetch(2)


def segment_draws(step, domains, per_epoch: int, batch_size: int, seed: int):
    """The `[K, B]` items that training step `step` draws from K int64 tensors of items.

    Segment k's items are reshuffled every epoch with the stateless seed (seed, epoch * K + k)
    and read `batch_size` at a time, wrapping around a segment smaller than an epoch needs:
    the draw is a pure function of `step`, so a resumed run sees the same batches.
    """
    import tensorflow as tf

    epoch, position = step // per_epoch, step % per_epoch
    picked = []
    for k, items in enumerate(domains):
        count = tf.size(items, out_type=tf.int64)
        order = tf.random.experimental.stateless_shuffle(
            tf.range(count), seed=tf.stack([tf.cast(seed, tf.int64), epoch * len(domains) + k]))
        index = (position * batch_size + tf.range(batch_size, dtype=tf.int64)) % count
        picked.append(tf.gather(items, tf.gather(order, index)))
    return tf.stack(picked)
