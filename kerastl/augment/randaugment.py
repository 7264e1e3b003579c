"""RandAugment as used by FixMatch / FlexMatch, in pure, stateless TF ops.

The strong view of FixMatch and FlexMatch (TorchSSL ``datasets/augmentation/randaugment.py``,
``RandAugment(3, 5)``) is RandAugment followed by the weak view (TorchSSL inserts RandAugment
at the head of its flip / crop transform), where RandAugment is:

1. ``num_ops = 3`` operations drawn uniformly *with replacement* from the 14 below, each with
   a magnitude drawn uniformly from its range (the ``m`` argument of TorchSSL is unused);
2. Cutout: a square of side ``v = U(0, 0.5) * width`` pixels filled with TorchSSL's colour
   (125, 123, 114) / 255, see `cutout` for its exact placement.

=============  =====================  ==================================================
op (index)     magnitude range        PIL semantics reproduced
=============  =====================  ==================================================
AutoContrast   --                     per-channel min-max stretch to [0, 1]
Brightness     factor [0.05, 0.95]    blend with black: ``f * x``
Color          factor [0.05, 0.95]    blend with the luminance image (identity if 1 channel)
Contrast       factor [0.05, 0.95]    blend with the mean luminance (a uniform grey)
Equalize       --                     per-channel 256-bin histogram equalisation (PIL's LUT)
Identity       --                     nothing
Posterize      bits [4, 8]            keep the top ``floor(bits)`` bits of the 8-bit value
Rotate         degrees [-30, 30]      counter-clockwise about the image centre
Sharpness      factor [0.05, 0.95]    blend with PIL's 3x3 SMOOTH filter (borders kept)
ShearX         [-0.3, 0.3]            output (x, y) samples input (x + v * y, y)
ShearY         [-0.3, 0.3]            output (x, y) samples input (x, y + v * x)
Solarize       threshold [0, 256]     invert pixels whose 8-bit value is >= threshold
TranslateX     [-0.3, 0.3] of width   output (x, y) samples input (x + v * W, y)
TranslateY     [-0.3, 0.3] of height  output (x, y) samples input (x, y + v * H)
=============  =====================  ==================================================

All factors below 1 (as FlexMatch draws them) move the image towards the degenerate one.
Geometric ops follow PIL's ``Image.transform(AFFINE)`` convention (the matrix maps *output*
pixel centres to *input* coordinates, so a positive translation moves the content left/up),
use nearest-neighbour sampling like PIL's default, and run through
``tf.raw_ops.ImageProjectiveTransformV3``; uncovered pixels are black (``fill`` 0.0, PIL's
default ``fillcolor``, which TorchSSL keeps).

Grey-scale images: TorchSSL's RGB Cutout colour cannot be drawn on a one-channel PIL image (the
reference fails there); one channel gets the colour's luminance as PIL converts RGB to "L",
``round(0.299 * 125 + 0.587 * 123 + 0.114 * 114) = 123`` (/ 255), so a grey-scale Cutout is
what converting the reference's RGB result to grey gives.

Images are float32 ``[H, W, C]`` in [0, 1] with a static shape and 1 or 3 channels. Ops that
are defined on 8-bit values (Equalize, Posterize, Solarize) round to ``x * 255`` internally;
the others work on floats without the intermediate 8-bit rounding of PIL. Every op is a
public function ``op(image, magnitude) -> image``; `rand_augment` and `strong_augment` have
the view signature ``view(image, seed) -> image`` of `kerastl.augment` (stateless: the same
seed gives the same view, and they run inside ``tf.data`` ``map`` with ``AUTOTUNE`` and in
``tf.function``).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import tensorflow as tf

from kerastl.augment.weak import weak_augment

#: Pixels uncovered by Rotate, Shear and Translate: black, PIL's default fill.
GEOMETRIC_FILL = 0.0
#: TorchSSL's Cutout colour in 8-bit RGB, and its luminance for one-channel images.
CUTOUT_RGB = (125, 123, 114)
CUTOUT_GREY = 123
_LUMA = (0.299, 0.587, 0.114)  # PIL's "L" conversion (ITU-R 601-2)


def _as_float(magnitude) -> tf.Tensor:
    return tf.cast(magnitude, tf.float32)


def _channels(image: tf.Tensor) -> int:
    channels = image.shape[-1]
    if channels is None:
        raise ValueError("RandAugment ops need a static number of channels")
    return int(channels)


def _to_levels(image: tf.Tensor) -> tf.Tensor:
    """float [0, 1] -> int32 8-bit levels 0..255 (rounded)."""
    return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * 255.0), tf.int32)


def _from_levels(levels: tf.Tensor) -> tf.Tensor:
    return tf.cast(levels, tf.float32) / 255.0


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
    """PIL ``Image.blend(degenerate, image, factor)``: factor 0 gives `degenerate`, 1 `image`."""
    factor = _as_float(factor)
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _luminance(image: tf.Tensor) -> tf.Tensor:
    """``[H, W, 1]`` luminance of an RGB image; a 1-channel image is returned as is."""
    if _channels(image) == 1:
        return image
    return tf.reduce_sum(image[..., :3] * tf.constant(_LUMA, tf.float32), axis=-1, keepdims=True)


# --------------------------------------------------------------------------- colour ops


def identity(image: tf.Tensor, magnitude=None) -> tf.Tensor:
    """Returns `image` unchanged (the magnitude is ignored)."""
    del magnitude
    return tf.identity(image)


def auto_contrast(image: tf.Tensor, magnitude=None) -> tf.Tensor:
    """PIL ``ImageOps.autocontrast``: stretch each channel's [min, max] to [0, 1].

    A constant channel is left unchanged. The magnitude is ignored.
    """
    del magnitude
    low = tf.reduce_min(image, axis=[0, 1], keepdims=True)
    high = tf.reduce_max(image, axis=[0, 1], keepdims=True)
    spread = high - low
    stretched = (image - low) / tf.where(spread > 0, spread, tf.ones_like(spread))
    return tf.where(spread > 0, tf.clip_by_value(stretched, 0.0, 1.0), image)


def equalize(image: tf.Tensor, magnitude=None) -> tf.Tensor:
    """PIL ``ImageOps.equalize``: per-channel histogram equalisation on 256 bins.

    With ``h`` the channel's histogram of 8-bit levels, ``step = (N - h[last non-empty bin])
    // 255`` and level ``i`` maps to ``min(255, (step // 2 + sum(h[:i])) // step)``; the channel
    is unchanged when ``step`` is 0 (a single level, or fewer than ~255 pixels off the top
    level). The magnitude is ignored.
    """
    del magnitude
    channels = _channels(image)
    levels = _to_levels(image)  # [H, W, C]
    bins = levels + 256 * tf.range(channels, dtype=tf.int32)  # channel-major bin ids
    hist = tf.reshape(
        tf.math.unsorted_segment_sum(tf.ones_like(bins), bins, 256 * channels), [channels, 256])
    top = tf.reduce_max(levels, axis=[0, 1])  # [C]
    count = tf.size(levels[..., 0])
    step = (count - tf.gather(hist, top, batch_dims=1)) // 255  # [C]
    below = tf.cumsum(hist, axis=1, exclusive=True)  # pixels at lower levels
    safe_step = tf.maximum(step, 1)[:, None]
    lut = tf.minimum((safe_step // 2 + below) // safe_step, 255)
    lut = tf.where(step[:, None] > 0, lut, tf.range(256, dtype=tf.int32)[None, :])
    return _from_levels(tf.gather(tf.reshape(lut, [-1]), bins))


def brightness(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageEnhance.Brightness(factor)``: blend with black, i.e. ``factor * x``."""
    return _blend(tf.zeros_like(image), image, magnitude)


