"""apps.amsl end to end: real watch data, metrics, plots, export, exact resume, bad input;
PAMAP2, WESAD and CAP runs on files written in their formats."""

import datetime
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from sensor_files import wesad_content, write_cap, write_pamap2, write_wesad

from apps import amsl
from kerastl import app
from kerastl.anomaly.report import METRIC_KEYS, detection_metrics
from kerastl.checkpoint import TrainingCheckpoint
from kerastl.anomaly.baselines import BASELINES, register_baseline
from kerastl.anomaly.detector import AnomalyDetector
from kerastl.anomaly.protocol import load_anomaly_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--preset", "smoke", "--window", "32", "--stride", "64"]


def run_app(args):
    return app.main(amsl.build_parser, amsl.run, args)


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("amsl")
    args = SMOKE + ["--baselines", "ocsvm,conv_ae", "--output", str(root / "run"), "--export-dir", str(root / "exports")]
    assert run_app(args) == 0
    return root, read_metrics(root / "run")


def test_metrics_plots_and_export(finished_run):
    root, metrics = finished_run
    assert set(metrics["methods"]) == {"amsl", "ocsvm", "conv_ae"}
    for name, values in metrics["methods"].items():
        for key in METRIC_KEYS:
            assert 0.0 <= values[key] <= 1.0, (name, key)
        assert values["fit_seconds"] > 0 and values["windows_per_second"] > 0
    assert {key: metrics[key] for key in METRIC_KEYS} == {key: metrics["methods"]["amsl"][key] for key in METRIC_KEYS}
    assert metrics["data"]["normal_classes"] == ["IR", "ER", "TRAP", "ROW"]
    assert metrics["data"]["window_shape"] == [32, 6]
    assert len(metrics["history"]["loss"]) == 1 and metrics["epochs_done"] == 1
    for plot in ("score_histograms.png", "roc_curves.png"):
        assert os.path.getsize(root / "run" / "plots" / plot) > 10_000
    assert os.listdir(root / "run" / "tensorboard")
    assert metrics["export"] == str(root / "exports" / "amsl" / "1")


def test_export_takes_raw_windows_and_reproduces_the_run(finished_run):
    root, metrics = finished_run
    data = load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=32, stride=64, seed=0)
    raw = data.x_test * data.scaler.scale.astype("float32") + data.scaler.offset.astype("float32")
    served = tf.saved_model.load(metrics["export"]).signatures["serving_default"](windows=tf.constant(raw))
    scores = served["score"].numpy()
    assert scores.shape == (len(raw),) and served["is_anomaly"].dtype == tf.bool
    np.testing.assert_array_equal(served["is_anomaly"].numpy(), scores > metrics["threshold"])
    again = detection_metrics(scores, data.is_abnormal, metrics["threshold"])
    for key in METRIC_KEYS:
        assert again[key] == pytest.approx(metrics[key], abs=2e-3), key


def toy_npz(path, n=96):
    rng = np.random.default_rng(0)
    t = np.arange(16)[None, :, None]
    y = np.arange(n) % 3
    x = np.sin(t / (2.0 + y[:, None, None]) + rng.uniform(0, 6, (n, 1, 3))) + 0.05 * rng.normal(size=(n, 16, 3))
    np.savez(path, x=x.astype("float32"), y=y)
    return f"npz:{path}"


def test_resume_after_interruption_continues_exactly(tmp_path, monkeypatch):
    dataset = toy_npz(tmp_path / "toy.npz")
    args = ["--preset", "smoke", "--dataset", dataset, "--normal-classes", "0,1", "--epochs", "3", "--batch-size", "8",
            "--baselines", "none", "--no-export", "--transformations", "noise,permutation", "--memory-slots", "8"]
    assert run_app(args + ["--output", str(tmp_path / "full")]) == 0
    original = TrainingCheckpoint.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_app(args + ["--output", str(tmp_path / "cut")])
    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", original)
    assert read_metrics(tmp_path / "cut")["epochs_done"] == 1
    assert run_app(args + ["--output", str(tmp_path / "cut"), "--resume"]) == 0
    full, resumed = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert len(resumed["history"]["loss"]) == 3
    np.testing.assert_allclose(resumed["history"]["loss"], full["history"]["loss"], rtol=1e-4)
    assert resumed["threshold"] == pytest.approx(full["threshold"], rel=1e-4)
    assert resumed["auroc"] == pytest.approx(full["auroc"], abs=1e-6)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


