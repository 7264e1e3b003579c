"""The federated environment works: versions, a FedAvg run, a custom process, no hangs.

Runs only in ``tox -e federated`` (TF 2.14 / Keras 2 / tensorflow-federated 0.87.0).
"""

from __future__ import annotations

import math
import os
import select
import subprocess
import sys
import textwrap
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from proc_cleanup import process_group_alive, stop_process_group

HERE = os.path.dirname(os.path.abspath(__file__))

NUM_CLASSES = 3
NUM_FEATURES = 4


# --------------------------------------------------------------------------- versions


def test_versions():
    import keras

    assert tf.__version__.startswith("2.14."), tf.__version__
    assert keras.__version__.startswith("2."), keras.__version__
    assert tff.__version__ == "0.87.0"
    # tf.keras (which has no __version__ of its own in TF 2.14) is that Keras 2 package,
    # the only kind from_keras_model accepts; Keras 3 would live in keras.src.models.
    assert tf.keras.Model is keras.Model
    assert tf.keras.Model.__module__ == "keras.src.engine.training"


# --------------------------------------------------------------------------- FedAvg


def _client_data(seed: int, n: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Strictly linearly separable 3-class data: centre 3*e_k plus noise bounded by 0.5."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % NUM_CLASSES
    rng.shuffle(y)
    centres = 3.0 * np.eye(NUM_CLASSES, NUM_FEATURES)
    x = centres[y] + rng.uniform(-0.5, 0.5, size=(n, NUM_FEATURES))
    return x.astype(np.float32), y.astype(np.int32)


CLIENT_ARRAYS = [_client_data(seed) for seed in (0, 1, 2)]


def _dataset(x: np.ndarray, y: np.ndarray) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(10)


def _keras_model() -> tf.keras.Model:
    # Zero initial weights: deterministic, and the initial loss is exactly ln(3).
    return tf.keras.Sequential(
        [
            tf.keras.layers.Input(shape=(NUM_FEATURES,)),
            tf.keras.layers.Dense(
                NUM_CLASSES,
                activation="softmax",
                kernel_initializer="zeros",
                bias_initializer="zeros",
            ),
        ]
    )


def test_fedavg_learns():
    datasets = [_dataset(x, y) for x, y in CLIENT_ARRAYS]
    input_spec = datasets[0].element_spec

    def model_fn():
        return tff.learning.models.from_keras_model(
            _keras_model(),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            input_spec=input_spec,
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
    )
    state = process.initialize()
    initial = process.get_model_weights(state)
    assert all(np.all(np.asarray(w) == 0.0) for w in initial.trainable)

    losses, accuracies = [], []
    for _ in range(5):
        output = process.next(state, datasets)
        state = output.state
        train = output.metrics["client_work"]["train"]
        losses.append(float(train["loss"]))
        accuracies.append(float(train["sparse_categorical_accuracy"]))
        assert int(train["num_examples"]) == 90

    assert all(math.isfinite(v) for v in losses)
    # Round 1 starts from ln(3) = 1.0986 and trains during the round, so it reports less.
    assert losses[0] < math.log(3.0)
    assert losses[-1] < losses[0] - 0.3, losses
    assert all(b < a for a, b in zip(losses, losses[1:])), losses

    final = process.get_model_weights(state)
    kernel, bias = (np.asarray(w) for w in final.trainable)
    assert kernel.shape == (NUM_FEATURES, NUM_CLASSES) and bias.shape == (NUM_CLASSES,)
    assert np.abs(kernel).max() > 0.1

    # Evaluate the global model on all clients' data with a plain Keras model.
    keras_model = _keras_model()
    final.assign_weights_to(keras_model)
    np.testing.assert_array_equal(keras_model.get_weights()[0], kernel)
    x_all = np.concatenate([x for x, _ in CLIENT_ARRAYS])
    y_all = np.concatenate([y for _, y in CLIENT_ARRAYS])
    probs = keras_model(x_all, training=False).numpy()
    accuracy = float(np.mean(probs.argmax(axis=1) == y_all))
    loss = float(np.mean(-np.log(probs[np.arange(len(y_all)), y_all])))
    assert accuracy >= 0.9, accuracy  # chance is 1/3
    assert loss < losses[0], (loss, losses)
    # Same forward pass by hand: softmax(x W + b).
    logits = x_all @ kernel + bias
    np.testing.assert_array_equal(logits.argmax(axis=1), probs.argmax(axis=1))


# --------------------------------------------------------------------------- custom process

VEC = 3
# Client data sums: [5, 7, 9], [10, 20, 30], [0, 3, 0]; their mean is [5, 10, 13].
CUSTOM_CLIENT_DATA = [
    np.array([[1, 2, 3], [4, 5, 6]], np.float32),
    np.array([[10, 20, 30]], np.float32),
    np.array([[0.5, 1.0, -1.0], [-0.5, 2.0, 1.0]], np.float32),
]


def _build_sum_process() -> tff.templates.IterativeProcess:
    """state <- federated_mean(state + sum of each client's data); also counts clients."""
    vec_type = tff.TensorType(np.float32, [VEC])
    data_type = tff.SequenceType(vec_type)

    @tff.tensorflow.computation
    def zeros():
        return tf.zeros([VEC], tf.float32)

    @tff.federated_computation
    def initialize_fn():
        return tff.federated_eval(zeros, tff.SERVER)

    @tff.tensorflow.computation(vec_type, data_type)
    def client_update(state, dataset):
        return state + dataset.reduce(tf.zeros([VEC], tf.float32), lambda acc, v: acc + v)

    @tff.tensorflow.computation
    def one():
        return tf.constant(1, tf.int32)

    @tff.federated_computation(
        tff.FederatedType(vec_type, tff.SERVER), tff.FederatedType(data_type, tff.CLIENTS)
    )
    def next_fn(state, client_data):
        at_clients = tff.federated_broadcast(state)
        updates = tff.federated_map(client_update, (at_clients, client_data))
        num_clients = tff.federated_sum(tff.federated_eval(one, tff.CLIENTS))
        return tff.federated_mean(updates), num_clients

    return tff.templates.IterativeProcess(initialize_fn, next_fn)


def test_custom_iterative_process_exact():
    process = _build_sum_process()
    assert str(process.next.type_signature) == (
        "(<state=float32[3]@SERVER,client_data={float32[3]*}@CLIENTS> -> "
        "<float32[3]@SERVER,int32@SERVER>)"
    )
    datasets = [tf.data.Dataset.from_tensor_slices(d) for d in CUSTOM_CLIENT_DATA]

    state = process.initialize()
    np.testing.assert_array_equal(state, np.zeros(VEC, np.float32))

    state, num_clients = process.next(state, datasets)
    assert num_clients == 3
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, [5.0, 10.0, 13.0])

    # Round 2: every client adds its sum to the broadcast state, so the mean grows by 5/10/13.
    state, _ = process.next(state, datasets)
    np.testing.assert_array_equal(state, [10.0, 20.0, 26.0])

    # One client missing: ([10,20,26]+[5,7,9] + [10,20,26]+[10,20,30]) / 2.
    state, num_clients = process.next(state, datasets[:2])
    assert num_clients == 2
    np.testing.assert_array_equal(state, [17.5, 33.5, 45.5])


