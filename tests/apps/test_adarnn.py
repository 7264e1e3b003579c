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
            "--hidden-size", "32", "--lambda", "0.1", "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    # Measured on this machine: AdaRNN 1.13 degC vs persistence 1.43 (30 epochs, cpu preset).
    assert metrics["rmse"] < 0.93 * metrics["persistence"]["rmse"], (metrics["rmse"], metrics["persistence"])
    assert metrics["mae"] < metrics["persistence"]["mae"]


def test_lambda_auto_keeps_the_candidate_with_the_best_validation_loss_and_lambda_0_is_the_gru(tmp_path):
    quick = ["--preset", "smoke", "--dataset", "pvlib", "--station", "greensboro", "--epochs", "2", "--pre-epoch", "1",
             "--steps-per-epoch", "3", "--hidden-size", "8", "--no-export", "--seed", "3"]
    assert run_app(quick + ["--lambda", "auto", "--output", str(tmp_path / "auto")]) == 0
    metrics = read_metrics(tmp_path / "auto")
    grid = metrics["lambda_search"]["grid"]
    assert [(row["model"], row["distance"], row["lambda"]) for row in grid] == [
        ("gru", None, 0.0), ("adarnn", "adversarial", 0.1), ("adarnn", "adversarial", 1.0), ("adarnn", "coral", 0.1),
        ("adarnn", "coral", 1.0)]
    best = min(grid, key=lambda row: row["valid_loss"])
    assert metrics["lambda_search"]["chosen"] == {key: best[key] for key in ("model", "distance", "lambda")}
    assert metrics["tdm_lambda"] == best["lambda"] and metrics["distance"] == best["distance"]
    assert min(metrics["history"]["val_loss"]) == pytest.approx(best["valid_loss"], rel=1e-6)  # its history
    # The lambda-0 candidate starts like --model gru and trains on the same batches: the same model.
    assert run_app(quick + ["--model", "gru", "--output", str(tmp_path / "gru")]) == 0
    assert min(read_metrics(tmp_path / "gru")["history"]["val_loss"]) == pytest.approx(grid[0]["valid_loss"], rel=1e-4)


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
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused, with_run_folders):
    os.makedirs(tmp_path / "exports" / "adarnn" / "1")
    (tmp_path / "exports" / "adarnn" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"rmse": 1.0}')
    config = adarnn.run_config(adarnn.build_parser().parse_args(SMOKE))
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(config))
    os.makedirs(tmp_path / "empty_run")
    make_args, message = BAD_INPUTS[case]
    args = with_run_folders(make_args(str(tmp_path)), tmp_path)
    refused(lambda: run_app(SMOKE + args), "apps.adarnn", message, tmp_path)


def test_command_line_entry_point(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.adarnn", "--dataset", f"csv:{tmp_path}/absent.csv",
                          "--target", "load", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"apps.adarnn: error: {tmp_path}/absent.csv: file not found, expected a CSV file with a header row")


def test_a_distance_added_to_the_registry_alone_runs_through_the_app(tmp_path, monkeypatch, capsys):
    from kerastl.timeseries.distances import DISTANCES, Distance

    calls = []

    def mean_l1(source, target):   # the L1 distance of the batch means
        calls.append(tuple(source.shape))
        return tf.reduce_sum(tf.abs(tf.reduce_mean(source, axis=-2) - tf.reduce_mean(target, axis=-2)), axis=-1)

    monkeypatch.setitem(DISTANCES, "mean_l1", Distance("mean_l1", mean_l1, "L1 distance of the batch means"))
    with pytest.raises(SystemExit):
        adarnn.build_parser().parse_args(["--help"])
    assert "mean_l1: L1 distance of the batch means" in " ".join(capsys.readouterr().out.split())
    data = write_csv(tmp_path / "load.csv")
    args = csv_args(data, "--preset", "smoke", "--distance", "mean_l1", "--tdc-distance", "mean_l1",
                    "--output", str(tmp_path / "run"), "--no-export")
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    assert metrics["distance"] == "mean_l1" and metrics["segments"]["distance"] == "mean_l1"
    assert np.isfinite(metrics["rmse"]) and 0 < metrics["mae"] <= metrics["rmse"]
    assert len(metrics["history"]["transfer"]) == 2 and min(metrics["history"]["transfer"]) > 0
    # TDM called it on [pairs, time steps, batch, hidden] (smoke: 1 pair, 24 steps, 36 windows, 16 units) ...
    assert (1, 24, 36, 16) in calls
    # ... and TDC's score is its value between the two segments of the scaled training period.
    values = pd.read_csv(data)[["load", "temp"]].to_numpy()
    scaled = (values - metrics["scaler"]["minimum"]) / metrics["scaler"]["scale"]
    start, middle, end = metrics["segments"]["boundaries"]
    expected = np.abs(scaled[start:middle].mean(0) - scaled[middle:end].mean(0)).sum()
    assert metrics["segments"]["score"] == pytest.approx(expected, rel=1e-4)