BAD_INPUTS = {
    "NaN windows": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/nan.npz", x=np.full((8, 16, 3), np.nan),
                                                                y=np.arange(8) % 2)],
                    r"nan\.npz: x: 8 window\(s\) hold NaN or infinite values"),
    "wrong rank": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/rank.npz", x=np.zeros((8, 48)), y=np.arange(8) % 2)],
                   r"rank\.npz: x: array of rank 2 \(shape \(8, 48\)\), expected windows of rank 3"),
    "npz without y": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/noy.npz", x=np.zeros((8, 16, 3)))],
                      r"noy\.npz: no array named 'y'"),
    "npz without x": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/nox.npz", y=np.zeros(8))],
                      r"nox\.npz: no array named 'x'"),
    "missing npz": (lambda d: ["--dataset", f"npz:{d}/absent.npz"], r"absent\.npz: file not found"),
    "unknown normal class": (lambda d: ["--normal-classes", "IR,SQUAT"],
                             r"--normal-classes IR,SQUAT: 'SQUAT' is not a class of watch"),
    "all classes normal": (lambda d: ["--normal-classes", "PEN,ABD,FEL,IR,ER,TRAP,ROW"],
                           r"every class of watch is normal, nothing is left to detect"),
    "window longer than a recording": (lambda d: ["--window", "5000"],
                                       r"--window 5000: longer than recording \d+ of watch .* expected at most 947"),
    "missing DSADS files": (lambda d: ["--dataset", "dsads", "--data-dir", f"{d}/old_run"],
                            r"--data-dir .*old_run: no activity folders a01..a19"),
    "unknown dataset": (lambda d: ["--dataset", "opportunity"],
                        r"--dataset 'opportunity' is unknown; expected watch, dsads, pamap2, wesad, cap "
                        r"\(as NAME:DIR\) or npz:PATH"),
    "folder dataset without folder": (lambda d: ["--dataset", "pamap2"],
                                      r"--dataset pamap2: give --data-dir DIR, or the folder as --dataset pamap2:DIR"),
    "bad sample rate": (lambda d: ["--sample-rate", "0"], r"--sample-rate 0.0: expected a positive rate in Hz"),
    "sample rate for watch": (lambda d: ["--sample-rate", "25"], r"--sample-rate 25.0: applies to pamap2, wesad and "
                                                                 r"cap, not watch"),
    "PAMAP2 folder missing": (lambda d: ["--dataset", f"pamap2:{d}/nowhere"],
                              r"--dataset pamap2:.*nowhere: not a folder, expected PAMAP2's Protocol/subject101.dat"),
    "PAMAP2 wrong columns": (lambda d: ["--dataset", "pamap2:" + write_table(d, "Protocol/subject101.dat", 53)],
                             r"subject101.dat: 53 columns, expected 54 \(PAMAP2's Protocol format\)"),
    "PAMAP2 subject without data": (lambda d: ["--dataset", "pamap2:" + pamap2_folder(d, [(0, 300)])],
                                    r"subject102.dat: every row is activity 0 \(transient\); this subject has no data"),
    "WESAD without subjects": (lambda d: ["--dataset", f"wesad:{d}/old_run"],
                               r"--dataset wesad:.*old_run: no S\*/S\*.pkl subject files"),
    "WESAD without label key": (lambda d: ["--dataset", "wesad:" + wesad_folder(d, drop="label")],
                                r"S3.pkl: holds 'signal', 'subject'; expected WESAD's dict 'signal' -> 'chest'"),
    "WESAD wrist without BVP": (lambda d: ["--dataset", "wesad:" + wesad_folder(d, drop="BVP"), "--wesad-device",
                                           "wrist"], r"S3.pkl: no 'BVP' in 'signal' -> 'wrist'"),
    "WESAD subject without data": (lambda d: ["--dataset", "wesad:" + wesad_folder(d, drop="labels")],
                                   r"S3.pkl: no sample is labelled 1-4 .*; this subject has no data"),
    "CAP without EDF files": (lambda d: ["--dataset", f"cap:{d}/old_run"], r"--dataset cap:.*old_run: no .edf files"),
    "CAP table without Event column": (lambda d: ["--dataset", "cap:" + cap_folder(d, "\tEvent\t", "\tKind\t")],
                                       r"n2.txt: the table has no 'Event' column"),
    "CAP night without data": (lambda d: ["--dataset", "cap:" + cap_folder(d, r"SLEEP-(S\d|REM)", "SLEEP-MT")],
                               r"n2.txt: no epoch scored W, S1-S4 or REM inside the recording; this night has no data"),
    "CAP unknown channel": (lambda d: ["--dataset", "cap:" + cap_folder(d), "--channels", "C4-A1,O2-A1"],
                            r"--channels C4-A1,O2-A1: .*n1.edf has no signal 'O2-A1'; it has C4-A1, EMG1-EMG2"),
    "unknown baseline": (lambda d: ["--baselines", "ocsvm,iforest"], r"--baselines ocsvm,iforest: 'iforest' is unknown"),
    "unknown transformation": (lambda d: ["--transformations", "noise,mirror"], r"--transformations noise,mirror: 'mirror'"),
    "bad filters": (lambda d: ["--filters", "32"], r"--filters 32: expected two positive integers"),
    "bad percentile": (lambda d: ["--percentile", "100"], r"--percentile 100.0: expected a number strictly between"),
    "too few windows": (lambda d: ["--batch-size", "100000"], r"amsl: \d+ training windows, fewer than one batch"),
    "existing export version": (lambda d: ["--export-dir", f"{d}/exports", "--version", "1"],
                                r"--version 1: .*exports/amsl/1 already exists; pass --overwrite"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
    "resume another split": (lambda d: ["--output", f"{d}/old_run", "--resume", "--normal-classes", "PEN,ABD"],
                             r"--resume: the checkpoint in .*old_run/checkpoints is from --normal-classes "
                             r"IR,ER,TRAP,ROW, not PEN,ABD"),
}


