"""The federated algorithms registry: the built-in algorithms' properties, one clear error for an
unknown name, and an algorithm added through the registry alone running in the local engine.
Runs in BOTH environments (tox py311: Keras 3; tox federated: Keras 2)."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl import InputError
from kerastl.federated.aggregation import shared_variables
from kerastl.federated.algorithms import ALGORITHMS, FederatedAlgorithm, get_algorithm
from kerastl.federated.local_training import make_local_trainer
from kerastl.federated.simulation import Client, FederatedSimulation
from kerastl.federated.statistics import bn_layers
from test_fedap_core import batches, small_bn_model


def clients():
    return [Client(batches(s), batches(s + 10), batches(s + 20), f"c{s}") for s in range(3)]


def test_the_built_in_algorithms_properties():
    expected = {  # name: (kept local, mixing, proximal)
        "fedap": (("batch_norm",), "similarity", False), "fedavg": ((), "sample_share", False),
        "fedbn": (("batch_norm",), "sample_share", False), "fedprox": ((), "sample_share", True),
        "fedper": (("head",), "sample_share", False), "base": (("everything",), "sample_share", False)}
    assert list(ALGORITHMS) == list(expected)
    for name, (local, mixing, proximal) in expected.items():
        algorithm = get_algorithm(name)
        assert (algorithm.local, algorithm.mixing, algorithm.proximal) == (local, mixing, proximal)
        assert algorithm.needs_similarity == (name == "fedap") and algorithm.description


def test_unknown_names_and_parts_are_one_clear_error():
    with pytest.raises(InputError, match=r"^--algorithm 'fedsgd': expected one of fedap, fedavg, fedbn, fedprox, "
                                         r"fedper, base$"):
        get_algorithm("fedsgd")
    with pytest.raises(InputError, match="'fedsgd'"):
        FederatedSimulation(small_bn_model, clients(), "fedsgd")
    with pytest.raises(ValueError, match="expected parts among batch_norm, head, everything"):
        FederatedAlgorithm("odd", "keeps the first layer local", local=("first_layer",))
    with pytest.raises(ValueError, match="a mixing among sample_share, similarity"):
        FederatedAlgorithm("odd", "median of the clients", mixing="median")


def test_an_algorithm_added_to_the_registry_runs_and_keeps_its_local_parts_per_client(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "fedbn_head", FederatedAlgorithm(
        "fedbn_head", "FedAvg with the BN layers and the head local", local=("batch_norm", "head")))
    model = small_bn_model()
    local = {id(v) for layer in bn_layers(model) + [model.get_layer("head")] for v in layer.weights}
    assert shared_variables(model, "fedbn_head") == [id(v) not in local for v in model.weights]

    sim = FederatedSimulation(small_bn_model, clients(), "fedbn_head", learning_rate=0.05)
    start = [w.copy() for w in sim.client_weights(0)]       # every client starts from the same model
    sim.run_round()
    for is_shared, stack in zip(sim.shared, sim.weights):
        if is_shared:                                        # one FedAvg model for everybody
            for row in stack[1:]:
                np.testing.assert_allclose(row, stack[0], rtol=1e-6, atol=1e-7)
        else:                                                # each client's own
            assert not np.allclose(stack[0], stack[1]) and not np.allclose(stack[1], stack[2])
    # A local part is exactly what the client's own training made of it.
    model.set_weights(start)
    make_local_trainer(model, 0.05)(sim.clients[2].training_data(0), tf.constant(1))
    for is_shared, mine, kept in zip(sim.shared, model.get_weights(), sim.client_weights(2)):
        if not is_shared:
            np.testing.assert_allclose(kept, mine, rtol=1e-5, atol=1e-6)
    assert np.array_equal(sim.matrix, np.eye(3))             # no W: sample-share mixing


def test_registry_properties_switch_the_proximal_term_and_the_similarity_matrix(monkeypatch):
    monkeypatch.setitem(ALGORITHMS, "fedbn_prox", FederatedAlgorithm(
        "fedbn_prox", "FedBN with FedProx's proximal term", local=("batch_norm",), proximal=True))
    monkeypatch.setitem(ALGORITHMS, "fedap_head", FederatedAlgorithm(
        "fedap_head", "FedAP with the head local too", local=("batch_norm", "head"), mixing="similarity"))
    after = {}
    for name in ("fedbn", "fedbn_prox"):
        sim = FederatedSimulation(small_bn_model, clients(), name, learning_rate=0.05, prox_mu=50.0)
        sim.run_round()      # round 0 trains without the term, as the reference
        sim.run_round()      # three steps a client: from the second on, the term pulls back
        after[name] = sim.weights
    assert any(not np.allclose(a, b, atol=1e-4) for a, b in zip(after["fedbn"], after["fedbn_prox"]))

    sim = FederatedSimulation(small_bn_model, clients(), "fedap_head", learning_rate=0.05, pretrain_rounds=1)
    sim.run_round()
    sim.run_round()          # W is taken at round 1 from the clients' BN statistics
    np.testing.assert_allclose(np.diag(sim.matrix), 0.5)
    np.testing.assert_allclose(sim.matrix.sum(1), 1.0, rtol=1e-5)
    local = {id(v) for layer in bn_layers(sim.model) + [sim.model.get_layer("head")] for v in layer.weights}
    assert [not s for s in sim.shared] == [id(v) in local for v in sim.model.weights]
