"""UDA (Xie et al., NeurIPS 2020) and Flex-UDA.

Soft targets `softmax(logits_weak / T)` (T = 0.4) supervise the strong view through
cross-entropy (KL up to a constant), kept where the weak view's confidence passes 0.8;
lambda_u 1 (TorchSSL's defaults; training-signal annealing is off there and here). Flex-UDA
replaces the fixed mask with CPL at tau = 0.8.
"""

from __future__ import annotations

import keras

from kerastl.ssl.algorithms.base import SSLAlgorithm, cross_entropy, hard_pseudo_labels, masked_mean
from kerastl.ssl.algorithms.registry import register_algorithm
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold


@keras.saving.register_keras_serializable("kerastl")
class UDA(SSLAlgorithm):
    """Sharpened weak-view distributions as soft targets for the strong view."""

    views = ("weak", "strong")

    default_tau = 0.8

    def __init__(self, threshold=None, lambda_u: float = 1.0, temperature: float = 0.4, **kwargs):
        super().__init__(threshold, lambda_u, **kwargs)
        self.temperature = float(temperature)

    def unsupervised_loss(self, logits, index, step):
        _, mask = self.confident_pseudo_labels(logits["weak"], index)
        sharpened, _ = hard_pseudo_labels(logits["weak"], self.temperature)
        return masked_mean(cross_entropy(sharpened, logits["strong"]), mask), mask

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def uda(tau: float = 0.8, lambda_u: float = 1.0, temperature: float = 0.4) -> UDA:
    return UDA(FixedThreshold(tau), lambda_u, temperature)


def flex_uda(num_unlabeled: int, num_classes: int, tau: float = 0.8, lambda_u: float = 1.0,
             temperature: float = 0.4, warmup: bool = True) -> UDA:
    return UDA(CurriculumThreshold(num_unlabeled, num_classes, tau, warmup), lambda_u, temperature)


register_algorithm("uda", UDA, lambda s: uda(),
                   "UDA: sharpened weak-view predictions as soft targets of the strong view")
register_algorithm("flex_uda", UDA, lambda s: flex_uda(s.num_unlabeled, s.num_classes, warmup=s.warmup),
                   "UDA with Curriculum Pseudo Labeling")
