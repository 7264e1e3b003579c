"""The training stages of cross-lingual low-resource ASR with adapters (Hou et al. 2022), as
functions over a `MultilingualASR`, and the methods built from them.

Stages (each returns a `StageResult`: the recogniser(s), the share of parameters trained,
the per-epoch history, wall time and training throughput):
- `pretrain`: the multilingual backbone on the source languages (shared encoder + one CTC
  head per language). Every step sees one batch of EVERY source language and minimises the
  sum of their CTC losses (the reference's multilingual batches: batch size x languages);
  an epoch is as many steps as the largest language has batches, smaller languages repeat.
  `joint_adapters=True` trains each language's adapters together with the backbone (the
  "joint" variant of the two-stage comparison).
- `train_source_adapters`: the two-stage variant's second stage: the backbone frozen, each
  source language's adapters and head trained (same mixed batches; the languages' parameters
  are disjoint, so this equals training them one by one).
- `train_target`: the target-language baselines and the single adapter: "scratch" (a fresh
  model, everything trained), "head" (frozen backbone, a new head), "full_ft" (backbone +
  new head), "adapter" (frozen backbone, the target's adapters + head).
- `train_simadapter`: SimAdapter fusion over the sources' adapters and the target's own (the
  target's adapters trained first, e.g. by `train_target(..., "adapter")`); only the fusion
  layers and the target head train (Adam 1e-3), with the fusion-guide loss.
- `meta_train_adapters`: MetaAdapter's first-order MAML over the source languages: one
  shared adapter set ("meta") meta-learned through each source's frozen head.
- `train_metaadapter`: `meta_train_adapters`, then the target's adapters start from the
  meta-learned ones and are fine-tuned with a new head on the target.
- SimAdapter+ = `train_metaadapter`, then `train_simadapter`.

`train_sources` runs the source stages once and caches them (the expensive part, reused
by every target and method); `run_methods` runs any of `METHODS` for one target (sharing the
stages methods have in common); `evaluate` gives corpus CER / WER with greedy (or beam) CTC
decoding; `export_recognizer` writes a SavedModel that transcribes raw 16 kHz waveforms.

Example (a two-stage backbone on ru and it, then SimAdapter for ro):
>>> asr = MultilingualASR({"ru": ru_vocab.size, "it": it_vocab.size}, num_layers=2)  # doctest: +SKIP
>>> pretrain(asr, {"ru": ru_train, "it": it_train}, epochs=10)                       # doctest: +SKIP
>>> train_source_adapters(asr, {"ru": ru_train, "it": it_train}, epochs=3)           # doctest: +SKIP
>>> asr.add_language("ro", ro_vocab.size)                                            # doctest: +SKIP
>>> train_target(asr, "ro", "adapter", ro_train, epochs=20)                          # doctest: +SKIP
>>> fused = train_simadapter(asr, "ro", ["ru", "it"], ro_train, epochs=10)           # doctest: +SKIP
>>> evaluate(fused.recognizer, ro_test, ro_vocab)                                    # doctest: +SKIP
{'cer': 0.21, 'wer': 0.55}
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from kerastl.adapters.maml import first_order_maml_step, make_inner_optimizer
from kerastl.adapters.metrics import cer, wer
from kerastl.adapters.model import CTCRecognizer, MultilingualASR

METHODS = ("scratch", "head", "full_ft", "adapter", "simadapter", "metaadapter", "simadapter_plus")
TARGET_BASELINES = ("scratch", "head", "full_ft", "adapter")
# A method that continues another one's model (the fusion needs the target's own adapters).
PREREQUISITE = {"simadapter": "adapter", "simadapter_plus": "metaadapter"}
META_ADAPTERS = "meta"
# A dict batch of `kerastl.data.speech.speech_dataset` (one graph for every batch shape).
BATCH_SIGNATURE = {"features": tf.TensorSpec([None, None, 80], tf.float32),
                   "feature_lengths": tf.TensorSpec([None], tf.int32),
                   "labels": tf.TensorSpec([None, None], tf.int32),
                   "label_lengths": tf.TensorSpec([None], tf.int32)}


@dataclasses.dataclass
class StageResult:
    """What a stage produced.

    Attributes:
        name: the stage.
        recognizers: language -> the `CTCRecognizer` trained (sharing the model's layers).
        trained_share: trained / total parameters of those recognisers together.
        history: per-epoch values (loss, ctc_loss, val_loss, ...).
        seconds: wall time of the stage.
        utterances_per_second: training throughput (utterances through a training step per
            second, the first step, which traces the graph, left out).
    """

    name: str
    recognizers: dict[str, CTCRecognizer]
    trained_share: float
    history: dict[str, list[float]]
    seconds: float
    utterances_per_second: float

    @property
    def recognizer(self) -> CTCRecognizer:
        """The recogniser of a single-language stage."""
        if len(self.recognizers) != 1:
            raise ValueError(f"stage {self.name} trained {len(self.recognizers)} recognisers; use .recognizers")
        return next(iter(self.recognizers.values()))

    def facts(self) -> dict:
        """JSON-able summary (no models)."""
        return {"stage": self.name, "trained_share": self.trained_share, "history": self.history,
                "seconds": round(self.seconds, 2), "utterances_per_second": round(self.utterances_per_second, 2)}


@dataclasses.dataclass
class StageSettings:
    """Hyperparameters of the target-side stages (`run_methods`).

    epochs: target training epochs of every method (the fine-tuning after meta-learning too).
    fusion_epochs, fusion_lr: SimAdapter fusion training (paper: Adam 1e-3).
    meta_epochs: MAML passes over the sources (steps per pass: the largest source's batches).
    inner_lr, meta_lr: MAML's inner Adam step and outer step (paper: 0.01, 1e-4).
    guide_weight: the fusion-guide loss weight (paper 0.1).
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


# ---------------------------------------------------------------------------------------------
# Helpers


def parameter_share(recognizers: Sequence[CTCRecognizer]) -> float:
    """Trainable / total parameters over the union of the recognisers' weights."""
    def size(variable) -> int:
        return int(np.prod(variable.shape))

    bookkeeping = {id(v) for r in recognizers for layer in r.fusion or [] for v in layer.state_variables}
    seen, trained, total = set(), 0, 0
    for recognizer in recognizers:
        for variable in recognizer.weights:
            if id(variable) in seen or id(variable) in bookkeeping:
                continue
            seen.add(id(variable))
            total += size(variable)
            trained += size(variable) if variable.trainable else 0
    return trained / total


def _unique_trainable(recognizers) -> list:
    seen, variables = set(), []
    for recognizer in recognizers:
        for variable in recognizer.trainable_variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append(variable)
    return variables


class ThroughputMeter(keras.callbacks.Callback):
    """Times training steps (the first, which traces the graph, excluded) for utterances/s."""

    def __init__(self, utterances_per_step: float):
        super().__init__()
        self.utterances_per_step = float(utterances_per_step)
        self.steps, self.seconds, self._started, self._first = 0, 0.0, 0.0, True

    def on_train_batch_begin(self, batch, logs=None):
        self._started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self._first:
            self._first = False
            return
        self.steps += 1
        self.seconds += time.perf_counter() - self._started

    @property
    def utterances_per_second(self) -> float:
        return self.steps * self.utterances_per_step / self.seconds if self.seconds > 0 else float("nan")


def dataset_size(dataset: tf.data.Dataset) -> tuple[int, int]:
    """(utterances, batches) of a finite batched dataset (one pass: also fills its cache)."""
    utterances = batches = 0
    for batch in dataset:
        utterances += int(tf.shape(batch["feature_lengths"])[0])
        batches += 1
    if batches == 0:
        raise ValueError("empty dataset: a stage needs at least one batch")
    return utterances, batches


def _history(fit_history) -> dict[str, list[float]]:
    return {key: [float(v) for v in values] for key, values in fit_history.history.items()}


def _fit(name: str, recognizer: CTCRecognizer, train: tf.data.Dataset, epochs: int, learning_rate: float,
         validation=None, callbacks=(), verbose="auto") -> StageResult:
    """Compiles `recognizer` with Adam for its currently trainable variables and fits it."""
    utterances, batches = dataset_size(train)
    meter = ThroughputMeter(utterances / batches)
    recognizer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    started = time.perf_counter()
    history = recognizer.fit(train, validation_data=validation, epochs=epochs, verbose=verbose,
                             callbacks=[meter, *callbacks])
    return StageResult(name, {recognizer.language: recognizer}, parameter_share([recognizer]), _history(history),
                       time.perf_counter() - started, meter.utterances_per_second)


# ---------------------------------------------------------------------------------------------
# Source-side stages


@keras.saving.register_keras_serializable("kerastl")
class MultilingualTrainer(keras.Model):
    """Trains several recognisers (sharing layers) on multilingual batches: each element of
    the data is `{lang: dict batch}` and the step minimises the sum of the languages' losses.

    Example:
    >>> trainer = MultilingualTrainer({lang: asr.recognizer(lang, "plain") for lang in ("ru", "it")})  # doctest: +SKIP
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-3))                                # doctest: +SKIP
    >>> trainer.fit(mixed_batches({"ru": ru_train, "it": it_train}), steps_per_epoch=50)     # doctest: +SKIP
    """

    def __init__(self, recognizers: dict[str, CTCRecognizer], **kwargs):
        super().__init__(**kwargs)
        self.recognizers = dict(recognizers)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.language_trackers = {lang: keras.metrics.Mean(name=f"ctc_{lang}") for lang in self.recognizers}

    def call(self, inputs, training=None):
        return {lang: self.recognizers[lang](batch, training=training) for lang, batch in inputs.items()}

    def train_step(self, data):
        variables = _unique_trainable(self.recognizers.values())
        with tf.GradientTape() as tape:
            total, ctc = 0.0, {}
            for lang, batch in data.items():
                loss, ctc[lang] = self.recognizers[lang].batch_loss(batch, training=True)
                total += loss
        gradients = tape.gradient(total, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.loss_tracker.update_state(total)
        for lang, value in ctc.items():
            self.language_trackers[lang].update_state(value)
        return {metric.name: metric.result() for metric in self.metrics}

    @property
    def metrics(self):
        return [self.loss_tracker, *self.language_trackers.values()]

    def get_config(self):
        return {**super().get_config(), "recognizers": {
            lang: keras.saving.serialize_keras_object(r) for lang, r in self.recognizers.items()}}

    @classmethod
    def from_config(cls, config):
        # The recognisers share layers (the encoder, adapters): rebuild each layer once, by
        # its name (unique within a MultilingualASR), so the loaded trainer shares them too.
        config = dict(config)
        layers = {}

        def layer(serialized):
            name = serialized["config"]["name"]
            if name not in layers:
                layers[name] = keras.saving.deserialize_keras_object(serialized)
            return layers[name]

        recognizers = {}
        for lang, serialized in config.pop("recognizers").items():
            options = serialized["config"]
            fusion = options.get("fusion")
            recognizers[lang] = CTCRecognizer(
                layer(options["encoder"]), layer(options["head"]),
                {name: [layer(a) for a in stack] for name, stack in options["adapters"].items()},
                None if fusion is None else [layer(f) for f in fusion], language=options.get("language"),
                name=options["name"])
        return cls(recognizers, **config)


def mixed_batches(train_sets: dict[str, tf.data.Dataset]) -> tf.data.Dataset:
    """`{lang: batch}` elements, every language repeated endlessly (pass steps_per_epoch)."""
    return tf.data.Dataset.zip({lang: dataset.repeat() for lang, dataset in train_sets.items()})


def _fit_multilingual(name, model: MultilingualASR, recognizers, train_sets, epochs, learning_rate, callbacks,
                      verbose) -> StageResult:
    sizes = {lang: dataset_size(dataset) for lang, dataset in train_sets.items()}
    steps = max(batches for _, batches in sizes.values())
    per_step = sum(utterances / batches for utterances, batches in sizes.values())
    trainer = MultilingualTrainer(recognizers, name=f"{name}_trainer")
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    meter = ThroughputMeter(per_step)
    started = time.perf_counter()
    history = trainer.fit(mixed_batches(train_sets), epochs=epochs, steps_per_epoch=steps, verbose=verbose,
                          callbacks=[meter, *callbacks])
    return StageResult(name, recognizers, parameter_share(list(recognizers.values())), _history(history),
                       time.perf_counter() - started, meter.utterances_per_second)


def pretrain(model: MultilingualASR, train_sets: dict[str, tf.data.Dataset], epochs: int,
             learning_rate: float = 1e-3, joint_adapters: bool = False, callbacks=(),
             verbose="auto") -> StageResult:
    """Multilingual pre-training of the backbone and the source heads (see the module
    docstring); `joint_adapters` also trains the languages' adapters (joint variant)."""
    languages = list(train_sets)
    model.train_only(backbone=True, heads=languages, adapters=languages if joint_adapters else ())
    mode = "adapter" if joint_adapters else "plain"
    recognizers = {lang: model.recognizer(lang, mode) for lang in languages}
    return _fit_multilingual("pretrain_joint" if joint_adapters else "pretrain", model, recognizers, train_sets,
                             epochs, learning_rate, callbacks, verbose)


def train_source_adapters(model: MultilingualASR, train_sets: dict[str, tf.data.Dataset], epochs: int,
                          learning_rate: float = 1e-3, callbacks=(), verbose="auto") -> StageResult:
    """Two-stage adapters: the backbone frozen, every source language's adapters + head trained."""
    languages = list(train_sets)
    model.train_only(adapters=languages, heads=languages)
    recognizers = {lang: model.recognizer(lang, "adapter") for lang in languages}
    return _fit_multilingual("source_adapters", model, recognizers, train_sets, epochs, learning_rate, callbacks,
                             verbose)


# ---------------------------------------------------------------------------------------------
# Target-side stages


def train_target(model: MultilingualASR, target: str, method: str, train: tf.data.Dataset, epochs: int,
                 learning_rate: float = 1e-3, validation=None, callbacks=(), verbose="auto") -> StageResult:
    """A target-language baseline on `model` (which already has the target's head):
    "scratch" and "full_ft" train backbone + head (scratch expects a fresh model), "head" the
    head alone, "adapter" the target's adapters + head; the backbone is otherwise frozen."""
    parts = {"scratch": dict(backbone=True, heads=[target]), "full_ft": dict(backbone=True, heads=[target]),
             "head": dict(heads=[target]), "adapter": dict(adapters=[target], heads=[target])}
    if method not in parts:
        raise ValueError(f"method {method!r}: expected one of {', '.join(parts)}")
    model.train_only(**parts[method])
    recognizer = model.recognizer(target, "adapter" if method == "adapter" else "plain")
    return _fit(method, recognizer, train, epochs, learning_rate, validation, callbacks, verbose)


def train_simadapter(model: MultilingualASR, target: str, sources: Sequence[str], train: tf.data.Dataset,
                     epochs: int, learning_rate: float = 1e-3, guide_weight: float = 0.1, train_head: bool = True,
                     validation=None, callbacks=(), verbose="auto") -> StageResult:
    """SimAdapter for `target`: fusion layers over the adapters of `sources` and the target's
    own (which must be trained already); only the fusion layers (and, with `train_head`, the
    target head) train. A fusion already on the model is replaced by a fresh one."""
    model.add_fusion(target, sources, guide_weight=guide_weight, replace=True)
    model.train_only(fusions=[target], heads=[target] if train_head else ())
    recognizer = model.recognizer(target, "simadapter")
    return _fit("simadapter", recognizer, train, epochs, learning_rate, validation, callbacks, verbose)


def _drive_callbacks(callbacks, model):
    return keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=False, model=model)


def meta_train_adapters(model: MultilingualASR, train_sets: dict[str, tf.data.Dataset], epochs: int,
                        inner_lr: float = 0.01, meta_lr: float = 1e-4, name: str = META_ADAPTERS,
                        callbacks=(), verbose="auto") -> StageResult:
    """First-order MAML of a shared adapter set `name` over the source languages.

    Each meta step takes one batch per source language (support = first half, query =
    second half), runs through the frozen backbone, the shared adapters and the language's
    frozen head, and applies `first_order_maml_step` with the outer step decaying linearly
    to zero over the run. The adapter set is created (identity) if the model lacks it.
    """
    languages = list(train_sets)
    if name not in model.adapters:
        model.add_adapters(name)
    model.train_only(adapters=[name])
    recognizers = {lang: model.recognizer(lang, "adapter", adapter=name, name=f"meta_{lang}") for lang in languages}
    losses = {lang: tf.function(lambda batch, r=r: r.batch_loss(batch, training=True)[0],
                                input_signature=[BATCH_SIGNATURE]) for lang, r in recognizers.items()}
    variables = model.variables_of("adapters", name)
    sizes = {lang: dataset_size(dataset) for lang, dataset in train_sets.items()}
    steps = max(batches for _, batches in sizes.values())
    per_step = sum(utterances / batches for utterances, batches in sizes.values())
    # A task is split into support and query halves: batches of one utterance are skipped.
    iterators = {lang: iter(dataset.repeat().filter(lambda batch: tf.shape(batch["feature_lengths"])[0] >= 2))
                 for lang, dataset in train_sets.items()}
    optimizer = make_inner_optimizer(inner_lr)
    # Keras callbacks (e.g. TensorBoard) see the inner optimizer as the model's.
    recognizers[languages[0]].compile(optimizer=optimizer)
    driver = _drive_callbacks(callbacks, recognizers[languages[0]])
    history: dict[str, list[float]] = {"support_loss": [], "query_loss": []}
    verbose = 1 if verbose == "auto" else verbose
    started, timed_seconds, timed_steps = time.perf_counter(), 0.0, 0
    driver.on_train_begin()
    for epoch in range(epochs):
        driver.on_epoch_begin(epoch)
        bar = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=["support_loss", "query_loss"])
        if verbose:
            print(f"Meta epoch {epoch + 1}/{epochs}")
        totals = np.zeros(2)
        for step in range(steps):
            tasks = [(lang, next(iterators[lang])) for lang in languages]
            step_started = time.perf_counter()
            result = first_order_maml_step(variables, tasks, lambda lang, batch: losses[lang](batch),
                                           meta_lr=meta_lr, progress=(epoch * steps + step) / (epochs * steps),
                                           inner_optimizer=optimizer)
            if epoch or step:
                timed_seconds += time.perf_counter() - step_started
                timed_steps += 1
            totals += (result["support_loss"], result["query_loss"])
            bar.update(step + 1, [("support_loss", totals[0] / (step + 1)), ("query_loss", totals[1] / (step + 1))])
        logs = {"support_loss": totals[0] / steps, "query_loss": totals[1] / steps}
        for key, value in logs.items():
            history[key].append(float(value))
        driver.on_epoch_end(epoch, logs)
    driver.on_train_end()
    throughput = timed_steps * per_step / timed_seconds if timed_seconds > 0 else float("nan")
    return StageResult("meta_adapters", recognizers, parameter_share(list(recognizers.values())), history,
                       time.perf_counter() - started, throughput)


def train_metaadapter(model: MultilingualASR, target: str, source_sets: dict[str, tf.data.Dataset],
                      train: tf.data.Dataset, meta_epochs: int, epochs: int, learning_rate: float = 1e-3,
                      inner_lr: float = 0.01, meta_lr: float = 1e-4, validation=None, callbacks=(),
                      meta_callbacks=(), verbose="auto") -> StageResult:
    """MetaAdapter: `meta_train_adapters` over the sources, copy the result into the target's
    adapters, then fine-tune them with the target head (backbone frozen). The result's
    history holds the fine-tuning and, prefixed `meta_`, the MAML epochs."""
    meta = meta_train_adapters(model, source_sets, meta_epochs, inner_lr, meta_lr, callbacks=meta_callbacks,
                               verbose=verbose)
    model.copy_adapters(META_ADAPTERS, target)
    result = train_target(model, target, "adapter", train, epochs, learning_rate, validation, callbacks, verbose)
    result.name = "metaadapter"
    result.history.update({f"meta_{key}": values for key, values in meta.history.items()})
    result.seconds += meta.seconds
    return result


# ---------------------------------------------------------------------------------------------
# Evaluation and methods


def evaluate(recognizer: CTCRecognizer, dataset: tf.data.Dataset, vocabulary, references: Sequence[str] | None = None,
             beam_width: int = 0) -> dict[str, float]:
    """Corpus CER and WER of `recognizer` on an unshuffled dataset of dict batches.

    Hypotheses are decoded greedily (`beam_width` 0) or by CTC beam search. References are
    the batches' labels decoded with `vocabulary`, or `references` (the transcripts in the
    dataset's order; use them when transcripts may hold characters outside the vocabulary,
    which the labels drop)."""
    label_ids, hypothesis_ids = recognizer.decode_dataset(dataset, beam_width)
    hypotheses = [vocabulary.decode(ids) for ids in hypothesis_ids]
    if references is None:
        references = [vocabulary.decode(ids) for ids in label_ids]
    elif len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references for {len(hypotheses)} utterances in the dataset")
    return {"cer": cer(references, hypotheses), "wer": wer(references, hypotheses)}


def recognizer_mode(method: str) -> str:
    """The `MultilingualASR.recognizer` mode a method's target recogniser uses."""
    if method not in METHODS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(METHODS)}")
    return {"adapter": "adapter", "metaadapter": "adapter", "simadapter": "simadapter",
            "simadapter_plus": "simadapter"}.get(method, "plain")


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
    common = dict(validation=data.dev, callbacks=callbacks(method), verbose=settings.verbose)
    if method in TARGET_BASELINES:
        return train_target(model, target, method, data.train, settings.epochs, settings.learning_rate, **common)
    if method in ("simadapter", "simadapter_plus"):
        result = train_simadapter(model, target, sources, data.train, settings.fusion_epochs, settings.fusion_lr,
                                  settings.guide_weight, **common)
        result.name = method
        return result
    if method == "metaadapter":
        if not data.source_train:
            raise ValueError("metaadapter needs the sources' training batches (TargetData.source_train)")
        return train_metaadapter(model, target, data.source_train, data.train, settings.meta_epochs,
                                 settings.epochs, settings.learning_rate, settings.inner_lr, settings.meta_lr,
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



# ---------------------------------------------------------------------------------------------
# The source model, trained once and cached


@dataclasses.dataclass
class SourceSettings:
    """How the source model is trained: `pretrain_epochs` of multilingual pre-training, then
    `adapter_epochs` of the sources' adapters and heads, "two_stage" (backbone frozen) or
    "joint" (the adapters trained with the backbone during pre-training; no second stage)."""

    pretrain_epochs: int = 10
    adapter_epochs: int = 3
    learning_rate: float = 1e-3
    adapter_training: str = "two_stage"
    verbose: int | str = "auto"


def fingerprint(content) -> str:
    """A short stable hash of JSON-able `content` (cache keys)."""
    import hashlib
    import json

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
    import json
    import os

    if settings.adapter_training not in ("two_stage", "joint"):
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

    joint = settings.adapter_training == "joint"
    final = os.path.join(cache, "model") if cache else None
    if final and os.path.isdir(final):
        return MultilingualASR.load(final), {**facts, "reused": ["pretrain", "source_adapters"]}
    reused = []
    if cache and not joint and os.path.isdir(os.path.join(cache, "pretrained")):
        model, reused = MultilingualASR.load(os.path.join(cache, "pretrained")), ["pretrain"]
    else:
        model = build()
        result = pretrain(model, train_sets, settings.pretrain_epochs, settings.learning_rate, joint_adapters=joint,
                          callbacks=callbacks("pretrain"), verbose=settings.verbose)
        finish("pretrain", model, result)
    if not joint:
        result = train_source_adapters(model, train_sets, settings.adapter_epochs, settings.learning_rate,
                                       callbacks=callbacks("source_adapters"), verbose=settings.verbose)
        finish("source_adapters", model, result)
    elif cache:
        model.save(final)
    return model, {**facts, "reused": reused}


# ---------------------------------------------------------------------------------------------
# Serving


def export_recognizer(recognizer: CTCRecognizer, vocabulary, path: str, overwrite: bool = False,
                      metadata: dict | None = None) -> str:
    """Exports `recognizer` as a SavedModel for TF Serving at `path` (a version folder).

    Input `waveform`: float32 `[batch, samples]`, 16 kHz audio in [-1, 1] (a batch of
    different lengths is zero-padded at the end). Outputs `logits` (float32 `[batch, frames,
    vocabulary size]`, blank = 0), `logit_lengths` (int32 `[batch]`) and `text` (string
    `[batch]`, greedy CTC decoding). The log-mel front end is inside, the same functions as
    the training pipeline's.
    """
    from kerastl.data.audio import SAMPLE_RATE, LogMelFrontEnd
    from kerastl.adapters.ctc import greedy_decode_graph
    from kerastl.export import export_model

    front_end = LogMelFrontEnd(name="front_end")

    def outputs(waveform):
        features, frame_lengths = front_end(waveform)
        result = recognizer({"features": features, "feature_lengths": frame_lengths}, training=False)
        logits = tf.cast(result["logits"], tf.float32)
        ids = greedy_decode_graph(logits, result["logit_lengths"])
        return {"logits": logits, "logit_lengths": tf.cast(result["logit_lengths"], tf.int32),
                "text": vocabulary.tf_decode(ids)}

    facts = {"task": "speech recognition (CTC)", "sample_rate": SAMPLE_RATE, "language": recognizer.language,
             "mode": recognizer.mode, "vocabulary": vocabulary.characters,
             "outputs": {"logits": "float32 [batch, frames, vocabulary]", "logit_lengths": "int32 [batch]",
                         "text": "string [batch]"}, **(metadata or {})}
    return export_model(recognizer, path, {"waveform": tf.TensorSpec([None, None], tf.float32)}, outputs, facts,
                        overwrite)
