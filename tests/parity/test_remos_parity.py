"""kerastl's ReMoS slice against the reference code's (ReMoS_artifact, CV_adv), short version of
benchmarks/parity/remos.py: one seed, both weight directions, 64 student digits.

Needs the reference checkout in KERASTL_REF_REMOS_ARTIFACT (docs/parity.md); without it the
test fails, naming the variable."""

import os

import pytest

from parity import common
from parity import remos as remos_parity

VARIABLE = "KERASTL_REF_REMOS_ARTIFACT"


@pytest.fixture(scope="module")
def modules():
    checkout = os.environ.get(VARIABLE)
    assert checkout and os.path.isdir(checkout), (
        f"{VARIABLE} must name a checkout of github.com/PKU-ASAL/ReMoS_artifact (docs/parity.md); got {checkout!r}")
    with remos_parity.reference_modules(checkout) as loaded:
        yield loaded


@pytest.mark.parametrize("direction", remos_parity.DIRECTIONS)
def test_coverage_scores_threshold_and_masks_equal_the_references(modules, direction):
    comparison, extras = remos_parity.run(modules, direction, seed=0, ratio=0.03, samples=64)
    summary = comparison.summary()
    assert set(summary) == {"logits", "input_coverage", "output_coverage", "scores", "keep_mask", "threshold",
                            "pgd_loss"}
    # Every exact quantity equal, for each of the three convs.
    for quantity in ("input_coverage", "output_coverage", "scores", "keep_mask"):
        assert summary[quantity]["steps"] == 3 and summary[quantity]["worst"] == 0, quantity
    assert summary["threshold"]["ok"]
    assert summary["logits"]["worst"] <= common.FIRST_STEP_TOLERANCE
    assert summary["pgd_loss"]["worst"] <= common.FIRST_STEP_TOLERANCE
    # The comparison is not vacuous: the reference removed weights, at least its floor, as kerastl did.
    assert extras["removed_reference"] == extras["removed_kerastl"] >= extras["removed_floor"] == int(
        extras["weights"] * 0.03) + 1
    assert any(covered[1] > 0 for covered in extras["covered_units"].values())  # some output unit covered
