"""The usage examples in the docstrings run and print what they say."""

import doctest

import pytest

from kerastl.anomaly import baselines, detector, memory, model, report, transforms
from kerastl.data import sensors


@pytest.mark.parametrize("module", [transforms, memory, model, detector, baselines, report, sensors],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
