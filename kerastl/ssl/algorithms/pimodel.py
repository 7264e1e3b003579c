"""Pi-Model (Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017).

Two weak augmentations of each unlabeled image go through the network; the consistency
loss is the mean squared difference of their softmax outputs (the second view is the
target, without gradient). TorchSSL's defaults: lambda_u 10, the weight ramped up linearly
over the first 40 % of training, unlabeled batch = labeled batch (uratio 1), no threshold.
As there, the labeled batch alone updates the batch-norm statistics; each weak view runs
alone with them frozen.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm, linear_rampup, softmax_mse
from kerastl.ssl.algorithms.registry import register_algorithm


@keras.saving.register_keras_serializable("kerastl")
class PiModel(SSLAlgorithm):
    """Consistency between two stochastic passes.

    Example:
    >>> algorithm = PiModel(lambda_u=10.0, rampup_steps=400)   # a 1,000-step run
    """

    views = ("weak", "weak2")
    default_tau = None
    default_uratio = 1
    joint_forward = False

    def __init__(self, lambda_u: float = 10.0, rampup_steps: float = 0, **kwargs):
        super().__init__(None, lambda_u, **kwargs)
        self.rampup_steps = float(rampup_steps)

    def unsupervised_loss(self, logits, index, step):
        target = tf.nn.softmax(tf.stop_gradient(logits["weak2"]), axis=-1)
        return softmax_mse(logits["weak"], target), None

    def loss_weight(self, step, dtype=tf.float32):
        return self.lambda_u * linear_rampup(step, self.rampup_steps, dtype)

    def get_config(self):
        return {**super().get_config(), "rampup_steps": self.rampup_steps}


def pimodel(total_steps: int, lambda_u: float = 10.0, rampup: float = 0.4) -> PiModel:
    return PiModel(lambda_u, rampup * total_steps)


register_algorithm("pimodel", PiModel, lambda s: pimodel(s.total_steps),
                   "Pi-Model: consistent predictions for two weak views")