def color(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageEnhance.Color(factor)``: blend with the grey (luminance) version.

    Factor 0 gives the greyscale image; on a 1-channel image this is the identity.
    """
    if _channels(image) != 3:
        return tf.identity(image)
    return _blend(tf.broadcast_to(_luminance(image), tf.shape(image)), image, magnitude)


def contrast(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageEnhance.Contrast(factor)``: blend with a uniform image of the mean luminance."""
    mean = tf.reduce_mean(_luminance(image))
    return _blend(tf.fill(tf.shape(image), mean), image, magnitude)


def sharpness(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageEnhance.Sharpness(factor)``: blend with the image smoothed by PIL's SMOOTH
    kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13``; the one-pixel border is not smoothed
    (as in PIL), so factor 0 changes only interior pixels."""
    channels = _channels(image)
    kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
    interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1, :1], tf.bool), [[1, 1], [1, 1], [0, 0]])
    degenerate = tf.where(interior, smooth, image)
    return _blend(degenerate, image, magnitude)


def posterize(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageOps.posterize(bits)``: keep the top ``floor(bits)`` bits (1..8) of each 8-bit
    value, e.g. bits 4: 0.5 -> 128 -> 128 & 0xF0 = 128, 0.3 -> 77 -> 64."""
    bits = tf.clip_by_value(tf.cast(tf.floor(_as_float(magnitude)), tf.int32), 1, 8)
    mask = 256 - tf.bitwise.left_shift(1, 8 - bits)  # e.g. 0xF0 for 4 bits
    return _from_levels(tf.bitwise.bitwise_and(_to_levels(image), mask))


def solarize(image: tf.Tensor, magnitude) -> tf.Tensor:
    """PIL ``ImageOps.solarize(threshold)``: ``1 - x`` where the 8-bit value is >= threshold
    (threshold on the 0..256 scale; 256 leaves the image unchanged, 0 inverts everything)."""
    threshold = _as_float(magnitude)
    above = tf.cast(_to_levels(image), tf.float32) >= threshold
    return tf.where(above, 1.0 - image, image)


# ------------------------------------------------------------------------ geometric ops


def _affine(image: tf.Tensor, matrix, fill: float, interpolation: str) -> tf.Tensor:
    """Apply a PIL-style affine ``(a, b, c, d, e, f)``: the output pixel with centre (x, y)
    samples the input at ``(a x + b y + c, d x + e y + f)``, in coordinates where pixel
    ``[i, j]`` covers ``[j, j + 1) x [i, i + 1)`` (PIL's; TF's are the pixel indices)."""
    a, b, c, d, e, f = (_as_float(v) for v in matrix)
    # index coordinates q = M (p + 0.5) - 0.5
    c = c + 0.5 * (a + b) - 0.5
    f = f + 0.5 * (d + e) - 0.5
    transform = tf.stack([a, b, c, d, e, f, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None],
        transforms=transform,
        output_shape=tf.shape(image)[:2],
        fill_value=tf.constant(fill, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode="CONSTANT",
    )[0]
    return tf.ensure_shape(out, image.shape)


def rotate(image: tf.Tensor, magnitude, fill: float = GEOMETRIC_FILL, interpolation: str = "nearest") -> tf.Tensor:
    """PIL ``Image.rotate(degrees)``: rotate counter-clockwise (as displayed, rows going down)
    by `magnitude` degrees about the image centre; 90 on a square image equals
    ``np.rot90(image)``. Uncovered pixels get `fill` (black)."""
    theta = _as_float(magnitude) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    height, width = tf.unstack(tf.cast(tf.shape(image)[:2], tf.float32))
    cx, cy = width / 2.0, height / 2.0
    # input = R (p - centre) + centre, R = [[cos, -sin], [sin, cos]]
    matrix = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    return _affine(image, matrix, fill, interpolation)


def shear_x(image: tf.Tensor, magnitude, fill: float = GEOMETRIC_FILL, interpolation: str = "nearest") -> tf.Tensor:
    """PIL ``transform(AFFINE, (1, v, 0, 0, 1, 0))``: output (x, y) samples input (x + v y, y),
    the origin being the top-left corner."""
    v = _as_float(magnitude)
    return _affine(image, (1.0, v, 0.0, 0.0, 1.0, 0.0), fill, interpolation)


def shear_y(image: tf.Tensor, magnitude, fill: float = GEOMETRIC_FILL, interpolation: str = "nearest") -> tf.Tensor:
    """PIL ``transform(AFFINE, (1, 0, 0, v, 1, 0))``: output (x, y) samples input (x, y + v x)."""
    v = _as_float(magnitude)
    return _affine(image, (1.0, 0.0, 0.0, v, 1.0, 0.0), fill, interpolation)


def translate_x(image: tf.Tensor, magnitude, fill: float = GEOMETRIC_FILL, interpolation: str = "nearest") -> tf.Tensor:
    """Translate by `magnitude` of the width, PIL convention: output column x shows input column
    ``x + magnitude * W``, so a positive magnitude moves the content left; the uncovered
    columns get `fill` (black)."""
    shift = _as_float(magnitude) * tf.cast(tf.shape(image)[1], tf.float32)
    return _affine(image, (1.0, 0.0, shift, 0.0, 1.0, 0.0), fill, interpolation)


def translate_y(image: tf.Tensor, magnitude, fill: float = GEOMETRIC_FILL, interpolation: str = "nearest") -> tf.Tensor:
    """Translate by `magnitude` of the height: output row y shows input row
    ``y + magnitude * H`` (a positive magnitude moves the content up)."""
    shift = _as_float(magnitude) * tf.cast(tf.shape(image)[0], tf.float32)
    return _affine(image, (1.0, 0.0, 0.0, 0.0, 1.0, shift), fill, interpolation)


# ------------------------------------------------------------------------------ cutout


def cutout_fill(channels: int) -> tuple[float, ...]:
    """TorchSSL's Cutout colour in [0, 1] for images with `channels` channels (1 or 3):
    (125, 123, 114) / 255, or its luminance 123 / 255 for grey-scale images."""
    if channels == 1:
        return (CUTOUT_GREY / 255.0,)
    if channels == 3:
        return tuple(level / 255.0 for level in CUTOUT_RGB)
    raise ValueError(f"Cutout colour for {channels} channels: expected 1 or 3")


def cutout(image: tf.Tensor, magnitude, center, fill=None) -> tf.Tensor:
    """TorchSSL's Cutout: fill a square of side ``v = magnitude * W`` pixels with `fill`.

    As TorchSSL draws it with PIL, the square's top-left pixel is ``(y0, x0) = (floor(max(0,
    center_y - v / 2)), floor(max(0, center_x - v / 2)))`` and it covers rows ``y0 ..
    floor(y0 + v)`` and columns ``x0 .. floor(x0 + v)`` (PIL's rectangle includes its far
    corner), clipped at the image's border; ``v <= 0`` leaves the image unchanged. `fill`
    defaults to `cutout_fill` of the image's channels; ``center = (center_y, center_x)`` in
    pixels. `rand_augment` draws ``magnitude ~ U(0, 0.5)`` and each centre coordinate
    uniformly in ``[1, side]`` (TorchSSL's ``np.random.uniform(w)`` has ``low=w`` and the
    default ``high=1``).

    Example:
    >>> out = cutout(tf.ones([32, 32, 3]), 0.25, center=(16, 16))  # rows/cols 12..20 filled
    """
    height, width = image.shape[0], image.shape[1]
    if fill is None:
        fill = cutout_fill(_channels(image))
    side = _as_float(magnitude) * float(width)
    center_y, center_x = (_as_float(v) for v in tf.unstack(tf.convert_to_tensor(center)))
    top = tf.floor(tf.maximum(0.0, center_y - side / 2.0))
    left = tf.floor(tf.maximum(0.0, center_x - side / 2.0))
    rows = tf.range(height, dtype=tf.float32)[:, None, None]
    cols = tf.range(width, dtype=tf.float32)[None, :, None]
    inside = (rows >= top) & (rows <= top + side) & (cols >= left) & (cols <= left + side) & (side > 0)
    return tf.where(inside, tf.constant(fill, tf.float32), image)


_cutout = cutout  # `rand_augment` has an argument named `cutout`


# ----------------------------------------------------------------------------- policy


class Op(NamedTuple):
    name: str
    fn: Callable
    low: float
    high: float


# TorchSSL's augment_list() for FixMatch / FlexMatch, in its order.
OPS: tuple[Op, ...] = (
    Op("AutoContrast", auto_contrast, 0.0, 1.0),
    Op("Brightness", brightness, 0.05, 0.95),
    Op("Color", color, 0.05, 0.95),
    Op("Contrast", contrast, 0.05, 0.95),
    Op("Equalize", equalize, 0.0, 1.0),
    Op("Identity", identity, 0.0, 1.0),
    Op("Posterize", posterize, 4.0, 8.0),
    Op("Rotate", rotate, -30.0, 30.0),
    Op("Sharpness", sharpness, 0.05, 0.95),
    Op("ShearX", shear_x, -0.3, 0.3),
    Op("ShearY", shear_y, -0.3, 0.3),
    Op("Solarize", solarize, 0.0, 256.0),
    Op("TranslateX", translate_x, -0.3, 0.3),
    Op("TranslateY", translate_y, -0.3, 0.3),
)
OP_NAMES: tuple[str, ...] = tuple(op.name for op in OPS)
_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"}


def apply_op(image: tf.Tensor, index, magnitude, fill: float = GEOMETRIC_FILL) -> tf.Tensor:
    """Apply op number `index` of `OPS` (a scalar int tensor is fine) with `magnitude` in its
    natural units, through ``tf.switch_case``."""

    def branch(op):
        if op.name in _GEOMETRIC:
            return lambda: op.fn(image, magnitude, fill=fill)
        return lambda: op.fn(image, magnitude)

    out = tf.switch_case(tf.cast(index, tf.int32), [branch(op) for op in OPS])
    return tf.ensure_shape(out, image.shape)


def sample_ops(seed: tf.Tensor, num_ops: int = 3) -> tuple[tf.Tensor, tf.Tensor]:
    """The ops and magnitudes `rand_augment` draws for `seed`: int32 indices into `OPS`
    (uniform, with replacement) and float32 magnitudes uniform in each op's range."""
    op_seed, magnitude_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    indices = tf.random.stateless_uniform([num_ops], op_seed, minval=0, maxval=len(OPS), dtype=tf.int32)
    low = tf.gather(tf.constant([op.low for op in OPS], tf.float32), indices)
    high = tf.gather(tf.constant([op.high for op in OPS], tf.float32), indices)
    return indices, low + (high - low) * tf.random.stateless_uniform([num_ops], magnitude_seed)


def rand_augment(
    image: tf.Tensor,
    seed: tf.Tensor,
    num_ops: int = 3,
    cutout: float = 0.5,
    fill: float = GEOMETRIC_FILL,
    return_ops: bool = False,
):
    """FixMatch / FlexMatch RandAugment: `num_ops` random ops, then Cutout.

    Args:
        image: float32 ``[H, W, C]`` in [0, 1], static shape, C in {1, 3}.
        seed: shape-[2] integer seed; the same seed gives the same view.
        num_ops: ops drawn uniformly with replacement from the 14 of `OPS`.
        cutout: Cutout side ~ ``U(0, cutout) * W`` (0 disables it).
        fill: value of the pixels uncovered by geometric ops (black, as PIL); the Cutout
            square is TorchSSL's colour, `cutout_fill`.
        return_ops: also return the int32 indices (into `OPS`) of the ops applied.

    Returns:
        The view (float32, same shape, clipped to [0, 1]), or ``(view, op_indices)``.

    Example:
    >>> view = rand_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64))
    >>> view.shape
    TensorShape([32, 32, 3])
    """
    image = tf.convert_to_tensor(image, tf.float32)
    policy_seed, cutout_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    indices, magnitudes = sample_ops(policy_seed, num_ops)
    for i in range(num_ops):
        image = apply_op(image, indices[i], magnitudes[i], fill=fill)
    if cutout > 0:
        u = tf.random.stateless_uniform([3], cutout_seed)
        height, width = image.shape[0], image.shape[1]
        center = tf.stack([1.0 + u[1] * (height - 1), 1.0 + u[2] * (width - 1)])
        image = _cutout(image, u[0] * cutout, center)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return (image, indices) if return_ops else image


def strong_augment(image: tf.Tensor, seed: tf.Tensor, flip: bool = True, num_ops: int = 3,
                   cutout: float = 0.5) -> tf.Tensor:
    """The strong view of FixMatch / FlexMatch: `rand_augment`, then `weak_augment` (flip when
    `flip`, reflect-padded crop), in TorchSSL's order, on independent sub-seeds
    ``stateless_split(seed, 2)``. Borders filled by RandAugment (black corners, a Cutout at
    the edge) are mirrored into the crop's padding, as in TorchSSL.

    Example:
    >>> view = strong_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64))
    >>> view.shape
    TensorShape([32, 32, 3])
    >>> svhn_strong = functools.partial(strong_augment, flip=False)  # doctest: +SKIP
    """
    weak_seed, rand_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = rand_augment(tf.convert_to_tensor(image, tf.float32), rand_seed, num_ops=num_ops, cutout=cutout)
    return weak_augment(image, weak_seed, flip=flip)
