"""The source model of cross-lingual ASR, trained once and cached: multilingual pre-training,
then the sources' adapters on the frozen backbone (or the adapters trained with the backbone
in pre-training). It is the expensive part, and every target, method and run on the same
sources reuses it.

Example:
>>> cache = os.path.join("cache", fingerprint({"records": records, "options": options}))  # doctest: +SKIP
>>> model, facts = train_sources(build, {"ru": ru_train, "it": it_train}, SourceSettings(), cache)  # doctest: +SKIP
>>> facts["reused"]            # a second call with the same cache loads the model    # doctest: +SKIP
['pretrain', 'source_adapters']
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Callable

import tensorflow as tf

from kerastl.adapters.model import MultilingualASR
from kerastl.adapters.stages import ADAPTER_TRAINING, pretrain, train_source_adapters

SOURCE_ADAPTERS = ("after_pretraining", "with_backbone")


@dataclasses.dataclass
class SourceSettings:
    """How the source model is trained: `pretrain_epochs` of multilingual pre-training, then
    the sources' adapters: `source_adapters` "after_pretraining" (`adapter_epochs` on the
    frozen backbone; `adapter_training` "two_stage": the heads, trained in pre-training, stay
    frozen, as the reference; "joint": trained with the adapters) or "with_backbone" (the
    adapters trained with the backbone during pre-training; no second stage)."""

    pretrain_epochs: int = 10
    adapter_epochs: int = 3
    learning_rate: float = 1e-3
    source_adapters: str = "after_pretraining"
    adapter_training: str = "two_stage"
    verbose: int | str = "auto"


def fingerprint(content) -> str:
    """A short stable hash of JSON-able `content` (cache keys)."""
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_sources(build: Callable[[], MultilingualASR], train_sets: dict[str, tf.data.Dataset],
                  settings: SourceSettings, cache: str | None = None, callbacks: Callable[[str], list] = lambda s: [],
                  ) -> tuple[MultilingualASR, dict]:
    """The source model: pre-training, then the sources' adapters (see `SourceSettings`).

    With `cache` (a folder, e.g. keyed by `fingerprint` of the data and settings), each
    finished stage is saved there (`pretrained/`, then `model/`, `MultilingualASR.save`
    folders, and `facts.json`) and reused: a finished model is loaded instead of trained, an
    interrupted run continues after its last finished stage. Returns (model, facts) with
    facts {stage: `StageResult.facts()`} and "reused": the stages loaded from the cache.
    """
    if settings.source_adapters not in SOURCE_ADAPTERS:
        raise ValueError(f"source_adapters {settings.source_adapters!r}: expected one of {', '.join(SOURCE_ADAPTERS)}")
    if settings.adapter_training not in ADAPTER_TRAINING:
        raise ValueError(f"adapter_training {settings.adapter_training!r}: expected two_stage or joint")
    facts_path = os.path.join(cache, "facts.json") if cache else None
    facts = {}
    if facts_path and os.path.exists(facts_path):
        with open(facts_path) as f:
            facts = json.load(f)

    def finish(stage, model, result):
        facts[stage] = result.facts()
        if cache:
            model.save(os.path.join(cache, "pretrained" if stage == "pretrain" else "model"))
            with open(facts_path + ".tmp", "w") as f:
                json.dump(facts, f, indent=1)
            os.replace(facts_path + ".tmp", facts_path)

    joint = settings.source_adapters == "with_backbone"
    final = os.path.join(cache, "model") if cache else None
    if final and os.path.isdir(final):
        return MultilingualASR.load(final), {**facts, "reused": ["pretrain", "source_adapters"]}
    reused = []
    if cache and not joint and os.path.isdir(os.path.join(cache, "pretrained")):
        model, reused = MultilingualASR.load(os.path.join(cache, "pretrained")), ["pretrain"]
    else:
        model = build()
        result = pretrain(model, train_sets, settings.pretrain_epochs, settings.learning_rate, with_adapters=joint,
                          callbacks=callbacks("pretrain"), verbose=settings.verbose)
        finish("pretrain", model, result)
    if not joint:
        result = train_source_adapters(model, train_sets, settings.adapter_epochs, settings.learning_rate,
                                       train_heads=settings.adapter_training == "joint",
                                       callbacks=callbacks("source_adapters"), verbose=settings.verbose)
        finish("source_adapters", model, result)
    elif cache:
        model.save(final)
    return model, {**facts, "reused": reused}
