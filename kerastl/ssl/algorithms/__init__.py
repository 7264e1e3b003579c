"""Semi-supervised algorithms on the shared core, by name: the nine of TorchSSL's tables
(Pi-Model, Mean Teacher, Pseudo-Label, VAT, MixMatch, UDA, ReMixMatch, FixMatch, FlexMatch),
the Flex-* variants of Pseudo-Label and UDA, and the supervised baseline."""

from __future__ import annotations

from kerastl.ssl.algorithms.base import SSLAlgorithm, StepNetworks
from kerastl.ssl.algorithms.fixmatch import FixMatch, fixmatch, flexmatch
from kerastl.ssl.algorithms.meanteacher import MeanTeacher, meanteacher
from kerastl.ssl.algorithms.mixmatch import MixMatch, mixmatch
from kerastl.ssl.algorithms.pimodel import PiModel, pimodel
from kerastl.ssl.algorithms.pseudolabel import PseudoLabel, flex_pseudolabel, pseudolabel
from kerastl.ssl.algorithms.remixmatch import ReMixMatch, remixmatch
from kerastl.ssl.algorithms.supervised import Supervised
from kerastl.ssl.algorithms.uda import UDA, flex_uda, uda
from kerastl.ssl.algorithms.vat import VAT, vat

ALGORITHMS = ("flexmatch", "fixmatch", "pseudolabel", "flex_pseudolabel", "uda", "flex_uda", "pimodel",
              "meanteacher", "vat", "mixmatch", "remixmatch", "supervised")


def algorithm_class(name: str) -> type[SSLAlgorithm]:
    """The class behind the algorithm `name`: its `views`, `default_tau` (None: no confidence
    threshold) and `default_uratio`, the unlabeled-to-labeled batch ratio apps use when none
    is given. That ratio is TorchSSL's (7 for FixMatch, FlexMatch and UDA; 1 for Pi-Model,
    Mean Teacher, VAT, MixMatch and ReMixMatch), except for Pseudo-Label, which keeps 7
    (TorchSSL: 1) as in the measured tables."""
    classes = {"flexmatch": FixMatch, "fixmatch": FixMatch, "pseudolabel": PseudoLabel,
               "flex_pseudolabel": PseudoLabel, "uda": UDA, "flex_uda": UDA, "pimodel": PiModel,
               "meanteacher": MeanTeacher, "vat": VAT, "mixmatch": MixMatch, "remixmatch": ReMixMatch,
               "supervised": Supervised}
    if name not in classes:
        raise ValueError(f"algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return classes[name]


def build_algorithm(name: str, num_unlabeled: int, num_classes: int, total_steps: int,
                    warmup: bool = True, seed: int = 0, input_scale: float = 1.0,
                    p_target=None) -> SSLAlgorithm:
    """The algorithm `name` with TorchSSL's defaults, sized for the unlabeled set.

    Args:
        warmup: CPL's threshold warm-up (flex algorithms).
        seed: seeds the random draws inside training steps (VAT's start direction, MixUp).
        input_scale: pixel standard deviation of the training images (VAT's eps is given
            in standardised units, as in TorchSSL).
        p_target: labeled class distribution for ReMixMatch's alignment (default uniform).

    Example:
    >>> algorithm = build_algorithm("flexmatch", num_unlabeled=4000, num_classes=10, total_steps=1000)
    """
    builders = {
        "flexmatch": lambda: flexmatch(num_unlabeled, num_classes, warmup=warmup),
        "fixmatch": fixmatch,
        "pseudolabel": lambda: pseudolabel(total_steps),
        "flex_pseudolabel": lambda: flex_pseudolabel(num_unlabeled, num_classes, total_steps, warmup=warmup),
        "uda": uda,
        "flex_uda": lambda: flex_uda(num_unlabeled, num_classes, warmup=warmup),
        "pimodel": lambda: pimodel(total_steps),
        "meanteacher": lambda: meanteacher(total_steps),
        "vat": lambda: vat(total_steps, input_scale, seed=seed),
        "mixmatch": lambda: mixmatch(total_steps, seed=seed),
        "remixmatch": lambda: remixmatch(num_classes, total_steps, p_target, seed=seed),
        "supervised": Supervised,
    }
    if name not in builders:
        raise ValueError(f"algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return builders[name]()


__all__ = ["ALGORITHMS", "FixMatch", "MeanTeacher", "MixMatch", "PiModel", "PseudoLabel", "ReMixMatch", "SSLAlgorithm",
           "StepNetworks", "Supervised", "UDA", "VAT", "algorithm_class", "build_algorithm", "fixmatch", "flex_pseudolabel", "flex_uda",
           "flexmatch", "meanteacher", "mixmatch", "pimodel", "pseudolabel", "remixmatch", "uda", "vat"]
