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
import warnings
from typing import Callable

import numpy as np
import tensorflow as tf

from kerastl.federated.aggregation import round_update, shared_variables
from kerastl.federated.algorithms import get_algorithm
from kerastl.federated.local_training import make_evaluator, make_local_trainer
from kerastl.federated.statistics import bn_input_model, client_bn_statistics

# Per round, in `FederatedSimulation.history`: mean and per-client validation / test accuracy,
# the clients present, their mean training loss (None for an absent client), and the clients
# dropped because their data pipeline or training raised (indices).
HISTORY_KEYS = ("val_mean", "test_mean", "val_clients", "test_clients", "present", "train_loss_mean",
                "train_loss_clients", "failed_clients")
# The errors a client's data or local training can cause (a broken file, a corrupt record, a
# failed check in its pipeline, memory): the client is dropped for the round. Anything else is
# a bug and stops the run.
CLIENT_ERRORS = (tf.errors.OpError, OSError)


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
        prox_mu: FedProx's mu; `prox_form` "norm" (the reference's unsquared norm) or "squared"
            (FedProx's paper). As the reference, round 0 trains without the term.
        local_layers: FedPer's number of last weighted layers kept local.
        pretrain_rounds: FedAP's FedAvg rounds before W is computed (0: W from the initial model).
        initial_weights: the clients' common starting weights (default: the built model's).
        sample_weighted: FedAvg-family rows by sample share n_j / sum n instead of the
            reference's uniform 1/N.
        statistics_weights: FedAP: the weights of the model the clients measure their BN
            statistics on, e.g. a model pre-trained on a pooled share of the data as the
            reference computes W (`pretrain_rounds` must then be 0). Default: each client's
            own model at round `pretrain_rounds`.
    """

    def __init__(self, model_fn: Callable, clients: list[Client], algorithm: str = "fedap",
                 learning_rate: float = 0.01, local_epochs: int = 1, self_weight: float = 0.5,
                 prox_mu: float = 1e-3, local_layers: int = 1, pretrain_rounds: int = 1, initial_weights=None,
                 sample_weighted: bool = False, prox_form: str = "norm", statistics_weights=None):
        self.spec = get_algorithm(algorithm)  # the algorithm's properties
        if statistics_weights is not None and pretrain_rounds != 0:
            raise ValueError(f"pretrain_rounds {pretrain_rounds}: statistics on given weights need 0 FedAvg rounds")
        self.model = model_fn()
        self.clients = list(clients)
        self.algorithm = algorithm
        self.local_epochs = int(local_epochs)
        self.self_weight = float(self_weight)
        self.pretrain_rounds = int(pretrain_rounds)
        self.sample_weighted = bool(sample_weighted)
        self.statistics_weights = None if statistics_weights is None else [np.asarray(w) for w in statistics_weights]
        self.shared = shared_variables(self.model, algorithm, local_layers)
        self._train = make_local_trainer(self.model, learning_rate, prox_mu if self.spec.proximal else 0.0,
                                         with_loss=True, prox_form=prox_form)
        self._evaluate = make_evaluator(self.model)
        self._bn_inputs = bn_input_model(self.model) if self.spec.needs_similarity else None
        start = initial_weights if initial_weights is not None else self.model.get_weights()
        n = len(self.clients)
        self.weights = [np.stack([np.asarray(w)] * n) for w in start]
        self.matrix = np.eye(n, dtype=np.float32)
        # The BN statistics the server holds (per layer [N, channels]) and which clients sent theirs.
        widths = statistics_widths(self._bn_inputs)
        self.means = [np.zeros((n, w)) for w in widths]
        self.variances = [np.zeros((n, w)) for w in widths]
        self.measured = np.zeros(n, bool)
        self.round = 0
        self.train_loss = np.full(n, np.nan)  # each client's mean training loss in the last round
        self.failed = []  # the clients dropped in the last round because they raised
        self.history = {key: [] for key in HISTORY_KEYS}
        self.best_weights = None  # every client's model at the best-validation round

    def client_weights(self, index: int) -> list[np.ndarray]:
        return [stack[index] for stack in self.weights]

    def needs_statistics(self, index: int) -> bool:
        """Whether client `index` measures its BN statistics when it takes part this round."""
        return self.spec.needs_similarity and self.round >= self.pretrain_rounds and not self.measured[index]

    def run_round(self, absent: set[int] = frozenset()) -> np.ndarray:
        """One round; clients in `absent` or with no data are left out, and so are clients whose
        data pipeline or training raises one of `CLIENT_ERRORS` (with a warning naming the
        client and the error; `failed` lists them). Returns the bool mask of the clients that
        took part."""
        n = len(self.clients)
        trained = [stack.copy() for stack in self.weights]
        present = np.zeros(n, bool)
        counts = np.zeros(n, np.float32)
        arrived = ([np.zeros_like(m) for m in self.means], [np.zeros_like(v) for v in self.variances],
                   np.zeros(n, bool))
        self.train_loss = np.full(n, np.nan)
        self.failed = []
        for i, client in enumerate(self.clients):
            if i in absent:
                continue
            data = client.training_data(self.round)
            try:
                statistics = self._measure(i, data) if self.needs_statistics(i) else None
                self.model.set_weights(self.client_weights(i))
                seen, loss = self._train(data, tf.constant(self.local_epochs), tf.constant(self.round > 0))
                seen = int(seen)
            except CLIENT_ERRORS as error:
                report_failure(self.round, i, client.name, error)
                self.failed.append(i)
                continue
            if seen == 0:
                continue
            present[i], counts[i], self.train_loss[i] = True, seen, float(loss)
            for stack, value in zip(trained, self.model.get_weights()):
                stack[i] = value
            if statistics is not None:
                for layer, (_, mean, var) in enumerate(statistics):
                    arrived[0][layer][i], arrived[1][layer][i] = mean.numpy(), var.numpy()
                arrived[2][i] = True
        self._aggregate(present, counts, trained, arrived)
        self.round += 1
        return present

    def _measure(self, index: int, data):
        """Client `index`'s BN statistics on its own model or on `statistics_weights`."""
        self.model.set_weights(self.statistics_weights or self.client_weights(index))
        return client_bn_statistics(self.model, data, self._bn_inputs)

    def _aggregate(self, present, counts, trained, arrived):
        if present.any():
            constants = lambda arrays: [tf.constant(a) for a in arrays]  # noqa: E731
            new, matrix, statistics = round_update(
                self.algorithm, self.round, constants(self.weights), constants(trained), present, counts, self.matrix,
                (constants(self.means), constants(self.variances), self.measured),
                (constants(arrived[0]), constants(arrived[1]), arrived[2]), self.shared, self.self_weight,
                self.pretrain_rounds, self.sample_weighted)
            self.weights = [w.numpy() for w in new]
            self.matrix = matrix.numpy()
            self.means = [np.asarray(m) for m in statistics[0]]
            self.variances = [np.asarray(v) for v in statistics[1]]
            self.measured = np.asarray(statistics[2], bool)

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
               "train_loss_clients": losses, "failed_clients": list(self.failed),
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
        `mean_accuracy` at `best_round`, `failed_client_rounds` (how many times a client was
        dropped because it raised) and the per-round `history`."""
        if not self.history["val_mean"]:
            raise ValueError("no round has been run")
        best = self.best_round - 1
        return {"best_round": best + 1, "mean_accuracy": self.history["test_mean"][best],
                "client_accuracy": self.history["test_clients"][best],
                "failed_client_rounds": sum(len(f) for f in self.history["failed_clients"]), "history": self.history}

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
            tf.summary.scalar("failed_clients", len(self.history["failed_clients"][-1]), step=step)
        writer.flush()

    def save_checkpoint(self, path: str) -> None:
        """Everything a resumed run needs, in one .npz written atomically: every client's
        personalised weights, the mixing matrix, the BN statistics held for it, the round
        counter, the history (JSON) and the best-validation round's weights. Nothing else carries over between rounds:
        clients use plain SGD (no optimizer state) and round r's data order is a function of
        r (`make_clients`)."""
        arrays = {f"weights_{k}": w for k, w in enumerate(self.weights)}
        if self.best_weights is not None and self.best_round != self.round:  # else they are the weights
            arrays.update({f"best_{k}": w for k, w in enumerate(self.best_weights)})
        arrays.update({f"means_{k}": m for k, m in enumerate(self.means)})
        arrays.update({f"variances_{k}": v for k, v in enumerate(self.variances)})
        arrays.update(round=np.int64(self.round), matrix=self.matrix, algorithm=np.str_(self.algorithm),
                      measured=self.measured, history=np.str_(json.dumps(self.history)))
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
            self.means = [saved[f"means_{k}"] for k in range(len(self.means))]
            self.variances = [saved[f"variances_{k}"] for k in range(len(self.variances))]
            self.measured = saved["measured"]
            self.history = json.loads(str(saved["history"]))
            best = [saved[f"best_{k}"] for k in range(len(weights))] if "best_0" in saved.files else None
        self.best_weights = best if best is not None else [w.copy() for w in self.weights] if self.round else None


def statistics_widths(bn_inputs) -> list[int]:
    """Channels of every BN layer's input (`[1]` without a BN-input model: no statistics)."""
    if bn_inputs is None:
        return [1]
    outputs = bn_inputs.outputs if isinstance(bn_inputs.outputs, (list, tuple)) else [bn_inputs.outputs]
    return [int(t.shape[-1]) for t in outputs]


