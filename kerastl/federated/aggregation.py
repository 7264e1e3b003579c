"""FedAP's client distance and weight matrix, and the aggregation rule of every algorithm.

Each round, client i's variables become `sum_j M_ij theta_j` for the variables the algorithm
shares, and stay its own for the rest (`kerastl.federated.algorithms` says which, per
algorithm). M depends on the algorithm's mixing, with rows over the clients present this round:

| mixing | M |
|---|---|
| sample_share | every row 1/N (the reference's FedAvg), or with `sample_weighted` the sample shares n_j / sum n |
| similarity   | FedAP's W from BN statistics; FedAvg over every variable during `pretrain_rounds` |

A client absent from a round keeps its model; the rows of the others are renormalised over
the clients present. FedAP's W covers the clients whose BN statistics the server holds: a
client absent when W is first computed measures its statistics in the first round it takes
part in, and W is recomputed then, its row and column filled.

Plain TF ops: the same functions run in the local engine and on the
server of the TFF process, which is what makes the two agree to float precision.
"""

from __future__ import annotations

import tensorflow as tf

from kerastl.federated.algorithms import get_algorithm


def fedap_distance(stats_a, stats_b) -> tf.Tensor:
    """sum over BN layers of sqrt(||mu_a - mu_b||^2 + ||sigma_a - sigma_b||^2): the
    2-Wasserstein distance of the layers' diagonal Gaussians, summed over layers.
    `stats_*` are `[(count, mean, variance)]` per BN layer."""
    total = tf.constant(0.0, tf.float64)
    for (_, mean_a, var_a), (_, mean_b, var_b) in zip(stats_a, stats_b):
        total += tf.sqrt(tf.reduce_sum(tf.square(mean_a - mean_b))
                         + tf.reduce_sum(tf.square(tf.sqrt(var_a) - tf.sqrt(var_b))))
    return total


def distance_matrix(means: list[tf.Tensor], variances: list[tf.Tensor]) -> tf.Tensor:
    """[N, N] FedAP distances from per-layer stacks `means[l]`, `variances[l]` of shape
    [N, channels_l] (one row per client), vectorised over client pairs."""
    total = 0.0
    for mean, var in zip(means, variances):
        mean, std = tf.cast(mean, tf.float64), tf.sqrt(tf.cast(var, tf.float64))
        squared = (tf.reduce_sum(tf.square(mean[:, None] - mean[None]), -1)
                   + tf.reduce_sum(tf.square(std[:, None] - std[None]), -1))
        total += tf.sqrt(squared)
    return total


def fedap_weights(distances: tf.Tensor, self_weight: float, present: tf.Tensor | None = None) -> tf.Tensor:
    """FedAP's matrix: W_ii = self_weight; off the diagonal, the inverse distances of row i
    normalised to sum to 1 - self_weight (a zero distance counts as inverse 1e14, as in the
    reference). Clients not `present` (bool [N]) get weight 0 in every other row, and keep
    themselves only (W_ii = 1)."""
    distances = tf.cast(distances, tf.float64)
    n = tf.shape(distances)[0]
    present = tf.ones([n], tf.bool) if present is None else tf.cast(present, tf.bool)
    off_diagonal = tf.logical_not(tf.eye(n, dtype=tf.bool))
    inverse = tf.where(distances > 0, 1.0 / tf.where(distances > 0, distances, 1.0), 1e14)
    inverse = tf.where(off_diagonal & present[None, :] & present[:, None], inverse, 0.0)
    row_sums = tf.reduce_sum(inverse, axis=1, keepdims=True)
    shared = (1.0 - self_weight) * inverse / tf.where(row_sums > 0, row_sums, 1.0)
    has_partners = tf.reduce_sum(inverse, axis=1) > 0
    diagonal = tf.where(has_partners, tf.cast(self_weight, tf.float64), 1.0)
    return tf.cast(shared + tf.linalg.diag(diagonal), tf.float32)


def sample_share_weights(counts: tf.Tensor, present: tf.Tensor, sample_weighted: bool = True) -> tf.Tensor:
    """FedAvg's matrix: every row the present clients' sample shares n_j / sum n, or with
    `sample_weighted=False` 1 / (clients present), as the reference weighs its clients."""
    counts = tf.cast(counts, tf.float32) if sample_weighted else tf.ones_like(tf.cast(counts, tf.float32))
    counts = counts * tf.cast(present, tf.float32)
    share = counts / tf.maximum(tf.reduce_sum(counts), 1.0)
    return tf.tile(share[None, :], [tf.shape(counts)[0], 1])


