"""A client's local work in plain TF: SGD epochs (optionally with FedProx's proximal term)
and accuracy, on a Keras 2 or Keras 3 model whose output is logits.

Plain SGD without momentum, as the reference's clients use: a client carries no optimizer
state from one round to the next, so its model alone is its state.

Example:
>>> train = make_local_trainer(model, learning_rate=0.01)
>>> train(dataset, epochs=1)          # dataset of (x, y) batches; updates model in place
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

    @tf.function
    def train(dataset, epochs, proximal=tf.constant(True)):
        anchor = [tf.identity(v) for v in variables]
        seen = tf.constant(0, tf.int64)
        loss_sum = tf.constant(0.0, tf.float32)
        for _ in tf.range(epochs):
            seen = tf.constant(0, tf.int64)
            loss_sum = tf.constant(0.0, tf.float32)
            for element in dataset:
                x, y = split_element(element)
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(x, training=True), tf.float32)
                    cross_entropy = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=tf.cast(y, tf.int32), logits=logits))
                    loss = cross_entropy
                    if prox_mu > 0:
                        active = tf.logical_and(tf.cast(proximal, tf.bool),
                                                tf.logical_or(prox_form == "squared", seen > 0))
                        loss += tf.where(active, tf.cast(proximal_term(anchor), tf.float32), 0.0)
                for variable, gradient in zip(variables, tape.gradient(loss, variables)):
                    variable.assign_sub(learning_rate * gradient)
                batch = tf.shape(y)[0]
                seen += tf.cast(batch, tf.int64)
                loss_sum += cross_entropy * tf.cast(batch, tf.float32)
        if with_loss:
            return seen, loss_sum / tf.maximum(tf.cast(seen, tf.float32), 1.0)
        return seen

    return train


def make_evaluator(model):
    """`evaluate(dataset) -> (correct, count)` with the model in inference mode."""

    @tf.function
    def evaluate(dataset):
        def add(totals, element):
            x, y = split_element(element)
            predicted = tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)
            correct = tf.reduce_sum(tf.cast(tf.equal(predicted, tf.cast(y, tf.int32)), tf.int64))
            return totals[0] + correct, totals[1] + tf.cast(tf.shape(y)[0], tf.int64)

        return dataset.reduce((tf.constant(0, tf.int64), tf.constant(0, tf.int64)), add)

    return evaluate


def split_element(element):
    """`(x, y)` of a dataset element given as a tuple or as a dict with keys x, y."""
    if isinstance(element, dict):
        return element["x"], element["y"]
    return element[0], element[1]
