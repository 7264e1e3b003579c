"""The Adapter: a small residual bottleneck inserted after a frozen Transformer layer.

a = z + W_up ReLU(W_down LN(z))   (no biases in the projections; LN has its gain and bias)

Both projections start as the reference implementation's (NeuralSpeech AdapterASR, PyTorch's
default for `nn.Linear`, which ESPnet's "pytorch" initialisation leaves alone): uniform in
+-1/sqrt(fan_in). A new adapter is therefore NOT the identity; pass
`up_initializer="zeros"` for an adapter that starts as the identity.

Example:
>>> import numpy as np
>>> adapter = Adapter(bottleneck_dim=64)
>>> z = np.random.rand(2, 10, 256).astype("float32")
>>> adapter(z).shape
TensorShape([2, 10, 256])
>>> identity = Adapter(bottleneck_dim=64, up_initializer="zeros")
>>> bool(np.allclose(identity(z), z))
True
"""

from __future__ import annotations

import keras
import tensorflow as tf


def torch_linear_initializer():
    """PyTorch's default `nn.Linear` weight initialisation, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    (kaiming_uniform with a = sqrt(5)): variance scaling 1/3, fan in, uniform."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


@keras.saving.register_keras_serializable("kerastl")
class Adapter(keras.layers.Layer):
    """Residual bottleneck adapter: z + W_up ReLU(W_down LN(z)).

    Args:
        bottleneck_dim: width of the bottleneck (paper: 64 for low-resource languages, 128
            for rich-resource ones).
        epsilon: the LayerNorm epsilon.
        down_initializer, up_initializer: the projections' initialisers (default: PyTorch's
            `nn.Linear` default, as the reference; "zeros" for W_up = an identity adapter).

    Example (after every layer of an encoder, one adapter per language):
    >>> adapters = {lang: Adapter(64, name=f"adapter_{lang}_0") for lang in ("ru", "it")}
    >>> hidden = keras.Input((None, 256))
    >>> outputs = adapters["ru"](hidden)
    """

    def __init__(self, bottleneck_dim: int = 64, epsilon: float = 1e-5, down_initializer=None, up_initializer=None,
                 **kwargs):
        super().__init__(**kwargs)
        if bottleneck_dim < 1:
            raise ValueError(f"bottleneck_dim {bottleneck_dim}: expected a positive integer")
        self.bottleneck_dim = int(bottleneck_dim)
        self.epsilon = float(epsilon)
        self.down_initializer = keras.initializers.get(down_initializer or torch_linear_initializer())
        self.up_initializer = keras.initializers.get(up_initializer or torch_linear_initializer())
        self.supports_masking = True

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.layer_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="layer_norm")
        self.down = keras.layers.Dense(self.bottleneck_dim, use_bias=False, kernel_initializer=self.down_initializer,
                                       name="down")
        self.up = keras.layers.Dense(dim, use_bias=False, kernel_initializer=self.up_initializer, name="up")
        self.layer_norm.build(input_shape)
        self.down.build(input_shape)
        self.up.build((*input_shape[:-1], self.bottleneck_dim))
        self.built = True

    def call(self, z):
        return z + self.up(tf.nn.relu(self.down(self.layer_norm(z))))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(bottleneck_dim=self.bottleneck_dim, epsilon=self.epsilon,
                      down_initializer=keras.initializers.serialize(self.down_initializer),
                      up_initializer=keras.initializers.serialize(self.up_initializer))
        return config