def renormalise_rows(matrix: tf.Tensor, present: tf.Tensor) -> tf.Tensor:
    """Zero the columns of absent clients and rescale each row to sum to 1."""
    kept = matrix * tf.cast(present, matrix.dtype)[None, :]
    return kept / tf.maximum(tf.reduce_sum(kept, axis=1, keepdims=True), 1e-12)


def aggregate(previous: list[tf.Tensor], trained: list[tf.Tensor], matrix: tf.Tensor, shared: list[bool],
              present: tf.Tensor) -> list[tf.Tensor]:
    """One round's new per-client variables.

    Args:
        previous: per variable, the stack [N, ...] of the clients' models before the round.
        trained: the same after local training (rows of absent clients are ignored).
        matrix: [N, N] mixing weights (rows over the present clients, see the module table).
        shared: per variable, whether it is aggregated (True) or kept local (False).
        present: bool [N], the clients that trained this round.
    """
    present = tf.cast(present, tf.bool)
    matrix = renormalise_rows(matrix, present)
    result = []
    for before, after, is_shared in zip(previous, trained, shared):
        after = tf.where(_rows(present, after), after, before)
        if is_shared:
            flat = tf.reshape(after, [tf.shape(after)[0], -1])
            mixed = tf.reshape(tf.matmul(tf.cast(matrix, flat.dtype), flat), tf.shape(after))
            after = tf.where(_rows(present, after), mixed, before)
        result.append(after)
    return result


def _rows(mask: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    return tf.reshape(mask, tf.concat([[-1], tf.ones([tf.rank(like) - 1], tf.int32)], 0))


def shared_variables(model, algorithm: str, local_layers: int = 1) -> list[bool]:
    """Per variable of `model.weights`: True when `algorithm` aggregates it."""
    local = get_algorithm(algorithm).local_variables(model, local_layers)
    return [id(variable) not in local for variable in model.weights]


def merge_statistics(statistics, arrived):
    """The server's BN statistics after a round: `statistics = (means, variances, measured)`
    held so far (per layer stacks [N, channels], bool [N]) overwritten by the rows of the
    clients that measured this round, `arrived = (means, variances, mask)`."""
    means, variances, measured = statistics
    new_means, new_variances, mask = arrived
    mask = tf.cast(mask, tf.bool)
    rows = lambda new, old: tf.where(mask[:, None], tf.cast(new, tf.float64), tf.cast(old, tf.float64))  # noqa: E731
    return ([rows(n, o) for n, o in zip(new_means, means)], [rows(n, o) for n, o in zip(new_variances, variances)],
            tf.cast(measured, tf.bool) | mask)


def round_update(algorithm: str, round_index, previous, trained, present, counts, matrix, statistics, arrived,
                 shared: list[bool], self_weight: float, pretrain_rounds: int, sample_weighted: bool = False):
    """The server's whole step of one round, shared by both engines.

    Args:
        statistics: `(means, variances, measured)`, the BN statistics the server held before
            the round (see `merge_statistics`).
        arrived: `(means, variances, mask)`, the statistics clients measured this round.
        sample_weighted: FedAvg rows by sample share instead of 1/N.
        The rest: see `aggregate`.

    Returns `(new_weights, new_matrix, new_statistics)`. With similarity mixing (FedAP), rounds
    before `pretrain_rounds` are FedAvg rounds over every variable (the pre-training, so that
    the statistics come from one shared model). From round `pretrain_rounds` on, W is
    (re)computed in every round in which statistics arrive, over the clients measured so far:
    at `pretrain_rounds` from every client present, later when a client first takes part.
    """
    round_index = tf.convert_to_tensor(round_index)
    present = tf.cast(present, tf.bool)
    fedavg = sample_share_weights(counts, present, sample_weighted)
    matrix = tf.cast(matrix, tf.float32)
    if not get_algorithm(algorithm).needs_similarity:
        return aggregate(previous, trained, fedavg, shared, present), matrix, statistics
    statistics = merge_statistics(statistics, arrived)
    means, variances, measured = statistics
    recompute = (round_index >= pretrain_rounds) & tf.reduce_any(tf.cast(arrived[2], tf.bool))
    new_matrix = tf.cond(recompute,
                         lambda: fedap_weights(distance_matrix(means, variances), self_weight, measured),
                         lambda: matrix)
    pretraining = round_index < pretrain_rounds
    mixing = tf.where(pretraining, fedavg, new_matrix)
    everything = aggregate(previous, trained, mixing, [True] * len(shared), present)
    personal = aggregate(previous, trained, mixing, shared, present)
    return [tf.where(pretraining, a, b) for a, b in zip(everything, personal)], new_matrix, statistics
