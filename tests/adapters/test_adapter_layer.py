"""Adapter: identity at initialisation, no biases, the bottleneck formula, Keras life cycle."""

import keras
import numpy as np
import pytest

from kerastl.adapters.adapter import Adapter


def layer_norm(x, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)


def test_projections_start_as_pytorch_linear_defaults_without_biases_and_zeros_gives_the_identity():
    keras.utils.set_random_seed(0)
    adapter = Adapter(bottleneck_dim=16)
    adapter.build((None, None, 64))
    shapes = {v.path.split("/", 1)[1]: tuple(v.shape) for v in adapter.weights}
    # LayerNorm gain and bias, two projection kernels and nothing else: the projections have no bias.
    assert shapes == {"layer_norm/gamma": (64,), "layer_norm/beta": (64,), "down/kernel": (64, 16),
                      "up/kernel": (16, 64)}
    assert adapter.count_params() == 64 + 64 + 64 * 16 + 16 * 64
    # The reference's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), variance 1 / (3 fan_in).
    for kernel, fan_in in ((adapter.down.kernel.numpy(), 64), (adapter.up.kernel.numpy(), 16)):
        assert np.abs(kernel).max() <= 1 / np.sqrt(fan_in)
        assert kernel.var() == pytest.approx(1 / (3 * fan_in), rel=0.15)
    z = np.random.default_rng(0).normal(size=(2, 5, 64)).astype("float32")
    assert np.abs(adapter(z).numpy() - z).max() > 0.05          # not the identity
    identity = Adapter(bottleneck_dim=16, up_initializer="zeros")
    np.testing.assert_array_equal(identity(z), z)
    np.testing.assert_array_equal(identity.up.kernel.numpy(), 0.0)


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
