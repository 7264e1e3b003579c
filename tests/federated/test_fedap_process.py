"""FedAP and the baselines as TFF processes: parity with the local engine, dropped clients,
remote execution on worker services, and apps.adafed --engine tff.

Runs only in ``tox -e federated`` (TF 2.14 / Keras 2 / tensorflow-federated 0.87.0).
"""

from __future__ import annotations

import json
import os

import numpy as np
import portpicker
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from kerastl.federated import remote
from kerastl.federated.simulation import Client, FederatedSimulation
from kerastl.federated.tff_process import TFFSimulation, build_fedap_process, client_traffic, with_client_ids

NUM_CLIENTS = 4


def model_fn():
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((6,))
    x = tf.keras.layers.Dense(8)(inputs)
    x = tf.keras.layers.BatchNormalization()(x)
    x = tf.keras.layers.ReLU()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3)(x))


def batches(seed: int, n: int = 40, shift: float = 0.0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (np.eye(3, 6)[y] * 2 + rng.normal(size=(n, 6)) + shift).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def make_clients(train_override: dict | None = None) -> list[Client]:
    # Shifted inputs: the clients' BN statistics differ, so FedAP's W is far from uniform.
    clients = [Client(batches(c, shift=0.5 * c), batches(c + 10, shift=0.5 * c), batches(c + 20, shift=0.5 * c),
                      f"c{c}") for c in range(NUM_CLIENTS)]
    for index, dataset in (train_override or {}).items():
        clients[index].train = dataset
    return clients


def max_difference(a, b) -> float:
    return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("algorithm", ["fedap", "fedavg"])
def test_tff_process_matches_the_local_engine_after_two_rounds(algorithm):
    local = FederatedSimulation(model_fn, make_clients(), algorithm, learning_rate=0.05)
    process = TFFSimulation(model_fn, make_clients(), algorithm, learning_rate=0.05)
    for _ in range(2):
        local.run_round()
        process.run_round()
    assert process.round == local.round == 2
    assert max_difference(process.weights, local.weights) < 1e-5
    np.testing.assert_allclose(process.matrix, local.matrix, atol=1e-6)
    if algorithm == "fedap":
        # W was taken at round 1 (after one FedAvg pre-training round) and is personal.
        np.testing.assert_allclose(np.diag(process.matrix), 0.5)
        assert np.ptp(process.matrix[0, 1:]) > 0.01
        # Every client has its own model after the second round.
        first = [w[0] for w in process.weights]
        assert any(not np.allclose(w[1], f) for w, f in zip(process.weights, first))


@pytest.mark.parametrize("algorithm", ["fedbn", "fedprox", "fedper", "base"])
def test_baselines_as_tff_processes_match_the_local_engine(algorithm):
    local = FederatedSimulation(model_fn, make_clients(), algorithm, learning_rate=0.05)
    process = TFFSimulation(model_fn, make_clients(), algorithm, learning_rate=0.05)
    local.run_round()
    process.run_round()
    assert max_difference(process.weights, local.weights) < 1e-5


def test_the_tff_process_resumes_from_a_checkpoint_as_if_never_stopped(tmp_path):
    checkpoint = str(tmp_path / "fedap.npz")
    local = FederatedSimulation(model_fn, make_clients(), "fedap", learning_rate=0.05)
    local.fit(3)
    first = TFFSimulation(model_fn, make_clients(), "fedap", learning_rate=0.05)
    first.fit(2, checkpoint=checkpoint)
    np.testing.assert_allclose(first.train_loss, local.history["train_loss_clients"][1], rtol=1e-5)
    resumed = TFFSimulation(model_fn, make_clients(), "fedap", learning_rate=0.05)
    resumed.restore(checkpoint)                     # the checkpoint becomes the process state
    assert int(resumed.state["round"]) == 2
    result = resumed.fit(3)
    assert resumed.round == 3 and len(result["history"]["val_mean"]) == 3
    assert max_difference(resumed.weights, local.weights) < 1e-5
    np.testing.assert_allclose(resumed.matrix, local.matrix, atol=1e-6)
    np.testing.assert_allclose(result["history"]["val_clients"], local.history["val_clients"], atol=1e-6)


def test_the_process_state_is_what_the_docs_say():
    data = with_client_ids(batches(0), 0)
    assert list(data.element_spec) == ["client", "x", "y"]
    process = build_fedap_process(model_fn, NUM_CLIENTS, data.element_spec, "fedap")
    state = process.initialize()
    assert int(state["round"]) == 0 and list(state) == ["round", "weights", "matrix", "train_loss", "means",
                                                        "variances", "measured"]
    assert [tuple(m.shape) for m in state["means"]] == [(NUM_CLIENTS, 8)] and not np.any(state["measured"])
    np.testing.assert_array_equal(state["matrix"], np.eye(NUM_CLIENTS))
    template = model_fn().get_weights()
    assert [tuple(w.shape) for w in state["weights"]] == [(NUM_CLIENTS, *t.shape) for t in template]
    with pytest.raises(ValueError, match="client"):
        build_fedap_process(model_fn, NUM_CLIENTS, batches(0).element_spec)


def test_each_client_receives_only_its_own_row_whatever_the_number_of_clients():
    spec = with_client_ids(batches(0), 0).element_spec
    model_bytes = sum(w.nbytes for w in model_fn().get_weights())
    traffic = {n: client_traffic(build_fedap_process(model_fn, n, spec, "fedap")) for n in (2, NUM_CLIENTS, 8)}
    assert traffic[2] == traffic[NUM_CLIENTS] == traffic[8]
    # Down: one model (its row), whether the server holds its statistics (bool) and the round (int32).
    assert traffic[8]["received"] == model_bytes + 1 + 4
    # Up: one model, the BN-input means and variances (8 channels, float64), its id (int32) and
    # whether statistics arrived, its example count, loss and presence (float32).
    assert traffic[8]["sent"] == model_bytes + 2 * 8 * 8 + 4 + 4 * 4


@pytest.mark.parametrize("how", ["missing", "empty"])
def test_a_dropped_client_keeps_its_model_in_the_tff_process(how):
    override = {2: batches(2).take(0)} if how == "empty" else None   # empty: absent from every round
    process = TFFSimulation(model_fn, make_clients(override), "fedap", learning_rate=0.05)
    local = FederatedSimulation(model_fn, make_clients(override), "fedap", learning_rate=0.05)
    process.run_round()
    local.run_round()
    before = [w[2].copy() for w in process.weights]
    # Round 1 (W is taken) without client 2: not in the list, or with no data.
    absent = {2} if how == "missing" else set()
    process.run_round(absent=absent)
    local.run_round(absent={2})
    for old, new in zip(before, process.weights):
        np.testing.assert_array_equal(old, new[2])
    assert max_difference(process.weights, local.weights) < 1e-5
    assert process.matrix[2, 2] == pytest.approx(1.0) and np.allclose(process.matrix[:, 2][[0, 1, 3]], 0.0)
    if how == "missing":
        # Round 2: client 2 is back and sends its statistics; its row and column of W are filled.
        process.run_round()
        local.run_round()
        assert process.measured.all() and local.measured.all()
        np.testing.assert_allclose(process.matrix, local.matrix, atol=1e-6)
        assert (process.matrix[2, [0, 1, 3]] > 0).all() and (process.matrix[[0, 1, 3], 2] > 0).all()
        assert max_difference(process.weights, local.weights) < 1e-5


def test_a_client_whose_pipeline_raises_is_dropped_with_a_warning_in_the_tff_process():
    def fail(x, y):
        tf.debugging.assert_less(tf.reduce_max(x), -1e9, message="client failure")
        return x, y

    override = {1: batches(1).map(fail)}
    process = TFFSimulation(model_fn, make_clients(override), "fedbn", learning_rate=0.05)
    local = FederatedSimulation(model_fn, make_clients(override), "fedbn", learning_rate=0.05)
    with pytest.warns(RuntimeWarning, match=r"round 1: client 1 \(c1\) dropped from the round: InvalidArgumentError"):
        present = process.run_round()
    with pytest.warns(RuntimeWarning, match="client 1"):
        local.run_round()
    assert present.tolist() == [True, False, True, True] and process.failed == local.failed == [1]
    assert max_difference(process.weights, local.weights) < 1e-5


def test_rounds_run_on_tff_worker_services_at_127_0_0_1_ports():
    ports = [portpicker.pick_unused_port() for _ in range(2)]
    workers = [remote.start_worker(port) for port in ports]
    try:
        local = FederatedSimulation(model_fn, make_clients(), "fedap", learning_rate=0.05)
        for _ in range(2):
            local.run_round()
        for addresses in ([f"127.0.0.1:{ports[0]}"], [f"127.0.0.1:{p}" for p in ports]):
            remote.set_remote_execution_context(addresses)
            process = TFFSimulation(model_fn, make_clients(), "fedap", learning_rate=0.05)
            for _ in range(2):
                process.run_round()
            assert max_difference(process.weights, local.weights) < 1e-5, addresses
    finally:
        tff.backends.native.set_sync_local_cpp_execution_context()
        for worker in workers:
            worker.kill()
            worker.wait(timeout=30)
    assert all(worker.poll() is not None for worker in workers)


def test_adafed_app_with_the_tff_engine_equals_the_local_engine(tmp_path):
    from apps import adafed
    from kerastl import app

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 90)
    x = (np.eye(3, 6)[y][:, None, :] * 2 + rng.normal(size=(90, 32, 6))).astype(np.float32)
    client = np.repeat(np.arange(3), 30)
    np.savez(tmp_path / "data.npz", x=x, y=y, client=client)
    outputs = {}
    for engine in ("tff", "local"):
        args = ["--preset", "smoke", "--engine", engine, "--dataset", f"npz:{tmp_path}/data.npz",
                "--algorithm", "fedap,fedavg", "--rounds", "3", "--lr", "0.05", "--output", str(tmp_path / engine),
                "--export-dir", str(tmp_path / f"exports-{engine}")]
        assert app.main(adafed.build_parser, adafed.run, args) == 0
        with open(tmp_path / engine / "metrics.json") as f:
            outputs[engine] = json.load(f)
    tff_run, local_run = outputs["tff"], outputs["local"]
    assert tff_run["engine"] == "tff" and len(tff_run["client_accuracy"]) == 3
    for name in ("fedap", "fedavg"):
        np.testing.assert_allclose(tff_run["results"][name]["history"]["val_mean"],
                                   local_run["results"][name]["history"]["val_mean"], atol=1e-6)
    served = tf.saved_model.load(tff_run["export"][0]).signatures["serving_default"](x=tf.constant(x[:4]))
    np.testing.assert_allclose(served["probabilities"].numpy().sum(1), 1.0, rtol=1e-5)
    assert os.path.getsize(tmp_path / "tff" / "plots" / "similarity.png") > 5_000


