"""A small CNN for 28x28 (or any small) images, sized for CPU runs."""

from __future__ import annotations

import keras
from keras import layers


def small_cnn(input_shape=(28, 28, 1), num_classes: int = 10, width: int = 32,
              bn_momentum: float = 0.9, dropout: float = 0.0, name: str = "small_cnn") -> keras.Model:
    """Three conv stages (width, 2*width, 4*width) with BN and LeakyReLU(0.1), global average
    pooling and a linear classifier. Returns logits.

    `bn_momentum` defaults to 0.9: short CPU runs need moving statistics that follow the
    data within a few hundred steps (0.999 leaves them near their initial values).

    Example:
    >>> model = small_cnn((28, 28, 1), num_classes=10)
    >>> model.output_shape
    (None, 10)
    """
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for repeat in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal", name=f"conv{stage}_{repeat}")(x)
            x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-3, name=f"bn{stage}_{repeat}")(x)
            x = layers.LeakyReLU(0.1, name=f"act{stage}_{repeat}")(x)
        if stage < 2:
            x = layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(num_classes, kernel_initializer="glorot_normal", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
