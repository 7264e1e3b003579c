"""FedAP and its baselines as TensorFlow Federated iterative processes.

Federated environment only (TF 2.14, Keras 2, tensorflow-federated 0.87): TFF takes only
tf.keras (Keras 2) models. The server state holds every client's personalised model as
stacks `[N, ...]` (one row per client), the mixing matrix and the round number. Each round:

1. each client's id is read from its data (feature `client`) and `tff.federated_select`
   sends it its own row only: its personalised weights, whether the server holds its BN
   statistics, and the round number;
2. a FedAP client whose statistics the server lacks measures its BN-input statistics
   (inference mode, before training, on its model or on the given statistics model); then
   it runs its local SGD epochs;
3. it sends back its id, its trained row, statistics, example count and loss; a
   `tff.federated_aggregate` places each client's values in its row of `[N, ...]` stacks on
   the server: only a client's own weights and statistics leave it, and no client sees
   another's model;
4. the server applies `round_update`, the same function as the local engine, which gives
   each client its own aggregate (FedAP: W @ stack for the non-BN variables).

Traffic per client and round is one model each way plus the statistics (`client_traffic`
counts it from the process's types), independent of the number of clients.

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

    @tff.tensorflow.computation(sequence_type)
    def client_key(dataset):
        """The client's row index, the key of its row (`[1]`; row 0 for an empty dataset,
        which takes no part in the round)."""
        return tf.reshape(tf.maximum(client_of(dataset), 0), [1])

    @tff.tensorflow.computation(state_type, np.int32)
    def own_row(state, key):
        """What client `key` receives (keys sorted: TFF sends sequences of unambiguous
        structures only)."""
        return collections.OrderedDict(measured=tf.gather(state["measured"], key), round=state["round"],
                                       weights=[tf.gather(stack, key) for stack in state["weights"]])

    @tff.tensorflow.computation(tff.SequenceType(own_row.type_signature.result), sequence_type)
    def client_work(selected, dataset):
        model = model_fn()
        train = make_local_trainer(model, learning_rate, prox, with_loss=True, prox_form=prox_form)
        bn_inputs = bn_input_model(model) if spec.needs_similarity else None

        @tf.function
        def work():
            received = selected.get_single_element()
            client = client_of(dataset)
            measure = tf.logical_not(received["measured"]) & (received["round"] >= pretrain_rounds)
            means = [tf.zeros([w], tf.float64) for w in widths]
            variances = [tf.zeros([w], tf.float64) for w in widths]
            if bn_inputs is not None:
                for variable, value in zip(model.weights, statistics_start or received["weights"]):
                    variable.assign(value)

                def measured():
                    return [(mean, var) for _, mean, var in client_bn_statistics(model, dataset, bn_inputs)]

                statistics = tf.cond(measure, measured, lambda: list(zip(means, variances)))
                means, variances = [m for m, _ in statistics], [v for _, v in statistics]
            for variable, value in zip(model.weights, received["weights"]):
                variable.assign(value)
            seen, loss = train(dataset, tf.constant(local_epochs), received["round"] > 0)
            return collections.OrderedDict(
                arrived=tf.cast(measure, tf.float32), client=tf.maximum(client, 0), count=tf.cast(seen, tf.float32),
                loss=loss, means=means, present=tf.cast((client >= 0) & (seen > 0), tf.float32),
                variances=variances, weights=[tf.identity(v) for v in model.weights])

        return work()

    sent_type = client_work.type_signature.result

    @tff.tensorflow.computation
    def no_sums():
        """The server's accumulator: one row per client of everything a client sends."""
        return collections.OrderedDict(
            arrived=tf.zeros([n]), counts=tf.zeros([n]), losses=tf.zeros([n]),
            means=[tf.zeros([n, w], tf.float64) for w in widths], present=tf.zeros([n]),
            variances=[tf.zeros([n, w], tf.float64) for w in widths],
            weights=[tf.zeros([n, *w.shape], tf.as_dtype(w.dtype)) for w in sent_type["weights"]])

    sums_type = no_sums.type_signature.result

    @tff.tensorflow.computation(sums_type, sent_type)
    def place_row(sums, sent):
        """Adds a client's values to its row; the row is zero until then, so the stacks hold
        the values exactly (nothing is added to a client that did not take part)."""
        one_hot = tf.one_hot(sent["client"], n) * sent["present"]
        arrived = one_hot * sent["arrived"]

        def spread(mask, value):
            return tf.reshape(tf.cast(mask, value.dtype), [n] + [1] * len(value.shape)) * value[None]

        return collections.OrderedDict(
            arrived=sums["arrived"] + arrived, counts=sums["counts"] + one_hot * sent["count"],
            losses=sums["losses"] + one_hot * sent["loss"],
            means=[s + spread(arrived, m) for s, m in zip(sums["means"], sent["means"])],
            present=sums["present"] + one_hot,
            variances=[s + spread(arrived, v) for s, v in zip(sums["variances"], sent["variances"])],
            weights=[s + spread(one_hot, w) for s, w in zip(sums["weights"], sent["weights"])])

    @tff.tensorflow.computation(sums_type, sums_type)
    def merge_sums(a, b):
        return collections.OrderedDict(
            (key, [x + y for x, y in zip(a[key], b[key])] if key in STACKED else a[key] + b[key])
            for key in ("arrived", "counts", "losses", "means", "present", "variances", "weights"))

    @tff.tensorflow.computation(sums_type)
    def report(sums):
        return sums

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
        keys = tff.federated_map(client_key, client_data)
        selected = tff.federated_select(keys, tff.federated_value(n - 1, tff.SERVER), state, own_row)
        sent = tff.federated_map(client_work, (selected, client_data))
        sums = tff.federated_aggregate(sent, no_sums(), place_row, merge_sums, report)
        return tff.federated_map(server_update, (state, sums))

    return tff.templates.IterativeProcess(initialize, next_fn)


