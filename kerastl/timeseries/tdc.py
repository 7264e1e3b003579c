"""Temporal distribution characterization (TDC): split a training period into K segments
whose distributions differ as much as possible.

Greedy, as in AdaRNN: the candidate boundaries are the `split_n - 1` inner boundaries of an
even split into `split_n` parts; starting from the two ends, add the candidate that
maximises the summed pairwise distance of the resulting segments, until there are K
segments. `random_split` (seeded candidates) and `reverse_split` (the greedy *minimum*:
segments as similar as possible) are the paper's comparisons.

Example:
>>> rng = np.random.default_rng(0)
>>> series = np.concatenate([rng.normal(0, 1, (300, 3)), rng.normal(0, 4, (300, 3))])
>>> split(series, k=2, distance="coral").boundaries
[0, 300, 600]
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from kerastl.errors import InputError

SPLITS = ("tdc", "random", "reverse")


@dataclasses.dataclass
class Segmentation:
    """K segments of a period of N steps.

    Attributes:
        boundaries: K + 1 indices, 0 = b_0 < b_1 < ... < b_K = N; segment k is
            `[b_k, b_{k+1})`.
        method: "tdc", "random" or "reverse".
        distance: the distance used to score the split.
        score: summed pairwise distance of the segments.
        dates: the first time stamp of each segment and the end of the last (ISO strings),
            when time stamps were given.
    """

    boundaries: list[int]
    method: str
    distance: str
    score: float
    dates: list[str] | None = None

    @property
    def segments(self) -> list[tuple[int, int]]:
        return list(zip(self.boundaries[:-1], self.boundaries[1:]))

    def to_dict(self) -> dict:
        return {"method": self.method, "distance": self.distance, "score": self.score,
                "boundaries": self.boundaries, "segments": [list(s) for s in self.segments],
                "dates": self.dates}


def _segment_sample(features: np.ndarray, start: int, end: int, max_samples: int | None) -> np.ndarray:
    # Every row by default; the kernel distances cost O(n^2), so long segments may be thinned
    # evenly (deterministically) to `max_samples` rows.
    rows = np.arange(start, end)
    if max_samples and len(rows) > max_samples:
        rows = rows[np.linspace(0, len(rows) - 1, max_samples).round().astype(int)]
    return features[rows]


def diversity(features: np.ndarray, boundaries, distance: str = "coral", max_samples: int | None = None) -> float:
    """Sum over segment pairs (i < j) of distance(segment_i, segment_j), on every row (or at
    most `max_samples` evenly spaced rows per segment)."""
    from kerastl.timeseries.distances import get_distance

    function = get_distance(distance)
    segments = [_segment_sample(features, a, b, max_samples) for a, b in zip(boundaries[:-1], boundaries[1:])]
    return float(sum(float(function(segments[i], segments[j]))
                     for i, j in itertools.combinations(range(len(segments)), 2)))


def _check(features, k, split_n, distance):
    features = np.asarray(features, np.float32)
    if features.ndim == 1:
        features = features[:, None]
    if features.ndim != 2:
        raise InputError(f"TDC: features of shape {features.shape}, expected [time, features]")
    from kerastl.timeseries.distances import lookup, stateless_names

    if lookup(distance).trainable:
        raise InputError(f"--tdc-distance {distance} cannot characterise segments (it has trainable or random parts); TDC "
                         f"takes {', '.join(stateless_names())}")
    if not 2 <= k <= split_n:
        raise InputError(f"--num-domains {k}: expected 2..{split_n} (TDC chooses among {split_n} even parts)")
    if len(features) < split_n:
        raise InputError(f"TDC: {len(features)} time steps, expected at least split_n = {split_n}")
    return features


def _greedy(features, k, distance, split_n, max_samples, better):
    n = len(features)
    candidates = [round(i * n / split_n) for i in range(1, split_n)]
    selected = [0, n]
    score = 0.0
    while len(selected) - 2 < k - 1:
        scores = {c: diversity(features, sorted(selected + [c]), distance, max_samples)
                  for c in candidates if c not in selected}
        choice = better(scores, key=scores.get)
        selected.append(choice)
        score = scores[choice]
    return sorted(selected), score


def _dates(time, boundaries):
    if time is None:
        return None
    time = np.asarray(time)
    stamps = [time[b] for b in boundaries[:-1]] + [time[-1]]
    return [np.datetime_as_string(np.datetime64(s, "s")) for s in stamps]


def split(features, k: int, distance: str = "coral", split_n: int = 10, time=None,
          max_samples: int | None = None) -> Segmentation:
    """The greedy TDC split of `features` `[N, F]` (the training period) into `k` segments.

    Args:
        features: the training period, time along axis 0 (scaled features).
        k: number of segments (domains), 2..split_n.
        distance: any stateless name from `kerastl.timeseries.distances` (default CORAL, as
            the reference always uses).
        split_n: the candidate grid: boundaries at multiples of N / split_n.
        time: optional time stamps `[N]` to report each segment's dates.
        max_samples: None (default) computes the distances on every row; a number thins longer
            segments evenly to that many rows (for kernel distances on long series: `mmd_rbf`
            and `pairwise` cost O(rows^2) memory and time).
    """
    features = _check(features, k, split_n, distance)
    boundaries, score = _greedy(features, k, distance, split_n, max_samples, max)
    return Segmentation(boundaries, "tdc", distance, score, _dates(time, boundaries))


def reverse_split(features, k: int, distance: str = "coral", split_n: int = 10, time=None,
                  max_samples: int | None = None) -> Segmentation:
    """The greedy split that *minimises* the segments' diversity (the paper's counter-example)."""
    features = _check(features, k, split_n, distance)
    boundaries, score = _greedy(features, k, distance, split_n, max_samples, min)
    return Segmentation(boundaries, "reverse", distance, score, _dates(time, boundaries))


def random_split(features, k: int, distance: str = "coral", split_n: int = 10, time=None, seed: int = 0,
                 max_samples: int | None = None) -> Segmentation:
    """K - 1 boundaries drawn at random (seeded) from the same candidate grid."""
    features = _check(features, k, split_n, distance)
    n = len(features)
    candidates = [round(i * n / split_n) for i in range(1, split_n)]
    chosen = np.random.default_rng(seed).choice(candidates, size=k - 1, replace=False)
    boundaries = sorted([0, n, *map(int, chosen)])
    return Segmentation(boundaries, "random", distance, diversity(features, boundaries, distance, max_samples),
                        _dates(time, boundaries))


def segment(features, k: int, method: str = "tdc", distance: str = "coral", split_n: int = 10, time=None,
            seed: int = 0, max_samples: int | None = None) -> Segmentation:
    """`split`, `random_split` or `reverse_split` by name (`method` in tdc, random, reverse)."""
    if method == "tdc":
        return split(features, k, distance, split_n, time, max_samples)
    if method == "reverse":
        return reverse_split(features, k, distance, split_n, time, max_samples)
    if method == "random":
        return random_split(features, k, distance, split_n, time, seed, max_samples)
    raise InputError(f"--split {method!r}: expected one of {', '.join(SPLITS)}")


def segment_windows(windows, relative_time, k: int, method: str = "tdc", distance: str = "coral",
                    split_n: int = 10, seed: int = 0, max_samples: int | None = None):
    """TDC over labelled windows from many recordings (the classification setting).

    The training period is the training windows ordered by their relative time in their own
    recording (`relative_time` in [0, 1), see `kerastl.data.har.WindowSplit`); each window is
    summarised by its per-channel mean and standard deviation, and `segment` splits that
    sequence. Returns the `Segmentation` (boundaries count windows in that order), the K
    arrays of indices into `windows` and the relative times at which the segments start
    (and the last one ends).

    Example:
    >>> rng = np.random.default_rng(0)
    >>> windows = np.concatenate([rng.normal(0, 1, (200, 8, 2)), rng.normal(0, 3, (200, 8, 2))])
    >>> time = np.linspace(0, 1, 400, endpoint=False)
    >>> segmentation, parts, starts = segment_windows(windows, time, k=2, distance="mmd_linear")
    >>> segmentation.boundaries, [len(p) for p in parts], starts
    ([0, 200, 400], [200, 200], [0.0, 0.5, 0.9975])
    """
    windows = np.asarray(windows, np.float32)
    order = np.argsort(np.asarray(relative_time), kind="stable")
    summary = np.concatenate([windows.mean(axis=1), windows.std(axis=1)], axis=1)[order]
    segmentation = segment(summary, k, method, distance, split_n, seed=seed, max_samples=max_samples)
    times = np.asarray(relative_time, np.float64)[order]
    starts = [float(times[b]) for b in segmentation.boundaries[:-1]] + [float(times[-1])]
    return segmentation, [order[a:b] for a, b in segmentation.segments], starts
