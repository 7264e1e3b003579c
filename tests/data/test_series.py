"""Series loaders (PRSA format, pvlib stations, taylor, csv:), gap filling, date splits,
training-only scaling, windows and the resumable segment-pair stream."""

import numpy as np
import pandas as pd
import pytest

from kerastl import InputError
from kerastl.data import series as ts


def write_prsa(folder, station="Dongsi", hours=96, edit=None):
    """A small file in the UCI PRSA format (the real files hold 35,064 hourly rows)."""
    time = pd.date_range("2013-03-01", periods=hours, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"No": np.arange(1, hours + 1), "year": time.year, "month": time.month, "day": time.day,
                          "hour": time.hour})
    for column in ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN", "WSPM"):
        frame[column] = rng.uniform(1, 100, hours).round(1)
    frame.insert(15, "wd", "NW")
    frame["station"] = station
    frame = frame[list(ts.PRSA_COLUMNS)]
    if edit:
        frame = edit(frame)
    path = folder / f"PRSA_Data_{station}_20130301-20170228.csv"
    frame.to_csv(path, index=False)
    return path


def test_prsa_loader_reads_the_paper_features_and_fills_short_gaps(tmp_path):
    def punch_holes(frame):
        frame.loc[10:12, "PM2.5"] = np.nan  # 3 missing hours
        frame.loc[9, "PM2.5"], frame.loc[13, "PM2.5"] = 10.0, 50.0
        return frame

    write_prsa(tmp_path, edit=punch_holes)
    series = ts.load_series("airquality", data_dir=str(tmp_path), station="Dongsi")
    assert series.feature_names == ["PM2.5", "PM10", "SO2", "NO2", "CO", "O3"] and series.target == "PM2.5"
    assert series.values.shape == (96, 6) and not np.isnan(series.values).any()
    np.testing.assert_allclose(series.values[9:14, 0], [10.0, 20.0, 30.0, 40.0, 50.0])  # linear in time
    assert str(series.time[0])[:16] == "2013-03-01T00:00" and str(series.time[-1])[:16] == "2013-03-04T23:00"


@pytest.mark.parametrize("case, edit, message", [
    ("missing column", lambda f: f.drop(columns=["O3"]), r"missing column\(s\) O3; expected the PRSA format"),
    ("not in time order", lambda f: f.iloc[[0, 1, 3, 2] + list(range(4, len(f)))],
     r"time stamps in year/month/day/hour are not increasing at row 3 \(2013-03-01T03:00 then 2013-03-01T02:00\)"),
    ("long gap", lambda f: f.assign(CO=[np.nan if 20 <= i < 50 else 1.0 for i in range(len(f))]),
     r"column 'CO' has 30 consecutive missing values from row 20 \(2013-03-01T20:00\); --max-gap 24"),
])
def test_prsa_loader_rejects_bad_files(case, edit, message, tmp_path):
    path = write_prsa(tmp_path, edit=edit)
    with pytest.raises(InputError, match=message) as error:
        ts.load_series("airquality", data_dir=str(tmp_path), station="Dongsi")
    assert str(path) in str(error.value)


def test_unknown_stations_and_missing_files():
    with pytest.raises(InputError, match=r"--station 'Paris' is unknown for --dataset airquality; expected one of "
                                         r"Aotizhongxin"):
        ts.load_series("airquality", data_dir=".", station="Paris")
    with pytest.raises(InputError, match=r"--station 'boston' is unknown for --dataset pvlib; expected one of "
                                         r"sand_point, greensboro, miami"):
        ts.load_series("pvlib", station="boston")
    with pytest.raises(InputError, match=r"--dataset airquality needs --data-dir"):
        ts.load_series("airquality", station="Dongsi")
    with pytest.raises(InputError, match=r"--dataset 'm4' is unknown"):
        ts.load_series("m4")


@pytest.mark.parametrize("station, january, july", [("sand_point", (-6, 6), (8, 16)),
                                                     ("greensboro", (-5, 9), (20, 30)),
                                                     ("miami", (15, 24), (26, 32))])
def test_pvlib_stations_are_a_year_of_hourly_weather_in_degrees(station, january, july):
    series = ts.load_series("pvlib", station=station)
    assert series.values.shape == (8760, 7) and series.target == "temp_air"
    assert not np.isnan(series.values).any()
    assert (np.diff(series.time.astype("int64")) == 3_600_000_000_000).all()  # one row per hour, in order
    months = series.time.astype("datetime64[M]").astype(int) % 12
    assert january[0] < series.values[months == 0, 0].mean() < january[1]
    assert july[0] < series.values[months == 6, 0].mean() < july[1]
    split = ts.split_by_dates(series, None, None)
    assert split.dates["train"][1].startswith("2001-08-31") and split.dates["test"][0] == "2001-10-01T00:00"


