"""The local engine's per-round data order, training loss, checkpoints and TensorBoard
scalars. Runs in BOTH environments (tox py311: Keras 3; tox federated: Keras 2)."""

import shutil

import numpy as np
import pytest
import tensorflow as tf

from kerastl.data.clients import ClientData, FederatedData
from kerastl.federated.local_training import make_local_trainer
from kerastl.federated.simulation import FederatedSimulation, make_clients

layers = tf.keras.layers


def small_bn_model(seed=5, features=5, classes=3):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((features,))
    x = layers.BatchNormalization(name="bn0")(inputs)
    x = layers.Dense(6, name="d1")(x)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    return tf.keras.Model(inputs, layers.Dense(classes, name="head")(x))


def client_arrays(k, n=24):
    rng = np.random.default_rng(k)
    y = rng.integers(0, 3, n).astype(np.int64)
    x = (np.eye(3, 5)[y] * 2 + rng.normal(size=(n, 5)) + 0.5 * k).astype(np.float32)
    return ClientData(f"c{k}", x, y, x[:12], y[:12], x[12:], y[12:])


def federated_data(clients=3):
    return FederatedData("toy", [client_arrays(k) for k in range(clients)], 3, ["a", "b", "c"])


def examples(dataset):
    return np.concatenate([x.numpy() for x, _ in dataset])


def test_each_round_has_its_own_seeded_order_and_uint8_images_are_scaled():
    x = np.arange(40, dtype=np.uint8).reshape(10, 2, 2, 1) * 6
    y = np.arange(10) % 2
    data = FederatedData("img", [ClientData("c", x, y, x[:4], y[:4], x[4:], y[4:])], 2, ["0", "1"])
    client, = make_clients(data, batch_size=4, shuffle_seed=7)
    again, = make_clients(data, batch_size=4, shuffle_seed=7)
    rounds = [examples(client.training_data(r)) for r in range(3)]
    for seen in rounds:   # every example once per round, scaled to [0, 1]
        np.testing.assert_allclose(np.sort(seen.ravel()), np.sort(x.ravel() / 255.0), rtol=1e-6)
    assert not np.array_equal(rounds[0], rounds[1]) and not np.array_equal(rounds[1], rounds[2])
    np.testing.assert_array_equal(examples(again.training_data(1)), rounds[1])   # a function of the round alone
    order = np.random.default_rng([7, 0, 1]).permutation(10)
    np.testing.assert_allclose(rounds[1], x[order] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(examples(client.validation), x[:4] / 255.0, rtol=1e-6)   # evaluation in order


def test_the_training_loss_is_the_mean_cross_entropy_of_the_epoch():
    model = small_bn_model()
    x, y = client_arrays(0).x_train, client_arrays(0).y_train
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)                  # batches of 10, 10, 4
    expected = sum(float(tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(yb, tf.int32), logits=model(xb, training=True)))) for xb, yb in dataset) / len(y)
    before = [w.copy() for w in model.get_weights()]
    seen, loss = make_local_trainer(model, learning_rate=0.0, with_loss=True)(dataset, tf.constant(1))
    assert int(seen) == 24
    assert float(loss) == pytest.approx(expected, rel=1e-5)          # lr 0: every step saw the same model
    for old, new, variable in zip(before, model.get_weights(), model.weights):
        if variable.trainable:
            np.testing.assert_array_equal(old, new)


def make_sim(clients):
    return FederatedSimulation(small_bn_model, clients, "fedap", learning_rate=0.1)


def test_a_restored_simulation_continues_exactly_and_tensorboard_has_every_round(tmp_path, tensorboard_scalars):
    clients = make_clients(federated_data(), batch_size=8, shuffle_seed=0)
    checkpoint, tensorboard = str(tmp_path / "fedap.npz"), str(tmp_path / "tb")

    def keep_round_2(round_index, validation, test):   # the checkpoint an interruption after round 2 leaves
        if round_index == 2:
            shutil.copy(checkpoint, tmp_path / "round2.npz")

    straight = make_sim(clients)
    straight.fit(3, progress=keep_round_2, checkpoint=checkpoint, tensorboard=tensorboard)
    resumed = make_sim(clients)
    resumed.restore(str(tmp_path / "round2.npz"))
    assert resumed.round == 2
    assert resumed.history == {key: values[:2] for key, values in straight.history.items()}
    result = resumed.fit(3, checkpoint=checkpoint, tensorboard=tensorboard)   # round 3 again, from the checkpoint
    # Same weights, W and per-round order: CPU kernels repeat the same sums (measured: equal to 1e-7).
    np.testing.assert_allclose(resumed.matrix, straight.matrix, atol=1e-6)   # W taken at round 2, restored
    for a, b in zip(resumed.weights, straight.weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(resumed.history["val_clients"], straight.history["val_clients"], atol=1e-6)
    np.testing.assert_allclose(resumed.history["train_loss_clients"], straight.history["train_loss_clients"],
                               rtol=1e-4)
    assert result["best_round"] == straight.result()["best_round"]
    for a, b in zip(resumed.best_weights, straight.best_weights):
        np.testing.assert_allclose(a, b, atol=1e-5)
    scalars = tensorboard_scalars(tensorboard)
    history = resumed.history
    for tag, mean, per_client in (("validation_accuracy", "val_mean", "val_clients"),
                                  ("test_accuracy", "test_mean", "test_clients"),
                                  ("train_loss", "train_loss_mean", "train_loss_clients")):
        assert sorted(scalars[f"{tag}/mean"]) == [1, 2, 3]
        np.testing.assert_allclose([scalars[f"{tag}/mean"][r] for r in (1, 2, 3)], history[mean], rtol=1e-6)
        for k in range(3):
            np.testing.assert_allclose([scalars[f"{tag}/client_{k:02d}"][r] for r in (1, 2, 3)],
                                       [row[k] for row in history[per_client]], rtol=1e-6)
    np.testing.assert_allclose(history["train_loss_mean"], np.mean(history["train_loss_clients"], axis=1),
                               rtol=1e-6)


def test_best_round_is_the_first_best_and_restore_refuses_another_run(tmp_path):
    clients = make_clients(federated_data(), batch_size=8, shuffle_seed=0)
    sim = make_sim(clients)
    sim.history["val_mean"] = [0.5, 0.7, 0.7, 0.6]                   # ties: the first of them
    assert sim.best_round == 2
    sim.history["val_mean"] = []
    sim.fit(1, checkpoint=str(tmp_path / "fedap.npz"))
    other = FederatedSimulation(small_bn_model, clients, "fedavg", learning_rate=0.1)
    with pytest.raises(ValueError, match="a checkpoint of fedap, not fedavg"):
        other.restore(str(tmp_path / "fedap.npz"))
    wider = FederatedSimulation(lambda: small_bn_model(classes=4), clients, "fedap", learning_rate=0.1)
    with pytest.raises(ValueError, match="other shapes"):
        wider.restore(str(tmp_path / "fedap.npz"))
