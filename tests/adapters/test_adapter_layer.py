"""Adapter: identity at initialisation, no biases, the bottleneck formula, Keras life cycle."""

import keras
import numpy as np

from kerastl.adapters.adapter import Adapter


def layer_norm(x, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_zero_initialised_up_projection_makes_the_identity_without_biases():
    keras.utils.set_random_seed(0)
    adapter = Adapter(bottleneck_dim=4)
    z = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    np.testing.assert_array_equal(adapter(z), z)
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in adapter.weights}
    # LayerNorm gain and bias, two projection kernels and nothing else: the projections have no bias.
    assert shapes == {"layer_norm/gamma": (8,), "layer_norm/beta": (8,), "down/kernel": (8, 4), "up/kernel": (4, 8)}
    np.testing.assert_array_equal(adapter.up.kernel.numpy(), 0.0)
    assert adapter.count_params() == 8 + 8 + 32 + 32


def test_output_is_z_plus_up_relu_down_layer_norm_z():
    adapter = Adapter(bottleneck_dim=3)
    adapter.build((None, None, 4))
    rng = np.random.default_rng(1)
    down, up = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")
    adapter.down.kernel.assign(down)
    adapter.up.kernel.assign(up)
    z = rng.normal(size=(2, 3, 4)).astype("float32")
    expected = z + np.maximum(layer_norm(z) @ down, 0.0) @ up
    np.testing.assert_allclose(adapter(z), expected, rtol=1e-5, atol=1e-5)
