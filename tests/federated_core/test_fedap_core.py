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


def no_statistics(n=3):
    """`round_update`'s statistics arguments when none are held and none arrive."""
    return ([tf.zeros([n, 1], tf.float64)], [tf.zeros([n, 1], tf.float64)], tf.zeros([n], tf.bool))


@pytest.mark.parametrize("sample_weighted", [False, True])
def test_fedavg_is_the_uniform_mean_of_everything_or_sample_weighted_as_an_option(sample_weighted):
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.array([10.0, 30.0, 60.0], np.float32)
    new, _, _ = round_update("fedavg", 3, before, trained, [True] * 3, counts, np.eye(3), no_statistics(),
                             no_statistics(), shared_variables(model, "fedavg"), 0.5, 1, sample_weighted)
    shares = counts / counts.sum() if sample_weighted else np.full(3, 1 / 3)   # the reference: 1/N
    for after, stack in zip(new, trained):
        expected = np.tensordot(shares, stack.numpy(), axes=1)
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
    for sample_weighted, shares in ((True, (0.25, 0.75)), (False, (0.5, 0.5))):
        new, _, _ = round_update("fedavg", 3, before, trained, present, counts, np.eye(3), no_statistics(),
                                 no_statistics(), shared_variables(model, "fedavg"), 0.5, 1, sample_weighted)
        for after, old, stack in zip(new, before, trained):
            np.testing.assert_array_equal(after.numpy()[2], old.numpy()[2])
            expected = shares[0] * stack.numpy()[0] + shares[1] * stack.numpy()[1]
            np.testing.assert_allclose(after.numpy()[0], expected, rtol=1e-5, atol=1e-6)


def test_fedap_pretraining_rounds_are_fedavg_and_w_comes_from_statistics():
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.array([1.0, 1.0, 2.0], np.float32)
    means = [tf.constant([[0.0], [1.0], [2.0]], tf.float64)]
    variances = [tf.constant([[1.0], [1.0], [1.0]], tf.float64)]
    arrived = (means, variances, tf.constant([True] * 3))
    shared = shared_variables(model, "fedap")
    pre, matrix, _ = round_update("fedap", 0, before, trained, [True] * 3, counts, np.eye(3), no_statistics(),
                                  no_statistics(), shared, 0.5, 1)
    np.testing.assert_array_equal(matrix.numpy(), np.eye(3))          # W not yet taken
    for after, stack in zip(pre, trained):                              # everything averaged (1/N), BN included
        np.testing.assert_allclose(after.numpy()[1], stack.numpy().mean(0), rtol=1e-5, atol=1e-6)
    new, matrix, (held_means, _, measured) = round_update("fedap", 1, before, trained, [True] * 3, counts, np.eye(3),
                                                          no_statistics(), arrived, shared, 0.5, 1)
    np.testing.assert_allclose(matrix.numpy(), fedap_weights(tf.constant([[0., 1, 2], [1, 0, 1], [2, 1, 0]]),
                                                             0.5).numpy(), rtol=1e-6)
    np.testing.assert_allclose(matrix.numpy()[0], [0.5, 1 / 3, 1 / 6], rtol=1e-6)
    assert measured.numpy().all() and np.array_equal(held_means[0].numpy(), means[0].numpy())


def test_a_client_absent_when_w_is_taken_gets_its_row_and_column_when_its_statistics_arrive():
    model = small_bn_model()
    before, trained = client_stacks(model, seed=0), client_stacks(model, seed=1)
    counts = np.ones(3, np.float32)
    means = [tf.constant([[0.0], [1.0], [2.0]], tf.float64)]
    variances = [tf.constant([[1.0], [1.0], [1.0]], tf.float64)]
    shared = shared_variables(model, "fedap")
    # Round 1 (W is taken) without client 2: W covers clients 0 and 1 only.
    _, matrix, held = round_update("fedap", 1, before, trained, [True, True, False], counts, np.eye(3),
                                   no_statistics(), (means, variances, tf.constant([True, True, False])), shared,
                                   0.5, 1)
    np.testing.assert_allclose(matrix.numpy(), [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], atol=1e-6)
    # Round 2: client 2 takes part and sends its statistics; W is the full one from then on.
    _, matrix, held = round_update("fedap", 2, before, trained, [True] * 3, counts, matrix, held,
                                   (means, variances, tf.constant([False, False, True])), shared, 0.5, 1)
    full = fedap_weights(tf.constant([[0., 1, 2], [1, 0, 1], [2, 1, 0]]), 0.5).numpy()
    np.testing.assert_allclose(matrix.numpy(), full, rtol=1e-6)
    # Round 3: nothing arrives, W stays.
    _, again, _ = round_update("fedap", 3, before, trained, [True] * 3, counts, matrix, held, no_statistics(),
                               shared, 0.5, 1)
    np.testing.assert_array_equal(again.numpy(), matrix.numpy())


