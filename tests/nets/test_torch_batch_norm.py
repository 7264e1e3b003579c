"""Tests for `kerastl.nets.torch_batch_norm`: PyTorch's moving variance, Keras' outputs.

The moving statistics are checked against hand-computed values and against numpy's
unbiased variance; the outputs against Keras' own layer. (tests/parity compares the layer
with `torch.nn.BatchNorm2d` itself.)
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.nets import small_cnn
from kerastl.nets.torch_batch_norm import TorchBatchNormalization, with_torch_batch_norm


def images(seed, shape=(4, 3, 3, 2)):
    return np.random.default_rng(seed).normal(1.0, 2.0, size=shape).astype("float32")


def test_moving_statistics_by_hand():
    # Batch [0, 2]: mean 1, biased variance 1, unbiased 2. Momentum 0.9 from (0, 1):
    # mean 0.9 * 0 + 0.1 * 1 = 0.1; variance 0.9 * 1 + 0.1 * 2 = 1.1 (Keras' layer: 1.0).
    ours, keras_layer = TorchBatchNormalization(momentum=0.9), keras.layers.BatchNormalization(momentum=0.9)
    batch = np.array([[0.0], [2.0]], "float32")
    ours(batch, training=True)
    keras_layer(batch, training=True)
    np.testing.assert_allclose(ours.moving_mean.numpy(), [0.1], rtol=1e-6)
    np.testing.assert_allclose(ours.moving_variance.numpy(), [1.1], rtol=1e-6)
    np.testing.assert_allclose(keras_layer.moving_variance.numpy(), [1.0], rtol=1e-6)


def test_moving_variance_averages_the_unbiased_variance_over_batch_and_space():
    layer = TorchBatchNormalization(momentum=0.8)
    mean, variance = np.zeros(2), np.ones(2)
    for step in range(3):
        x = images(step)
        layer(x, training=True)
        # n = 4 x 3 x 3 values per channel, PyTorch's running_var recurrence.
        mean = 0.8 * mean + 0.2 * x.mean(axis=(0, 1, 2))
        variance = 0.8 * variance + 0.2 * x.var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_outputs_are_those_of_keras_layer(training):
    ours, theirs = TorchBatchNormalization(epsilon=1e-3), keras.layers.BatchNormalization(epsilon=1e-3)
    x = images(0)
    ours.build(x.shape)
    theirs.build(x.shape)
    weights = [np.array([1.5, 0.5]), np.array([0.1, -0.2]), np.array([0.3, 1.0]), np.array([2.0, 0.7])]
    ours.set_weights(weights)
    theirs.set_weights(weights)
    np.testing.assert_allclose(ours(x, training=training).numpy(), theirs(x, training=training).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_unknown_batch_size_in_a_graph():
    layer = TorchBatchNormalization(momentum=0.0)
    layer.build((None, 3, 3, 2))

    @tf.function(input_signature=[tf.TensorSpec((None, 3, 3, 2), tf.float32)])
    def train(x):
        return layer(x, training=True)

    x = images(1, (5, 3, 3, 2))
    train(x)
    np.testing.assert_allclose(layer.moving_variance.numpy(), x.var(axis=(0, 1, 2), ddof=1), rtol=1e-5)


def test_mixed_precision_moments_in_float32():
    layer = TorchBatchNormalization(momentum=0.0, dtype="mixed_bfloat16")
    x = images(2)
    out = layer(tf.cast(x, tf.bfloat16), training=True)
    assert out.dtype == tf.bfloat16 and layer.moving_variance.dtype == "float32"
    expected = tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy().var(axis=(0, 1, 2), ddof=1)
    np.testing.assert_allclose(layer.moving_variance.numpy(), expected, rtol=1e-5)


def test_network_copy_has_the_weights_and_outputs_and_leaves_the_original(tmp_path):
    keras.utils.set_random_seed(0)
    network = small_cnn((28, 28, 1), 10, width=4)
    before = [w.copy() for w in network.get_weights()]
    copy = with_torch_batch_norm(network)
    bns = [layer for layer in copy.layers if "bn" in layer.name]
    assert len(bns) == 6 and all(type(layer) is TorchBatchNormalization for layer in bns)
    assert all(type(layer) is keras.layers.BatchNormalization for layer in network.layers if "bn" in layer.name)
    x = images(3, (8, 28, 28, 1))
    np.testing.assert_allclose(copy(x, training=False).numpy(), network(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-6)
    # One training pass: the same outputs, moving means, and variances n / (n - 1) apart.
    np.testing.assert_allclose(copy(x, training=True).numpy(), network(x, training=True).numpy(), rtol=1e-4,
                               atol=1e-5)
    n = 8 * 28 * 28  # bn0_0 sees the full-size maps
    ours, theirs = copy.get_layer("bn0_0"), network.get_layer("bn0_0")
    np.testing.assert_allclose(ours.moving_mean.numpy(), theirs.moving_mean.numpy(), rtol=1e-5, atol=1e-7)
    # The batch's biased variance, read back from Keras' update of the same start value.
    momentum, start = theirs.momentum, before_variance(before, network, "bn0_0")
    batch_variance = (theirs.moving_variance.numpy() - momentum * start) / (1 - momentum)
    np.testing.assert_allclose(ours.moving_variance.numpy(),
                               momentum * start + (1 - momentum) * batch_variance * n / (n - 1), rtol=1e-5)
    # Saved and loaded as itself.
    path = str(tmp_path / "copy.keras")
    copy.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.get_layer("bn1_0")) is TorchBatchNormalization
    np.testing.assert_allclose(loaded(x, training=False).numpy(), copy(x, training=False).numpy(), rtol=1e-6)


def before_variance(weights, network, name):
    """The moving variance of layer `name` in `weights` (the network's weights before a step)."""
    index = [id(w) for w in network.weights].index(id(network.get_layer(name).moving_variance))
    return weights[index]


def test_refuses_what_pytorch_does_not_have():
    with pytest.raises(ValueError, match="renorm"):
        TorchBatchNormalization(renorm=True)
    layer = TorchBatchNormalization()
    with pytest.raises(ValueError, match="masks"):
        layer(np.ones((2, 3, 4), "float32"), training=True, mask=np.ones((2, 3), bool))