def write_table(root, name, columns):
    path = pathlib.Path(root, "data", name)
    path.parent.mkdir(parents=True)
    np.savetxt(path, np.ones((5, columns)))
    return str(pathlib.Path(root, "data"))


def pamap2_folder(root, last_subject=((1, 200), (4, 200), (5, 200))):
    """Subjects 101 and 103 lie, walk and run 2 s each; subject 102 does `last_subject`."""
    folder = pathlib.Path(root, "pamap2")
    for subject in (101, 103):
        write_pamap2(folder, subject, [(1, 200), (4, 200), (5, 200)])
    write_pamap2(folder, 102, last_subject)
    return str(folder)


WESAD_SESSION = [(0, 1), (1, 4), (2, 3), (3, 2), (4, 2.5)]


def wesad_folder(root, drop=None):
    """Subjects 2, 3, 4 in baseline, stress, amusement, meditation; subject 3 without `drop`."""
    folder = pathlib.Path(root, "wesad")
    for subject in (2, 3, 4):
        content = wesad_content(subject, WESAD_SESSION)
        if subject == 3 and drop == "labels":
            content["label"][:] = 5
        elif subject == 3 and drop:
            content.pop(drop, None)
            content["signal"]["wrist"].pop(drop, None)
        write_wesad(folder, subject, None, content)
    return str(folder)


def cap_folder(root, old="", new=""):
    """Nights n1..n3 (W, S1, S2, S3, R; C4-A1 and EMG1-EMG2 at 32 Hz); n2's table edited by
    the regular expression `old` -> `new`."""
    folder = pathlib.Path(root, "cap")
    folder.mkdir()
    for night in ("n1", "n2", "n3"):
        write_cap(folder, night, ["W", "S1", "S2", "S3", "R"], rates=(("C4-A1", 32), ("EMG1-EMG2", 32)),
                  start=datetime.time(23, 0, 0))
    (folder / "n2.txt").write_text(re.sub(old, new, (folder / "n2.txt").read_text()))
    return str(folder)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused, with_run_folders):
    os.makedirs(tmp_path / "exports" / "amsl" / "1")
    (tmp_path / "exports" / "amsl" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"auroc": 0.9}')
    parsed = amsl.build_parser().parse_args(SMOKE)
    amsl.check_args(parsed)
    parsed.normal_classes = "IR,ER,TRAP,ROW"
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(amsl.run_config(parsed)))
    make_args, message = BAD_INPUTS[case]
    args = with_run_folders(make_args(str(tmp_path)), tmp_path)
    refused(lambda: run_app(SMOKE + args), "apps.amsl", message, tmp_path)


