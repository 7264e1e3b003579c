"""The reference's client models, in the tf.keras API that Keras 2 and Keras 3 share (TFF
needs Keras 2; the main environment has Keras 3). Both output logits.

Example:
>>> model = sensor_cnn(window=100, channels=6, num_classes=7)
"""

from __future__ import annotations

import tensorflow as tf

layers = tf.keras.layers


def sensor_cnn(window: int, channels: int, num_classes: int, seed: int = 0):
    """The reference's PAMAP2 network over windows `[time, channels]`: conv(16, 9) BN ReLU
    pool(2), conv(32, 9) BN ReLU pool(2), dense 64 (BN, ReLU), dense classes."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((window, channels), name="x")
    x = inputs
    for filters, name in ((16, "conv1"), (32, "conv2")):
        x = layers.Conv1D(filters, 9, padding="same", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling1D(2, name=f"{name}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="sensor_cnn")


def lenet5_bn(input_shape, num_classes: int, seed: int = 0):
    """LeNet-5 with batch norm (the reference's MedMNIST network): conv(6, 5) BN ReLU pool,
    conv(16, 5) BN ReLU pool, dense 120 BN ReLU, dense 84 BN ReLU, dense classes."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(tuple(input_shape), name="x")
    x = inputs
    for filters, name in ((6, "conv1"), (16, "conv2")):
        x = layers.Conv2D(filters, 5, padding="same" if name == "conv1" else "valid", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for units, name in ((120, "fc1"), (84, "fc2")):
        x = layers.Dense(units, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="lenet5_bn")


def model_for(input_shape, num_classes: int, seed: int = 0):
    """sensor_cnn for windows `[time, channels]`, lenet5_bn for images `[H, W, C]`."""
    if len(input_shape) == 2:
        return sensor_cnn(input_shape[0], input_shape[1], num_classes, seed)
    if len(input_shape) == 3:
        return lenet5_bn(input_shape, num_classes, seed)
    raise ValueError(f"inputs of shape {tuple(input_shape)}: expected windows [time, channels] or images [H, W, C]")
