"""Window checks: one clear line for each kind of bad windows; the docstring examples run."""

import doctest

import numpy as np
import pytest

from kerastl import InputError
from kerastl.data import arrays
from kerastl.data.arrays import check_windows


def test_bad_windows_are_refused_with_one_clear_line():
    good = np.zeros((4, 10, 3), "float32")
    with pytest.raises(InputError, match=r"w: array of rank 2 \(shape \(4, 30\)\), expected windows of rank 3"):
        check_windows(good.reshape(4, 30), "w")
    nan = good.copy()
    nan[2, 5, 1] = np.nan
    with pytest.raises(InputError, match=r"w: 1 window\(s\) hold NaN or infinite values \(first: window 2\)"):
        check_windows(nan, "w")
    with pytest.raises(InputError, match=r"w: windows of shape \(10, 4\), expected \(10, 3\)"):
        check_windows(np.zeros((4, 10, 4)), "w", shape=(10, 3))


def test_docstring_examples():
    result = doctest.testmod(arrays, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
