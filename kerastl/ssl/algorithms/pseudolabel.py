"""Pseudo-Label (Lee, ICML-W 2013) and Flex-Pseudo-Label.

One unlabeled view (weak): its own confident argmax is the target of its own prediction
(the gradient flows through the prediction, not the target). TorchSSL's defaults: tau 0.95,
lambda_u 1, the unsupervised weight ramped up linearly over the first 40 % of training
(`rampup_steps`), uratio 1. As there, the labeled batch alone updates the batch-norm
statistics; the unlabeled pass runs alone with them frozen. Flex-PL replaces the fixed
threshold with CPL.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import (SSLAlgorithm, cross_entropy, linear_rampup,
                                         masked_mean)
from kerastl.ssl.algorithms.registry import register_algorithm
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold


@keras.saving.register_keras_serializable("kerastl")
class PseudoLabel(SSLAlgorithm):
    """Self-training on confident predictions of the weak view."""

    views = ("weak",)
    default_uratio = 1
    joint_forward = False

    def __init__(self, threshold=None, lambda_u: float = 1.0, rampup_steps: float = 0, **kwargs):
        super().__init__(threshold, lambda_u, **kwargs)
        self.rampup_steps = float(rampup_steps)

    def unsupervised_loss(self, logits, index, step):
        pseudo, mask = self.confident_pseudo_labels(logits["weak"], index)
        return masked_mean(cross_entropy(pseudo, logits["weak"]), mask), mask

    def loss_weight(self, step, dtype=tf.float32):
        return self.lambda_u * linear_rampup(step, self.rampup_steps, dtype)

    def get_config(self):
        return {**super().get_config(), "rampup_steps": self.rampup_steps}


def pseudolabel(total_steps: int, tau: float = 0.95, lambda_u: float = 1.0, rampup: float = 0.4) -> PseudoLabel:
    return PseudoLabel(FixedThreshold(tau), lambda_u, rampup * total_steps)


def flex_pseudolabel(num_unlabeled: int, num_classes: int, total_steps: int, tau: float = 0.95,
                     lambda_u: float = 1.0, rampup: float = 0.4, warmup: bool = True) -> PseudoLabel:
    return PseudoLabel(CurriculumThreshold(num_unlabeled, num_classes, tau, warmup), lambda_u,
                       rampup * total_steps)


register_algorithm("pseudolabel", PseudoLabel, lambda s: pseudolabel(s.total_steps),
                   "Pseudo-Label: confident predictions of the weak view become its own targets")
register_algorithm("flex_pseudolabel", PseudoLabel,
                   lambda s: flex_pseudolabel(s.num_unlabeled, s.num_classes, s.total_steps, warmup=s.warmup),
                   "Pseudo-Label with Curriculum Pseudo Labeling")
