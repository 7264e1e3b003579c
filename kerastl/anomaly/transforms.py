"""AMSL's self-supervised views: six signal transformations as batched TF ops.

Every function maps a batch of windows `[batch, time, channels]` (float32) to a batch of the
same shape. Random ones take a stateless `seed` (shape-[2] integer tensor), so a view is a
pure function of `(windows, seed)`: training derives the seed from the optimizer step (exact
resume), scoring uses a fixed seed. With `shared=True` the random parameters (noise pattern,
chunk order, scale factor, warp curve) are drawn once and used for every window of the
batch, so a window's view does not depend on the other windows or on its batch position —
that is what makes anomaly scores per-sample.

Example:
>>> import tensorflow as tf
>>> x = tf.random.normal([8, 100, 6])
>>> views = make_views(x, DEFAULT_TRANSFORMATIONS, seed=tf.constant([0, 1]))
>>> views.shape      # the original window plus six transformed views
TensorShape([8, 7, 100, 6])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import tensorflow as tf

SCALE_FACTORS = (0.5, 0.8, 1.5, 2.0)


def _draw_batch(x: tf.Tensor, shared: bool) -> tf.Tensor:
    """How many independent random draws: one per window, or one for the whole batch."""
    return tf.constant(1) if shared else tf.shape(x)[0]


def add_noise(x: tf.Tensor, seed, snr_db: float = 5.0, shared: bool = False) -> tf.Tensor:
    """Adds Gaussian noise at `snr_db` decibels: per window and channel, noise power =
    signal power (mean square over time) / 10^(snr_db / 10)."""
    x = tf.convert_to_tensor(x, tf.float32)
    power = tf.reduce_mean(tf.square(x), axis=1, keepdims=True)  # [B, 1, C]
    std = tf.sqrt(power / (10.0 ** (snr_db / 10.0)))
    shape = tf.concat([[_draw_batch(x, shared)], tf.shape(x)[1:]], axis=0)
    return x + std * tf.random.stateless_normal(shape, seed)


def negate(x: tf.Tensor) -> tf.Tensor:
    """Multiplies every value by -1."""
    return -tf.convert_to_tensor(x, tf.float32)


def reverse(x: tf.Tensor) -> tf.Tensor:
    """Reverses the time axis."""
    return tf.reverse(tf.convert_to_tensor(x, tf.float32), axis=[1])


def permute_chunks(x: tf.Tensor, seed, num_chunks: int = 5, shared: bool = False) -> tf.Tensor:
    """Cuts the time axis into `num_chunks` contiguous chunks (lengths differ by at most one)
    and concatenates them in a random order."""
    x = tf.convert_to_tensor(x, tf.float32)
    steps = tf.shape(x)[1]
    bounds = (tf.range(num_chunks + 1) * steps) // num_chunks
    starts, lengths = bounds[:-1], bounds[1:] - bounds[:-1]
    order = tf.argsort(tf.random.stateless_uniform([_draw_batch(x, shared), num_chunks], seed), axis=1)
    moved_lengths = tf.gather(lengths, order)                           # [b, n]
    ends = tf.cumsum(moved_lengths, axis=1)
    out_starts = ends - moved_lengths
    positions = tf.tile(tf.range(steps)[None], [tf.shape(order)[0], 1])  # [b, T]
    slot = tf.searchsorted(ends, positions, side="right")               # output chunk of each step
    source = (tf.gather(starts, tf.gather(order, slot, batch_dims=1))
              + positions - tf.gather(out_starts, slot, batch_dims=1))
    source = tf.broadcast_to(source, tf.shape(x)[:2])
    return tf.gather(x, source, axis=1, batch_dims=1)


def scale(x: tf.Tensor, seed, factors: Sequence[float] = SCALE_FACTORS, shared: bool = False) -> tf.Tensor:
    """Multiplies each window by one factor drawn from `factors`."""
    x = tf.convert_to_tensor(x, tf.float32)
    choice = tf.random.stateless_uniform([_draw_batch(x, shared)], seed, 0, len(factors), dtype=tf.int32)
    return x * tf.gather(tf.constant(factors, tf.float32), choice)[:, None, None]


def time_warp(x: tf.Tensor, seed, knots: int = 4, sigma: float = 0.2, shared: bool = False) -> tf.Tensor:
    """A real time warp: the window is resampled along a random smooth monotone time curve.

    The local speed is 1 + N(0, sigma) at `knots + 2` evenly spaced points (floored at 0.1),
    linearly interpolated over time and integrated; the result is rescaled to map the first
    step to the first and the last to the last, and the window is linearly interpolated at
    those times (Um et al. 2017).
    """
    x = tf.convert_to_tensor(x, tf.float32)
    steps = tf.shape(x)[1]
    draws = _draw_batch(x, shared)
    speed_at_knots = tf.maximum(1.0 + sigma * tf.random.stateless_normal([draws, knots + 2], seed), 0.1)
    where = tf.linspace(0.0, float(knots + 1), steps)                    # knot coordinate of each step
    low = tf.minimum(tf.cast(tf.floor(where), tf.int32), knots)
    frac = where - tf.cast(low, tf.float32)
    speed = (tf.gather(speed_at_knots, low, axis=1) * (1.0 - frac)
             + tf.gather(speed_at_knots, tf.minimum(low + 1, knots + 1), axis=1) * frac)
    elapsed = tf.cumsum(speed, axis=1) - speed[:, :1]                     # starts at 0
    last = tf.cast(steps - 1, tf.float32)
    times = elapsed / tf.maximum(elapsed[:, -1:], 1e-12) * last           # [b, T], 0 .. T-1
    times = tf.broadcast_to(times, tf.shape(x)[:2])
    before = tf.minimum(tf.cast(tf.floor(times), tf.int32), steps - 1)
    after = tf.minimum(before + 1, steps - 1)
    weight = (times - tf.cast(before, tf.float32))[..., None]
    return (tf.gather(x, before, axis=1, batch_dims=1) * (1.0 - weight)
            + tf.gather(x, after, axis=1, batch_dims=1) * weight)


def savgol_coefficients(window: int = 11, order: int = 2) -> np.ndarray:
    """Savitzky-Golay smoothing weights: the centre value of the least-squares polynomial of
    degree `order` fitted to `window` points."""
    if window % 2 == 0 or window <= order:
        raise ValueError(f"window {window}: expected an odd length greater than order {order}")
    offsets = np.arange(window) - window // 2
    design = np.vander(offsets, order + 1, increasing=True)
    return np.linalg.pinv(design)[0]


def smooth(x: tf.Tensor, window: int = 11, order: int = 2) -> tf.Tensor:
    """Savitzky-Golay smoothing along time (what the reference code called time warping);
    the window's ends are reflected."""
    x = tf.convert_to_tensor(x, tf.float32)
    half = window // 2
    padded = tf.pad(x, [[0, 0], [half, half], [0, 0]], mode="SYMMETRIC")
    channels = tf.shape(x)[2]
    series = tf.reshape(tf.transpose(padded, [0, 2, 1]), [-1, tf.shape(padded)[1], 1])
    kernel = tf.constant(savgol_coefficients(window, order)[::-1].copy(), tf.float32)[:, None, None]
    smoothed = tf.nn.conv1d(series, kernel, stride=1, padding="VALID")
    return tf.transpose(tf.reshape(smoothed, [-1, channels, tf.shape(x)[1]]), [0, 2, 1])


