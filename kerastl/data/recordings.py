"""Recordings and the pieces every sensor reader shares: windows, resampling, channel choice.

- `Recordings`: variable-length multichannel recordings with a class, a subject and the
  channel names, as every reader in `kerastl.data` (sensors, pamap2, wesad, cap) returns them.
- `make_windows`: fixed-length windows of one recording.
- `resample`, `cut_spans`, `array_reader`: channels of different sampling rates brought to
  one rate and cut into spans.
- `channel_indices`: the channels a user named.

Example:
>>> make_windows(np.arange(12.0).reshape(6, 2), window=4, stride=2).shape
(2, 4, 2)
"""

from __future__ import annotations

import dataclasses
import fractions

import numpy as np

from kerastl.errors import InputError


@dataclasses.dataclass
class Recordings:
    """Variable-length recordings: `series[i]` is float32 [time_i, channels] of class `labels[i]`."""

    name: str
    series: list
    labels: np.ndarray
    class_names: list
    groups: np.ndarray          # subject / person of each recording
    channel_names: list
    sample_rate: float | None = None    # Hz
    # True when recordings are stretches of one class cut from longer sessions: those shorter
    # than a window are left out (instead of refusing the window length).
    drop_short: bool = False


def resample(series: np.ndarray, rate: float, new_rate: float) -> np.ndarray:
    """`series` [time, ...] sampled at `rate` Hz, resampled to `new_rate` Hz: sample i of the
    result is at time i / new_rate, ceil(len * new_rate / rate) samples. Downsampling filters
    against aliasing (polyphase, the edges padded along the local trend); upsampling
    interpolates linearly (extrapolating the last interval). A straight line comes back
    unchanged either way.

    Example:
    >>> resample(np.arange(8.0)[:, None], rate=4, new_rate=2)[:, 0].round(6)
    array([0., 2., 4., 6.])
    >>> resample(np.array([0.0, 1.0, 4.0]), rate=1, new_rate=2)
    array([0. , 0.5, 1. , 2.5, 4. , 5.5])
    """
    series = np.asarray(series, np.float64)
    if rate == new_rate or len(series) == 0:
        return series
    length = int(np.ceil(len(series) * new_rate / rate - 1e-9))
    if new_rate > rate:
        if len(series) == 1:
            return np.repeat(series, length, axis=0)
        position = np.arange(length) * (rate / new_rate)
        left = np.minimum(position.astype(int), len(series) - 2)
        step = (position - left).reshape(-1, *[1] * (series.ndim - 1))
        return series[left] + step * (series[left + 1] - series[left])
    if len(series) == 1:  # nothing to filter (the trend padding needs two samples)
        return series
    from scipy.signal import resample_poly

    ratio = fractions.Fraction(new_rate / rate).limit_denominator(1000)
    return resample_poly(series, ratio.numerator, ratio.denominator, axis=0, padtype="line")


def array_reader(values: np.ndarray, rate: float):
    """`read(start_s, end_s)` over an array sampled at `rate` Hz (for `cut_spans`)."""
    return lambda start, end: values[int(round(start * rate)):int(round(end * rate))]


def cut_spans(sources, spans, rate: float) -> list[np.ndarray]:
    """One float32 series [time, channels] at `rate` Hz per span `(start_s, end_s)`.

    `sources` are `(read, source_rate)` pairs: `read(start_s, end_s)` returns that source's
    samples between the two times (1-D, or [time, k] for k channels); each is resampled to
    `rate` and the channels are cut to their common length.

    Example:
    >>> fast, slow = np.arange(20.0), np.arange(10.0) * 2      # 10 Hz and 5 Hz clocks of one signal
    >>> cut_spans([(array_reader(fast, 10), 10), (array_reader(slow, 5), 5)], [(0.4, 1.2)], 5)[0]
    array([[ 4.,  4.],
           [ 6.,  6.],
           [ 8.,  8.],
           [10., 10.]], dtype=float32)
    """
    out = []
    for start, end in spans:
        parts = []
        for read, source_rate in sources:
            values = np.asarray(read(start, end), np.float64)
            parts.append(resample(values.reshape(len(values), -1), source_rate, rate))
        length = min(len(p) for p in parts)
        out.append(np.concatenate([p[:length] for p in parts], axis=1).astype(np.float32))
    return out


def channel_indices(available: list, wanted: str | None, dataset: str) -> list[int]:
    """Indices of the comma-separated channel names `wanted` among `available` (None: all)."""
    if wanted is None:
        return list(range(len(available)))
    names = [name.strip() for name in str(wanted).split(",") if name.strip()]
    unknown = [name for name in names if name not in available]
    if unknown or not names:
        problem = f"{unknown[0]!r} is not a channel" if unknown else "names no channel"
        raise InputError(f"--channels {wanted}: {problem} of {dataset}; expected names among "
                         f"{', '.join(available)}")
    return [available.index(name) for name in dict.fromkeys(names)]


def make_windows(series: np.ndarray, window: int, stride: int) -> np.ndarray:
    """Windows `[N, window, channels]` of one recording `[time, channels]`, starting every
    `stride` steps (the tail that does not fill a window is dropped).

    Example:
    >>> make_windows(np.arange(10.0)[:, None], window=4, stride=3)[..., 0]
    array([[0., 1., 2., 3.],
           [3., 4., 5., 6.],
           [6., 7., 8., 9.]])
    """
    series = np.asarray(series)
    if window < 1 or stride < 1:
        raise InputError(f"--window {window} / --stride {stride}: expected positive integers")
    if window > len(series):
        raise InputError(f"--window {window}: longer than a recording of {len(series)} steps")
    starts = np.arange(0, len(series) - window + 1, stride)
    return np.stack([series[s:s + window] for s in starts]) if len(starts) else np.zeros((0, window, series.shape[1]))