# --------------------------------------------------------------------------- local training

def trained(loop, model, *args, **kwargs):
    """`make_local_trainer(model, ...)` as a function of `(dataset, epochs, proximal)` whose
    loop over the batches runs in Python (called eagerly) or in the graph (called inside a
    `tf.function`, as TFF calls it)."""
    train = make_local_trainer(model, *args, **kwargs)
    return train if loop == "python" else tf.function(train)


def batches(seed, n=24, features=5, batch=8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (np.eye(3, features)[y] * 2 + rng.normal(size=(n, features))).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


@pytest.mark.parametrize("loop", ["python", "graph"])
@pytest.mark.parametrize("form", ["norm", "squared"])
def test_fedprox_term_is_zero_at_the_received_weights(form, loop):
    data = batches(0)
    results = {}
    for mu in (0.0, 50.0):
        model = small_bn_model(seed=3)
        train = trained(loop, model, 0.1, prox_mu=mu, prox_form=form)
        train(data.take(1), tf.constant(1))
        one_step = [w.copy() for w in model.get_weights()]
        train(data.take(2), tf.constant(1))     # starts from the new weights: the first step is again free
        results[mu] = one_step
        model2 = small_bn_model(seed=3)
        trained(loop, model2, 0.1, prox_mu=mu, prox_form=form)(data, tf.constant(1))
        results[(mu, "three")] = model2.get_weights()
    for a, b in zip(results[0.0], results[50.0]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)           # step 1: gradient of the term is 0
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(results[(0.0, "three")], results[(50.0, "three")]))


