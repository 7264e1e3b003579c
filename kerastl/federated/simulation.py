"""The local simulation engine: every client in this process, one model per client.

Runs with Keras 3 (main environment) and Keras 2 (federated environment, where it is the
reference the TFF process is checked against). The server rule is `round_update`, the client
work `make_local_trainer` and `client_bn_statistics`: the same functions the TFF process runs.

Example:
>>> clients = [Client(train_ds, val_ds, test_ds) for ...]              # doctest: +SKIP
>>> sim = FederatedSimulation(model_fn, clients, "fedap", self_weight=0.5)
>>> result = sim.fit(rounds=50, checkpoint="run/fedap.npz", tensorboard="run/tb")  # doctest: +SKIP
>>> result["mean_accuracy"], result["client_accuracy"]                   # doctest: +SKIP

Resuming: a new simulation built the same way, `sim.restore("run/fedap.npz")`, then
`sim.fit(rounds=50, checkpoint=...)` runs the rounds that are left.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import numpy as np
import tensorflow as tf

from kerastl.federated.aggregation import round_update, shared_variables
from kerastl.federated.algorithms import get_algorithm
from kerastl.federated.local_training import make_evaluator, make_local_trainer
from kerastl.federated.statistics import bn_input_model, client_bn_statistics

# Per round, in `FederatedSimulation.history`: mean and per-client validation / test accuracy,
# the clients present, and their mean training loss (None for an absent client).
HISTORY_KEYS = ("val_mean", "test_mean", "val_clients", "test_clients", "present", "train_loss_mean",
                "train_loss_clients")


@dataclasses.dataclass
class Client:
    """One client's batched datasets (elements `(x, y)`); `name` labels plots and metrics.
    `train_in_round(r)`, when given, returns round r's training batches (a fresh order each
    round); otherwise every round trains on `train` as it is."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    name: str = ""
    train_in_round: Callable[[int], tf.data.Dataset] | None = None

    def training_data(self, round_index: int) -> tf.data.Dataset:
        return self.train_in_round(round_index) if self.train_in_round is not None else self.train


def make_clients(data, batch_size: int = 32, shuffle_seed: int | None = None) -> list[Client]:
    """`Client`s from `kerastl.data.clients.FederatedData`; uint8 images are scaled to [0, 1].

    With `shuffle_seed`, round r visits client k's training examples in the order of a
    permutation drawn from NumPy's generator seeded with `(shuffle_seed, k, r)` (the same order
    in each of the round's local epochs). The order is a function of the round, not of an
    iterator's state: a resumed run and the TFF process (whose clients re-run a serialised
    dataset each round) see exactly the orders of an uninterrupted local run.
    """
    def batches(x, y):
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
        if x.dtype == np.uint8:
            dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels))
        return dataset

    def shuffled(k, x, y):
        def train_in_round(round_index: int) -> tf.data.Dataset:
            order = np.random.default_rng([shuffle_seed, k, round_index]).permutation(len(y))
            return batches(x[order], y[order])
        return train_in_round

    return [Client(batches(c.x_train, c.y_train), batches(c.x_val, c.y_val), batches(c.x_test, c.y_test), c.name,
                   shuffled(k, c.x_train, c.y_train) if shuffle_seed is not None else None)
            for k, c in enumerate(data.clients)]


