"""Weak augmentation: random horizontal flip and random crop after reflect padding."""

from __future__ import annotations

import tensorflow as tf


def weak_augment(image: tf.Tensor, seed: tf.Tensor, flip: bool = True, pad_fraction: float = 0.125,
                 crop_size: int | None = None) -> tf.Tensor:
    """The weak view of FixMatch / FlexMatch, in stateless TF ops.

    Pads by `pad_fraction` of the side (4 pixels for 32x32) with reflection, crops back to the
    original size at a random offset and, when `flip` is True, flips left-right with
    probability 1/2. SVHN and digits use `flip=False`.

    Args:
        image: float32 `[H, W, C]`.
        seed: shape-[2] integer seed; the same seed gives the same view.
        crop_size: side of a square crop to take instead of the original size (TorchSSL's
            ImageNet view: 4-pixel padding of a 256x256 image, then a 224x224 crop).

    Example:
    >>> view = weak_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64))
    >>> view.shape
    TensorShape([32, 32, 3])
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    height, width = image.shape[0], image.shape[1]
    pad_h, pad_w = int(height * pad_fraction + 0.5), int(width * pad_fraction + 0.5)
    padded = tf.pad(image, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="REFLECT")
    size = tf.shape(image) if crop_size is None else [crop_size, crop_size, image.shape[2]]
    image = tf.image.stateless_random_crop(padded, size, seed=crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=flip_seed)
    return image
