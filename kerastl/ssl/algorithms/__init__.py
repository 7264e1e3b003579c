"""Semi-supervised algorithms on the shared core, by name: the nine of TorchSSL's tables
(Pi-Model, Mean Teacher, Pseudo-Label, VAT, MixMatch, UDA, ReMixMatch, FixMatch, FlexMatch),
the Flex-* variants of Pseudo-Label and UDA, their successors FreeMatch and SoftMatch (as USB
ships them), and the supervised baseline.

`build_algorithm(name, ...)` makes one with TorchSSL's defaults; `algorithm_names()` and
`algorithm_spec(name)` (its class, default uratio and tau, views) read the registry, where
each algorithm's file registers its names (see `registry.py`).
"""

from __future__ import annotations

# The registry first: it imports the algorithm files in the order it lists their names.
from kerastl.ssl.algorithms.registry import (AlgorithmSpec, SSLSetting, algorithm_names, algorithm_spec,
                                             build_algorithm, register_algorithm, unregister_algorithm)
from kerastl.ssl.algorithms.base import SSLAlgorithm, StepNetworks
from kerastl.ssl.algorithms.fixmatch import FixMatch, fixmatch, flexmatch
from kerastl.ssl.algorithms.freematch import FreeMatch
from kerastl.ssl.algorithms.meanteacher import MeanTeacher, meanteacher
from kerastl.ssl.algorithms.mixmatch import MixMatch, mixmatch
from kerastl.ssl.algorithms.pimodel import PiModel, pimodel
from kerastl.ssl.algorithms.pseudolabel import PseudoLabel, flex_pseudolabel, pseudolabel
from kerastl.ssl.algorithms.remixmatch import ReMixMatch, remixmatch
from kerastl.ssl.algorithms.softmatch import SoftMatch
from kerastl.ssl.algorithms.supervised import Supervised
from kerastl.ssl.algorithms.uda import UDA, flex_uda, uda
from kerastl.ssl.algorithms.vat import VAT, vat

__all__ = ["AlgorithmSpec", "FixMatch", "FreeMatch", "MeanTeacher", "MixMatch", "PiModel", "PseudoLabel", "ReMixMatch",
           "SSLAlgorithm", "SSLSetting", "SoftMatch", "StepNetworks", "Supervised", "UDA", "VAT", "algorithm_names",
           "algorithm_spec", "build_algorithm", "fixmatch", "flex_pseudolabel", "flex_uda", "flexmatch", "meanteacher",
           "mixmatch", "pimodel", "pseudolabel", "register_algorithm", "remixmatch", "uda", "unregister_algorithm",
           "vat"]
