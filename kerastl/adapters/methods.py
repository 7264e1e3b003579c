"""The methods of Hou et al. 2022 built from the training stages, run for one target language.

| method | trained on the target | continues the model of |
|---|---|---|
| scratch | a fresh model, everything | |
| head | a new head (backbone frozen) | |
| full_ft | the backbone and a new head | |
| adapter | the target's head, then its adapters (two-stage; or both at once: joint) | |
| simadapter | the fusion layers only, over the sources' adapters and the target's | adapter |
| metaadapter | MAML over the sources, then the target's adapters and head | |
| simadapter_plus | the fusion layers only, over the meta-learned target adapters | metaadapter |

`run_methods` runs any of `METHODS` for one target: each prerequisite once (its model is
handed on), each method evaluated right after it trains, finished methods skipped on resume.

Example (SimAdapter and the head-only baseline for ro; the adapter runs first for SimAdapter):
>>> data = TargetData(ro_train, ro_test, ro_vocab)                                 # doctest: +SKIP
>>> results = run_methods(["simadapter", "head"], pretrained, fresh, "ro", ["ru", "it"], data,
...                       StageSettings(epochs=5))                                 # doctest: +SKIP
>>> list(results)                                                                  # doctest: +SKIP
['head', 'adapter', 'simadapter']
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import tensorflow as tf

from kerastl.adapters.metaadapter import FINETUNE_LR, train_metaadapter
from kerastl.adapters.model import MultilingualASR
from kerastl.adapters.stages import PATIENCE, StageResult, evaluate, train_simadapter, train_target

METHODS = ("scratch", "head", "full_ft", "adapter", "simadapter", "metaadapter", "simadapter_plus")
# The target-language baselines: one `train_target` stage each.
TARGET_BASELINES = ("scratch", "head", "full_ft", "adapter")
# A method that continues another one's model (the fusion needs the target's own adapters).
PREREQUISITE = {"simadapter": "adapter", "simadapter_plus": "metaadapter"}
# The `MultilingualASR.recognizer` mode of each method's target recogniser.
RECOGNIZER_MODE = {"scratch": "plain", "head": "plain", "full_ft": "plain", "adapter": "adapter",
                   "simadapter": "simadapter", "metaadapter": "adapter", "simadapter_plus": "simadapter"}


@dataclasses.dataclass
class StageSettings:
    """Hyperparameters of the target-side stages (`run_methods`).

    epochs: target training epochs of every method (of each of the two stages of a two-stage
        adapter; the fine-tuning after meta-learning too).
    fusion_epochs, fusion_lr: SimAdapter fusion training (paper: Adam 1e-3).
    meta_epochs: MAML passes over the sources (steps per pass: the largest source's batches).
    inner_lr, meta_lr: MAML's inner Adam step and outer step (paper: 0.01, 1e-4).
    guide_weight: the fusion-guide loss weight (reference default 0.1).
    guide_decay_steps: training steps over which the guide weight decays linearly to 0 (0 =
        constant, the reference's example).
    finetune_lr: Adam rate of MetaAdapter's fine-tuning on the target (reference 0.01).
    adapter_training: the "adapter" method's schedule, "two_stage" (head first, then the
        adapters with the head frozen) or "joint" (both at once).
    patience: with dev data, epochs without a lower dev loss before a target stage stops
        (the best-dev epoch's weights are kept; reference 10).
    """

    epochs: int = 10
    learning_rate: float = 1e-3
    fusion_epochs: int = 5
    fusion_lr: float = 1e-3
    guide_weight: float = 0.1
    meta_epochs: int = 1
    inner_lr: float = 0.01
    meta_lr: float = 1e-4
    verbose: int | str = "auto"
    guide_decay_steps: int = 0
    finetune_lr: float = FINETUNE_LR
    adapter_training: str = "two_stage"
    patience: int = PATIENCE


def recognizer_mode(method: str) -> str:
    """The `MultilingualASR.recognizer` mode a method's target recogniser uses."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    return RECOGNIZER_MODE[method]


def method_order(methods: Sequence[str]) -> list[str]:
    """`methods` with their prerequisites, in `METHODS` order (each run once)."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods {unknown}: expected among {', '.join(METHODS)}")
    wanted = set(methods) | {PREREQUISITE[m] for m in methods if m in PREREQUISITE}
    return [m for m in METHODS if m in wanted]


@dataclasses.dataclass
class TargetData:
    """A target's data for `run_methods`: batched datasets (test and dev unshuffled), the
    vocabulary, the test transcripts, and the sources' training batches (MetaAdapter)."""

    train: tf.data.Dataset
    test: tf.data.Dataset
    vocabulary: object
    test_references: list[str] | None = None
    dev: tf.data.Dataset | None = None
    source_train: dict[str, tf.data.Dataset] | None = None


def run_method(method: str, model: MultilingualASR, target: str, sources: Sequence[str], data: TargetData,
               settings: StageSettings, callbacks: Callable[[str], list] = lambda stage: [],
               meta_callbacks: Callable[[str], list] = lambda stage: []) -> StageResult:
    """Trains `method` on `model` for `target` (its prerequisite, if any, already run on the
    same model; `scratch` expects a fresh model holding only the target)."""
    common = dict(validation=data.dev, callbacks=callbacks(method), verbose=settings.verbose,
                  patience=settings.patience)
    if method in TARGET_BASELINES:
        return train_target(model, target, method, data.train, settings.epochs, settings.learning_rate,
                            adapter_training=settings.adapter_training, **common)
    if method in ("simadapter", "simadapter_plus"):
        result = train_simadapter(model, target, sources, data.train, settings.fusion_epochs, settings.fusion_lr,
                                  settings.guide_weight, settings.guide_decay_steps, **common)
        result.name = method
        return result
    if method == "metaadapter":
        if not data.source_train:
            raise ValueError("metaadapter needs the sources' training batches (TargetData.source_train)")
        return train_metaadapter(model, target, data.source_train, data.train, settings.meta_epochs,
                                 settings.epochs, settings.finetune_lr, settings.inner_lr, settings.meta_lr,
                                 meta_callbacks=meta_callbacks(method), **common)
    raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")


def run_methods(methods: Sequence[str], pretrained: Callable[[], MultilingualASR],
                fresh: Callable[[], MultilingualASR], target: str, sources: Sequence[str], data: TargetData,
                settings: StageSettings, beam_width: int = 0, callbacks: Callable[[str], list] = lambda stage: [],
                finished: dict | None = None, restore: Callable[[str], MultilingualASR] | None = None,
                on_finished: Callable[[str, MultilingualASR, dict], None] | None = None) -> dict[str, dict]:
    """Runs `methods` (and their prerequisites) for `target`, evaluating each right after it
    trains, and returns {method: facts + {"cer", "wer"} (+ "attention" for fusions)}.

    `pretrained()` gives a model with the trained sources and the target's (new) head and
    adapters; `fresh()` a new model for "scratch". A method continuing another (SimAdapter
    after the adapter, SimAdapter+ after MetaAdapter) trains on that method's model.
    `finished` {method: facts} skips methods already done (a resumed run); `restore(method)`
    then gives a finished method's model when a later method needs it. `on_finished(method,
    model, facts)` is called after each method (e.g. to checkpoint it).
    """
    results = dict(finished or {})
    models: dict[str, MultilingualASR] = {}
    for method in method_order(methods):
        if method in results:
            continue
        prerequisite = PREREQUISITE.get(method)
        if prerequisite is not None:
            model = models.pop(prerequisite, None) or restore(prerequisite)
        else:
            model = fresh() if method == "scratch" else pretrained()
        result = run_method(method, model, target, sources, data, settings, callbacks,
                            meta_callbacks=lambda stage: callbacks(f"{stage}_meta"))
        facts = {**result.facts(), **evaluate(result.recognizer, data.test, data.vocabulary, data.test_references,
                                              beam_width)}
        if result.recognizer.fusion is not None:
            facts["attention"] = result.recognizer.fusion_attention(data.test).tolist()
            facts["attention_languages"] = result.recognizer.fusion_languages
        results[method] = facts
        if on_finished is not None:
            on_finished(method, model, facts)
        if method in PREREQUISITE.values():
            models[method] = model
    return results