class FederatedSimulation:
    """Rounds of local training and per-client aggregation for one registered algorithm.

    Args:
        model_fn: builds the (uncompiled) Keras model, outputs logits; called once.
        clients: the clients, in the order of the weight matrix's rows.
        algorithm: a name from `kerastl.federated.algorithms.ALGORITHMS`.
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
        self.spec = get_algorithm(algorithm)  # the algorithm's properties
        self.model = model_fn()
        self.clients = list(clients)
        self.algorithm = algorithm
        self.local_epochs = int(local_epochs)
        self.self_weight = float(self_weight)
        self.pretrain_rounds = int(pretrain_rounds)
        self.shared = shared_variables(self.model, algorithm, local_layers)
        self._train = make_local_trainer(self.model, learning_rate, prox_mu if self.spec.proximal else 0.0,
                                         with_loss=True)
        self._evaluate = make_evaluator(self.model)
        self._bn_inputs = bn_input_model(self.model) if self.spec.needs_similarity else None
        start = initial_weights if initial_weights is not None else self.model.get_weights()
        n = len(self.clients)
        self.weights = [np.stack([np.asarray(w)] * n) for w in start]
        self.matrix = np.eye(n, dtype=np.float32)
        self.round = 0
        self.train_loss = np.full(n, np.nan)  # each client's mean training loss in the last round
        self.history = {key: [] for key in HISTORY_KEYS}
        self.best_weights = None  # every client's model at the best-validation round

    def client_weights(self, index: int) -> list[np.ndarray]:
        return [stack[index] for stack in self.weights]

    def run_round(self, absent: set[int] = frozenset()) -> np.ndarray:
        """One round; clients in `absent`, with no data, or whose training raises are left
        out. Returns the bool mask of the clients that took part."""
        n = len(self.clients)
        trained = [stack.copy() for stack in self.weights]
        present = np.zeros(n, bool)
        counts = np.zeros(n, np.float32)
        needs_statistics = self.spec.needs_similarity and self.round == self.pretrain_rounds
        means, variances = None, None
        self.train_loss = np.full(n, np.nan)
        for i, client in enumerate(self.clients):
            if i in absent:
                continue
            self.model.set_weights(self.client_weights(i))
            data = client.training_data(self.round)
            try:
                statistics = client_bn_statistics(self.model, data, self._bn_inputs) if needs_statistics else None
                seen, loss = self._train(data, tf.constant(self.local_epochs))
                seen = int(seen)
            except (tf.errors.OpError, ValueError, RuntimeError):
                continue  # a failing client drops out of this round; the others go on
            if seen == 0:
                continue
            present[i], counts[i], self.train_loss[i] = True, seen, float(loss)
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

    def fit(self, rounds: int, absent: Callable[[int], set[int]] | None = None, progress=None,
            checkpoint: str | None = None, tensorboard: str | None = None) -> dict:
        """Runs rounds until `rounds` are done (a restored simulation goes on from its
        checkpoint's round), evaluating every client after each; returns `result()`.

        Args:
            absent: `absent(round)` -> the clients left out of that round.
            progress: `progress(round, validation_accuracies, test_accuracies)` after each round.
            checkpoint: an .npz path rewritten after every round (see `save_checkpoint`).
            tensorboard: a folder for per-round scalars: `validation_accuracy/`,
                `test_accuracy/` and `train_loss/` each with `mean` (over the clients; train
                loss over the clients present) and `client_NN`; step = round number.
        """
        writer = tf.summary.create_file_writer(tensorboard) if tensorboard else None
        try:
            while self.round < rounds:
                present = self.run_round(absent(self.round) if absent else frozenset())
                validation, test = self.evaluate("validation"), self.evaluate("test")
                self._record(present, validation, test)
                if writer is not None:  # before the checkpoint: a resumed round rewrites its step
                    self.write_summaries(writer)
                if checkpoint:
                    self.save_checkpoint(checkpoint)
                if progress is not None:
                    progress(self.round, validation, test)
        finally:
            if writer is not None:
                writer.close()
        return self.result()

    def _record(self, present, validation, test):
        losses = [float(v) if p else None for v, p in zip(self.train_loss, present)]
        row = {"val_mean": float(validation.mean()), "test_mean": float(test.mean()),
               "val_clients": validation.tolist(), "test_clients": test.tolist(), "present": present.tolist(),
               "train_loss_clients": losses,
               "train_loss_mean": float(np.mean([v for v in losses if v is not None])) if present.any() else None}
        for key in HISTORY_KEYS:
            self.history[key].append(row[key])
        if self.best_round == self.round:
            self.best_weights = [w.copy() for w in self.weights]  # the models the figures are of

    @property
    def best_round(self) -> int:
        """The round (1-based) with the best mean validation accuracy, the first if tied; 0 before any."""
        return int(np.argmax(self.history["val_mean"])) + 1 if self.history["val_mean"] else 0

    def result(self) -> dict:
        """The reported figures: `client_accuracy` (per client test accuracy) and
        `mean_accuracy` at `best_round`, and the per-round `history`."""
        if not self.history["val_mean"]:
            raise ValueError("no round has been run")
        best = self.best_round - 1
        return {"best_round": best + 1, "mean_accuracy": self.history["test_mean"][best],
                "client_accuracy": self.history["test_clients"][best], "history": self.history}

    def write_summaries(self, writer) -> None:
        """The last round's scalars (see `fit`) through a `tf.summary` writer."""
        with writer.as_default():
            step = self.round
            for tag, mean, clients in (("validation_accuracy", "val_mean", "val_clients"),
                                       ("test_accuracy", "test_mean", "test_clients"),
                                       ("train_loss", "train_loss_mean", "train_loss_clients")):
                if self.history[mean][-1] is not None:
                    tf.summary.scalar(f"{tag}/mean", self.history[mean][-1], step=step)
                for k, value in enumerate(self.history[clients][-1]):
                    if value is not None:
                        tf.summary.scalar(f"{tag}/client_{k:02d}", value, step=step)
        writer.flush()

    def save_checkpoint(self, path: str) -> None:
        """Everything a resumed run needs, in one .npz written atomically: every client's
        personalised weights, the mixing matrix, the round counter, the history (JSON) and
        the best-validation round's weights. Nothing else carries over between rounds:
        clients use plain SGD (no optimizer state) and round r's data order is a function of
        r (`make_clients`)."""
        arrays = {f"weights_{k}": w for k, w in enumerate(self.weights)}
        if self.best_weights is not None and self.best_round != self.round:  # else they are the weights
            arrays.update({f"best_{k}": w for k, w in enumerate(self.best_weights)})
        arrays.update(round=np.int64(self.round), matrix=self.matrix, algorithm=np.str_(self.algorithm),
                      history=np.str_(json.dumps(self.history)))
        staging = f"{path}.partial.npz"
        np.savez(staging, **arrays)
        os.replace(staging, path)

    def restore(self, path: str) -> None:
        """Continues from a `save_checkpoint` file of a simulation built the same way."""
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["algorithm"]) != self.algorithm:
                raise ValueError(f"{path}: a checkpoint of {saved['algorithm']}, not {self.algorithm}")
            weights = [saved[f"weights_{k}"] for k in range(len(self.weights))]
            shapes = [w.shape for w in weights] + [saved["matrix"].shape]
            if shapes != [w.shape for w in self.weights] + [self.matrix.shape]:
                raise ValueError(f"{path}: weights of other shapes than this model's over {len(self.clients)} clients")
            self.weights, self.matrix, self.round = weights, saved["matrix"], int(saved["round"])
            self.history = json.loads(str(saved["history"]))
            best = [saved[f"best_{k}"] for k in range(len(weights))] if "best_0" in saved.files else None
        self.best_weights = best if best is not None else [w.copy() for w in self.weights] if self.round else None
