"""The reference's client models, in the tf.keras API that Keras 2 and Keras 3 share (TFF
needs Keras 2; the main environment has Keras 3). All output logits.

| model | inputs | the reference's use |
|---|---|---|
| `sensor_cnn` | windows `[time, channels]`, at least 28 steps | PAMAP2 (windows of 200 x 27) |
| `sensor_cnn_bn` | windows, at least 4 steps | none: kerastl's variant (padded, BN after the dense layer) |
| `lenet5_bn`  | images, at least 16 pixels a side | MedMNIST (28 x 28) |
| `alexnet_bn` | images, at least 15 pixels a side (the reference's stem from 63) | COVID-19 radiographs (224) |

`model_for` picks one by name or, with `auto`, by the input shape. Batch norm uses the
reference's (PyTorch's default) settings: moving averages updated with weight 0.1 per step
(Keras momentum 0.9, not Keras's 0.99, under which a client's few steps per round would
barely move the statistics it evaluates with) and epsilon 1e-5.

Start weights: Keras's defaults (Glorot uniform kernels, zero biases), or with
`init="pytorch"` PyTorch's defaults for the reference's Conv and Linear layers
(`pytorch_initialisation`), so that levels can be compared with the reference without
copying its weights.

Example:
>>> model = model_for((28, 28, 1), num_classes=11)            # lenet5_bn
>>> model = alexnet_bn((224, 224, 3), num_classes=4)          # the reference's AlexNet-BN
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

layers = tf.keras.layers

MODELS = ("auto", "sensor_cnn", "sensor_cnn_bn", "lenet5_bn", "alexnet_bn")
WINDOW_MODELS = ("sensor_cnn", "sensor_cnn_bn")
INITIALISATIONS = ("keras", "pytorch")
# Smallest image side each network's pooling stack survives (see the functions' docstrings).
SENSOR_CNN_MIN_WINDOW = 28
LENET5_MIN_SIDE = 16
ALEXNET_MIN_SIDE = 15
ALEXNET_REFERENCE_MIN_SIDE = 63


def batch_norm(name: str):
    """Batch norm as the reference's PyTorch layers have it (momentum 0.1 there, epsilon 1e-5)."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def sensor_cnn(window: int, channels: int, num_classes: int, seed: int = 0):
    """The reference's PAMAP2 network over windows `[time, channels]`: unpadded conv(16, 9)
    BN ReLU pool(2), unpadded conv(32, 9) BN ReLU pool(2), dense 64 ReLU, dense classes (its
    1 x 9 convolutions over 27 channels as 1-D convolutions). A 200-step window leaves
    44 x 32 features, as the reference's `32 * 44`."""
    if window < SENSOR_CNN_MIN_WINDOW:
        raise ValueError(f"sensor_cnn needs windows of at least {SENSOR_CNN_MIN_WINDOW} steps, got {window}")
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((window, channels), name="x")
    x = inputs
    for filters, name in ((16, "conv1"), (32, "conv2")):
        x = layers.Conv1D(filters, 9, name=name)(x)
        x = batch_norm(f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling1D(2, name=f"{name}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="sensor_cnn")


def sensor_cnn_bn(window: int, channels: int, num_classes: int, seed: int = 0):
    """A variant of `sensor_cnn` that is not the reference's: padded convolutions (any window
    of 4 steps or more) and batch norm after the first dense layer too, which FedAP keeps
    local as well: conv(16, 9) BN ReLU pool(2), conv(32, 9) BN ReLU pool(2), dense 64 BN
    ReLU, dense classes."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((window, channels), name="x")
    x = inputs
    for filters, name in ((16, "conv1"), (32, "conv2")):
        x = layers.Conv1D(filters, 9, padding="same", name=name)(x)
        x = batch_norm(f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling1D(2, name=f"{name}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, name="fc1")(x)
    x = batch_norm("fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="sensor_cnn_bn")


def pytorch_initialisation(model, seed: int = 0):
    """Re-draws the kernels and biases of `model`'s convolutions and dense layers as PyTorch
    initialises Conv and Linear modules by default: kaiming_uniform with a = sqrt(5) for the
    weights and uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for the biases, which are the same
    bound, 1/sqrt(fan_in) (fan_in: inputs per output unit, kernel size times input channels).
    Batch norm keeps gamma 1 and beta 0, as in both libraries. Returns the model.

    Example:
    >>> model = pytorch_initialisation(lenet5_bn((28, 28, 1), 11), seed=0)
    """
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is None or "BatchNormalization" in type(layer).__name__:
            continue
        bound = 1.0 / np.sqrt(np.prod(kernel.shape[:-1]))
        for variable in (kernel, getattr(layer, "bias", None)):
            if variable is not None:
                dtype = np.asarray(variable.numpy()).dtype
                variable.assign(rng.uniform(-bound, bound, tuple(variable.shape)).astype(dtype))
    return model


def lenet5_bn(input_shape, num_classes: int, seed: int = 0):
    """The reference's MedMNIST network (LeNet-5 with batch norm after each convolution):
    conv(6, 5) BN ReLU pool(2), conv(16, 5) BN ReLU pool(2), dense 120 ReLU, dense 84 ReLU,
    dense classes. Unpadded convolutions: a 28 x 28 image leaves 4 x 4 x 16 = 256 features."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(tuple(input_shape), name="x")
    x = inputs
    for filters, name in ((6, "conv1"), (16, "conv2")):
        x = layers.Conv2D(filters, 5, name=name)(x)
        x = batch_norm(f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for units, name in ((120, "fc1"), (84, "fc2")):
        x = layers.Dense(units, activation="relu", name=name)(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="lenet5_bn")


def _bin_matrix(size: int, bins: int) -> np.ndarray:
    """[bins, size]: row i averages inputs floor(i * size / bins) .. ceil((i + 1) * size / bins) - 1
    (adaptive average pooling's bins; more bins than inputs repeat inputs)."""
    matrix = np.zeros((bins, size), np.float32)
    for i in range(bins):
        start, end = (i * size) // bins, -((-(i + 1) * size) // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@tf.keras.utils.register_keras_serializable(package="kerastl")
class AdaptiveAveragePooling2D(layers.Layer):
    """Average pooling to a fixed `output_size` whatever the input's height and width: output
    cell (i, j) averages input rows floor(i H / h) .. ceil((i + 1) H / h) - 1 and the matching
    columns (the bins of PyTorch's AdaptiveAvgPool2d, which AlexNet uses before its
    classifier). An input already of `output_size` passes unchanged.

    Example:
    >>> pooled = AdaptiveAveragePooling2D((6, 6))(tf.zeros([2, 13, 13, 256]))   # [2, 6, 6, 256]
    """

    def __init__(self, output_size=(6, 6), **kwargs):
        super().__init__(**kwargs)
        self.output_size = tuple(int(s) for s in output_size)

    def call(self, inputs):
        rows = tf.constant(_bin_matrix(int(inputs.shape[1]), self.output_size[0]), inputs.dtype)
        columns = tf.constant(_bin_matrix(int(inputs.shape[2]), self.output_size[1]), inputs.dtype)
        return tf.einsum("ih,bhwc,jw->bijc", rows, inputs, columns)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}


def alexnet_bn(input_shape, num_classes: int, seed: int = 0, width: float = 1.0):
    """The reference's AlexNet with batch norm (its network for the COVID-19 radiographs):
    conv(64, 11, stride 4, pad 2) BN ReLU maxpool(3, 2), conv(192, 5) BN ReLU maxpool(3, 2),
    conv(384, 3) BN ReLU, conv(256, 3) BN ReLU, conv(256, 3) BN ReLU maxpool(3, 2), adaptive
    average pooling to 6 x 6, dense 4096 BN ReLU, dense 4096 BN ReLU, dense classes.

    Images of at least 63 pixels a side (224 in the reference) take that stem. Smaller images
    (15 to 62 pixels, e.g. 32 x 32) would vanish under the 11 x 11 stride-4 stem, so there the
    first convolution is 3 x 3 with stride 1 (the usual small-input adaptation); everything
    else is the same. `width` scales every layer's filters and units (1.0 = the reference's
    57 million parameters at 224 x 224; 0.25 fits a 2-core CPU).
    """
    side = min(int(input_shape[0]), int(input_shape[1]))
    if side < ALEXNET_MIN_SIDE:
        raise ValueError(f"alexnet_bn needs images of at least {ALEXNET_MIN_SIDE} pixels a side, got "
                         f"{tuple(input_shape)}")
    if width <= 0:
        raise ValueError(f"width {width}: expected a positive multiplier")
    tf.keras.utils.set_random_seed(seed)
    scaled = lambda n: max(1, int(round(n * width)))  # noqa: E731
    inputs = tf.keras.Input(tuple(input_shape), name="x")
    if side >= ALEXNET_REFERENCE_MIN_SIDE:
        x = layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
        x = layers.Conv2D(scaled(64), 11, strides=4, name="conv1")(x)
    else:
        x = layers.Conv2D(scaled(64), 3, padding="same", name="conv1")(inputs)
    convolutions = ((1, None, True), (2, (192, 5), True), (3, (384, 3), False), (4, (256, 3), False),
                    (5, (256, 3), True))
    for index, conv, pooled in convolutions:
        if conv is not None:
            x = layers.Conv2D(scaled(conv[0]), conv[1], padding="same", name=f"conv{index}")(x)
        x = batch_norm(f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
        if pooled:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool{index}")(x)
    x = AdaptiveAveragePooling2D((6, 6), name="avgpool")(x)
    x = layers.Flatten(name="flatten")(x)
    for index in (6, 7):
        x = layers.Dense(scaled(4096), name=f"fc{index - 5}")(x)
        x = batch_norm(f"bn{index}")(x)
        x = layers.ReLU(name=f"relu{index}")(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="alexnet_bn")


def resolve_model(name: str, input_shape) -> str:
    """The concrete model `name` stands for with inputs of `input_shape` (`auto`: sensor_cnn
    for windows, alexnet_bn for images of at least 63 pixels a side as the reference uses for
    224 x 224 radiographs, lenet5_bn for smaller images as for MedMNIST's 28 x 28). Raises
    ValueError when the model cannot take such inputs."""
    shape = tuple(int(s) for s in input_shape)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}")
    if len(shape) not in (2, 3):
        raise ValueError(f"inputs of shape {shape}: expected windows [time, channels] or images [H, W, C]")
    if name == "auto":
        if len(shape) == 2:
            return "sensor_cnn"
        return "alexnet_bn" if min(shape[:2]) >= ALEXNET_REFERENCE_MIN_SIDE else "lenet5_bn"
    if (name in WINDOW_MODELS) != (len(shape) == 2):
        expected = "windows [time, channels]" if name in WINDOW_MODELS else "images [H, W, C]"
        raise ValueError(f"{name} takes {expected}, the data has inputs of shape {shape}")
    smallest = {"sensor_cnn": SENSOR_CNN_MIN_WINDOW, "sensor_cnn_bn": 4, "lenet5_bn": LENET5_MIN_SIDE,
                "alexnet_bn": ALEXNET_MIN_SIDE}[name]
    if min(shape[:-1]) < smallest:
        raise ValueError(f"{name} needs inputs of at least {smallest} a side (its pooling), the data has {shape}")
    return name


def model_for(input_shape, num_classes: int, seed: int = 0, name: str = "auto", width: float = 1.0,
              init: str = "keras"):
    """Builds `name` (see `resolve_model`) for `input_shape`; `width` scales alexnet_bn;
    `init` "keras" (Keras's default start weights) or "pytorch" (`pytorch_initialisation`)."""
    if init not in INITIALISATIONS:
        raise ValueError(f"init {init!r}: expected one of {', '.join(INITIALISATIONS)}")
    name = resolve_model(name, input_shape)
    if name in WINDOW_MODELS:
        build = sensor_cnn if name == "sensor_cnn" else sensor_cnn_bn
        model = build(input_shape[0], input_shape[1], num_classes, seed)
    elif name == "lenet5_bn":
        model = lenet5_bn(input_shape, num_classes, seed)
    else:
        model = alexnet_bn(input_shape, num_classes, seed, width)
    return pytorch_initialisation(model, seed) if init == "pytorch" else model
