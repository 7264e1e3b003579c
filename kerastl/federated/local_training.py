"""A client's local work in plain TF: SGD epochs (optionally with FedProx's proximal term)
and accuracy, on a Keras 2 or Keras 3 model whose output is logits.

Plain SGD without momentum, as the reference's clients use: a client carries no optimizer
state from one round to the next, so its model alone is its state.

Example:
>>> train = make_local_trainer(model, learning_rate=0.01)
>>> train(dataset, epochs=1)          # dataset of (x, y) batches; updates model in place
>>> evaluate = make_evaluator(model)
>>> correct, count = evaluate(dataset)
"""

from __future__ import annotations

import tensorflow as tf


PROX_FORMS = ("norm", "squared")


def make_local_trainer(model, learning_rate: float, prox_mu: float = 0.0, with_loss: bool = False,
                       prox_form: str = "norm"):
    """`train(dataset, epochs, proximal=True)`: runs `epochs` passes of SGD over `dataset`
    (elements `(x, y)` or `{"x", "y"}`) and returns the number of examples seen per epoch;
    with `with_loss`, `(seen, loss)`: loss is the mean cross-entropy over the last epoch's
    examples (training mode, as each step saw it; FedProx's term not included).

    With `prox_mu > 0` and `proximal` true, the loss adds FedProx's term over the trainable
    variables, w_start being the weights at the start of the call (the model the client
    received):
    - `prox_form="norm"` (the reference's): `prox_mu / 2 * ||w - w_start||`, from the second
      step of each epoch on, as the reference (the norm has no gradient at w_start, where
      the first step stands);
    - `prox_form="squared"` (FedProx's paper): `prox_mu / 2 * ||w - w_start||^2` at every step.

    Where the loop over the batches runs depends on the caller; both loops run the same step:
    - called eagerly (the local engine): in Python, each batch one call of the compiled
      step. On a CPU this is about 3x faster than the loop inside a graph
      (`benchmarks/adafed_step_cost.py`);
    - called inside a graph (a `tf.function`, a TFF computation): inside that graph.
    """
    if prox_form not in PROX_FORMS:
        raise ValueError(f"prox_form {prox_form!r}: expected one of {', '.join(PROX_FORMS)}")
    variables = model.trainable_variables

    def proximal_term(anchor):
        squared = tf.add_n([tf.reduce_sum(tf.square(v - a)) for v, a in zip(variables, anchor)])
        if prox_form == "squared":
            return prox_mu / 2.0 * squared
        # max(., tiny): the norm's gradient stays finite (zero) where w equals w_start.
        return prox_mu / 2.0 * tf.sqrt(tf.maximum(squared, 1e-30))

    def step(x, y, anchor, proximal_active):
        """One SGD step; returns the batch's mean cross-entropy and its size."""
        with tf.GradientTape() as tape:
            logits = tf.cast(model(x, training=True), tf.float32)
            cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.int32), logits=logits))
            loss = cross_entropy
            if prox_mu > 0:
                loss += tf.where(proximal_active, tf.cast(proximal_term(anchor), tf.float32), 0.0)
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            variable.assign_sub(learning_rate * gradient)
        return cross_entropy, tf.shape(y)[0]

    def result(seen, loss_sum):
        if with_loss:
            return seen, loss_sum / tf.maximum(tf.cast(seen, tf.float32), 1.0)
        return seen

    @tf.function
    def train_in_graph(dataset, epochs, proximal):
        anchor = [tf.identity(v) for v in variables]
        seen = tf.constant(0, tf.int64)
        loss_sum = tf.constant(0.0, tf.float32)
        for _ in tf.range(epochs):
            seen = tf.constant(0, tf.int64)
            loss_sum = tf.constant(0.0, tf.float32)
            for element in dataset:
                x, y = split_element(element)
                active = tf.logical_and(tf.cast(proximal, tf.bool),
                                        tf.logical_or(prox_form == "squared", seen > 0))
                cross_entropy, batch = step(x, y, anchor, active)
                seen += tf.cast(batch, tf.int64)
                loss_sum += cross_entropy * tf.cast(batch, tf.float32)
        return result(seen, loss_sum)

    # One trace serves every batch size (a client's last batch is smaller).
    compiled_step = tf.function(step, reduce_retracing=True)

    def train_from_python(dataset, epochs, proximal):
        anchor = [tf.identity(v) for v in variables]
        seen, loss_sum = 0, tf.constant(0.0, tf.float32)
        for _ in range(int(epochs)):
            seen, loss_sum = 0, tf.constant(0.0, tf.float32)
            for element in dataset:
                x, y = split_element(element)
                active = tf.constant(bool(proximal) and (prox_form == "squared" or seen > 0))
                cross_entropy, batch = compiled_step(x, y, anchor, active)
                seen += int(y.shape[0])
                loss_sum += cross_entropy * tf.cast(batch, tf.float32)
        return result(tf.constant(seen, tf.int64), loss_sum)

    def train(dataset, epochs, proximal=True):
        if tf.executing_eagerly():
            return train_from_python(dataset, epochs, proximal)
        return train_in_graph(dataset, epochs, tf.cast(proximal, tf.bool))

    return train


def make_evaluator(model):
    """`evaluate(dataset) -> (correct, count)` with the model in inference mode; called
    eagerly, each batch one call of a compiled function (as `make_local_trainer`'s loop)."""

    @tf.function(reduce_retracing=True)
    def correct_in(x, y):
        predicted = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
        return tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), tf.int64))

    def evaluate(dataset):
        correct, count = tf.constant(0, tf.int64), 0
        for element in dataset:
            x, y = split_element(element)
            correct += correct_in(x, y)
            count += int(y.shape[0])
        return correct, tf.constant(count, tf.int64)

    return evaluate


def split_element(element):
    """`(x, y)` of a dataset element given as a tuple or as a dict with keys x, y."""
    if isinstance(element, dict):
        return element["x"], element["y"]
    return element[0], element[1]
