"""Semi-supervised algorithms on the shared core, by name."""

from __future__ import annotations

from kerastl.ssl.algorithms.base import SSLAlgorithm
from kerastl.ssl.algorithms.fixmatch import FixMatch, fixmatch, flexmatch
from kerastl.ssl.algorithms.pseudolabel import PseudoLabel, flex_pseudolabel, pseudolabel
from kerastl.ssl.algorithms.supervised import Supervised
from kerastl.ssl.algorithms.uda import UDA, flex_uda, uda

ALGORITHMS = ("flexmatch", "fixmatch", "pseudolabel", "flex_pseudolabel", "uda", "flex_uda", "supervised")


def build_algorithm(name: str, num_unlabeled: int, num_classes: int, total_steps: int,
                    warmup: bool = True) -> SSLAlgorithm:
    """The algorithm `name` with TorchSSL's defaults, sized for the unlabeled set.

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
        "supervised": Supervised,
    }
    if name not in builders:
        raise ValueError(f"algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return builders[name]()


__all__ = ["ALGORITHMS", "FixMatch", "PseudoLabel", "SSLAlgorithm", "Supervised", "UDA", "build_algorithm",
           "fixmatch", "flex_pseudolabel", "flex_uda", "flexmatch", "pseudolabel", "uda"]
