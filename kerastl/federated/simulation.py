"""The local simulation engine: every client in this process, one model per client.

Runs with Keras 3 (main environment) and Keras 2 (federated environment, where it is the
reference the TFF process is checked against). The server rule is `round_update`, the client
work `make_local_trainer` and `client_bn_statistics`: the same functions the TFF process runs.

Example:
>>> clients = [Client(train_ds, val_ds, test_ds) for ...]              # doctest: +SKIP
>>> sim = FederatedSimulation(model_fn, clients, "fedap", self_weight=0.5)
>>> result = sim.fit(rounds=50)                                          # doctest: +SKIP
>>> result["mean_accuracy"], result["client_accuracy"]                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from kerastl.federated.aggregation import ALGORITHMS, round_update, shared_variables
from kerastl.federated.local_training import make_evaluator, make_local_trainer
from kerastl.federated.statistics import bn_input_model, client_bn_statistics


@dataclasses.dataclass
class Client:
    """One client's batched datasets (elements `(x, y)`); `name` labels plots and metrics."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    name: str = ""


def make_clients(data, batch_size: int = 32, shuffle_seed: int | None = None) -> list[Client]:
    """`Client`s from `kerastl.data.clients.FederatedData`. With `shuffle_seed`, each client's
    training examples are shuffled once (seeded) and then visited in that order every epoch:
    a TFF client re-runs its serialised dataset from the start each round, so this is the
    order both engines can share (the reference reshuffles every epoch)."""
    def batches(x, y, shuffle=False):
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle and shuffle_seed is not None:
            dataset = dataset.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=False)
        return dataset.batch(batch_size)

    return [Client(batches(c.x_train, c.y_train, True), batches(c.x_val, c.y_val), batches(c.x_test, c.y_test),
                   c.name) for c in data.clients]


class FederatedSimulation:
    """Rounds of local training and per-client aggregation for one of `ALGORITHMS`.

    Args:
        model_fn: builds the (uncompiled) Keras model, outputs logits; called once.
        clients: the clients, in the order of the weight matrix's rows.
        algorithm: fedap, fedavg, fedbn, fedprox, fedper or base.
        learning_rate, local_epochs: each client's plain SGD.
        self_weight: FedAP's lambda (W_ii).
        prox_mu: FedProx's mu.
        local_layers: FedPer's number of last weighted layers kept local.
        pretrain_rounds: FedAP's FedAvg rounds before W is computed (0: W from the initial model).
        initial_weights: the clients' common starting weights (default: the built model's).
    """

    def __init__(self, model_fn: Callable, clients: list[Client], algorithm: str = "fedap",
                 learning_rate: float = 0.01, local_epochs: int = 1, self_weight: float = 0.5,
                 prox_mu: float = 0.01, local_layers: int = 1, pretrain_rounds: int = 1, initial_weights=None):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
        self.model = model_fn()
        self.clients = list(clients)
        self.algorithm = algorithm
        self.local_epochs = int(local_epochs)
        self.self_weight = float(self_weight)
        self.pretrain_rounds = int(pretrain_rounds)
        self.shared = shared_variables(self.model, algorithm, local_layers)
        self._train = make_local_trainer(self.model, learning_rate, prox_mu if algorithm == "fedprox" else 0.0)
        self._evaluate = make_evaluator(self.model)
        self._bn_inputs = bn_input_model(self.model) if algorithm == "fedap" else None
        start = initial_weights if initial_weights is not None else self.model.get_weights()
        n = len(self.clients)
        self.weights = [np.stack([np.asarray(w)] * n) for w in start]
        self.matrix = np.eye(n, dtype=np.float32)
        self.round = 0

    def client_weights(self, index: int) -> list[np.ndarray]:
        return [stack[index] for stack in self.weights]

    def run_round(self, absent: set[int] = frozenset()) -> np.ndarray:
        """One round; clients in `absent`, with no data, or whose training raises are left
        out. Returns the bool mask of the clients that took part."""
        n = len(self.clients)
        trained = [stack.copy() for stack in self.weights]
        present = np.zeros(n, bool)
        counts = np.zeros(n, np.float32)
        needs_statistics = self.algorithm == "fedap" and self.round == self.pretrain_rounds
        means, variances = None, None
        for i, client in enumerate(self.clients):
            if i in absent:
                continue
            self.model.set_weights(self.client_weights(i))
            try:
                statistics = client_bn_statistics(self.model, client.train, self._bn_inputs) if needs_statistics \
                    else None
                seen = int(self._train(client.train, tf.constant(self.local_epochs)))
            except (tf.errors.OpError, ValueError, RuntimeError):
                continue  # a failing client drops out of this round; the others go on
            if seen == 0:
                continue
            present[i], counts[i] = True, seen
            for stack, value in zip(trained, self.model.get_weights()):
                stack[i] = value
            if statistics is not None:
                if means is None:
                    means = [np.zeros((n, int(m.shape[0]))) for _, m, _ in statistics]
                    variances = [np.zeros_like(m) for m in means]
                for layer, (_, mean, var) in enumerate(statistics):
                    means[layer][i], variances[layer][i] = mean.numpy(), var.numpy()
        self._aggregate(present, counts, trained, means, variances)
        self.round += 1
        return present

    def _aggregate(self, present, counts, trained, means, variances):
        n = len(self.clients)
        if present.any():
            if means is None:  # not a statistics round: the rule ignores them
                means, variances = [np.zeros((n, 1))], [np.zeros((n, 1))]
            new, matrix = round_update(self.algorithm, self.round, [tf.constant(w) for w in self.weights],
                                       [tf.constant(w) for w in trained], present, counts, self.matrix,
                                       [tf.constant(m) for m in means], [tf.constant(v) for v in variances],
                                       self.shared, self.self_weight, self.pretrain_rounds)
            self.weights = [w.numpy() for w in new]
            self.matrix = matrix.numpy()

    def evaluate(self, split: str) -> np.ndarray:
        """Accuracy of every client's own model on its `split` (validation or test)."""
        accuracies = []
        for i, client in enumerate(self.clients):
            self.model.set_weights(self.client_weights(i))
            correct, count = self._evaluate(getattr(client, split))
            accuracies.append(float(correct) / max(int(count), 1))
        return np.array(accuracies)

    def fit(self, rounds: int, absent: Callable[[int], set[int]] | None = None, progress=None) -> dict:
        """Runs `rounds` rounds, evaluating every client after each. Returns the reported
        figures: `client_accuracy` (per client test accuracy) and `mean_accuracy` at the round
        with the best mean validation accuracy, `best_round`, and the per-round `history`."""
        history = {"val_mean": [], "test_mean": [], "test_clients": [], "present": []}
        self.best_weights = None
        for _ in range(rounds):
            present = self.run_round(absent(self.round) if absent else frozenset())
            validation, test = self.evaluate("validation"), self.evaluate("test")
            history["val_mean"].append(float(validation.mean()))
            history["test_mean"].append(float(test.mean()))
            history["test_clients"].append(test.tolist())
            history["present"].append(present.tolist())
            if history["val_mean"][-1] >= max(history["val_mean"]):
                self.best_weights = [w.copy() for w in self.weights]  # the models the figures are of
            if progress is not None:
                progress(self.round, validation, test)
        best = int(np.argmax(history["val_mean"]))
        return {"best_round": best + 1, "mean_accuracy": history["test_mean"][best],
                "client_accuracy": history["test_clients"][best], "history": history}
