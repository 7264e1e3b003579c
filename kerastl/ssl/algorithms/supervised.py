"""The supervised baseline: labeled data only, no unlabeled view and no unsupervised loss."""

from __future__ import annotations

import keras

from kerastl.ssl.algorithms.base import SSLAlgorithm
from kerastl.ssl.algorithms.registry import register_algorithm


@keras.saving.register_keras_serializable("kerastl")
class Supervised(SSLAlgorithm):
    """Trains on the labeled batch alone (the unlabeled stream is not read): the default
    `compute_losses` with no views is the labeled cross-entropy."""

    views = ()
    default_tau = None


register_algorithm("supervised", Supervised, lambda s: Supervised(), "labeled data only (the baseline)")
