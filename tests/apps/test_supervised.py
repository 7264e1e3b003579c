"""apps.supervised end to end on real MNIST digits: learning, outputs, exact resume, bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from apps import supervised
from kerastl import app
from kerastl.checkpoint import TrainingCheckpoint

SMOKE = ["--preset", "smoke", "--num-labels", "200", "--epochs", "2", "--steps-per-epoch", "20"]


def run_app(args):
    return app.main(supervised.build_parser, supervised.run, args)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("supervised")
    code = run_app(SMOKE + ["--output", str(root / "run"), "--export-dir", str(root / "exports")])
    assert code == 0
    with open(root / "run" / "metrics.json") as f:
        return root, json.load(f)


def test_learns_real_digits_and_writes_run_folder(finished_run):
    root, metrics = finished_run
    # 200 labels, 40 steps: far above the 10 % of chance on 1,000 held-out real digits.
    assert metrics["accuracy"] > 0.6
    assert metrics["num_labels"] == 200 and metrics["steps"] == 40 and metrics["dataset"] == "mnist5k"
    assert len(metrics["history"]["loss"]) == 2 and metrics["history"]["loss"][1] < metrics["history"]["loss"][0]
    assert metrics["best_accuracy"] == max(metrics["history"]["val_accuracy"])
    assert os.path.getsize(root / "run" / "plots" / "history.png") > 10_000
    assert os.listdir(root / "run" / "tensorboard")
    assert metrics["export"] == str(root / "exports" / "supervised" / "1")


def test_export_agrees_with_reported_accuracy(finished_run):
    from kerastl.data import load_image_dataset

    root, metrics = finished_run
    data = load_image_dataset("mnist5k")
    serve = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    classes = serve(images=tf.constant(data.x_test.astype("float32") / 255.0))["classes"].numpy()
    assert np.mean(classes == data.y_test) == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_resume_after_interruption_equals_uninterrupted_run(finished_run, tmp_path, monkeypatch):
    root, metrics = finished_run
    original = TrainingCheckpoint.on_epoch_end

    def crash_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_app(SMOKE + ["--output", str(tmp_path / "run"), "--no-export"])
    monkeypatch.setattr(TrainingCheckpoint, "on_epoch_end", original)
    assert not os.path.exists(tmp_path / "exports")
    assert run_app(SMOKE + ["--output", str(tmp_path / "run"), "--resume", "--no-export"]) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        resumed = json.load(f)
    assert resumed["steps"] == 40
    # Same weights, optimizer state and data position: the same curves and the same result.
    np.testing.assert_allclose(resumed["history"]["loss"], metrics["history"]["loss"], rtol=1e-4)
    assert resumed["accuracy"] == pytest.approx(metrics["accuracy"], abs=2e-3)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def good_arrays(n=40):
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 255, (n, 8, 8, 1)).astype("uint8"), "y": np.arange(n) % 4}


BAD_INPUTS = {
    "missing npz": (lambda d: ["--dataset", f"npz:{d}/absent.npz"], r"absent\.npz: file not found"),
    "npz without x": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/nox.npz", y=np.zeros(4))],
                      r"nox\.npz: no array named 'x'"),
    "npz without y": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/noy.npz", x=np.zeros((4, 8, 8)))],
                      r"noy\.npz: no array named 'y'"),
    "labels outside 0..C-1": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/neg.npz", x=np.zeros((4, 8, 8)), y=[0, 1, -1, 1])],
        r"neg\.npz: y: labels in \[-1, 1\], expected 0\.\.C-1"),
    "wrong image rank": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/rank.npz", x=np.zeros((4, 64)), y=[0, 1, 0, 1])],
        r"rank\.npz: x_train: images of rank 2 .* expected rank 4"),
    "too many labels per class": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/small.npz", **good_arrays()), "--num-labels", "400"],
        r"--num-labels 400 asks for 100 labels per class, but class 0 has only 8"),
    "unknown dataset": (lambda d: ["--dataset", "imagenet21k"],
                        r"--dataset 'imagenet21k' is unknown; expected one of svhn, cifar10, cifar100, stl10, mnist5k or npz:PATH"),
    "unwritable output": (lambda d: ["--output", f"{d}/a_file/run"], r"--output .*a_file/run: .* not writable"),
    "existing export version": (lambda d: ["--export-dir", f"{d}/exports", "--version", "1"],
                                r"--version 1: .*exports/supervised/1 already exists; pass --overwrite"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, capsys, snapshot):
    (tmp_path / "a_file").write_text("not a folder")
    os.makedirs(tmp_path / "exports" / "supervised" / "1")
    (tmp_path / "exports" / "supervised" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"accuracy": 0.97}')
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path))
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    if "--export-dir" not in args:
        args += ["--export-dir", str(tmp_path / "exports")]
    before = snapshot(tmp_path)
    code = run_app(SMOKE + args)
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("apps.supervised: error: "), err
    assert __import__("re").search(message, err), err
    assert snapshot(tmp_path) == before


def test_command_line_entry_point_exit_code(tmp_path):
    run = subprocess.run([sys.executable, "-m", "apps.supervised", "--dataset", f"npz:{tmp_path}/absent.npz",
                          "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=300, cwd=os.path.dirname(os.path.dirname(__file__)) + "/..")
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"apps.supervised: error: {tmp_path}/absent.npz: file not found, expected an .npz file with arrays x, y")
    assert not os.path.exists(tmp_path / "run")