def test_command_line_entry_point_and_help(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.amsl", "--normal-classes", "PEN,ABD,FEL,IR,ER,TRAP,ROW",
                          "--output", str(tmp_path / "run")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith(
        "apps.amsl: error: --normal-classes PEN,ABD,FEL,IR,ER,TRAP,ROW: every class of watch is normal")
    assert not os.path.exists(tmp_path / "run")
    help_text = " ".join(amsl.build_parser().format_help().split())
    for option in ("--dataset", "--normal-classes", "--window", "--stride", "--memory-slots", "--percentile",
                   "--baselines", "--memory", "--transformations", "--shrink-threshold", "--epochs", "--filters",
                   "--preset", "--resume", "--export-dir", "mpre", "auroc", "is_anomaly",
                   "preset values: smoke 20, cpu 500, paper 500", "--ssl-reduction", "--entropy-reduction",
                   "--decoder-activation", "macro_f1"):
        assert option in help_text, option


FOLDER_RUNS = {
    # dataset: (folder writer, extra options, normal / abnormal classes, window shape, sample rate)
    "pamap2": (pamap2_folder, ["--channels", "hand_acc_x,hand_acc_y,ankle_gyro_z"], ["lying", "walking"],
               ["running"], [32, 3], 100.0),
    "wesad": (wesad_folder, ["--wesad-device", "wrist", "--no-export"], ["baseline", "amusement", "meditation"],
              ["stress"], [32, 6], 32.0),
    "cap": (cap_folder, ["--sample-rate", "8", "--no-export"], ["S1", "S2", "S3"], ["W", "R"], [32, 2], 8.0),
}


@pytest.mark.parametrize("name", sorted(FOLDER_RUNS))
def test_runs_on_files_in_each_dataset_format(name, tmp_path):
    write, extra, normal, abnormal, shape, rate = FOLDER_RUNS[name]
    args = ["--preset", "smoke", "--dataset", f"{name}:{write(tmp_path)}", "--window", "32", "--stride", "32",
            "--batch-size", "8", "--baselines", "ocsvm", "--transformations", "noise",
            "--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")] + extra
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    assert set(metrics["methods"]) == {"amsl", "ocsvm"}
    for values in metrics["methods"].values():
        assert all(0.0 <= values[key] <= 1.0 for key in METRIC_KEYS)
    assert {key: metrics[key] for key in METRIC_KEYS} == {key: metrics["methods"]["amsl"][key] for key in METRIC_KEYS}
    data = metrics["data"]
    assert (data["normal_classes"], data["abnormal_classes"]) == (normal, abnormal)
    assert data["window_shape"] == shape and data["sample_rate"] == rate and len(data["channels"]) == shape[1]
    assert data["test_abnormal_windows"] > 0 and len(metrics["history"]["loss"]) == 1
    assert os.path.getsize(tmp_path / "run" / "plots" / "roc_curves.png") > 10_000
    if "--no-export" not in extra:  # the exported scorer takes raw windows at the loader's rate
        assert metrics["export"] == str(tmp_path / "exports" / "amsl" / "1")
        served = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
        scores = served(windows=tf.zeros([2] + shape))["score"].numpy()
        assert scores.shape == (2,) and np.isfinite(scores).all()
        with open(os.path.join(metrics["export"], "assets.extra", "kerastl.json")) as f:
            facts = json.load(f)
        assert facts["sample_rate"] == rate and facts["channels"] == data["channels"]


class MeanDistanceDetector(AnomalyDetector):
    """Score = root mean squared distance of a window to the mean training window."""

    name = "mean_distance"

    def _fit(self, x):
        self.mean_ = x.mean(axis=0)

    def _score(self, x):
        return np.sqrt(np.mean(np.square(x - self.mean_), axis=(1, 2)))


@pytest.fixture
def mean_distance_baseline():
    register_baseline("mean_distance", lambda options: MeanDistanceDetector(options.percentile),
                      "distance to the mean training window")
    yield
    del BASELINES["mean_distance"]


def test_a_baseline_registered_alone_runs_through_the_app(mean_distance_baseline, tmp_path):
    help_text = " ".join(amsl.build_parser().format_help().split())
    assert "mean_distance: distance to the mean training window" in help_text
    args = SMOKE + ["--baselines", "mean_distance", "--transformations", "noise", "--no-export",
                    "--output", str(tmp_path / "run")]
    assert run_app(args) == 0
    metrics = read_metrics(tmp_path / "run")
    assert set(metrics["methods"]) == {"amsl", "mean_distance"}
    # The same data by hand: the distance to the mean normal training window separates the
    # abnormal exercises well on this split (AUROC 0.91), far above chance.
    data = load_anomaly_data("watch", "IR,ER,TRAP,ROW", window=32, stride=64, seed=0)
    mean = data.x_train.mean(axis=0)

    def distance(x):
        return np.sqrt(np.mean(np.square(x - mean), axis=(1, 2)))

    reported = metrics["methods"]["mean_distance"]
    expected = detection_metrics(distance(data.x_test), data.is_abnormal, np.percentile(distance(data.x_train), 98))
    for key in METRIC_KEYS:
        assert reported[key] == pytest.approx(expected[key], abs=1e-6), key
    assert reported["auroc"] > 0.85
    assert reported["threshold"] == pytest.approx(np.percentile(distance(data.x_train), 98), rel=1e-5)
