"""The training stages of cross-lingual low-resource ASR with adapters (Hou et al. 2022), as
functions over a `MultilingualASR`.

Stages (each returns a `StageResult`: the recogniser(s), the share of parameters trained,
the per-epoch history, wall time and training throughput):
- `pretrain`: the multilingual backbone on the source languages (shared encoder + one CTC
  head per language). Every step sees one batch of EVERY source language and minimises the
  sum of their CTC losses (the reference's multilingual batches: batch size x languages);
  an epoch is as many steps as the largest language has batches, smaller languages repeat.
  `with_adapters=True` trains each language's adapters together with the backbone.
- `train_source_adapters`: after pre-training, the backbone frozen, each source language's
  adapters trained: with `train_heads=False` (the "two_stage" schedule, the reference's: the
  heads trained first, in pre-training, then frozen) or with their heads ("joint") (same
  mixed batches; the languages' parameters are disjoint, so this equals training them one
  by one).
- `train_target`: the target-language baselines and the single adapter: "scratch" (a fresh
  model, everything trained), "head" (frozen backbone, a new head), "full_ft" (backbone +
  new head), "adapter" (frozen backbone; `adapter_training` "two_stage": the new head first
  on the frozen backbone, then the target's adapters with the head frozen, as the reference
  recommends; "joint": adapters and head together).
- `train_simadapter`: SimAdapter fusion over the sources' adapters and the target's own (the
  target's adapters trained first, e.g. by `train_target(..., "adapter")`); only the fusion
  layers train (Adam 1e-3; heads, adapters and backbone frozen, as the reference), with the
  stability regulariser and the fusion-guide loss (its weight optionally decayed linearly).

With validation data, the target stages keep the weights of the epoch with the lowest dev
loss and stop after `patience` epochs without improvement (the reference decodes with its
best-dev-loss model, patience 10).

`evaluate` gives corpus CER / WER with greedy (or beam) CTC decoding.

Built from these stages, beside this module: MetaAdapter's meta-learning stage
(`kerastl.adapters.metaadapter`), the paper's methods run for one target
(`kerastl.adapters.methods`), the source model trained once and cached
(`kerastl.adapters.source_cache`) and the waveform-to-text SavedModel
(`kerastl.adapters.serving`).

Example (a two-stage backbone on ru and it, then SimAdapter for ro):
>>> asr = MultilingualASR({"ru": ru_vocab.size, "it": it_vocab.size}, num_layers=2)  # doctest: +SKIP
>>> pretrain(asr, {"ru": ru_train, "it": it_train}, epochs=10)                       # doctest: +SKIP
>>> train_source_adapters(asr, {"ru": ru_train, "it": it_train}, epochs=3)           # doctest: +SKIP
>>> asr.add_language("ro", ro_vocab.size)                                            # doctest: +SKIP
>>> train_target(asr, "ro", "adapter", ro_train, epochs=20, validation=ro_dev)       # doctest: +SKIP
>>> fused = train_simadapter(asr, "ro", ["ru", "it"], ro_train, epochs=10, validation=ro_dev)  # doctest: +SKIP
>>> evaluate(fused.recognizer, ro_test, ro_vocab)                                    # doctest: +SKIP
{'cer': 0.21, 'wer': 0.55}
"""