# name -> (function, takes a seed)
TRANSFORMATIONS = {
    "noise": (add_noise, True),
    "negation": (lambda x, seed=None, shared=False: negate(x), False),
    "reversal": (lambda x, seed=None, shared=False: reverse(x), False),
    "permutation": (permute_chunks, True),
    "scaling": (scale, True),
    "time_warp": (time_warp, True),
    "smoothing": (lambda x, seed=None, shared=False: smooth(x), False),
}
# The paper's six, in its order; "smoothing" (the reference code's "time warp") is available.
DEFAULT_TRANSFORMATIONS = ("noise", "negation", "reversal", "permutation", "scaling", "time_warp")


def check_transformations(names: Sequence[str]) -> tuple[str, ...]:
    unknown = [name for name in names if name not in TRANSFORMATIONS]
    if unknown:
        raise ValueError(f"unknown transformation {unknown[0]!r}; expected names among {', '.join(TRANSFORMATIONS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"transformations {list(names)}: each may appear once")
    return tuple(names)


def make_views(x: tf.Tensor, names: Sequence[str], seed, shared: bool = False) -> tf.Tensor:
    """`[batch, time, channels]` -> `[batch, 1 + len(names), time, channels]`: the original
    window, then each named transformation (view r gets the seed folded with r)."""
    x = tf.convert_to_tensor(x, tf.float32)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    views = [x]
    for index, name in enumerate(names):
        function, random = TRANSFORMATIONS[name]
        if random:
            views.append(function(x, seed=tf.random.experimental.stateless_fold_in(seed, index + 1), shared=shared))
        else:
            views.append(function(x))
    return tf.stack(views, axis=1)
