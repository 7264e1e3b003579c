"""apps.adafed (local engine, main environment): outputs, per-client exports, bad input, and
FedAP against FedAvg on the real smartwatch clients. The TFF engine is tested in
tests/federated/test_fedap_process.py (federated environment)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from apps import adafed
from kerastl import app


def run_app(args):
    return app.main(adafed.build_parser, adafed.run, args)


def write_npz(path, clients=3, per_client=30, **overrides):
    rng = np.random.default_rng(0)
    n = clients * per_client
    y = rng.integers(0, 3, n)
    arrays = {"x": (np.eye(3, 4)[y][:, None, :] * 2 + rng.normal(size=(n, 16, 4))).astype(np.float32), "y": y,
              "client": np.repeat(np.arange(clients), per_client)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_run_writes_metrics_plots_and_one_export_per_client(tmp_path):
    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedap,fedavg,base", "--rounds", "3",
            "--lr", "0.05", "--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["algorithms"] == ["fedap", "fedavg", "base"] and metrics["clients"] == 3
    for name, result in metrics["results"].items():
        best = int(np.argmax(result["history"]["val_mean"]))
        assert result["best_round"] == best + 1
        assert result["mean_accuracy"] == pytest.approx(np.mean(result["client_accuracy"]))
        assert result["client_accuracy"] == result["history"]["test_clients"][best]
    assert metrics["mean_accuracy"] == metrics["results"]["fedap"]["mean_accuracy"]
    w = np.array(metrics["results"]["fedap"]["weight_matrix"])
    np.testing.assert_allclose(np.diag(w), 0.5)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert os.path.getsize(tmp_path / "run" / "plots" / "similarity.png") > 5_000
    assert os.path.getsize(tmp_path / "run" / "plots" / "client_accuracy.png") > 5_000
    assert metrics["export"] == [str(tmp_path / "exports" / "adafed" / f"client_{i}" / "1") for i in range(3)]
    x = np.load(data)["x"][:5]
    outputs = [tf.saved_model.load(p).signatures["serving_default"](x=tf.constant(x))["probabilities"].numpy()
               for p in metrics["export"]]
    for probabilities in outputs:
        np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(outputs[0], outputs[1])          # FedAP: every client has its own model


BAD_INPUTS = {
    "npz without client": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/nc.npz", client=None)],
                           r"nc\.npz: no array named 'client'"),
    "client with too little data": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/tiny.npz", client=np.r_[np.zeros(88), [1, 1]])],
        r"tiny\.npz: client 1: 2 examples, expected at least 3"),
    "labels outside the model's classes": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/neg.npz", y=np.r_[np.zeros(89, int), [-1]])],
        r"neg\.npz: y: expected integer class labels 0\.\.C-1"),
    "rounds below 1": (lambda d: ["--rounds", "0"], r"--rounds 0: expected at least 1"),
    "clients below 1": (lambda d: ["--clients", "0", "--dataset", "mnist5k"], r"--clients 0: expected at least 1"),
    "self weight above 1": (lambda d: ["--self-weight", "1.5"], r"--self-weight 1\.5: expected a weight in \[0, 1\]"),
    "unknown algorithm": (lambda d: ["--algorithm", "fedap,fedsgd"], r"--algorithm 'fedsgd': expected one of"),
    "unknown dataset": (lambda d: ["--dataset", "femnist"], r"--dataset 'femnist' is unknown"),
    "pamap2 folder missing": (lambda d: ["--dataset", "pamap2", "--data-dir", f"{d}/nowhere"],
                              r"--data-dir .*nowhere: not a folder"),
    "tff engine outside the federated environment": (
        lambda d: ["--engine", "tff"], r"--engine tff needs tensorflow-federated 0\.87\.0.*tox -e federated"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused):
    os.makedirs(tmp_path / "old_run")
    (tmp_path / "old_run" / "metrics.json").write_text('{"mean_accuracy": 0.8}')
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path))
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    refused(lambda: run_app(["--preset", "smoke", "--export-dir", str(tmp_path / "exports")] + args), "apps.adafed", message, tmp_path)


def test_fedap_beats_fedavg_on_the_real_watch_clients(tmp_path):
    # Ten subjects of seglearn's smartwatch recordings, one client each (real non-IID data).
    args = ["--preset", "cpu", "--dataset", "watch", "--algorithm", "fedap,fedavg", "--rounds", "8", "--lr", "0.05",
            "--no-export", "--output", str(tmp_path / "run")]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        results = json.load(f)["results"]
    fedap, fedavg = results["fedap"]["mean_accuracy"], results["fedavg"]["mean_accuracy"]
    # Measured on this machine (seed 0, this command): FedAP 0.5745, FedAvg 0.5128 mean client test accuracy.
    assert fedap > fedavg + 0.03, (fedap, fedavg)
    assert fedap > 0.45
