"""TDC recovers planted regime changes; the random and reverse splits are what they claim."""

import numpy as np
import pytest

from kerastl import InputError
from kerastl.timeseries import distances, tdc


def regimes(lengths, scales, seed=0):
    """Consecutive regimes of 3 correlated features with different covariances."""
    rng = np.random.default_rng(seed)
    parts = []
    for length, scale in zip(lengths, scales):
        mixing = np.array([[1.0, scale, 0.0], [0.0, 1.0, scale], [scale, 0.0, 1.0]]) * scale
        parts.append(rng.normal(size=(length, 3)) @ mixing)
    return np.concatenate(parts).astype("float32")


@pytest.mark.parametrize("distance", ["coral", "mmd_rbf"])
def test_tdc_recovers_planted_regime_changes(distance):
    series = regimes([300, 400, 300], [0.5, 2.0, 0.9])
    result = tdc.split(series, k=3, distance=distance)
    assert result.boundaries == [0, 300, 700, 1000]
    assert result.segments == [(0, 300), (300, 700), (700, 1000)]
    assert result.score == pytest.approx(tdc.diversity(series, [0, 300, 700, 1000], distance), rel=1e-5)


def test_tdc_maximises_and_reverse_minimises_diversity_over_the_grid():
    import itertools

    series = regimes([200, 500, 300], [0.5, 2.0, 1.0], seed=1)
    candidates = range(100, 1000, 100)
    scores = {b: tdc.diversity(series, [0, *b, 1000]) for b in itertools.combinations(candidates, 2)}
    best, worst = tdc.split(series, 3), tdc.reverse_split(series, 3)
    assert best.score == pytest.approx(max(scores.values()), rel=1e-5)  # greedy finds the optimum here
    assert worst.score < best.score and worst.method == "reverse"
    assert worst.score <= np.median(list(scores.values()))


def test_random_split_is_seeded_and_on_the_candidate_grid():
    series = regimes([500, 500], [0.5, 2.0])
    first, again, other = (tdc.random_split(series, 4, seed=s) for s in (3, 3, 4))
    assert first.boundaries == again.boundaries != other.boundaries
    assert all(b % 100 == 0 for b in first.boundaries) and len(first.boundaries) == 5
    assert first.score == pytest.approx(tdc.diversity(series, first.boundaries), rel=1e-5)


def test_dates_are_reported_when_time_stamps_are_given():
    series = regimes([240, 240], [0.5, 2.0])
    time = np.arange("2021-01-01T00", 480, dtype="datetime64[h]").astype("datetime64[ns]")
    result = tdc.segment(series, 2, "tdc", time=time)
    assert result.boundaries == [0, 240, 480]
    assert result.dates == ["2021-01-01T00:00:00", "2021-01-11T00:00:00", "2021-01-20T23:00:00"]
    assert result.to_dict()["segments"] == [[0, 240], [240, 480]]


def test_bad_requests():
    series = regimes([100, 100], [1.0, 2.0])
    with pytest.raises(InputError, match="--num-domains 11: expected 2..10"):
        tdc.split(series, 11)
    with pytest.raises(InputError, match="adversarial cannot characterise"):
        tdc.split(series, 2, distance="adversarial")
    with pytest.raises(InputError, match="--split 'best'"):
        tdc.segment(series, 2, "best")


def test_tdc_uses_every_row_unless_asked_to_thin():
    series = regimes([300, 400, 300], [0.5, 2.0, 0.9])
    boundaries = [0, 300, 700, 1000]
    every_row = sum(float(distances.coral(series[a:b], series[c:d]))
                    for (a, b), (c, d) in [((0, 300), (300, 700)), ((0, 300), (700, 1000)), ((300, 700), (700, 1000))])
    assert tdc.diversity(series, boundaries) == pytest.approx(every_row, rel=1e-5)
    thinned = tdc.diversity(series, boundaries, max_samples=50)
    assert thinned != pytest.approx(every_row, rel=1e-5)
    assert tdc.split(series, k=3, max_samples=200).boundaries == boundaries
