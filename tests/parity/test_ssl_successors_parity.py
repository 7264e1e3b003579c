"""Step parity of kerastl's FreeMatch and SoftMatch with USB's (semilearn 0.3.2): 5 steps on
the small CNN from the same weights on the same arrays (benchmarks/parity/ssl.py; its 50-step
runs are in benchmarks/results/parity_ssl.md).

As tests/parity/test_ssl_parity.py: both sides in float64 with a constant learning rate, so
float32 rounding and the optimizer's learning-rate convention do not hide what the methods
compute. Besides losses, logits, pseudo-labels, weights and EMA weights, every step compares
the masks (FreeMatch: exactly; SoftMatch's sample weights: as floats) and the algorithms'
moving averages: FreeMatch's tau_t, p_t and pseudo-label histogram, SoftMatch's confidence
mean and variance and its alignment's class prior."""

import pytest

from parity import ssl as ssl_parity

STEPS = 5
RUNS = ("freematch/small_cnn/lr-constant+float64", "softmatch/small_cnn/lr-constant+float64")
STATE = {"freematch": {"global_threshold", "class_confidence", "label_histogram"},
         "softmatch": {"confidence_mean", "confidence_variance", "class_prior"}}


_made = {}


def parity_run(name):
    """The run `name`, made once per session by the first test that needs it (one run per
    test's time budget, not both in one fixture)."""
    if name not in _made:
        _made[name] = ssl_parity.run(ssl_parity.Setting.from_run(name, steps=STEPS))
    return _made[name]


@pytest.mark.parametrize("name", RUNS)
def test_every_quantity_agrees_within_tolerance(name):
    comparison, extras = parity_run(name)
    summary = comparison.summary()
    algorithm = name.split("/")[0]
    expected = {"lr", "logits", "sup_loss", "unsup_loss", "total_loss", "pseudo_label", "mask", "weights",
                "bn_moving_mean", "bn_moving_variance", "ema_weights"} | STATE[algorithm]
    assert set(summary) == expected
    assert all(entry["steps"] == STEPS for entry in summary.values())
    failing = {quantity: entry for quantity, entry in summary.items() if not entry["ok"]}
    assert failing == {}
    assert summary["mask"]["kind"] == ("float" if algorithm == "softmatch" else "exact")
    assert extras["mask_flips"] == []


def test_freematch_thresholds_start_low_and_let_the_batch_through():
    """tau_t starts at 1/C and moves by 0.1 % of the batch's mean confidence per step, so in
    the first steps every example of the warm-started network passes on both sides (the
    50-step runs of benchmarks/parity/ssl.py compare the thresholds as they rise); tau_t
    itself agrees at every step."""
    comparison, extras = parity_run(RUNS[0])
    assert extras["mask_ratio"] == [1.0] * STEPS
    tau = [row for row in comparison.rows if row["quantity"] == "global_threshold"]
    assert len(tau) == STEPS and all(row["ok"] for row in tau)


def test_softmatch_weights_start_at_one_and_agree():
    """mu_t starts at 1/C, so in the first steps every confidence is above it and weighs 1 on
    both sides (the 50-step runs compare the weights once the Gaussian bites); the weights are
    compared as floats."""
    comparison, extras = parity_run(RUNS[1])
    assert extras["mask_ratio"] == [1.0] * STEPS
    assert comparison.summary()["mask"]["worst"] < 1e-5


def test_the_moving_averages_move_and_agree():
    for name in RUNS:
        comparison, _ = parity_run(name)
        rows = [row for row in comparison.rows if row["quantity"] in STATE[name.split("/")[0]]]
        assert len(rows) == 3 * STEPS and all(row["ok"] for row in rows)
