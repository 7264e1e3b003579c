"""MetaAdapter (Hou et al. 2022): a shared adapter set meta-learned over the source
languages with first-order MAML (`kerastl.adapters.maml`), then fine-tuned on the target.

- `meta_train_adapters`: one shared adapter set ("meta") meta-learned with the source
  languages' heads (the backbone frozen), one MAML task per source language; as the
  reference (its meta-training config trains the adapter with the heads, and its meta update
  averages every trained parameter), a source's head moves in its own task's inner steps
  and takes 1/S of that update. The L2 distance of the meta-learned adapter from its
  initialisation is logged after every epoch (`adapter_distance`): with the reference's
  outer step 1e-4 it stays small unless meta-training runs long.
- `train_metaadapter`: `meta_train_adapters`, then the target's adapters start from the
  meta-learned ones and are fine-tuned with the target head (`train_target`'s "adapter"
  stage, both at once, Adam 0.01: the reference's fine-tuning config).
SimAdapter+ is `train_metaadapter` followed by `kerastl.adapters.stages.train_simadapter`.

Example (meta-learn over ru and it, then fine-tune for ro):
>>> asr.add_language("ro", ro_vocab.size)                                             # doctest: +SKIP
>>> result = train_metaadapter(asr, "ro", {"ru": ru_train, "it": it_train}, ro_train,
...                            meta_epochs=1, epochs=20)                              # doctest: +SKIP
>>> sorted(key for key in result.history if key.startswith("meta_"))                  # doctest: +SKIP
['meta_adapter_distance', 'meta_query_loss', 'meta_support_loss']
"""

from __future__ import annotations

import time

import keras
import numpy as np
import tensorflow as tf

from kerastl.adapters.maml import first_order_maml_step, make_inner_optimizer
from kerastl.adapters.model import MultilingualASR
from kerastl.adapters.stages import (BATCH_SIGNATURE, PATIENCE, StageResult, dataset_size, parameter_share,
                                     train_target)

META_ADAPTERS = "meta"
FINETUNE_LR = 0.01  # the reference's fine-tuning of the meta-learned adapter (Adam)


def distance(values, variables) -> float:
    """L2 distance of `variables` from the arrays `values` (over all of them together)."""
    return float(np.sqrt(sum(np.sum(np.square(v.numpy() - value)) for v, value in zip(variables, values))))


def _drive_callbacks(callbacks, model):
    return keras.callbacks.CallbackList(list(callbacks), add_history=False, add_progbar=False, model=model)


def meta_train_adapters(model: MultilingualASR, train_sets: dict[str, tf.data.Dataset], epochs: int,
                        inner_lr: float = 0.01, meta_lr: float = 1e-4, name: str = META_ADAPTERS,
                        callbacks=(), verbose="auto") -> StageResult:
    """First-order MAML of a shared adapter set `name` and the sources' heads over the source
    languages.

    Each meta step takes one batch per source language (support = first half, query =
    second half), runs through the frozen backbone, the shared adapters and the language's
    head, and applies `first_order_maml_step` to the adapters and heads with the outer step
    decaying linearly to zero over the run. The adapter set is created if the model lacks
    it. The history holds the support and query losses and `adapter_distance` per epoch.
    """
    languages = list(train_sets)
    if name not in model.adapters:
        model.add_adapters(name)
    model.train_only(adapters=[name], heads=languages)
    recognizers = {lang: model.recognizer(lang, "adapter", adapter=name, name=f"meta_{lang}") for lang in languages}
    losses = {lang: tf.function(lambda batch, r=r: r.batch_loss(batch, training=True)[0],
                                input_signature=[BATCH_SIGNATURE]) for lang, r in recognizers.items()}
    adapter_variables = model.variables_of("adapters", name)
    initial = [v.numpy().copy() for v in adapter_variables]
    variables = adapter_variables + [v for lang in languages for v in model.variables_of("head", lang)]
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
    history: dict[str, list[float]] = {"support_loss": [], "query_loss": [], "adapter_distance": []}
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
        logs = {"support_loss": totals[0] / steps, "query_loss": totals[1] / steps,
                "adapter_distance": distance(initial, adapter_variables)}
        if verbose:
            print(f"meta-learned adapter: L2 distance {logs['adapter_distance']:.3g} from its initialisation")
        for key, value in logs.items():
            history[key].append(float(value))
        driver.on_epoch_end(epoch, logs)
    driver.on_train_end()
    throughput = timed_steps * per_step / timed_seconds if timed_seconds > 0 else float("nan")
    return StageResult("meta_adapters", recognizers, parameter_share(list(recognizers.values())), history,
                       time.perf_counter() - started, throughput)


def train_metaadapter(model: MultilingualASR, target: str, source_sets: dict[str, tf.data.Dataset],
                      train: tf.data.Dataset, meta_epochs: int, epochs: int, learning_rate: float = FINETUNE_LR,
                      inner_lr: float = 0.01, meta_lr: float = 1e-4, validation=None, callbacks=(),
                      meta_callbacks=(), verbose="auto", patience: int = PATIENCE) -> StageResult:
    """MetaAdapter: `meta_train_adapters` over the sources, copy the result into the target's
    adapters, then fine-tune them with the target head (backbone frozen; Adam
    `learning_rate`, the reference's 0.01). The result's history holds the fine-tuning and,
    prefixed `meta_`, the MAML epochs (with `meta_adapter_distance`)."""
    meta = meta_train_adapters(model, source_sets, meta_epochs, inner_lr, meta_lr, callbacks=meta_callbacks,
                               verbose=verbose)
    model.copy_adapters(META_ADAPTERS, target)
    result = train_target(model, target, "adapter", train, epochs, learning_rate, validation, callbacks, verbose,
                          adapter_training="joint", patience=patience)
    result.name = "metaadapter"
    result.history.update({f"meta_{key}": values for key, values in meta.history.items()})
    result.seconds += meta.seconds
    return result