def test_the_tff_app_exits_through_a_pipe_and_leaves_no_worker(tmp_path):
    import subprocess
    import sys

    from proc_cleanup import process_group_alive, stop_process_group

    data = tmp_path / "data.npz"
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 60)
    np.savez(data, x=rng.normal(size=(60, 32, 6)).astype(np.float32), y=y, client=np.repeat(np.arange(2), 30))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child = subprocess.Popen([sys.executable, "-m", "apps.adafed", "--engine", "tff", "--preset", "smoke",
                              "--dataset", f"npz:{data}", "--output", str(tmp_path / "run"), "--no-export"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=root, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=300)   # returns only when every holder of the pipe is gone
    finally:
        leftover = stop_process_group(child.pid)
    assert child.returncode == 0, output.decode()[-2000:]
    assert b"fedap: mean client accuracy" in output
    # The app stopped TFF's worker itself: nothing was left in its process group.
    assert not leftover and not process_group_alive(child.pid)


def test_adafed_app_runs_on_worker_services_given_by_tff_workers(tmp_path):
    from apps import adafed
    from kerastl import app

    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 60)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(60, 32, 6)).astype(np.float32), y=y,
             client=np.repeat(np.arange(2), 30))
    port = portpicker.pick_unused_port()
    worker = remote.start_worker(port)
    try:
        args = ["--engine", "tff", "--preset", "smoke", "--dataset", f"npz:{tmp_path}/d.npz", "--no-export",
                "--tff-workers", f"127.0.0.1:{port}", "--output", str(tmp_path / "run")]
        assert app.main(adafed.build_parser, adafed.run, args) == 0
    finally:
        tff.backends.native.set_sync_local_cpp_execution_context()
        worker.kill()
        worker.wait(timeout=30)
    with open(tmp_path / "run" / "metrics.json") as f:
        assert len(json.load(f)["client_accuracy"]) == 2
