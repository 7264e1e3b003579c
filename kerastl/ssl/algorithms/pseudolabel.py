"""Pseudo-Label (Lee, ICML-W 2013) and Flex-Pseudo-Label.

One unlabeled view (weak): its own confident argmax is the target of its own prediction
(the gradient flows through the prediction, not the target). TorchSSL's defaults: tau 0.95,
lambda_u 1, the unsupervised weight ramped up linearly over the first 40 % of training
(`rampup_steps`). Flex-PL replaces the fixed threshold with CPL.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import (SSLAlgorithm, cross_entropy, hard_pseudo_labels, linear_rampup,
                                         masked_mean)
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold


@keras.saving.register_keras_serializable("kerastl")
class PseudoLabel(SSLAlgorithm):
    """Self-training on confident predictions of the weak view."""

    views = ("weak",)

    def __init__(self, threshold=None, lambda_u: float = 1.0, rampup_steps: int = 0, **kwargs):
        super().__init__(lambda_u=lambda_u, **kwargs)
        if isinstance(threshold, dict):
            threshold = keras.saving.deserialize_keras_object(threshold)
        self.threshold = threshold if threshold is not None else FixedThreshold(0.95)
        self.rampup_steps = int(rampup_steps)

    def unsupervised_loss(self, logits, index, step):
        probs, pseudo = hard_pseudo_labels(logits["weak"])
        mask = self.threshold(tf.reduce_max(probs, axis=-1), pseudo, index)
        return masked_mean(cross_entropy(pseudo, logits["weak"]), mask), mask

    def loss_weight(self, step):
        return self.lambda_u * linear_rampup(step, self.rampup_steps)

    def get_config(self):
        return {**super().get_config(), "threshold": keras.saving.serialize_keras_object(self.threshold),
                "rampup_steps": self.rampup_steps}


def pseudolabel(total_steps: int, tau: float = 0.95, lambda_u: float = 1.0, rampup: float = 0.4) -> PseudoLabel:
    return PseudoLabel(FixedThreshold(tau), lambda_u, int(rampup * total_steps))


def flex_pseudolabel(num_unlabeled: int, num_classes: int, total_steps: int, tau: float = 0.95,
                     lambda_u: float = 1.0, rampup: float = 0.4, warmup: bool = True) -> PseudoLabel:
    return PseudoLabel(CurriculumThreshold(num_unlabeled, num_classes, tau, warmup), lambda_u,
                       int(rampup * total_steps))
