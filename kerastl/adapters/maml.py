"""First-order MAML over languages (MetaAdapter's meta-learned initialisation; Hou et al. 2022).

One meta step, in the order of the reference implementation (NeuralSpeech AdapterASR,
`train_maml_epoch`):

    theta_0 = current values of `variables`
    for each task (one source language and its batch):
        support, query = first and second half of the batch
        one inner optimizer step on the support loss   -> theta_s
        one inner optimizer step on the query loss     -> theta_q   (gradient taken at theta_s)
        update_task = theta_q - theta_s
        variables <- theta_0                           (the next language starts from theta_0)
    theta <- theta_0 + meta_lr * (1 - progress) * mean over tasks of update_task

The inner optimizer is Adam with lr 0.01 and betas (0, 0.999) (so its first moment is just
the gradient). Only the variables are reset between tasks: the optimizer's second-moment
estimates and step count carry on across tasks and, when the same optimizer is passed to every
call, across meta steps, as in the reference (one optimizer for the whole run).

Example (one parameter, one task whose support and query examples both pull it towards 1):
>>> w = keras.Variable([0.0])
>>> loss_fn = lambda task, batch: tf.reduce_mean(tf.square(batch - w))
>>> facts = first_order_maml_step([w], [("a", tf.constant([1.0, 1.0]))], loss_fn, meta_lr=1.0)
>>> round(float(w.numpy()[0]), 5)    # the query step only (the support step moved it by 0.01)
0.00995

Example (MetaAdapter: meta-learn a shared adapter set "meta" over the sources' heads):
>>> optimizer = make_inner_optimizer()                                                 # doctest: +SKIP
>>> recognizers = {lang: asr.recognizer(lang, "adapter", adapter="meta") for lang in sources}  # doctest: +SKIP
>>> loss_fn = lambda lang, batch: recognizers[lang].batch_loss(batch)[0]          # doctest: +SKIP
>>> for step in range(steps):                                                     # doctest: +SKIP
...     tasks = [(lang, next(iterators[lang])) for lang in sources]
...     first_order_maml_step(asr.variables_of("adapters", "meta"), tasks, loss_fn,
...                           meta_lr=1e-4, progress=step / steps, inner_optimizer=optimizer)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import tensorflow as tf


def make_inner_optimizer(learning_rate: float = 0.01, global_clipnorm: float | None = None) -> keras.optimizers.Adam:
    """The reference's inner optimizer: Adam(lr 0.01, betas (0, 0.999), eps 1e-8)."""
    return keras.optimizers.Adam(learning_rate, beta_1=0.0, beta_2=0.999, epsilon=1e-8,
                                 global_clipnorm=global_clipnorm)


def split_batch(batch) -> tuple[Any, Any]:
    """(support, query): the first and second half of every tensor in a (nested) batch.

    With an odd batch size the last example is left out, as in the reference.
    """
    sizes = {int(tf.shape(x)[0]) for x in tf.nest.flatten(batch)}
    if len(sizes) != 1:
        raise ValueError(f"batch tensors disagree on the batch size: {sorted(sizes)}")
    half = sizes.pop() // 2
    if half == 0:
        raise ValueError("a MAML task needs a batch of at least 2 examples (support and query halves)")
    return (tf.nest.map_structure(lambda x: x[:half], batch),
            tf.nest.map_structure(lambda x: x[half:2 * half], batch))


def _inner_step(variables, loss_fn, key, batch, optimizer) -> float:
    with tf.GradientTape() as tape:
        loss = loss_fn(key, batch)
    gradients = tape.gradient(loss, variables)
    pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
    if pairs:
        optimizer.apply_gradients(pairs)
    return float(loss)


def first_order_maml_step(variables: Sequence, tasks: Sequence[tuple[Any, Any]], loss_fn: Callable,
                          inner_lr: float = 0.01, meta_lr: float = 1e-4, progress: float = 0.0,
                          inner_optimizer: keras.optimizers.Optimizer | None = None) -> dict:
    """One first-order MAML meta step over `tasks` (see the module docstring); updates
    `variables` in place.

    Args:
        variables: the meta-learned variables (e.g. `MultilingualASR.variables_of(...)`).
        tasks: (key, batch) pairs, one per language; each batch is split into support and
            query halves along axis 0.
        loss_fn: `loss_fn(key, half_batch) -> scalar loss`, computed from the current values of
            `variables` (wrap a model's forward pass in `tf.function` for graph speed: the
            gradient tape differentiates through it).
        inner_lr: the inner Adam learning rate when `inner_optimizer` is None.
        meta_lr: the outer step size (paper: 1e-4).
        progress: fraction of meta training done, in [0, 1]; the outer step is
            meta_lr * (1 - progress).
        inner_optimizer: an optimizer to reuse across calls (its moments persist, as in the
            reference); None = a fresh `make_inner_optimizer(inner_lr)` for this step.

    Returns {"support_loss", "query_loss"} averaged over tasks, and "outer_step_size".
    """
    if not tasks:
        raise ValueError("first_order_maml_step needs at least one task")
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress {progress}: expected a fraction in [0, 1]")
    variables = list(variables)
    optimizer = inner_optimizer or make_inner_optimizer(inner_lr)
    if not optimizer.built:
        optimizer.build(variables)
    start = [tf.identity(v) for v in variables]
    updates = [tf.zeros_like(v) for v in start]
    support_losses, query_losses = [], []
    for key, batch in tasks:
        support, query = split_batch(batch)
        support_losses.append(_inner_step(variables, loss_fn, key, support, optimizer))
        after_support = [tf.identity(v) for v in variables]
        query_losses.append(_inner_step(variables, loss_fn, key, query, optimizer))
        updates = [u + (v - s) for u, v, s in zip(updates, variables, after_support)]
        for v, value in zip(variables, start):
            v.assign(value)
    step_size = meta_lr * (1.0 - progress)
    for v, value, update in zip(variables, start, updates):
        v.assign(value + step_size * update / len(tasks))
    return {"support_loss": sum(support_losses) / len(tasks), "query_loss": sum(query_losses) / len(tasks),
            "outer_step_size": step_size}
