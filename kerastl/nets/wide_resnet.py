"""Wide ResNet (WRN) backbones as used by FixMatch / FlexMatch (TorchSSL, USB).

The layout follows TorchSSL's `models/nets/wrn.py` (3 block groups) and `wrn_var.py`
(4 block groups, the STL-10 network):

- stem: 3x3 conv, 16 channels, stride 1;
- `num_groups` block groups of n = (depth - 4) / 6 pre-activation basic units each, with
  16k, 32k, 64k (and 128k) channels (k = `widen_factor`); the first unit of group 1 has
  stride `first_stride`, the first unit of every later group stride 2;
- a unit is BN -> LeakyReLU -> conv3x3 (stride) -> BN -> LeakyReLU -> [dropout] -> conv3x3,
  added to the input (identity) or to a 1x1 conv projection of it when shapes change;
- head: BN -> LeakyReLU -> global average pooling (layer "features") -> Dense (layer "logits").

Reference details kept: BN momentum 0.999 in Keras terms (PyTorch 0.001) and epsilon 1e-3;
LeakyReLU slope 0.1; Kaiming-normal fan-out conv init, std sqrt(2 / (k * k * out_channels));
Xavier-normal (untruncated, as `torch.nn.init.xavier_normal_`) dense kernel and zero dense
bias; strided 3x3 convs pad one pixel on every side (PyTorch `padding=1`; Keras "same" would
pad only bottom/right on even sizes), so the conv path and the 1x1 projection see the same pixels.

Projection units (the first unit of a group when channels or stride change), `block_variant`:

- "torchssl" (default, the code behind the FlexMatch paper's numbers): in group 1
  (`activate_before_residual=True`) both the conv path and the projection read
  act(bn1(x)); in later groups both read the raw residual stream x. TorchSSL still builds
  bn1 there but discards its output, so these Keras models have no `block{g}_unit0_bn1` for
  g >= 2 and hold 2 * (32k + 64k [+ 128k]) fewer parameters than the PyTorch module.
- "usb" (USB, the original xternalz WRN code): both read act(bn1(x)) in every group.
- "fixmatch" (the official TF FixMatch): the conv path always reads act(bn1(x)); the
  projection reads it in group 1 and the raw x in later groups.

Differences from the reference, on purpose: convs have no bias (`conv_bias=False`; TorchSSL
and USB use bias=True with PyTorch's default uniform bias init, `conv_bias=True` adds zero-
initialised biases); Keras BN keeps the biased batch variance in its moving average
(PyTorch the unbiased one); a unit whose input and output shapes differ only by stride
gets a projection (TorchSSL would fail on the shape mismatch).

Layer names are stable: "stem_conv", "block{g}_unit{u}_{bn1,act1,pad1,conv1,bn2,act2,drop,
conv2,shortcut,add}" (g from 1, u from 0), "final_bn", "final_act", "features", "logits".
Every BN layer is a `keras.layers.BatchNormalization`, so weight-decay code can skip BN and
bias variables by type or name. `bn_momentum=0.999` suits 2^20-step runs; short CPU runs need
e.g. 0.9 (see the FlexMatch spec, "Short runs").
"""

from __future__ import annotations

import keras
from keras import layers

BLOCK_VARIANTS = ("torchssl", "usb", "fixmatch")


def _conv_init():
    # torch.nn.init.kaiming_normal_(mode="fan_out", nonlinearity="leaky_relu") with a=0:
    # gain sqrt(2), fan_out = kh * kw * out_channels, untruncated normal.
    return keras.initializers.VarianceScaling(2.0, mode="fan_out", distribution="untruncated_normal")


def _dense_init():
    # torch.nn.init.xavier_normal_: std sqrt(2 / (fan_in + fan_out)), untruncated
    # (keras "glorot_normal" is truncated).
    return keras.initializers.VarianceScaling(1.0, mode="fan_avg", distribution="untruncated_normal")


