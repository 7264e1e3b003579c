"""Shared pieces of the training-stage tests: the tiny tone corpus's languages, the model
size, and weight snapshots (which layers a stage changed)."""

import numpy as np

from kerastl.adapters.model import MultilingualASR

ALPHABETS = {"aa": "abcd", "bb": "cdef", "tt": "abef"}
SOURCES = ["aa", "bb"]
SIZE = dict(num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64, adapter_dim=8, dropout=0.0)


def weights_by_layer(model: MultilingualASR) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.all_layers()}


def changed_layers(before, model) -> set[str]:
    after = weights_by_layer(model)
    return {name for name in after if name not in before
            or any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


def copy_with_target(sources, vocabularies) -> MultilingualASR:
    """A copy of the saved source model with the target language "tt" added."""
    model = MultilingualASR.load(sources["folder"])
    model.add_language("tt", vocabularies["tt"].size)
    return model
