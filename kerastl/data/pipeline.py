"""tf.data pipelines over in-memory arrays: deterministic, resumable, prefetched.

Every stream is a pure function of `(seed, position)`: epoch e visits the examples in the
order of a stateless shuffle seeded by `(seed, e)`, and the augmentation of the element at
position p uses the stateless seed `(salt, p)`. Starting a stream at `start_step` therefore
gives exactly the batches an uninterrupted run would have seen from that step on, which is
how checkpoints resume the data position without saving iterator state.

View functions have the signature `view(image, seed) -> image`, with `image` a float32
`[H, W, C]` tensor in [0, 1] and `seed` a shape-[2] int64 tensor for stateless random ops
(see `kerastl.augment`). Images are kept in a non-trainable `tf.Variable` so that datasets
larger than 2 GB do not end up as constants in the tf.data graph.

Example (semi-supervised stream, FlexMatch-style):
>>> stream = ssl_stream(x_lb, y_lb, x_ulb, batch_size=64, uratio=7, weak=weak_augment,
...                     unlabeled_views=(weak_augment, strong_augment), seed=0)  # doctest: +SKIP
>>> (x, y), (idx, x_weak, x_strong) = next(iter(stream))                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

View = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
AUTOTUNE = tf.data.AUTOTUNE
_MAX_EPOCHS = 2**31 - 1


def to_float_images(images: tf.Tensor) -> tf.Tensor:
    """uint8 0..255 -> float32 0..1; float inputs are only cast."""
    if images.dtype == tf.uint8:
        return tf.cast(images, tf.float32) / 255.0
    return tf.cast(images, tf.float32)


def _image_bank(x: np.ndarray) -> Callable[[tf.Tensor], tf.Tensor]:
    with tf.device("/cpu:0"):
        bank = tf.Variable(x, trainable=False, name="image_bank")
    return lambda index: to_float_images(tf.gather(bank, index))


def index_stream(n: int, seed: int, start: int = 0) -> tf.data.Dataset:
    """Infinite `(position, index)` pairs: reshuffled every epoch, starting at `start`.

    Epoch e is `stateless_shuffle(range(n), seed=(seed, e))`; `position` counts elements
    from the beginning of the stream (so `start` is the first position produced).
    """
    if n <= 0:
        raise ValueError("index_stream needs at least one example")
    first_epoch, offset = divmod(int(start), n)

    def epoch_order(epoch):
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(order)

    indices = (tf.data.Dataset.range(first_epoch, _MAX_EPOCHS)
               .flat_map(epoch_order)
               .skip(offset))
    positions = tf.data.Dataset.range(int(start), 2**62)
    return tf.data.Dataset.zip(positions, indices)


def _distributable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    # Streams come from in-memory arrays, not files: under multi-worker strategies each
    # worker takes its share of every global batch.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _element_seed(salt: int, position: tf.Tensor) -> tf.Tensor:
    return tf.stack([tf.constant(salt, tf.int64), position])


def labeled_stream(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    augment: View | None = None,
    seed: int = 0,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Infinite `(images, labels)` training batches, each image through `augment`."""
    lookup = _image_bank(x)
    labels = tf.constant(np.asarray(y, np.int64))
    salt = seed * 2 + 1

    def load(position, index):
        image = lookup(index)
        if augment is not None:
            image = augment(image, _element_seed(salt, position))
        return image, tf.gather(labels, index)

    return _distributable(index_stream(len(x), seed, start_step * batch_size)
                          .map(load, num_parallel_calls=AUTOTUNE)
                          .batch(batch_size, drop_remainder=True)
                          .prefetch(AUTOTUNE))


def unlabeled_stream(
    x: np.ndarray,
    batch_size: int,
    views: Sequence[View],
    seed: int = 0,
    start_step: int = 0,
) -> tf.data.Dataset:
    """Infinite `(index, view_1, ..., view_n)` batches: each view function applied to the
    same element with its own seed (two weak views of one image differ).

    All views are made from the same element in one `map`; `index` is the element's
    position in `x`, so per-example state (e.g. FlexMatch's `selected_label`) can be kept.
    """
    views = tuple(views)
    if not views:
        raise ValueError("unlabeled_stream needs at least one view function")
    lookup = _image_bank(x)
    salt = seed * 2 + 2

    def load(position, index):
        return (index, *apply_views(lookup(index), views, _element_seed(salt, position)))

    return _distributable(index_stream(len(x), seed + 7919, start_step * batch_size)
                          .map(load, num_parallel_calls=AUTOTUNE)
                          .batch(batch_size, drop_remainder=True)
                          .prefetch(AUTOTUNE))


def apply_views(image: tf.Tensor, views: Sequence[View], seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """Every view of one image, each with its own sub-seed of `seed` (shape [2])."""
    # At least two seeds, so a stream's first views keep their seeds when views are added.
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, max(2, len(views))))
    return tuple(view(image, view_seed) for view, view_seed in zip(views, seeds))


def ssl_stream(
    x_lb: np.ndarray,
    y_lb: np.ndarray,
    x_ulb: np.ndarray,
    batch_size: int,
    uratio: int,
    weak: View,
    unlabeled_views: Sequence[View],
    seed: int = 0,
    start_step: int = 0,
) -> tf.data.Dataset:
    """The semi-supervised training stream: `((x_lb, y_lb), (idx, *unlabeled_views))`, e.g.
    `((x_lb, y_lb), (idx, x_weak, x_strong))` for `unlabeled_views=(weak, strong)`.

    Labeled batches of `batch_size` (`weak` view) zipped with unlabeled batches of
    `uratio * batch_size`. Infinite: train with `model.fit(stream, steps_per_epoch=...)`.
    """
    labeled = labeled_stream(x_lb, y_lb, batch_size, weak, seed, start_step)
    unlabeled = unlabeled_stream(x_ulb, uratio * batch_size, unlabeled_views, seed, start_step)
    return tf.data.Dataset.zip(labeled, unlabeled).prefetch(AUTOTUNE)  # keeps both inputs' options


def eval_dataset(x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 256) -> tf.data.Dataset:
    """Finite, unshuffled batches of float images (and labels) for `evaluate` / `predict`."""
    images = tf.data.Dataset.from_tensor_slices(x).batch(batch_size).map(to_float_images)
    if y is None:
        return _distributable(images.prefetch(AUTOTUNE))
    labels = tf.data.Dataset.from_tensor_slices(np.asarray(y, np.int64)).batch(batch_size)
    return _distributable(tf.data.Dataset.zip(images, labels).prefetch(AUTOTUNE))
