"""FedAP and its baselines as TensorFlow Federated iterative processes.

Federated environment only (TF 2.14, Keras 2, tensorflow-federated 0.87): TFF takes only
tf.keras (Keras 2) models. The server state holds every client's personalised model as
stacks `[N, ...]` (one row per client), the mixing matrix and the round number. Each round:

1. the stacks are broadcast; each client `tf.gather`s its own row by the client id carried
   in its data (feature `client`);
2. the client measures its BN-input statistics (inference mode, before training) and runs
   its local SGD epochs;
3. it returns its trained row, statistics and example count scattered into `[N, ...]`
   zeros with a one-hot presence mask, so `federated_sum` rebuilds the stacks on the
   server: only weights and statistics leave a client;
4. the server applies `round_update`, the same function as the local engine, which gives
   each client its own aggregate (FedAP: W @ stack for the non-BN variables).

A client that is not in `client_data`, or whose dataset is empty, is absent from the round:
it keeps its model, and the weights are renormalised over the clients present.

Example (federated environment):
>>> process = build_fedap_process(model_fn, num_clients=4, element_spec=data[0].element_spec)
>>> state = process.initialize()
>>> state = process.next(state, data)        # data: one dataset per client, in any order
>>> weights_of_client_2 = [w[2] for w in state["weights"]]
"""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from kerastl.federated.aggregation import round_update, shared_variables
from kerastl.federated.algorithms import get_algorithm
from kerastl.federated.local_training import make_local_trainer
from kerastl.federated.simulation import FederatedSimulation
from kerastl.federated.statistics import bn_input_model, client_bn_statistics


def build_fedap_process(model_fn, num_clients: int, element_spec, algorithm: str = "fedap",
                        learning_rate: float = 0.01, local_epochs: int = 1, self_weight: float = 0.5,
                        prox_mu: float = 0.01, local_layers: int = 1, pretrain_rounds: int = 1,
                        initial_weights=None):
    """A `tff.templates.IterativeProcess` running `algorithm` over `num_clients` clients.

    Args:
        model_fn: builds the tf.keras model (logits out); called inside TFF computations.
        element_spec: the clients' batched dataset element spec, a dict with `x`, `y` and
            `client` (the client's row index, int32, repeated per example).
        The other arguments are `FederatedSimulation`'s.

    State: `{"round": int32, "weights": [stack [N, ...] per model variable], "matrix": [N, N],
    "train_loss": [N]}` (each client's mean training loss in the last round, 0 if absent). A
    state of this structure from elsewhere (a checkpoint) can be passed to `next`.
    """
    import tensorflow_federated as tff

    spec = get_algorithm(algorithm)
    if not {"x", "y", "client"} <= set(element_spec):
        raise ValueError(f"element_spec: expected a dict with x, y and client, got {element_spec}")
    n = int(num_clients)
    probe = model_fn()
    start = [np.asarray(w) for w in (initial_weights if initial_weights is not None else probe.get_weights())]
    shared = shared_variables(probe, algorithm, local_layers)
    stack_types = [tff.TensorType(w.dtype, [n, *w.shape]) for w in start]
    # TFF 0.87 types take numpy dtypes, not tf.DType.
    sequence_type = tff.SequenceType(collections.OrderedDict(
        (key, tff.TensorType(element_spec[key].dtype.as_numpy_dtype, element_spec[key].shape))
        for key in sorted(element_spec)))
    prox = prox_mu if spec.proximal else 0.0

    @tff.tensorflow.computation
    def initial_state():
        return collections.OrderedDict(
            round=tf.constant(0, tf.int32),
            weights=[tf.constant(np.stack([w] * n)) for w in start],
            matrix=tf.eye(n, dtype=tf.float32),
            train_loss=tf.zeros([n], tf.float32))

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(stack_types, sequence_type)
    def client_work(stacks, dataset):
        model = model_fn()
        train = make_local_trainer(model, learning_rate, prox, with_loss=True)
        bn_inputs = bn_input_model(model) if spec.needs_similarity else None

        @tf.function
        def work():
            client = dataset.reduce(tf.constant(-1, tf.int32),
                                    lambda found, e: tf.where(found >= 0, found, tf.cast(e["client"][0], tf.int32)))
            row = tf.maximum(client, 0)
            for variable, stack in zip(model.weights, stacks):
                variable.assign(tf.gather(stack, row))
            if bn_inputs is not None:
                statistics = client_bn_statistics(model, dataset, bn_inputs)
                means = [mean for _, mean, _ in statistics]
                variances = [var for _, _, var in statistics]
            else:
                means = variances = [tf.zeros([1], tf.float64)]
            seen, loss = train(dataset, tf.constant(local_epochs))
            present = tf.cast((client >= 0) & (seen > 0), tf.float32)
            one_hot = tf.one_hot(row, n) * present
            return collections.OrderedDict(
                weights=[tf.reshape(tf.cast(one_hot, v.dtype), [n] + [1] * len(v.shape)) * v[None]
                         for v in model.weights],
                means=[tf.cast(one_hot, tf.float64)[:, None] * m[None] for m in means],
                variances=[tf.cast(one_hot, tf.float64)[:, None] * v[None] for v in variances],
                present=one_hot,
                counts=one_hot * tf.cast(seen, tf.float32),
                losses=one_hot * loss)

        return work()

    sums_type = client_work.type_signature.result

    @tff.tensorflow.computation(state_type, sums_type)
    def server_update(state, sums):
        present = sums["present"] > 0
        weights, matrix = round_update(algorithm, state["round"], list(state["weights"]), list(sums["weights"]),
                                       present, sums["counts"], state["matrix"], list(sums["means"]),
                                       list(sums["variances"]), shared, self_weight, pretrain_rounds)
        return collections.OrderedDict(round=state["round"] + 1, weights=weights, matrix=matrix,
                                       train_loss=sums["losses"])

    @tff.federated_computation
    def initialize():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(tff.FederatedType(state_type, tff.SERVER),
                               tff.FederatedType(sequence_type, tff.CLIENTS))
    def next_fn(state, client_data):
        stacks = tff.federated_broadcast(state.weights)
        outputs = tff.federated_map(client_work, (stacks, client_data))
        return tff.federated_map(server_update, (state, tff.federated_sum(outputs)))

    return tff.templates.IterativeProcess(initialize, next_fn)


