"""apps.amsl end to end: real watch data, metrics, plots, export, exact resume, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from apps import amsl
from kerastl import app
from kerastl.anomaly.report import METRIC_KEYS, detection_metrics
from kerastl.checkpoint import TrainingCheckpoint
from kerastl.data.sensors import load_anomaly_data

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
    "unknown dataset": (lambda d: ["--dataset", "pamap2"], r"--dataset 'pamap2' is unknown; expected watch, dsads or npz:PATH"),
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


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused):
    os.makedirs(tmp_path / "exports" / "amsl" / "1")
    (tmp_path / "exports" / "amsl" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"auroc": 0.9}')
    parsed = amsl.build_parser().parse_args(SMOKE)
    amsl.check_args(parsed)
    parsed.normal_classes = "IR,ER,TRAP,ROW"
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(amsl.run_config(parsed)))
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path))
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    if "--export-dir" not in args:
        args += ["--export-dir", str(tmp_path / "exports")]
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
                   "preset values: smoke 20, cpu 50, paper 500"):
        assert option in help_text, option
