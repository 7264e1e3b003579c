"""apps.adarnn end to end on real pvlib weather: outputs, export, exact resume, learning, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from apps import adarnn
from kerastl import app
from kerastl.checkpoint import TrainingCheckpoint

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--preset", "smoke", "--dataset", "pvlib", "--station", "greensboro", "--epochs", "3", "--pre-epoch", "1"]


def run_app(args):
    return app.main(adarnn.build_parser, adarnn.run, args)


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def checkpoint_values(folder, name):
    reader = tf.train.load_checkpoint(os.path.join(folder, "checkpoints"))
    return {k: reader.get_tensor(k) for k in sorted(reader.get_variable_to_shape_map())
            if name in k and "OPTIMIZER_SLOT" not in k}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("adarnn")
    assert run_app(SMOKE + ["--output", str(root / "run"), "--export-dir", str(root / "exports")]) == 0
    return root, read_metrics(root / "run")


def test_metrics_plots_and_export_layout(finished_run):
    root, metrics = finished_run
    scale = metrics["scaler"]["scale"][metrics["features"].index("temp_air")]
    # Min-max scaling is linear: the original-scale errors are the scaled ones times the range.
    assert metrics["rmse"] == pytest.approx(metrics["rmse_scaled"] * scale, rel=1e-4)
    assert metrics["mae"] == pytest.approx(metrics["mae_scaled"] * scale, rel=1e-4)
    assert 0 < metrics["mae"] <= metrics["rmse"]
    assert metrics["persistence"]["rmse"] == pytest.approx(1.4279, abs=1e-3)  # next hour = this hour
    assert metrics["segments"]["method"] == "tdc" and len(metrics["segments"]["boundaries"]) == 3
    assert metrics["segments"]["dates"][0] == "2001-01-01T01:00:00"
    assert metrics["split"]["dates"]["test"][0] == "2001-10-01T00:00" and metrics["test_windows"] == 8760 - 6551
    weights = np.array(metrics["importance_weights"])
    assert weights.shape == (2, 24) and np.allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert len(metrics["history"]["loss"]) == 3 and len(metrics["history"]["importance_weights"]) == 3
    for name in ("segmentation", "forecast", "importance_weights"):
        assert os.path.getsize(root / "run" / "plots" / f"{name}.png") > 10_000
    assert os.listdir(root / "run" / "tensorboard")
    assert metrics["export"] == str(root / "exports" / "adarnn" / "1")


def test_export_round_trip_serves_the_evaluated_forecaster_on_the_original_scale(finished_run):
    from kerastl.data import series as ts

    root, metrics = finished_run
    series = ts.load_series("pvlib", station="greensboro")
    split = ts.split_by_dates(series, None, None)
    starts = ts.window_starts(split.valid_end, split.length, 24, 1, history_from=0)
    windows, truth = ts.windows(series.values, series.target_index, starts, 24, 1)  # original scale
    serving = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    assert set(serving.structured_input_signature[1]) == {"window"}
    forecast = serving(window=tf.constant(windows))["forecast"].numpy()
    assert forecast.shape == (len(truth),)
    rmse = float(np.sqrt(np.mean((forecast - truth) ** 2)))
    assert rmse == pytest.approx(metrics["rmse"], rel=1e-4)
    with open(os.path.join(metrics["export"], "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["features"] == series.feature_names and facts["len_seq"] == 24
    assert facts["inputs"]["window"]["shape"] == [None, 24, 7]


def test_resume_after_interruption_continues_the_tdm_state_exactly(finished_run, tmp_path, monkeypatch):
    root, metrics = finished_run
    original = TrainingCheckpoint.on_epoch_end

    def crash_after_second_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 1:
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", crash_after_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_app(SMOKE + ["--output", str(tmp_path / "run"), "--no-export"])
    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", original)
    assert read_metrics(tmp_path / "run")["epochs_done"] == 2
    assert run_app(SMOKE + ["--output", str(tmp_path / "run"), "--resume", "--no-export"]) == 0
    resumed = read_metrics(tmp_path / "run")
    # TF's CPU kernels are not bitwise deterministic: even the first, uninterrupted epoch
    # differs by up to 0.3 % between two runs here.
    np.testing.assert_allclose(resumed["history"]["loss"], metrics["history"]["loss"], rtol=1e-2)
    # The boosting update of the last epoch used the distances the checkpoint carried over.
    for name in ("tdm_weights", "distance_previous", "gate_weights"):
        (full,), (again,) = checkpoint_values(root / "run", name).values(), checkpoint_values(tmp_path / "run", name).values()
        np.testing.assert_allclose(again, full, rtol=1e-2, atol=1e-5, err_msg=name)
    assert not np.allclose(checkpoint_values(root / "run", "tdm_weights").popitem()[1], 1 / 24)


def test_adarnn_beats_persistence_on_real_weather(tmp_path):
    args = ["--preset", "cpu", "--dataset", "pvlib", "--station", "greensboro", "--epochs", "8", "--pre-epoch", "4",
            "--hidden-size", "32", "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    # Measured on this machine: AdaRNN 1.13 degC vs persistence 1.43 (30 epochs, cpu preset).
    assert metrics["rmse"] < 0.93 * metrics["persistence"]["rmse"], (metrics["rmse"], metrics["persistence"])
    assert metrics["mae"] < metrics["persistence"]["mae"]


def test_help_explains_every_option(capsys):
    parser = adarnn.build_parser()
    undocumented = [a.option_strings for a in parser._actions if a.option_strings and not (a.help or "").strip()]
    assert not undocumented
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--dataset", "--station", "--model", "--distance", "--num-domains", "--split", "--pre-epoch",
                 "--lambda", "--len-seq", "--time-col", "--target", "--features"):
        assert flag in text
    assert "pre-training before the boosting of the importance weights (preset values: smoke 1, cpu 15, paper 40)" in text


def write_csv(path, rows=400, edit=None):
    time = pd.date_range("2020-01-01", periods=rows, freq="h")
    frame = pd.DataFrame({"date": time.astype(str), "load": np.sin(np.arange(rows) / 4.0) + 2.0,
                          "temp": np.cos(np.arange(rows) / 9.0)})
    if edit:
        frame = edit(frame)
    frame.to_csv(path, index=False)
    return str(path)


def csv_args(path, *extra):
    return ["--dataset", f"csv:{path}", "--time-col", "date", "--target", "load", "--features", "load,temp", *extra]


def prsa_without_o3(folder):
    time = pd.date_range("2013-03-01", periods=48, freq="h")
    frame = pd.DataFrame({"No": range(48), "year": time.year, "month": time.month, "day": time.day,
                          "hour": time.hour, "PM2.5": 1.0, "station": "Dongsi"})
    frame.to_csv(f"{folder}/PRSA_Data_Dongsi_20130301-20170228.csv", index=False)
    return str(folder)


BAD_INPUTS = {
    "csv missing column": (lambda d: csv_args(write_csv(f"{d}/a.csv")) [:-1] + ["load,humidity"],
                           r"a\.csv: no column 'humidity'; columns are date, load, temp"),
    "csv not in time order": (lambda d: csv_args(write_csv(f"{d}/b.csv", edit=lambda f: f.iloc[[1, 0, *range(2, 400)]])),
                              r"b\.csv: time stamps in column 'date' are not increasing at row 1"),
    "csv gap too long": (
        lambda d: csv_args(write_csv(f"{d}/c.csv", edit=lambda f: f.assign(
            temp=[np.nan if 100 <= i < 140 else 0.5 for i in range(400)]))),
        r"c\.csv: column 'temp' has 40 consecutive missing values from row 100 \(2020-01-05T04:00\); --max-gap 24"),
    "series shorter than len_seq x K": (
        lambda d: csv_args(write_csv(f"{d}/short.csv", rows=100), "--num-domains", "4"),
        r"short\.csv: the training period has 70 time steps, fewer than --len-seq x --num-domains = 24 x 4 = 96"),
    "unknown pvlib station": (lambda d: ["--station", "boston"],
                              r"--station 'boston' is unknown for --dataset pvlib; expected one of sand_point"),
    "unknown airquality station": (lambda d: ["--dataset", "airquality", "--data-dir", d, "--station", "Paris"],
                                   r"--station 'Paris' is unknown for --dataset airquality"),
    "airquality file absent": (lambda d: ["--dataset", "airquality", "--data-dir", d, "--station", "Tiantan"],
                               r"--data-dir .*: no file PRSA_Data_Tiantan_\*\.csv"),
    "airquality missing columns": (
        lambda d: ["--dataset", "airquality", "--data-dir", prsa_without_o3(d), "--station", "Dongsi"],
        r"PRSA_Data_Dongsi_20130301-20170228\.csv: missing column\(s\) PM10, SO2, NO2, CO, O3, TEMP"),
    "unknown dataset": (lambda d: ["--dataset", "m4"], r"--dataset 'm4' is unknown; expected one of airquality"),
    "bad date": (lambda d: ["--train-end", "2001-13-01", "--valid-end", "2001-10-01"],
                 r"--train-end '2001-13-01': expected a date YYYY-MM-DD"),
    "too many domains": (lambda d: ["--num-domains", "11"], r"--num-domains 11: expected 2\.\.10"),
    "existing export version": (lambda d: ["--export-dir", f"{d}/exports", "--version", "1"],
                                r"--version 1: .*exports/adarnn/1 already exists; pass --overwrite"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
    "resume without checkpoint": (lambda d: ["--output", f"{d}/empty_run", "--resume"],
                                  r"--resume: .*empty_run holds no checkpoints/"),
    "resume another model": (lambda d: ["--output", f"{d}/old_run", "--resume", "--model", "gru"],
                             r"--resume: the checkpoint in .*old_run/checkpoints is from --model adarnn, not gru"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused):
    os.makedirs(tmp_path / "exports" / "adarnn" / "1")
    (tmp_path / "exports" / "adarnn" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"rmse": 1.0}')
    config = adarnn.run_config(adarnn.build_parser().parse_args(SMOKE))
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(config))
    os.makedirs(tmp_path / "empty_run")
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path))
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    if "--export-dir" not in args:
        args += ["--export-dir", str(tmp_path / "exports")]
    refused(lambda: run_app(SMOKE + args), "apps.adarnn", message, tmp_path)


def test_command_line_entry_point(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.adarnn", "--dataset", f"csv:{tmp_path}/absent.csv",
                          "--target", "load", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"apps.adarnn: error: {tmp_path}/absent.csv: file not found, expected a CSV file with a header row")