def with_client_ids(dataset: tf.data.Dataset, client: int) -> tf.data.Dataset:
    """`(x, y)` batches -> the process's elements: OrderedDict(client, x, y), `client`
    repeated per example (sorted keys: TFF serialises only unambiguous containers)."""
    return dataset.map(lambda x, y: collections.OrderedDict(
        client=tf.fill(tf.shape(y)[:1], tf.constant(client, tf.int32)), x=x, y=y))


class TFFSimulation(FederatedSimulation):
    """`FederatedSimulation`'s interface with every round run by the TFF process: the app
    and the parity tests drive both engines the same way. Evaluation reads each client's
    row of the process state (the server holds every personalised model in simulation);
    checkpoints are the local engine's, and `restore` turns one into the process state."""

    def __init__(self, model_fn, clients, algorithm: str = "fedap", learning_rate: float = 0.01,
                 local_epochs: int = 1, self_weight: float = 0.5, prox_mu: float = 0.01, local_layers: int = 1,
                 pretrain_rounds: int = 1, initial_weights=None):
        from kerastl.federated.remote import let_workers_stop_on_sigint

        let_workers_stop_on_sigint()  # before TFF starts its local worker
        if initial_weights is None:
            initial_weights = model_fn().get_weights()
        spec = with_client_ids(clients[0].train, 0).element_spec
        # Keras 2 invalidates eager models made before a model is built inside a graph (which
        # TFF's tracing does), so the process comes first and the evaluation model after it.
        self.process = build_fedap_process(model_fn, len(clients), spec, algorithm, learning_rate, local_epochs,
                                           self_weight, prox_mu, local_layers, pretrain_rounds, initial_weights)
        super().__init__(model_fn, clients, algorithm, learning_rate, local_epochs, self_weight, prox_mu,
                         local_layers, pretrain_rounds, initial_weights)
        self.state = self.process.initialize()

    def run_round(self, absent=frozenset()):
        data = [with_client_ids(c.training_data(self.round), i) for i, c in enumerate(self.clients) if i not in absent]
        self.state = self.process.next(self.state, data)
        self.weights = [np.asarray(w) for w in self.state["weights"]]
        self.matrix = np.asarray(self.state["matrix"])
        self.round = int(self.state["round"])
        present = np.array([i not in absent for i in range(len(self.clients))])
        self.train_loss = np.where(present, np.asarray(self.state["train_loss"], np.float64), np.nan)
        return present

    def restore(self, path: str) -> None:
        super().restore(path)
        self.state = collections.OrderedDict(
            round=np.int32(self.round), weights=[w.copy() for w in self.weights], matrix=self.matrix,
            train_loss=np.zeros(len(self.clients), np.float32))
