"""FixMatch (Sohn et al., NeurIPS 2020) and FlexMatch (Zhang et al., NeurIPS 2021).

Hard pseudo-labels from the weak view, cross-entropy on the strong view, kept where the
confidence passes the threshold: a `FixedThreshold(0.95)` for FixMatch, a
`CurriculumThreshold` (CPL) for FlexMatch. Defaults follow TorchSSL: tau 0.95, lambda_u 1.
With `soft_labels=True` the target is `softmax(logits_weak / T)` (T = 0.5 by default).
"""

from __future__ import annotations

import keras
from kerastl.ssl.algorithms.base import SSLAlgorithm, cross_entropy, hard_pseudo_labels, masked_mean
from kerastl.ssl.algorithms.registry import register_algorithm
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold


@keras.saving.register_keras_serializable("kerastl")
class FixMatch(SSLAlgorithm):
    """Weak-view pseudo-labels supervise the strong view where `threshold` lets them.

    Example:
    >>> algorithm = FixMatch(FixedThreshold(0.95))                       # FixMatch
    >>> algorithm = FixMatch(CurriculumThreshold(50000, 10, tau=0.95))  # FlexMatch
    """

    views = ("weak", "strong")

    def __init__(self, threshold=None, lambda_u: float = 1.0, soft_labels: bool = False,
                 temperature: float = 0.5, **kwargs):
        super().__init__(threshold, lambda_u, **kwargs)
        self.soft_labels = bool(soft_labels)
        self.temperature = float(temperature)

    def unsupervised_loss(self, logits, index, step):
        pseudo, mask = self.confident_pseudo_labels(logits["weak"], index)
        target = hard_pseudo_labels(logits["weak"], self.temperature)[0] if self.soft_labels else pseudo
        return masked_mean(cross_entropy(target, logits["strong"]), mask), mask

    def get_config(self):
        return {**super().get_config(), "soft_labels": self.soft_labels, "temperature": self.temperature}


def fixmatch(tau: float = 0.95, lambda_u: float = 1.0) -> FixMatch:
    """FixMatch with TorchSSL's defaults."""
    return FixMatch(FixedThreshold(tau), lambda_u)


def flexmatch(num_unlabeled: int, num_classes: int, tau: float = 0.95, lambda_u: float = 1.0,
              warmup: bool = True, mapping: str = "convex", soft_labels: bool = False,
              temperature: float = 0.5) -> FixMatch:
    """FlexMatch: FixMatch with Curriculum Pseudo Labeling, TorchSSL's defaults."""
    return FixMatch(CurriculumThreshold(num_unlabeled, num_classes, tau, warmup, mapping), lambda_u,
                    soft_labels, temperature)


register_algorithm("flexmatch", FixMatch, lambda s: flexmatch(s.num_unlabeled, s.num_classes, warmup=s.warmup),
                   "FixMatch with Curriculum Pseudo Labeling: per-class thresholds that follow each class's "
                   "learning")
register_algorithm("fixmatch", FixMatch, lambda s: fixmatch(),
                   "weak-view pseudo-labels above a fixed threshold supervise the strong view")
