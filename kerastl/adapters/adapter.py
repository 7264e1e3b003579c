"""The Adapter: a small residual bottleneck inserted after a frozen Transformer layer.

a = z + W_up ReLU(W_down LN(z))   (no biases in the projections; LN has its gain and bias)

W_up starts at zero, so a new adapter is the identity and a pre-trained backbone's outputs are
unchanged until the adapter learns something (Hou et al. 2022, section III-A).

Example:
>>> import numpy as np
>>> adapter = Adapter(bottleneck_dim=64)
>>> z = np.random.rand(2, 10, 256).astype("float32")
>>> bool(np.allclose(adapter(z), z))      # identity at initialisation
True
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("kerastl")
class Adapter(keras.layers.Layer):
    """Residual bottleneck adapter: z + W_up ReLU(W_down LN(z)).

    Args:
        bottleneck_dim: width of the bottleneck (paper: 64 for low-resource languages, 128
            for rich-resource ones).
        epsilon: the LayerNorm epsilon.

    Example (after every layer of an encoder, one adapter per language):
    >>> adapters = {lang: Adapter(64, name=f"adapter_{lang}_0") for lang in ("ru", "it")}
    >>> hidden = keras.Input((None, 256))
    >>> outputs = adapters["ru"](hidden)
    """

    def __init__(self, bottleneck_dim: int = 64, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        if bottleneck_dim < 1:
            raise ValueError(f"bottleneck_dim {bottleneck_dim}: expected a positive integer")
        self.bottleneck_dim = int(bottleneck_dim)
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.layer_norm = keras.layers.LayerNormalization(epsilon=self.epsilon, name="layer_norm")
        self.down = keras.layers.Dense(self.bottleneck_dim, use_bias=False, name="down")
        self.up = keras.layers.Dense(dim, use_bias=False, kernel_initializer="zeros", name="up")
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
        config.update(bottleneck_dim=self.bottleneck_dim, epsilon=self.epsilon)
        return config