def report_failure(round_index: int, index: int, name: str, error: BaseException) -> None:
    """The warning of a client dropped from a round because it raised."""
    warnings.warn(f"round {round_index + 1}: client {index} ({name or 'unnamed'}) dropped from the round: "
                  f"{type(error).__name__}: {error_summary(error)}", RuntimeWarning, stacklevel=2)


def error_summary(error: BaseException) -> str:
    """The line of an error's message that says what failed: TF's graph errors open with
    "Graph execution error:" and the trace of where the op was defined."""
    lines = [line.strip() for line in str(getattr(error, "message", "") or error).splitlines()]
    said = [line for line in lines if line and not line.startswith(("Graph execution error", "Detected at node",
                                                                        "File ", "[[", "Stack trace"))
            and not line.endswith(":")]
    return next((line for line in said if "failed" in line or "rror" in line), said[-1] if said else "")


def pooled_share(data, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`(x, y)`: a `share` of every class of the clients' pooled training examples (seeded),
    the data the reference pre-trains its statistics model on. (The reference draws 30 % of
    the whole set, the clients' test and validation examples included; only training
    examples are used here.)"""
    x = np.concatenate([c.x_train for c in data.clients])
    y = np.concatenate([c.y_train for c in data.clients])
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == label))[:int(round(share * np.sum(y == label)))]
              for label in np.unique(y)]
    chosen = np.sort(np.concatenate(chosen))
    return x[chosen], y[chosen]


def pretrain_statistics_model(model_fn: Callable, data, share: float = 0.3, epochs: int = 150,
                              learning_rate: float = 0.01, batch_size: int = 32, seed: int = 0,
                              initial_weights=None) -> list[np.ndarray]:
    """FedAP's W as the reference computes it: a model trained with plain SGD for `epochs`
    epochs on `pooled_share(data, share)` (shuffled every epoch), from `initial_weights` (the
    clients' start, by default the built model's); returns its weights, to be given to the
    engines as `statistics_weights`. The clients themselves start from the initial weights.

    Example:
    >>> weights = pretrain_statistics_model(build_model, data, 0.3, epochs=150)   # doctest: +SKIP
    >>> sim = FederatedSimulation(build_model, clients, "fedap", pretrain_rounds=0,
    ...                           statistics_weights=weights)                       # doctest: +SKIP
    """
    x, y = pooled_share(data, share, seed)
    model = model_fn()
    if initial_weights is not None:
        model.set_weights(initial_weights)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if x.dtype == np.uint8:
        dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32) / 255.0, labels))
    make_local_trainer(model, learning_rate)(dataset, tf.constant(int(epochs)))
    return model.get_weights()