# --------------------------------------------------------------------------- no hangs

_CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import psutil
    import tensorflow as tf
    import tensorflow_federated as tff

    sys.path.insert(0, {here!r})
    from proc_cleanup import stop_descendants

    vec = tff.TensorType(np.float32, [3])

    @tff.tensorflow.computation(vec)
    def add_sum(x):
        return x + tf.reduce_sum(x)

    @tff.federated_computation(tff.FederatedType(vec, tff.CLIENTS))
    def one_round(values):
        return tff.federated_mean(tff.federated_map(add_sum, values))

    result = one_round([np.array([1, 2, 3], np.float32), np.array([3, 2, 1], np.float32)])
    print("RESULT", " ".join(f"{{v:g}}" for v in result), flush=True)
    workers = [p for p in psutil.Process().children(recursive=True)
               if "worker_binary" in " ".join(p.cmdline())]
    print("WORKERS", " ".join(str(p.pid) for p in workers), flush=True)
    if {cleanup!r}:
        stop_descendants()
    """
)
# Mean over the two clients of x + sum(x): ([7, 8, 9] + [9, 8, 7]) / 2.
_CHILD_EXPECTED = "RESULT 8 8 8"


def _write_child(tmp_path, cleanup: bool) -> str:
    path = tmp_path / ("child_cleanup.py" if cleanup else "child_no_cleanup.py")
    path.write_text(_CHILD_SCRIPT.format(here=HERE, cleanup=cleanup))
    return str(path)


def test_child_process_with_piped_output_returns(tmp_path):
    """A TFF script run with captured output returns, because it stops its own workers."""
    script = _write_child(tmp_path, cleanup=True)
    start = time.monotonic()
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # own process group, so the finally below reaches all
        )
        # Same as subprocess.run(capture_output=True, timeout=120): reads both pipes to EOF.
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc is not None:
            leftovers = process_group_alive(proc.pid)
            stop_process_group(proc.pid)
            if proc.returncode is None:
                proc.kill()
                proc.wait()
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
    lines = stdout.decode().splitlines()
    assert _CHILD_EXPECTED in lines, lines
    workers = next(l for l in lines if l.startswith("WORKERS")).split()[1:]
    assert len(workers) == 1, lines  # TFF did start a worker ...
    assert not leftovers  # ... and the child stopped it before exiting.
    assert elapsed < 120


def test_child_without_cleanup_holds_pipe_open(tmp_path):
    """The hazard itself: without cleanup the worker outlives the child and holds its stdout."""
    script = _write_child(tmp_path, cleanup=False)
    proc = subprocess.Popen(
        [sys.executable, script],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    fd = proc.stdout.fileno()
    out = b""

    def read_until(deadline: float) -> bool:
        """Read stdout until EOF (True) or the deadline (False)."""
        nonlocal out
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return True
                out += chunk
        return False

    try:
        assert proc.wait(timeout=120) == 0  # the Python child itself exits ...
        eof_while_worker_alive = read_until(time.monotonic() + 3.0)
        lines = out.decode().splitlines()
        assert _CHILD_EXPECTED in lines, lines
        worker_pids = [int(p) for p in next(l for l in lines if l.startswith("WORKERS")).split()[1:]]
        assert len(worker_pids) == 1
        assert process_group_alive(proc.pid)  # ... but its worker_binary is still running
        assert not eof_while_worker_alive  # ... and a reader of its stdout would block.
        assert stop_process_group(proc.pid)
        assert read_until(time.monotonic() + 10.0)  # once the worker is gone: EOF
        assert not process_group_alive(proc.pid)
    finally:
        stop_process_group(proc.pid)
        proc.stdout.close()