def test_taylor_is_twelve_weeks_of_half_hourly_demand():
    series = ts.load_series("taylor")
    assert series.values.shape == (4032, 1) and series.feature_names == ["demand"]
    assert 20_000 < series.values.mean() < 40_000
    split = ts.split_by_dates(series, None, None)
    assert (split.train_end, split.valid_end) == (8 * 336, 9 * 336)


def write_csv(path, rows=200, edit=None):
    time = pd.date_range("2020-01-01", periods=rows, freq="h")
    frame = pd.DataFrame({"date": time.astype(str), "load": np.arange(rows, dtype=float),
                          "temp": np.sin(np.arange(rows) / 5.0), "label": ["x"] * rows})
    if edit:
        frame = edit(frame)
    frame.to_csv(path, index=False)
    return str(path)


def test_csv_series_and_explicit_date_split(tmp_path):
    path = write_csv(tmp_path / "load.csv")
    series = ts.load_series(f"csv:{path}", time_col="date", target="load", features=["temp"])
    assert series.feature_names == ["temp", "load"] and series.target_index == 1
    split = ts.split_by_dates(series, "2020-01-06", "2020-01-07 12:00")
    assert (split.train_end, split.valid_end, split.length) == (120, 156, 200)
    default = ts.split_by_dates(series, None, None)
    assert (default.train_end, default.valid_end) == (140, 160)


@pytest.mark.parametrize("edit, options, message", [
    (None, {"features": ["temp", "humidity"]}, r"load\.csv: no column 'humidity'; columns are date, load, temp, label"),
    (lambda f: f.iloc[::-1], {}, r"load\.csv: time stamps in column 'date' are not increasing at row 1"),
    (lambda f: f.assign(temp=[np.nan if 50 <= i < 80 else 0.0 for i in range(len(f))]), {"max_gap": 10},
     r"load\.csv: column 'temp' has 30 consecutive missing values from row 50 \(2020-01-03T02:00\); --max-gap 10"),
    (None, {"target": None}, r"needs --target COLUMN"),
])
def test_csv_series_bad_input(edit, options, message, tmp_path):
    path = write_csv(tmp_path / "load.csv", edit=edit)
    kwargs = {"time_col": "date", "target": "load", "features": ["temp"], **options}
    with pytest.raises(InputError, match=message):
        ts.load_series(f"csv:{path}", **kwargs)


def test_scaler_is_fitted_on_the_training_period_only():
    values = np.array([[0.0, 5.0], [10.0, 5.0], [20.0, 5.0], [40.0, 5.0]], "float32")
    scaler = ts.MinMaxScaler.fit(values[:3])
    scaled = scaler.transform(values)
    np.testing.assert_allclose(scaled[:, 0], [0.0, 0.5, 1.0, 2.0])  # the test value exceeds the training range
    np.testing.assert_allclose(scaled[:, 1], 0.0)  # a constant column is not divided by zero
    np.testing.assert_allclose(scaler.inverse(scaled[:, 0], 0), values[:, 0])


def test_windows_forecast_the_row_horizon_steps_after_the_window():
    values = np.arange(30, dtype="float32").reshape(15, 2)
    starts = ts.window_starts(5, 12, len_seq=3, horizon=2)
    assert starts.tolist() == [5, 6, 7]  # targets at rows 9, 10, 11: inside [5, 12), inputs inside too
    x, y = ts.windows(values, 1, starts, 3, 2)
    assert x.shape == (3, 3, 2) and x[0, :, 0].tolist() == [10.0, 12.0, 14.0]
    assert y.tolist() == [19.0, 21.0, 23.0]
    evaluation = ts.window_starts(10, 15, len_seq=3, horizon=1, history_from=0)
    assert (evaluation + 3).tolist() == [10, 11, 12, 13, 14]  # every row of the period is forecast once


def test_segment_batches_draw_one_batch_per_segment_and_resume_exactly():
    values = np.arange(400, dtype="float32")[:, None].repeat(2, axis=1)
    starts = [ts.window_starts(a, b, 4) for a, b in ((0, 100), (100, 250), (250, 400))]
    assert ts.steps_per_epoch(starts, 8) == 96 // 8
    stream = list(ts.segment_batches(values, 0, starts, 4, 8, seed=1).take(30).as_numpy_iterator())
    resumed = list(ts.segment_batches(values, 0, starts, 4, 8, seed=1, start_step=17).take(13).as_numpy_iterator())
    for (x, y), (x2, y2) in zip(stream[17:], resumed):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    x, y = stream[0]
    assert x.shape == (3, 8, 4, 2) and y.shape == (3, 8)
    for k, (a, b) in enumerate(((0, 100), (100, 250), (250, 400))):
        assert (x[k] >= a).all() and (y[k] < b).all()  # every window of batch k from segment k
    np.testing.assert_array_equal(y, x[:, :, -1, 0] + 1)  # target = the next row
    epoch = np.concatenate([stream[s][1][0] for s in range(12)])
    assert len(set(epoch.tolist())) == 96  # an epoch visits segment 0's windows without repetition
    assert not np.array_equal(stream[0][1], stream[12][1])  # and the next epoch reshuffles
