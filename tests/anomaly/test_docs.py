"""The usage examples in the docstrings run and print what they say."""

import doctest

import pytest

from kerastl.anomaly import baselines, memory, model, protocol, report, transforms


# detector's examples need a trained model (marked +SKIP); tests/anomaly/test_detector.py covers them.
@pytest.mark.parametrize("module", [transforms, memory, model, baselines, report, protocol],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
