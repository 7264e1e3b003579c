"""Per-client statistics of every batch-norm layer's input, merged exactly across batches.

Plain TensorFlow ops and the functional-model API shared by Keras 2 (TF 2.14, the federated
environment) and Keras 3 (TF 2.17): the same code runs inside a TFF client computation and in
the local simulation engine.

Example:
>>> stats = client_bn_statistics(model, dataset)   # [(count, mean, variance) per BN layer]
"""

from __future__ import annotations

import tensorflow as tf


def bn_layers(model) -> list:
    """The model's batch-norm layers, in layer order."""
    return [layer for layer in model.layers if "BatchNormalization" in type(layer).__name__]


def bn_input_model(model):
    """A model with the same input whose outputs are the inputs of every BN layer."""
    layers = bn_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no BatchNormalization layer: FedAP needs one")
    # tf.keras is Keras 2 in the federated environment and Keras 3 in the main one.
    return tf.keras.Model(model.inputs, [layer.input for layer in layers])


def batch_moments(x: tf.Tensor):
    """`(count, mean, m2)` per channel (last axis) over every other axis; m2 is the sum of
    squared deviations from the mean."""
    x = tf.cast(x, tf.float64)
    channels = tf.shape(x)[-1]
    flat = tf.reshape(x, [-1, channels])
    count = tf.cast(tf.shape(flat)[0], tf.float64)
    mean = tf.reduce_mean(flat, axis=0)
    m2 = tf.reduce_sum(tf.square(flat - mean), axis=0)
    return count, mean, m2


def merge_moments(a, b):
    """Chan et al.'s parallel update: the moments of the union of two disjoint samples."""
    count_a, mean_a, m2_a = a
    count_b, mean_b, m2_b = b
    count = count_a + count_b
    safe = tf.maximum(count, 1.0)
    delta = mean_b - mean_a
    mean = mean_a + delta * count_b / safe
    m2 = m2_a + m2_b + tf.square(delta) * count_a * count_b / safe
    return count, mean, m2


def client_bn_statistics(model, dataset: tf.data.Dataset, bn_inputs=None):
    """`[(count, mean, variance)]` per BN layer of the BN inputs over every example of
    `dataset` (elements `(x, ...)` or `{"x": ...}`), with the model in inference mode.
    Variances are population variances (divided by the count), float64."""
    bn_inputs = bn_inputs or bn_input_model(model)
    widths = [int(t.shape[-1]) for t in _as_list(bn_inputs.outputs)]
    zeros = tuple((tf.constant(0.0, tf.float64), tf.zeros([w], tf.float64), tf.zeros([w], tf.float64))
                  for w in widths)

    def add(moments, element):
        features = _as_list(bn_inputs(_features(element), training=False))
        return tuple(merge_moments(total, batch_moments(f)) for total, f in zip(moments, features))

    moments = dataset.reduce(zeros, add)
    return [(count, mean, m2 / tf.maximum(count, 1.0)) for count, mean, m2 in moments]


def _features(element):
    if isinstance(element, dict):
        return element["x"]
    return element[0] if isinstance(element, (tuple, list)) else element


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]
