"""kerastl.federated's core on hand-computed values. Runs in BOTH environments (tox py311:
Keras 3; tox federated: Keras 2), which is what "plain TF ops, unchanged on both" means."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.federated.aggregation import (aggregate, distance_matrix, fedap_distance, fedap_weights,
                                           renormalise_rows, round_update, sample_share_weights, shared_variables)
from kerastl.federated.local_training import make_evaluator, make_local_trainer
from kerastl.federated.simulation import Client, FederatedSimulation
from kerastl.federated.statistics import bn_input_model, bn_layers, client_bn_statistics

layers = tf.keras.layers


def small_bn_model(seed=0, features=5, classes=3):
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((features,))
    x = layers.Dense(4, name="d1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU()(x)
    x = layers.Dense(6, name="d2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    return tf.keras.Model(inputs, layers.Dense(classes, name="head")(x))


def stats(mean, var):
    return (tf.constant(1.0, tf.float64), tf.constant(mean, tf.float64), tf.constant(var, tf.float64))


# ------------------------------------------------------------------------------- statistics

def test_bn_statistics_merged_over_uneven_batches_equal_the_full_data_statistics():
    model = small_bn_model()
    rng = np.random.default_rng(0)
    x = rng.normal(2.0, 3.0, size=(37, 5)).astype(np.float32)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(37, np.int64))).batch(8)   # 8, 8, 8, 8, 5
    result = client_bn_statistics(model, dataset)
    features = bn_input_model(model)(x, training=False)
    assert len(result) == len(bn_layers(model)) == 2
    for (count, mean, var), full in zip(result, features):
        full = np.asarray(full, np.float64)
        assert float(count) == 37
        np.testing.assert_allclose(mean.numpy(), full.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(var.numpy(), full.var(0), rtol=1e-5, atol=1e-6)   # population variance


def test_statistics_of_image_inputs_average_over_batch_and_space():
    tf.keras.utils.set_random_seed(1)
    inputs = tf.keras.Input((4, 4, 2))
    x = layers.BatchNormalization(name="bn")(inputs)
    model = tf.keras.Model(inputs, layers.Dense(2)(layers.Flatten()(x)))
    images = np.random.default_rng(1).normal(size=(6, 4, 4, 2)).astype(np.float32)
    (count, mean, var), = client_bn_statistics(model, tf.data.Dataset.from_tensor_slices(images).batch(4))
    assert float(count) == 6 * 16
    np.testing.assert_allclose(mean.numpy(), images.reshape(-1, 2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(var.numpy(), images.reshape(-1, 2).var(0), rtol=1e-5)


def test_model_without_batch_norm_is_refused():
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((3,))
    with pytest.raises(ValueError, match="no BatchNormalization"):
        bn_input_model(tf.keras.Model(inputs, layers.Dense(2)(inputs)))


# --------------------------------------------------------------------------- distance and W

def test_distance_by_hand_zero_and_symmetric():
    a = [stats([0.0, 0.0], [1.0, 4.0]), stats([1.0], [1.0])]
    b = [stats([3.0, 4.0], [1.0, 4.0]), stats([1.0], [9.0])]
    # layer 1: sqrt(3^2 + 4^2 + 0) = 5; layer 2: sqrt(0 + (1 - 3)^2) = 2
    assert float(fedap_distance(a, b)) == pytest.approx(7.0)
    assert float(fedap_distance(b, a)) == pytest.approx(7.0)
    assert float(fedap_distance(a, a)) == 0.0
    means = [tf.constant([[0.0, 0.0], [3.0, 4.0]]), tf.constant([[1.0], [1.0]])]
    variances = [tf.constant([[1.0, 4.0], [1.0, 4.0]]), tf.constant([[1.0], [9.0]])]
    np.testing.assert_allclose(distance_matrix(means, variances).numpy(), [[0, 7], [7, 0]], atol=1e-12)


def test_fedap_weights_by_hand():
    d = tf.constant([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]])
    w = fedap_weights(d, 0.5).numpy()
    # row 0: inverse distances 1 and 1/2 -> shares 2/3 and 1/3 of 0.5
    np.testing.assert_allclose(w[0], [0.5, 1 / 3, 1 / 6], rtol=1e-6)
    # row 1: 1 and 1/4 -> 4/5 and 1/5 of 0.5
    np.testing.assert_allclose(w[1], [0.4, 0.5, 0.1], rtol=1e-6)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.diag(w), 0.5)
    w3 = fedap_weights(d, 0.3).numpy()
    np.testing.assert_allclose(np.diag(w3), 0.3)
    np.testing.assert_allclose(w3.sum(1), 1.0, rtol=1e-6)
    # identical statistics (distance 0) count as a huge inverse: that client takes all the share
    w0 = fedap_weights(tf.constant([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [5.0, 5.0, 0.0]]), 0.5).numpy()
    np.testing.assert_allclose(w0[0], [0.5, 0.5, 0.0], atol=1e-6)
    # an absent client: nobody takes from it, it keeps itself only
    wa = fedap_weights(d, 0.5, present=tf.constant([True, True, False])).numpy()
    np.testing.assert_allclose(wa, [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]], atol=1e-6)


def test_sample_share_and_renormalised_rows():
    w = sample_share_weights(tf.constant([10.0, 30.0, 60.0]), tf.constant([True, True, False])).numpy()
    np.testing.assert_allclose(w, [[0.25, 0.75, 0.0]] * 3)
    r = renormalise_rows(tf.constant([[0.5, 0.25, 0.25]]), tf.constant([True, False, True])).numpy()
    np.testing.assert_allclose(r, [[2 / 3, 0.0, 1 / 3]], rtol=1e-6)


# -------------------------------------------------------------------------------- aggregation

def client_stacks(model, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return [tf.constant(rng.normal(size=(n, *w.shape)).astype(np.float32)) for w in model.get_weights()]


def test_fedavg_is_the_sample_weighted_mean_of_everything():
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.array([10.0, 30.0, 60.0], np.float32)
    new, _ = round_update("fedavg", 3, before, trained, [True] * 3, counts, np.eye(3), [tf.zeros([3, 1])],
                          [tf.zeros([3, 1])], shared_variables(model, "fedavg"), 0.5, 1)
    for after, stack in zip(new, trained):
        expected = np.tensordot(counts / counts.sum(), stack.numpy(), axes=1)
        for row in after.numpy():
            np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["fedap", "fedbn"])
def test_bn_variables_never_leave_a_client_under_fedap_and_fedbn(algorithm):
    model = small_bn_model()
    shared = shared_variables(model, algorithm)
    bn_ids = {id(v) for layer in bn_layers(model) for v in layer.weights}
    assert [not s for s in shared] == [id(v) in bn_ids for v in model.weights]
    assert sum(not s for s in shared) == 8        # gamma, beta, moving mean, moving variance x 2 layers
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    matrix = fedap_weights(tf.constant([[0.0, 1.0, 2.0], [1.0, 0.0, 4.0], [2.0, 4.0, 0.0]]), 0.5)
    new = aggregate(before, trained, matrix, shared, tf.constant([True] * 3))
    for is_shared, after, stack in zip(shared, new, trained):
        if is_shared:
            expected = np.tensordot(matrix.numpy(), stack.numpy(), axes=1)
            np.testing.assert_allclose(after.numpy(), expected, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(after.numpy(), stack.numpy())   # the client's own, trained


def test_fedper_keeps_the_last_layer_local_and_base_keeps_everything():
    model = small_bn_model()
    shared = shared_variables(model, "fedper", local_layers=1)
    head = {id(v) for v in model.get_layer("head").weights}
    assert [not s for s in shared] == [id(v) in head for v in model.weights]
    assert not any(shared_variables(model, "base"))
    assert all(shared_variables(model, "fedavg"))
    with pytest.raises(ValueError, match="fedap"):
        shared_variables(model, "fedsgd")


def test_absent_client_keeps_its_model_and_the_others_renormalise():
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.array([10.0, 30.0, 60.0], np.float32)
    present = [True, True, False]
    new, _ = round_update("fedavg", 3, before, trained, present, counts, np.eye(3), [tf.zeros([3, 1])],
                          [tf.zeros([3, 1])], shared_variables(model, "fedavg"), 0.5, 1)
    for after, old, stack in zip(new, before, trained):
        np.testing.assert_array_equal(after.numpy()[2], old.numpy()[2])
        expected = 0.25 * stack.numpy()[0] + 0.75 * stack.numpy()[1]
        np.testing.assert_allclose(after.numpy()[0], expected, rtol=1e-5, atol=1e-6)


def test_fedap_pretraining_rounds_are_fedavg_and_w_comes_from_statistics():
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.array([1.0, 1.0, 2.0], np.float32)
    means = [tf.constant([[0.0], [1.0], [2.0]], tf.float64)]
    variances = [tf.constant([[1.0], [1.0], [1.0]], tf.float64)]
    shared = shared_variables(model, "fedap")
    pre, matrix = round_update("fedap", 0, before, trained, [True] * 3, counts, np.eye(3), means, variances,
                               shared, 0.5, 1)
    np.testing.assert_array_equal(matrix.numpy(), np.eye(3))          # W not yet taken
    for after, stack in zip(pre, trained):                              # everything averaged, BN included
        np.testing.assert_allclose(after.numpy()[1], np.tensordot(counts / 4, stack.numpy(), 1), rtol=1e-5,
                                   atol=1e-6)
    new, matrix = round_update("fedap", 1, before, trained, [True] * 3, counts, np.eye(3), means, variances,
                               shared, 0.5, 1)
    np.testing.assert_allclose(matrix.numpy(), fedap_weights(tf.constant([[0., 1, 2], [1, 0, 1], [2, 1, 0]]),
                                                             0.5).numpy(), rtol=1e-6)
    np.testing.assert_allclose(matrix.numpy()[0], [0.5, 1 / 3, 1 / 6], rtol=1e-6)


# --------------------------------------------------------------------------- local training

def batches(seed, n=24, features=5, batch=8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (np.eye(3, features)[y] * 2 + rng.normal(size=(n, features))).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def test_fedprox_term_is_zero_at_the_received_weights():
    data = batches(0)
    results = {}
    for mu in (0.0, 50.0):
        model = small_bn_model(seed=3)
        train = make_local_trainer(model, 0.1, prox_mu=mu)
        train(data.take(1), tf.constant(1))
        one_step = [w.copy() for w in model.get_weights()]
        train(data.take(2), tf.constant(1))     # starts from the new weights: the first step is again free
        results[mu] = one_step
        model2 = small_bn_model(seed=3)
        make_local_trainer(model2, 0.1, prox_mu=mu)(data, tf.constant(1))
        results[(mu, "three")] = model2.get_weights()
    for a, b in zip(results[0.0], results[50.0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)           # step 1: gradient of the term is 0
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(results[(0.0, "three")], results[(50.0, "three")]))


def test_local_training_learns_and_counts_examples():
    model = small_bn_model(seed=2)
    train, evaluate = make_local_trainer(model, 0.1), make_evaluator(model)
    seen = train(batches(1, n=60), tf.constant(20))
    assert int(seen) == 60                                              # examples per epoch
    correct, count = evaluate(batches(1, n=60))
    assert int(count) == 60 and int(correct) / 60 > 0.9


# ------------------------------------------------------------------------------ local engine

def make_sim(algorithm, clients=None, **kwargs):
    clients = clients or [Client(batches(s), batches(s + 10), batches(s + 20), f"c{s}") for s in range(3)]
    return FederatedSimulation(lambda: small_bn_model(seed=5), clients, algorithm, learning_rate=0.05, **kwargs)


def test_dropped_clients_keep_their_model_in_the_local_engine():
    def fail(x, y):   # a client whose data pipeline errors out mid-round
        tf.debugging.assert_less(tf.reduce_max(x), -1e9, message="client failure")
        return x, y

    failing = batches(1).map(fail)
    empty = batches(1).take(0)
    for bad in (failing, empty):
        clients = [Client(batches(0), batches(10), batches(20)), Client(bad, batches(11), batches(21)),
                   Client(batches(2), batches(12), batches(22))]
        sim = make_sim("fedavg", clients)
        before = [w.copy() for w in sim.client_weights(1)]
        present = sim.run_round()
        assert present.tolist() == [True, False, True]
        for a, b in zip(before, sim.client_weights(1)):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(sim.client_weights(0), sim.client_weights(2)):   # FedAvg over the two present
            np.testing.assert_array_equal(a, b)
    sim = make_sim("fedap")
    sim.run_round(absent={2})
    assert sim.round == 1
    sim.run_round()   # W is taken at round 1 from every client's statistics
    np.testing.assert_allclose(np.diag(sim.matrix), 0.5)
    np.testing.assert_allclose(sim.matrix.sum(1), 1.0, rtol=1e-5)


def test_fit_reports_the_best_validation_round():
    sim = make_sim("fedbn")
    result = sim.fit(4)
    best = int(np.argmax(result["history"]["val_mean"]))
    assert result["best_round"] == best + 1
    assert result["mean_accuracy"] == pytest.approx(result["history"]["test_mean"][best])
    assert result["client_accuracy"] == result["history"]["test_clients"][best]
    assert len(result["client_accuracy"]) == 3