@pytest.mark.parametrize("loop", ["python", "graph"])
@pytest.mark.parametrize("form", ["norm", "squared"])
def test_fedprox_second_step_by_hand_and_no_term_when_switched_off(form, loop):
    # Step 1 is the same with and without the term (no gradient at the received weights), so
    # step 2 differs exactly by lr times the term's gradient at w1:
    # norm (the reference): mu / 2 * (w1 - w0) / ||w1 - w0||; squared: mu * (w1 - w0).
    lr, mu = 0.1, 0.5
    data = batches(0).take(2)
    plain, with_term, switched_off = small_bn_model(seed=3), small_bn_model(seed=3), small_bn_model(seed=3)
    start = [v.numpy() for v in plain.trainable_variables]
    make_local_trainer(plain, lr)(data.take(1), tf.constant(1))
    w1 = [v.numpy() for v in plain.trainable_variables]
    plain2 = small_bn_model(seed=3)
    make_local_trainer(plain2, lr)(data, tf.constant(1))
    trained(loop, with_term, lr, prox_mu=mu, prox_form=form)(data, tf.constant(1))
    trained(loop, switched_off, lr, prox_mu=mu, prox_form=form)(data, tf.constant(1), tf.constant(False))
    delta = [a - b for a, b in zip(w1, start)]
    norm = np.sqrt(sum(float(np.sum(d.astype(np.float64) ** 2)) for d in delta))
    for d, p, t, off in zip(delta, plain2.trainable_variables, with_term.trainable_variables,
                            switched_off.trainable_variables):
        gradient = mu / 2 * d / norm if form == "norm" else mu * d
        np.testing.assert_allclose(t.numpy(), p.numpy() - lr * gradient, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(off.numpy(), p.numpy())   # round 0 of the reference: no term
    with pytest.raises(ValueError, match="prox_form 'cubed'"):
        make_local_trainer(plain, lr, prox_mu=mu, prox_form="cubed")


@pytest.mark.parametrize("mu, form", [(0.0, "norm"), (0.5, "norm"), (0.5, "squared")])
def test_python_and_graph_loops_train_alike(mu, form):
    # The same steps, the loop over the batches in Python (the local engine) or in the graph
    # (TFF): the same weights up to float32 rounding, the same count and loss; 37 = 4 x 8 + 5,
    # so a smaller last batch is stepped too, and two epochs check the per-epoch reset.
    data = batches(0, n=37, batch=8)
    results = {}
    for loop in ("python", "graph"):
        model = small_bn_model(seed=4)
        seen, loss = trained(loop, model, 0.1, prox_mu=mu, prox_form=form, with_loss=True)(data, tf.constant(2))
        results[loop] = model.get_weights(), int(seen), float(loss)
    (python_weights, python_seen, python_loss), (graph_weights, graph_seen, graph_loss) = results.values()
    assert python_seen == graph_seen == 37
    assert python_loss == pytest.approx(graph_loss, rel=1e-5)
    for a, b in zip(python_weights, graph_weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


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


def failing_pipeline(dataset):
    def fail(x, y):   # a client whose data pipeline errors out mid-round
        tf.debugging.assert_less(tf.reduce_max(x), -1e9, message="client failure")
        return x, y

    return dataset.map(fail)


def test_dropped_clients_keep_their_model_in_the_local_engine():
    failing = failing_pipeline(batches(1))
    empty = batches(1).take(0)
    for bad in (failing, empty):
        clients = [Client(batches(0), batches(10), batches(20)), Client(bad, batches(11), batches(21), "c1"),
                   Client(batches(2), batches(12), batches(22))]
        sim = make_sim("fedavg", clients)
        before = [w.copy() for w in sim.client_weights(1)]
        if bad is failing:
            with pytest.warns(RuntimeWarning, match=r"round 1: client 1 \(c1\) dropped from the round: "
                                                    r"InvalidArgumentError: .*assertion failed: \[client failure\]"):
                present = sim.run_round()
            assert sim.failed == [1]
        else:
            present = sim.run_round()
            assert sim.failed == []
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


def test_a_bug_outside_the_client_errors_stops_the_run():
    clients = [Client(batches(0).map(lambda x, y: (x, y)), batches(10), batches(20)) for _ in range(2)]
    sim = make_sim("fedavg", clients)
    sim._train = lambda *args: (_ for _ in ()).throw(TypeError("a kerastl bug"))
    with pytest.raises(TypeError, match="a kerastl bug"):
        sim.run_round()


def test_failures_are_counted_in_the_result_history_and_tensorboard(tmp_path, tensorboard_scalars):
    clients = [Client(batches(0), batches(10), batches(20), "c0"),
               Client(failing_pipeline(batches(1)), batches(11), batches(21), "c1")]
    sim = make_sim("fedbn", clients)
    with pytest.warns(RuntimeWarning, match="client 1"):
        result = sim.fit(2, tensorboard=str(tmp_path / "tb"))
    assert result["failed_client_rounds"] == 2 and result["history"]["failed_clients"] == [[1], [1]]
    assert tensorboard_scalars(str(tmp_path / "tb"))["failed_clients"] == {1: 1.0, 2: 1.0}


def test_late_client_statistics_fill_its_row_and_column_of_w_in_the_local_engine():
    sim = make_sim("fedap")
    sim.run_round()                  # round 0: FedAvg pre-training
    sim.run_round(absent={2})        # round 1: W from clients 0 and 1
    np.testing.assert_allclose(sim.matrix, [[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1]], atol=1e-6)
    assert sim.measured.tolist() == [True, True, False]
    sim.run_round()                  # round 2: client 2 measures its statistics on its own model
    assert sim.measured.all()
    expected = fedap_weights(distance_matrix([tf.constant(m) for m in sim.means],
                                             [tf.constant(v) for v in sim.variances]), 0.5).numpy()
    np.testing.assert_allclose(sim.matrix, expected, rtol=1e-6)
    assert (sim.matrix[2, :2] > 0).all() and (sim.matrix[:2, 2] > 0).all()


def test_fit_reports_the_best_validation_round():
    sim = make_sim("fedbn")
    result = sim.fit(4)
    best = int(np.argmax(result["history"]["val_mean"]))
    assert result["best_round"] == best + 1
    assert result["mean_accuracy"] == pytest.approx(result["history"]["test_mean"][best])
    assert result["client_accuracy"] == result["history"]["test_clients"][best]
    assert len(result["client_accuracy"]) == 3