from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from kerastl.adapters.metrics import cer, wer
from kerastl.adapters.model import CTCRecognizer, MultilingualASR
from kerastl.adapters.simadapter import GuideWeightDecay

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
        best_epoch: with validation data, the epoch (1-based) whose weights were kept.
    """

    name: str
    recognizers: dict[str, CTCRecognizer]
    trained_share: float
    history: dict[str, list[float]]
    seconds: float
    utterances_per_second: float
    best_epoch: int | None = None

    @property
    def recognizer(self) -> CTCRecognizer:
        """The recogniser of a single-language stage."""
        if len(self.recognizers) != 1:
            raise ValueError(f"stage {self.name} trained {len(self.recognizers)} recognisers; use .recognizers")
        return next(iter(self.recognizers.values()))

    def facts(self) -> dict:
        """JSON-able summary (no models)."""
        facts = {"stage": self.name, "trained_share": self.trained_share, "history": self.history,
                 "seconds": round(self.seconds, 2), "utterances_per_second": round(self.utterances_per_second, 2)}
        return facts if self.best_epoch is None else {**facts, "best_epoch": self.best_epoch}


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


PATIENCE = 10  # the reference's: epochs without a lower dev loss before training stops


def _fit(name: str, recognizer: CTCRecognizer, train: tf.data.Dataset, epochs: int, learning_rate: float,
         validation=None, callbacks=(), verbose="auto", patience: int = PATIENCE) -> StageResult:
    """Compiles `recognizer` with Adam for its currently trainable variables and fits it; with
    `validation`, keeps the best-dev-loss epoch's weights and stops after `patience` epochs
    without improvement (patience 0: never stops early, still keeps the best epoch)."""
    utterances, batches = dataset_size(train)
    meter = ThroughputMeter(utterances / batches)
    best = None
    if validation is not None:
        best = keras.callbacks.EarlyStopping("val_loss", patience=patience or epochs, mode="min",
                                             restore_best_weights=True)
    recognizer.compile(optimizer=keras.optimizers.Adam(learning_rate))
    started = time.perf_counter()
    history = recognizer.fit(train, validation_data=validation, epochs=epochs, verbose=verbose,
                             callbacks=[meter, *callbacks, *([best] if best else [])])
    return StageResult(name, {recognizer.language: recognizer}, parameter_share([recognizer]), _history(history),
                       time.perf_counter() - started, meter.utterances_per_second,
                       None if best is None else best.best_epoch + 1)


def _in_sequence(name: str, first: StageResult, second: StageResult, prefix: str) -> StageResult:
    """Two stages with disjoint trained parameters (the second's recogniser holding the
    first's), reported as one: the trained parameters add up, the first stage's history keys
    get `prefix`."""
    def trained(result):
        return result.trained_share * result.recognizer.parameter_counts()[1]

    share = (trained(first) + trained(second)) / second.recognizer.parameter_counts()[1]
    history = {**{f"{prefix}{key}": values for key, values in first.history.items()}, **second.history}
    return StageResult(name, second.recognizers, share, history, first.seconds + second.seconds,
                       second.utterances_per_second, second.best_epoch)


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
             learning_rate: float = 1e-3, with_adapters: bool = False, callbacks=(),
             verbose="auto") -> StageResult:
    """Multilingual pre-training of the backbone and the source heads (see the module
    docstring); `with_adapters` also trains the languages' adapters with the backbone."""
    languages = list(train_sets)
    model.train_only(backbone=True, heads=languages, adapters=languages if with_adapters else ())
    mode = "adapter" if with_adapters else "plain"
    recognizers = {lang: model.recognizer(lang, mode) for lang in languages}
    return _fit_multilingual("pretrain_with_adapters" if with_adapters else "pretrain", model, recognizers,
                             train_sets, epochs, learning_rate, callbacks, verbose)


def train_source_adapters(model: MultilingualASR, train_sets: dict[str, tf.data.Dataset], epochs: int,
                          learning_rate: float = 1e-3, train_heads: bool = False, callbacks=(),
                          verbose="auto") -> StageResult:
    """The sources' adapters on the frozen backbone: every source language's adapters, with
    its head frozen (two-stage: the heads were trained in pre-training) or, with
    `train_heads`, trained too (joint)."""
    languages = list(train_sets)
    model.train_only(adapters=languages, heads=languages if train_heads else ())
    recognizers = {lang: model.recognizer(lang, "adapter") for lang in languages}
    return _fit_multilingual("source_adapters", model, recognizers, train_sets, epochs, learning_rate, callbacks,
                             verbose)


# ---------------------------------------------------------------------------------------------
# Target-side stages


ADAPTER_TRAINING = ("two_stage", "joint")


def train_target(model: MultilingualASR, target: str, method: str, train: tf.data.Dataset, epochs: int,
                 learning_rate: float = 1e-3, validation=None, callbacks=(), verbose="auto",
                 adapter_training: str = "two_stage", patience: int = PATIENCE) -> StageResult:
    """A target-language baseline on `model` (which already has the target's head):
    "scratch" and "full_ft" train backbone + head (scratch expects a fresh model), "head" the
    head alone, "adapter" the target's adapters and head; the backbone is otherwise frozen.

    "adapter" with `adapter_training` "two_stage" trains the head first (on the frozen
    backbone, `epochs`), then the adapters with the head frozen (`epochs`; the first stage's
    history keys get the prefix `head_`); "joint" trains both at once."""
    parts = {"scratch": dict(backbone=True, heads=[target]), "full_ft": dict(backbone=True, heads=[target]),
             "head": dict(heads=[target]), "adapter": dict(adapters=[target], heads=[target])}
    if method not in parts:
        raise ValueError(f"method {method!r}: expected one of {', '.join(parts)}")
    if adapter_training not in ADAPTER_TRAINING:
        raise ValueError(f"adapter_training {adapter_training!r}: expected one of {', '.join(ADAPTER_TRAINING)}")
    fit = dict(validation=validation, callbacks=callbacks, verbose=verbose, patience=patience)
    if method == "adapter" and adapter_training == "two_stage":
        model.train_only(heads=[target])
        head = _fit("adapter_head", model.recognizer(target, "plain"), train, epochs, learning_rate, **fit)
        model.train_only(adapters=[target])
        adapters = _fit(method, model.recognizer(target, "adapter"), train, epochs, learning_rate, **fit)
        return _in_sequence(method, head, adapters, "head_")
    model.train_only(**parts[method])
    recognizer = model.recognizer(target, "adapter" if method == "adapter" else "plain")
    return _fit(method, recognizer, train, epochs, learning_rate, **fit)


def train_simadapter(model: MultilingualASR, target: str, sources: Sequence[str], train: tf.data.Dataset,
                     epochs: int, learning_rate: float = 1e-3, guide_weight: float = 0.1, guide_decay_steps: int = 0,
                     validation=None, callbacks=(), verbose="auto", patience: int = PATIENCE) -> StageResult:
    """SimAdapter for `target`: fusion layers over the adapters of `sources` and the target's
    own (which must be trained already, with the target head); only the fusion layers train,
    the guide weight decaying linearly to 0 over `guide_decay_steps` training steps (0 =
    constant). A fusion already on the model is replaced by a fresh one."""
    layers = model.add_fusion(target, sources, guide_weight=guide_weight, replace=True)
    model.train_only(fusions=[target])
    recognizer = model.recognizer(target, "simadapter")
    decay = GuideWeightDecay(layers, guide_weight, guide_decay_steps)
    return _fit("simadapter", recognizer, train, epochs, learning_rate, validation, [decay, *callbacks], verbose,
                patience)


# ---------------------------------------------------------------------------------------------
# Evaluation


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
