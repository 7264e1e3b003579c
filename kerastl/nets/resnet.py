"""ResNet-50 as TorchSSL trains it on ImageNet (torchvision's layout, "ResNet v1.5").

TorchSSL's ImageNet runs (FlexMatch, FixMatch, ...) use torchvision's ResNet-50 unchanged:

- stem: 7x7 conv, 64 channels, stride 2 -> BN -> ReLU -> 3x3 max pool, stride 2;
- four stages of 3, 4, 6, 3 bottleneck blocks with widths 64, 128, 256, 512 (expansion 4);
  the first block of stages 2-4 has stride 2;
- a block is 1x1 conv -> BN -> ReLU -> 3x3 conv (stride) -> BN -> ReLU -> 1x1 conv (4 x width)
  -> BN, added to the input, or to a 1x1 conv (stride) -> BN projection when the shape
  changes, then ReLU. The stride sits on the 3x3 conv ("v1.5"; the original paper and
  `keras.applications.ResNet50` put it on the first 1x1 conv);
- head: global average pooling (layer "features") -> Dense (layer "logits").

Reference details kept: convs without bias; BN epsilon 1e-5 and momentum 0.9 in Keras terms
(PyTorch's default 0.1: TorchSSL's `bn_momentum` option reaches only its WRNs, not the
ResNet-50); Kaiming-normal fan-out conv init (std sqrt(2 / (k * k * out_channels))); PyTorch's
default `nn.Linear` init for the classifier, kernel and bias ~ U(+-1 / sqrt(fan_in));
PyTorch padding: the 7x7 stem pads 3 pixels and strided 3x3 convs and the max pool pad one
pixel on every side (Keras "same" pads only bottom/right when the stride is 2 and the size
even). `zero_init_residual` (off in TorchSSL) starts every block's last BN scale at 0.

The network takes RGB images in [0, 1] and normalises them itself with ImageNet's mean and
std (layer "normalize"), as TorchSSL's transforms do; `normalize=False` leaves that out.
Its size matches torchvision's: 25,557,032 trainable parameters with 1,000 classes, plus
53,120 BN moving statistics. (`keras.applications.ResNet50` differs: v1 stride placement,
conv biases, 25,583,592 trainable parameters, BN epsilon 1.001e-5, momentum 0.99.)

Layer names: "normalize", "stem_pad", "stem_conv", "stem_bn", "stem_relu", "pool_pad",
"pool", "stage{s}_block{b}_{conv1,bn1,relu1,pad2,conv2,bn2,relu2,conv3,bn3,shortcut_conv,
shortcut_bn,add,out}" (s from 1, b from 0), "features", "logits". Every BN layer is a
`keras.layers.BatchNormalization`, so weight-decay code can skip BN and bias variables.
"""

from __future__ import annotations

import math

import keras
from keras import layers

#: torchvision's ImageNet normalisation (TorchSSL's `mean['imagenet']`, `std['imagenet']`).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESNET50_BLOCKS = (3, 4, 6, 3)
_EPSILON = 1e-5  # PyTorch's BatchNorm2d default


def _conv(x, filters, kernel_size, stride, name):
    # torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="relu"): untruncated normal.
    init = keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")
    if kernel_size > 1:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name.replace("conv", "pad"))(x)
    return layers.Conv2D(filters, kernel_size, strides=stride, padding="valid", use_bias=False,
                         kernel_initializer=init, name=name)(x)


def _bn(x, name, momentum, zero_gamma=False):
    return layers.BatchNormalization(momentum=momentum, epsilon=_EPSILON, name=name,
                                     gamma_initializer="zeros" if zero_gamma else "ones")(x)


def _bottleneck(x, width, stride, prefix, momentum, zero_init_residual):
    out_channels = 4 * width
    out = _conv(x, width, 1, 1, f"{prefix}_conv1")
    out = layers.ReLU(name=f"{prefix}_relu1")(_bn(out, f"{prefix}_bn1", momentum))
    out = _conv(out, width, 3, stride, f"{prefix}_conv2")
    out = layers.ReLU(name=f"{prefix}_relu2")(_bn(out, f"{prefix}_bn2", momentum))
    out = _conv(out, out_channels, 1, 1, f"{prefix}_conv3")
    out = _bn(out, f"{prefix}_bn3", momentum, zero_gamma=zero_init_residual)
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = _bn(_conv(x, out_channels, 1, stride, f"{prefix}_shortcut_conv"), f"{prefix}_shortcut_bn", momentum)
    return layers.ReLU(name=f"{prefix}_out")(layers.Add(name=f"{prefix}_add")([shortcut, out]))


def resnet(input_shape=(224, 224, 3), num_classes: int = 1000, blocks=RESNET50_BLOCKS, width: int = 64,
           bn_momentum: float = 0.9, normalize: bool = True, zero_init_residual: bool = False,
           name: str = "resnet") -> keras.Model:
    """A bottleneck ResNet returning logits (see the module docstring); `blocks` gives the
    number of blocks per stage and `width` the first stage's width (later stages double it).

    Example:
    >>> tiny = resnet((32, 32, 3), num_classes=10, blocks=(1, 1), width=8)
    >>> tiny.output_shape, tiny.get_layer("features").output.shape
    ((None, 10), (None, 64))
    """
    if not blocks or min(blocks) < 1 or width < 1:
        raise ValueError(f"blocks must be positive counts and width >= 1, got {blocks}, {width}")
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    if normalize:
        x = layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="normalize")(x)
    x = _conv(x, width, 7, 2, "stem_conv")
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn", bn_momentum))
    x = layers.ZeroPadding2D(1, name="pool_pad")(x)  # after a ReLU, zero padding = PyTorch's -inf padding
    x = layers.MaxPooling2D(3, strides=2, name="pool")(x)
    for stage, count in enumerate(blocks):
        for block in range(count):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _bottleneck(x, width * 2**stage, stride, f"stage{stage + 1}_block{block}", bn_momentum,
                            zero_init_residual)
    features = layers.GlobalAveragePooling2D(name="features")(x)
    bound = 1.0 / math.sqrt(features.shape[-1])  # torch.nn.Linear's default init
    outputs = layers.Dense(num_classes, kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
                           bias_initializer=keras.initializers.RandomUniform(-bound, bound), name="logits")(features)
    return keras.Model(inputs, outputs, name=name)


def resnet50(input_shape=(224, 224, 3), num_classes: int = 1000, **kw) -> keras.Model:
    """ResNet-50 (TorchSSL's ImageNet network): 25,557,032 trainable parameters with 1,000
    classes, BN momentum 0.9 (PyTorch 0.1) unless `bn_momentum` is given.

    Example:
    >>> resnet50(num_classes=1000).count_params()  # doctest: +SKIP
    25610152
    """
    kw.setdefault("name", "resnet50")
    return resnet(input_shape, num_classes, blocks=RESNET50_BLOCKS, width=64, **kw)