# -- classification (the paper's UCI HAR table) ------------------------------------------
CLASSIFY = ["--task", "classification", "--preset", "smoke"]


@pytest.fixture(scope="module")
def classified_watch(tmp_path_factory):
    root = tmp_path_factory.mktemp("adarnn_classification")
    assert run_app(CLASSIFY + ["--output", str(root / "run"), "--export-dir", str(root / "exports")]) == 0
    return root, read_metrics(root / "run")


def test_classification_writes_the_five_metrics_the_confusion_matrix_and_the_export(classified_watch):
    from kerastl.data import har

    root, metrics = classified_watch
    assert metrics["task"] == "classification" and metrics["dataset"] == "watch" and metrics["model"] == "adarnn"
    assert metrics["class_names"] == ["PEN", "ABD", "FEL", "IR", "ER", "TRAP", "ROW"]
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (7, 7) and matrix.sum() == metrics["test_windows"] == metrics["split"]["windows"]["test"]
    assert metrics["acc"] == pytest.approx(np.trace(matrix) / matrix.sum())
    recall = np.diag(matrix) / matrix.sum(axis=1)
    assert metrics["recall"] == pytest.approx(recall.mean())
    assert all(0.0 <= metrics[key] <= 1.0 and 0.0 <= metrics["valid"][key] <= 1.0
               for key in ("acc", "precision", "recall", "f1", "auc"))
    assert len(metrics["segments"]["boundaries"]) == 3 and metrics["segments"]["relative_time_starts"][0] == 0.0
    assert len(metrics["history"]["val_accuracy"]) == 2 and "cross_entropy" in metrics["history"]
    assert os.path.getsize(root / "run" / "plots" / "confusion_matrix.png") > 10_000
    # The export takes windows on the original scale and answers what was evaluated.
    windows = har.load_windows("watch", window=32, stride=32)  # the smoke preset's windows
    test = har.time_split(windows, "time", 0.7, 0.1).test
    assert metrics["export"] == str(root / "exports" / "adarnn" / "1")
    serving = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    answer = serving(window=tf.constant(windows.x[test]))
    np.testing.assert_allclose(answer["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert answer["probabilities"].shape == (len(test), 7)
    assert np.mean(answer["classes"].numpy() == windows.y[test]) == pytest.approx(metrics["acc"], abs=2e-3)
    with open(os.path.join(metrics["export"], "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["task"] == "classification" and facts["class_names"] == metrics["class_names"]
    assert facts["inputs"]["window"]["shape"] == [None, 32, 6]


def write_har_folder(folder, per_subject=30):
    """UCI HAR layout, 2 training subjects and 1 test subject; each activity has its own level."""
    from kerastl.data import har

    rng = np.random.default_rng(0)
    parts = {}
    for part, subjects in (("train", [1, 3]), ("test", [2])):
        labels = np.tile(np.arange(per_subject) % 6 + 1, len(subjects))
        x = rng.normal(size=(len(labels), 128, 9)).astype(np.float32) + labels[:, None, None]
        parts[part] = (x, labels, np.repeat(subjects, per_subject))
    return har.write_uci_har(str(folder), parts)


@pytest.mark.parametrize("test_split, windows", [("time", {"train": 216, "valid": 33, "test": 105}),
                                                 ("original", {"train": 216, "valid": 22, "test": 120})])
def test_gbt_on_uci_har_files(tmp_path, test_split, windows):
    folder = write_har_folder(tmp_path / "UCI HAR Dataset", per_subject=120)
    args = CLASSIFY + ["--dataset", f"uci-har:{folder}", "--model", "gbt", "--test-split", test_split,
                       "--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")]
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    # 120 windows per subject. time: of each of the 3 subjects, 72 train, 11 validate, 35 test
    # (the window after each boundary overlaps the one before and is dropped); original: the 2
    # training subjects' first 108 train and last 11 validate, the test subject's 120 test.
    assert metrics["split"]["windows"] == windows
    assert metrics["class_names"][0] == "WALKING" and metrics["channels"][-1] == "total_acc_z"
    assert metrics["acc"] == metrics["f1"] == metrics["auc"] == 1.0  # levels 1..6 apart, noise 1: separable
    assert 1 <= metrics["gbt_rounds"] <= 20 and metrics["export"] is None
    assert not os.path.exists(tmp_path / "exports")
    assert os.path.getsize(tmp_path / "run" / "plots" / "confusion_matrix.png") > 10_000


def corrupt(folder, relative, edit):
    path = os.path.join(folder, relative)
    with open(path) as f:
        lines = f.read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(edit(lines)) + "\n")
    return folder


def without(folder, relative):
    os.remove(os.path.join(folder, relative))
    return folder


def har_args(folder, *extra):
    return ["--task", "classification", "--dataset", f"uci-har:{folder}", *extra]


HAR_BAD_INPUTS = {
    "missing signal file": (
        lambda d: har_args(without(write_har_folder(f"{d}/har"), "train/Inertial Signals/body_gyro_y_train.txt")),
        r"har/train/Inertial Signals/body_gyro_y_train\.txt: file not found, expected UCI HAR's layout"),
    "ragged row": (
        lambda d: har_args(corrupt(write_har_folder(f"{d}/har"), "test/Inertial Signals/total_acc_x_test.txt",
                                   lambda rows: rows[:3] + [rows[3].rsplit(" ", 1)[0]] + rows[4:])),
        r"har/test/Inertial Signals/total_acc_x_test\.txt: line 4 has 127 values, expected 128"),
    "fewer labels than windows": (
        lambda d: har_args(corrupt(write_har_folder(f"{d}/har"), "train/y_train.txt", lambda rows: rows[:-1])),
        r"har/train/y_train\.txt: 59 rows, expected 60, one per window of .*body_acc_x_train\.txt"),
    "label out of range": (
        lambda d: har_args(corrupt(write_har_folder(f"{d}/har"), "test/y_test.txt", lambda rows: ["7"] + rows[1:])),
        r"har/test/y_test\.txt: label 7, expected 1\.\.6"),
    "subject with too few windows": (
        lambda d: har_args(corrupt(write_har_folder(f"{d}/har"), "test/subject_test.txt",
                                   lambda rows: rows[:-2] + ["9", "9"])),
        r"subject 9 \(.*har/test/subject_test\.txt\): 2 window\(s\); the time split .* leaves its valid / test "
        r"part empty; expected at least 5 windows per subject"),
    "not a folder": (lambda d: har_args(f"{d}/absent"), r"--dataset uci-har:.*absent: not a folder"),
    "original split of the watch": (lambda d: ["--task", "classification", "--test-split", "original"],
                                    r"--test-split original: watch has no original train/test split"),
    "bad fractions": (lambda d: ["--task", "classification", "--train-fraction", "0.1"],
                      r"--train-fraction 0\.1 / --valid-fraction 0\.1: expected 0 < valid fraction < train fraction"),
    "forecasting dataset": (lambda d: ["--task", "classification", "--dataset", "pvlib"],
                            r"--dataset 'pvlib' is unknown for --task classification; expected one of watch, "
                            r"uci-har:DIR"),
    "gbt forecaster": (lambda d: ["--model", "gbt"], r"--model gbt: a classifier; use it with --task classification"),
}


@pytest.mark.parametrize("case", sorted(HAR_BAD_INPUTS))
def test_classification_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused):
    make_args, message = HAR_BAD_INPUTS[case]
    args = make_args(str(tmp_path)) + ["--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")]
    refused(lambda: run_app(["--preset", "smoke"] + args), "apps.adarnn", message, tmp_path)