def _conv(x, filters, kernel_size, stride, name, conv_bias):
    """Conv with PyTorch padding (kernel_size // 2 on every side)."""
    if kernel_size == 1:
        padding = "valid"
    elif stride == 1:
        padding = "same"  # symmetric (kernel_size // 2 per side) for odd kernels at stride 1
    else:
        x = layers.ZeroPadding2D(kernel_size // 2, name=name.replace("conv", "pad"))(x)
        padding = "valid"
    return layers.Conv2D(filters, kernel_size, strides=stride, padding=padding, use_bias=conv_bias,
                         kernel_initializer=_conv_init(), bias_initializer="zeros", name=name)(x)


def _bn_act(x, prefix, index, cfg):
    x = layers.BatchNormalization(momentum=cfg["bn_momentum"], epsilon=1e-3, name=f"{prefix}_bn{index}")(x)
    return layers.LeakyReLU(negative_slope=cfg["leaky_slope"], name=f"{prefix}_act{index}")(x)


def _unit(x, in_channels, out_channels, stride, prefix, activate_before_residual, cfg):
    if in_channels == out_channels and stride == 1:
        conv_in, shortcut = _bn_act(x, prefix, 1, cfg), x
    else:
        variant = cfg["block_variant"]
        if variant == "usb" or activate_before_residual:
            conv_in = short_in = _bn_act(x, prefix, 1, cfg)
        elif variant == "torchssl":
            conv_in = short_in = x  # TorchSSL's bn1/relu1 output is discarded here
        else:  # "fixmatch"
            conv_in, short_in = _bn_act(x, prefix, 1, cfg), x
        shortcut = _conv(short_in, out_channels, 1, stride, f"{prefix}_shortcut", cfg["conv_bias"])
    out = _conv(conv_in, out_channels, 3, stride, f"{prefix}_conv1", cfg["conv_bias"])
    out = _bn_act(out, prefix, 2, cfg)
    if cfg["dropout"]:
        out = layers.Dropout(cfg["dropout"], name=f"{prefix}_drop")(out)
    out = _conv(out, out_channels, 3, 1, f"{prefix}_conv2", cfg["conv_bias"])
    return layers.Add(name=f"{prefix}_add")([shortcut, out])


def wide_resnet(input_shape=(32, 32, 3), num_classes: int = 10, depth: int = 28, widen_factor: int = 2,
                first_stride: int = 1, bn_momentum: float = 0.999, leaky_slope: float = 0.1,
                dropout: float = 0.0, num_groups: int = 3, block_variant: str = "torchssl",
                conv_bias: bool = False, name: str | None = None) -> keras.Model:
    """Functional WRN-`depth`-`widen_factor` returning logits (see the module docstring).

    `depth` must be 6n + 4 (n units per group, as in the reference, also for 4 groups);
    `first_stride` is the stride of the first unit of group 1 (the stem conv always has
    stride 1); `dropout` is the reference's in-block dropout between the two convs;
    `num_groups=4` adds a 128k-channel group (TorchSSL's WideResNetVar).

    Pooled features: `keras.Model(model.input, model.get_layer("features").output)`.

    Example:
    >>> model = wide_resnet((32, 32, 3), num_classes=10, depth=10, widen_factor=1)
    >>> model.output_shape, model.get_layer("features").output.shape
    ((None, 10), (None, 64))
    """
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"depth must be 6n + 4 with n >= 1, got {depth}")
    if widen_factor < 1 or num_groups < 1:
        raise ValueError(f"widen_factor and num_groups must be >= 1, got {widen_factor}, {num_groups}")
    if block_variant not in BLOCK_VARIANTS:
        raise ValueError(f"block_variant must be one of {BLOCK_VARIANTS}, got {block_variant!r}")
    cfg = dict(bn_momentum=bn_momentum, leaky_slope=leaky_slope, dropout=dropout,
               block_variant=block_variant, conv_bias=conv_bias)
    units = (depth - 4) // 6
    channels = [16] + [16 * widen_factor * 2 ** g for g in range(num_groups)]
    if name is None:
        name = f"wrn_{depth}_{widen_factor}" if num_groups == 3 else f"wrn_{depth}_{widen_factor}_{num_groups}groups"

    inputs = keras.Input(input_shape, name="images")
    x = _conv(inputs, channels[0], 3, 1, "stem_conv", conv_bias)
    for g in range(num_groups):
        for u in range(units):
            x = _unit(x, channels[g] if u == 0 else channels[g + 1], channels[g + 1],
                      (first_stride if g == 0 else 2) if u == 0 else 1,
                      f"block{g + 1}_unit{u}", activate_before_residual=(g == 0), cfg=cfg)
    x = layers.BatchNormalization(momentum=bn_momentum, epsilon=1e-3, name="final_bn")(x)
    x = layers.LeakyReLU(negative_slope=leaky_slope, name="final_act")(x)
    x = layers.GlobalAveragePooling2D(name="features")(x)
    outputs = layers.Dense(num_classes, kernel_initializer=_dense_init(), bias_initializer="zeros",
                           name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def wrn_28_2(input_shape=(32, 32, 3), num_classes: int = 10, **kw) -> keras.Model:
    """WRN-28-2 (CIFAR-10, SVHN in TorchSSL / USB): 1,467,418 trainable parameters with 10
    classes (PyTorch module without conv biases: 1,467,610, of which 192 sit in TorchSSL's
    discarded BNs; with TorchSSL's conv biases: 1,469,642)."""
    kw.setdefault("name", "wrn_28_2")
    return wide_resnet(input_shape, num_classes, depth=28, widen_factor=2, **kw)


def wrn_28_8(input_shape=(32, 32, 3), num_classes: int = 100, **kw) -> keras.Model:
    """WRN-28-8 (CIFAR-100 in TorchSSL / USB; use weight decay 1e-3 per the spec)."""
    kw.setdefault("name", "wrn_28_8")
    return wide_resnet(input_shape, num_classes, depth=28, widen_factor=8, **kw)


def wrn_stl10(input_shape=(96, 96, 3), num_classes: int = 10, **kw) -> keras.Model:
    """TorchSSL's STL-10 net ("WRN-37-2", `WideResNetVar`, USB `wrn_var_37_2`): depth=28
    (4 units per group) but 4 groups (16/32/64/128/256 channels), first stride 2. "37" is
    8n + 5 with n = 4, the 4-group counterpart of 6n + 4 (the extra group adds 2n convs and
    a projection). 96x96 input -> 48, 24, 12, 6 spatial sizes after groups 1-4."""
    kw.setdefault("name", "wrn_stl10")
    kw.setdefault("first_stride", 2)
    return wide_resnet(input_shape, num_classes, depth=28, widen_factor=2, num_groups=4, **kw)