def client_of(dataset) -> tf.Tensor:
    """The `client` feature of a dataset's first element (int32; -1 when it is empty)."""
    return dataset.reduce(tf.constant(-1, tf.int32),
                          lambda found, e: tf.where(found >= 0, found, tf.cast(e["client"][0], tf.int32)))


STACKED = ("means", "variances", "weights")  # the accumulator's per-layer lists

# Intrinsics that move values from the server to the clients and from the clients to it.
TO_CLIENTS = ("federated_broadcast", "federated_select", "federated_secure_select")
FROM_CLIENTS = ("federated_sum", "federated_mean", "federated_weighted_mean", "federated_aggregate",
                "federated_secure_sum", "federated_secure_sum_bitwidth")


def client_traffic(process) -> dict:
    """Bytes one client receives and sends per round of `process`, read from the types of the
    values its round moves between server and clients (every broadcast / select and every
    sum / aggregate in `process.next`): `{"received": int, "sent": int}`. Counts tensor
    contents only (not TFF's serialisation). Sequences delivered by a select count one
    element per key.

    Example (federated environment):
    >>> client_traffic(build_fedap_process(model_fn, 10, spec))   # doctest: +SKIP
    {'received': 248713, 'sent': 248733}
    """
    import tensorflow_federated as tff

    traffic = {"received": 0, "sent": 0}

    def visit(block):
        if isinstance(block, tff.framework.Call) and isinstance(block.function, tff.framework.Intrinsic):
            uri, argument = block.function.uri, block.argument.type_signature
            if uri in TO_CLIENTS:
                member = block.type_signature.member
                keys = argument[0].member.shape[0] if uri != "federated_broadcast" else 1
                values = member.element if isinstance(member, tff.SequenceType) else member
                traffic["received"] += keys * type_bytes(values)
            elif uri in FROM_CLIENTS:
                value = argument[0] if isinstance(argument, tff.StructType) else argument
                traffic["sent"] += type_bytes(value.member)
        for child in block.children():
            visit(child)

    visit(process.next.to_building_block())
    return traffic


def type_bytes(type_spec) -> int:
    """Bytes of the tensors of a TFF type (fully defined shapes)."""
    import tensorflow_federated as tff

    if isinstance(type_spec, tff.TensorType):
        return int(np.prod(type_spec.shape, dtype=np.int64)) * np.dtype(type_spec.dtype).itemsize
    if isinstance(type_spec, tff.StructType):
        return sum(type_bytes(element) for element in type_spec)
    raise TypeError(f"type_bytes: no byte count for {type_spec}")


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
