"""FedAP and its baselines as TensorFlow Federated iterative processes.

Federated environment only (TF 2.14, Keras 2, tensorflow-federated 0.87): TFF takes only
tf.keras (Keras 2) models. The server state holds every client's personalised model as
stacks `[N, ...]` (one row per client), the mixing matrix and the round number. Each round:

1. the stacks, the round number and which clients' BN statistics the server holds are
   broadcast; each client `tf.gather`s its own row by the client id carried in its data
   (feature `client`);
2. a FedAP client whose statistics the server lacks measures its BN-input statistics
   (inference mode, before training, on its model or on the given statistics model); then
   it runs its local SGD epochs;
3. it returns its trained row, statistics and example count scattered into `[N, ...]`
   zeros with a one-hot presence mask, so `federated_sum` rebuilds the stacks on the
   server: only weights and statistics leave a client;
4. the server applies `round_update`, the same function as the local engine, which gives
   each client its own aggregate (FedAP: W @ stack for the non-BN variables).

A client that is not in `client_data`, or whose dataset is empty, is absent from the round:
it keeps its model, and the weights are renormalised over the clients present.
`TFFSimulation` runs each client's data pipeline once before the round: a client whose
pipeline raises is left out of the round with a warning, as in the local engine.

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
from kerastl.federated.simulation import CLIENT_ERRORS, FederatedSimulation, report_failure, statistics_widths
from kerastl.federated.statistics import bn_input_model, client_bn_statistics


def build_fedap_process(model_fn, num_clients: int, element_spec, algorithm: str = "fedap",
                        learning_rate: float = 0.01, local_epochs: int = 1, self_weight: float = 0.5,
                        prox_mu: float = 1e-3, local_layers: int = 1, pretrain_rounds: int = 1,
                        initial_weights=None, sample_weighted: bool = False, prox_form: str = "norm",
                        statistics_weights=None):
    """A `tff.templates.IterativeProcess` running `algorithm` over `num_clients` clients.

    Args:
        model_fn: builds the tf.keras model (logits out); called inside TFF computations.
        element_spec: the clients' batched dataset element spec, a dict with `x`, `y` and
            `client` (the client's row index, int32, repeated per example).
        The other arguments are `FederatedSimulation`'s.

    State: `{"round": int32, "weights": [stack [N, ...] per model variable], "matrix": [N, N],
    "train_loss": [N], "means": [[N, channels] per BN layer], "variances": (the same),
    "measured": bool [N]}` (train_loss: each client's mean training loss in the last round, 0 if
    absent; means, variances and measured: the BN statistics the server holds for W). A state of
    this structure from elsewhere (a checkpoint) can be passed to `next`.
    """
    import tensorflow_federated as tff

    spec = get_algorithm(algorithm)
    if statistics_weights is not None and pretrain_rounds != 0:
        raise ValueError(f"pretrain_rounds {pretrain_rounds}: statistics on given weights need 0 FedAvg rounds")
    if not {"x", "y", "client"} <= set(element_spec):
        raise ValueError(f"element_spec: expected a dict with x, y and client, got {element_spec}")
    n = int(num_clients)
    probe = model_fn()
    start = [np.asarray(w) for w in (initial_weights if initial_weights is not None else probe.get_weights())]
    shared = shared_variables(probe, algorithm, local_layers)
    widths = statistics_widths(bn_input_model(probe) if spec.needs_similarity else None)
    statistics_start = None if statistics_weights is None else [np.asarray(w) for w in statistics_weights]
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
            train_loss=tf.zeros([n], tf.float32),
            means=[tf.zeros([n, w], tf.float64) for w in widths],
            variances=[tf.zeros([n, w], tf.float64) for w in widths],
            measured=tf.zeros([n], tf.bool))

    state_type = initial_state.type_signature.result

    @tff.tensorflow.computation(state_type)
    def to_clients(state):
        """What every client receives (the stacks, the round, who has sent statistics)."""
        return collections.OrderedDict(weights=state["weights"], round=state["round"], measured=state["measured"])

    @tff.tensorflow.computation(to_clients.type_signature.result, sequence_type)
    def client_work(received, dataset):
        model = model_fn()
        train = make_local_trainer(model, learning_rate, prox, with_loss=True, prox_form=prox_form)
        bn_inputs = bn_input_model(model) if spec.needs_similarity else None

        @tf.function
        def work():
            client = dataset.reduce(tf.constant(-1, tf.int32),
                                    lambda found, e: tf.where(found >= 0, found, tf.cast(e["client"][0], tf.int32)))
            row = tf.maximum(client, 0)
            measure = tf.logical_not(tf.gather(received["measured"], row)) & (received["round"] >= pretrain_rounds)
            means = [tf.zeros([w], tf.float64) for w in widths]
            variances = [tf.zeros([w], tf.float64) for w in widths]
            if bn_inputs is not None:
                source = statistics_start or [tf.gather(stack, row) for stack in received["weights"]]
                for variable, value in zip(model.weights, source):
                    variable.assign(value)

                def measured():
                    return [(mean, var) for _, mean, var in client_bn_statistics(model, dataset, bn_inputs)]

                statistics = tf.cond(measure, measured, lambda: list(zip(means, variances)))
                means, variances = [m for m, _ in statistics], [v for _, v in statistics]
            for variable, stack in zip(model.weights, received["weights"]):
                variable.assign(tf.gather(stack, row))
            seen, loss = train(dataset, tf.constant(local_epochs), received["round"] > 0)
            present = tf.cast((client >= 0) & (seen > 0), tf.float32)
            one_hot = tf.one_hot(row, n) * present
            arrived = one_hot * tf.cast(measure, tf.float32)
            return collections.OrderedDict(
                weights=[tf.reshape(tf.cast(one_hot, v.dtype), [n] + [1] * len(v.shape)) * v[None]
                         for v in model.weights],
                means=[tf.cast(arrived, tf.float64)[:, None] * m[None] for m in means],
                variances=[tf.cast(arrived, tf.float64)[:, None] * v[None] for v in variances],
                arrived=arrived,
                present=one_hot,
                counts=one_hot * tf.cast(seen, tf.float32),
                losses=one_hot * loss)

        return work()

    sums_type = client_work.type_signature.result

    @tff.tensorflow.computation(state_type, sums_type)
    def server_update(state, sums):
        present = sums["present"] > 0
        weights, matrix, statistics = round_update(
            algorithm, state["round"], list(state["weights"]), list(sums["weights"]), present, sums["counts"],
            state["matrix"], (list(state["means"]), list(state["variances"]), state["measured"]),
            (list(sums["means"]), list(sums["variances"]), sums["arrived"] > 0), shared, self_weight,
            pretrain_rounds, sample_weighted)
        means, variances, measured = statistics
        return collections.OrderedDict(round=state["round"] + 1, weights=weights, matrix=matrix,
                                       train_loss=sums["losses"], means=list(means), variances=list(variances),
                                       measured=measured)

    @tff.federated_computation
    def initialize():
        return tff.federated_eval(initial_state, tff.SERVER)

    @tff.federated_computation(tff.FederatedType(state_type, tff.SERVER),
                               tff.FederatedType(sequence_type, tff.CLIENTS))
    def next_fn(state, client_data):
        received = tff.federated_broadcast(tff.federated_map(to_clients, state))
        outputs = tff.federated_map(client_work, (received, client_data))
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
                 local_epochs: int = 1, self_weight: float = 0.5, prox_mu: float = 1e-3, local_layers: int = 1,
                 pretrain_rounds: int = 1, initial_weights=None, sample_weighted: bool = False,
                 prox_form: str = "norm", statistics_weights=None):
        from kerastl.federated.remote import let_workers_stop_on_sigint

        let_workers_stop_on_sigint()  # before TFF starts its local worker
        if initial_weights is None:
            initial_weights = model_fn().get_weights()
        spec = with_client_ids(clients[0].train, 0).element_spec
        options = dict(learning_rate=learning_rate, local_epochs=local_epochs, self_weight=self_weight,
                       prox_mu=prox_mu, local_layers=local_layers, pretrain_rounds=pretrain_rounds,
                       initial_weights=initial_weights, sample_weighted=sample_weighted, prox_form=prox_form,
                       statistics_weights=statistics_weights)
        # Keras 2 invalidates eager models made before a model is built inside a graph (which
        # TFF's tracing does), so the process comes first and the evaluation model after it.
        self.process = build_fedap_process(model_fn, len(clients), spec, algorithm, **options)
        super().__init__(model_fn, clients, algorithm, **options)
        self.state = self.process.initialize()

    def run_round(self, absent=frozenset()):
        """As the local engine's; a client whose data pipeline raises (checked by running it
        once here, before the round) is left out with a warning."""
        data, self.failed = [], []
        for i, client in enumerate(self.clients):
            if i in absent:
                continue
            dataset = with_client_ids(client.training_data(self.round), i)
            try:
                for _ in dataset:
                    pass
            except CLIENT_ERRORS as error:
                report_failure(self.round, i, client.name, error)
                self.failed.append(i)
                continue
            data.append(dataset)
        self.state = self.process.next(self.state, data)
        self._read_state()
        left_out = set(absent) | set(self.failed)
        present = np.array([i not in left_out for i in range(len(self.clients))])
        self.train_loss = np.where(present, np.asarray(self.state["train_loss"], np.float64), np.nan)
        return present

    def _read_state(self):
        self.weights = [np.asarray(w) for w in self.state["weights"]]
        self.matrix = np.asarray(self.state["matrix"])
        self.means = [np.asarray(m) for m in self.state["means"]]
        self.variances = [np.asarray(v) for v in self.state["variances"]]
        self.measured = np.asarray(self.state["measured"], bool)
        self.round = int(self.state["round"])

    def restore(self, path: str) -> None:
        super().restore(path)
        self.state = collections.OrderedDict(
            round=np.int32(self.round), weights=[w.copy() for w in self.weights], matrix=self.matrix,
            train_loss=np.zeros(len(self.clients), np.float32), means=[m.copy() for m in self.means],
            variances=[v.copy() for v in self.variances], measured=self.measured.copy())
