"""What the sensor readers share: windows, resampling, spans on one clock; the docstring examples."""

import doctest

import numpy as np
import pytest

from kerastl import InputError
from kerastl.data import recordings


def test_make_windows_by_hand():
    series = np.arange(20, dtype="float32").reshape(10, 2)     # step t holds (2t, 2t + 1)
    w = recordings.make_windows(series, window=4, stride=3)
    assert w.shape == (3, 4, 2)
    assert w[:, 0, 0].tolist() == [0, 6, 12] and w[2, -1].tolist() == [18, 19]
    assert recordings.make_windows(series, 10, 1).shape == (1, 10, 2)
    with pytest.raises(InputError, match="--window 11: longer than a recording of 10 steps"):
        recordings.make_windows(series, 11, 1)


def test_resampling_by_hand():
    """The resampler under the WESAD wrist clocks: values checked at known times."""
    np.testing.assert_allclose(recordings.resample(np.array([0.0, 1.0, 4.0]), 1, 2), [0, 0.5, 1, 2.5, 4, 5.5])
    assert recordings.resample(np.array([[3.0, 4.0]]), 4, 1).tolist() == [[3.0, 4.0]]    # one sample stays
    t = np.arange(2100) / 700                                                            # 3 s at 700 Hz
    down = recordings.resample(np.stack([np.sin(np.pi * t), np.full_like(t, 5.0)], axis=1), 700, 32)
    assert down.shape == (96, 2)
    np.testing.assert_allclose(down[4:-4, 0], np.sin(np.pi * np.arange(4, 92) / 32), atol=1e-3)
    np.testing.assert_allclose(down[:, 1], 5.0, atol=1e-5)
    # A 20 Hz tone is above 32 Hz's Nyquist frequency: filtered out, not folded to 12 Hz.
    assert np.abs(recordings.resample(np.sin(2 * np.pi * 20 * t), 700, 32)[8:-8]).max() < 0.05
    fast, slow = np.arange(70.0) * 0.1, np.arange(4 * 7) * 0.25             # 10 Hz and 4 Hz clocks of t
    both, = recordings.cut_spans([(recordings.array_reader(fast, 10), 10), (recordings.array_reader(slow, 4), 4)],
                                 [(1.0, 6.0)], 2)
    np.testing.assert_allclose(both, np.repeat(1.0 + np.arange(10)[:, None] / 2, 2, axis=1), atol=1e-6)


def test_docstring_examples():
    result = doctest.testmod(recordings, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
