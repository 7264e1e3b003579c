"""The federated algorithms by name: what each one aggregates, what stays on the client, whether
the server needs FedAP's similarity matrix W and whether the clients add a proximal term.

Both engines (`simulation`, `tff_process`), the aggregation rule and `apps.adafed` read these
properties; nothing compares algorithm names. A new algorithm that combines them is one entry:

>>> ALGORITHMS["fedbn_prox"] = FederatedAlgorithm(
...     "fedbn_prox", "FedBN with FedProx's proximal term", local=("batch_norm",), proximal=True)
>>> get_algorithm("fedbn_prox").local, get_algorithm("fedbn_prox").needs_similarity
(('batch_norm',), False)
>>> del ALGORITHMS["fedbn_prox"]

Properties:
- `local`: the parts of the model that never leave a client, names from `LOCAL_PARTS`
  (`batch_norm`: every BatchNormalization layer's variables; `head`: the last `local_layers`
  layers that have weights; `everything`: no communication at all). The rest is aggregated.
- `mixing`: how the aggregated variables are combined (`MIXINGS`): `sample_share`, each
  client gets the present clients' mean, uniform as the reference's (or weighted by their
  sample counts, an option of the engines) (FedAvg); `similarity`,
  each client gets its row of FedAP's W (computed from the clients' BN statistics after the
  FedAvg pre-training rounds) times the clients' models.
- `proximal`: local training adds FedProx's `mu / 2 * ||w - w_received||` (the reference's
  unsquared norm; the squared one of FedProx's paper is an option of the engines).

Plain Python: the apps read this table before TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses

from kerastl.errors import InputError


def _batch_norm_variables(model, local_layers: int) -> set[int]:
    from kerastl.federated.statistics import bn_layers

    return {id(v) for layer in bn_layers(model) for v in layer.weights}


def _head_variables(model, local_layers: int) -> set[int]:
    weighted = [layer for layer in model.layers if layer.weights]
    head = weighted[-local_layers:] if local_layers > 0 else []
    return {id(v) for layer in head for v in layer.weights}


def _all_variables(model, local_layers: int) -> set[int]:
    return {id(v) for v in model.weights}


# name -> `ids(model, local_layers)`: the ids of the model's variables in that part.
LOCAL_PARTS = {"batch_norm": _batch_norm_variables, "head": _head_variables, "everything": _all_variables}
MIXINGS = ("sample_share", "similarity")


@dataclasses.dataclass(frozen=True)
class FederatedAlgorithm:
    """One algorithm's properties (see the module docstring)."""

    name: str
    description: str
    local: tuple[str, ...] = ()
    mixing: str = "sample_share"
    proximal: bool = False

    def __post_init__(self):
        unknown = [part for part in self.local if part not in LOCAL_PARTS]
        if unknown or self.mixing not in MIXINGS:
            raise ValueError(f"algorithm {self.name!r}: local parts {list(self.local)} and mixing {self.mixing!r}; "
                             f"expected parts among {', '.join(LOCAL_PARTS)} and a mixing among {', '.join(MIXINGS)}")

    @property
    def needs_similarity(self) -> bool:
        """Whether the server computes W from the clients' BN statistics."""
        return self.mixing == "similarity"

    def local_variables(self, model, local_layers: int = 1) -> set[int]:
        """The ids of `model`'s variables that stay on the client."""
        return set().union(*(LOCAL_PARTS[part](model, local_layers) for part in self.local))


ALGORITHMS: dict[str, FederatedAlgorithm] = {algorithm.name: algorithm for algorithm in (
    FederatedAlgorithm("fedap", "FedAP: each client mixes the others' models by its row of W (BN-statistics "
                       "similarity); BN layers local", local=("batch_norm",), mixing="similarity"),
    FederatedAlgorithm("fedavg", "FedAvg: every weight averaged over the clients"),
    FederatedAlgorithm("fedbn", "FedBN: FedAvg with the BN layers local", local=("batch_norm",)),
    FederatedAlgorithm("fedprox", "FedProx: FedAvg plus a proximal term in local training", proximal=True),
    FederatedAlgorithm("fedper", "FedPer: FedAvg with the last --local-layers weighted layers local",
                       local=("head",)),
    FederatedAlgorithm("base", "local training only, no communication", local=("everything",)),
)}


def get_algorithm(name: str) -> FederatedAlgorithm:
    """The registered algorithm called `name`; an unknown name is an `InputError` listing the others."""
    if name not in ALGORITHMS:
        raise InputError(f"--algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")
    return ALGORITHMS[name]
