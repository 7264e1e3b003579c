"""AMSL against the reference's Keras 2 code (benchmarks/parity/amsl.py), run in the federated
environment (TF 2.14 / Keras 2) with the harness's run-time shims. Needs the checkout:
KERASTL_REF_AMSL (docs/parity.md); without it the harness exits with code 2 and these tests
fail.

1. Copied weights: kerastl's AMSL with the reference network's weights gives the same
   per-window MSE of every view, view-class probabilities, memory-entropy and cross-entropy
   terms and total loss (relative 1e-5), views 6 and 7 with the reference's wiring (view 1's
   memory reads).
2. The shimmed reference trains on 125 x 6 windows and scores each window on its own."""

import tempfile

import numpy as np
import pytest

from parity import amsl as amsl_parity
from parity import common


@pytest.fixture(scope="module")
def reference():
    return common.reference_dir("AMSL")


def test_losses_and_scores_agree_on_copied_weights(reference):
    with tempfile.TemporaryDirectory() as workdir:
        errors = amsl_parity.copied_weights_parity(reference, workdir)
    kerastl_wiring = errors.pop("mse_views_6_7_kerastl_wiring")
    assert set(errors) == {"mse_views_1_5", "mse_views_6_7_reference_wiring", "view_probabilities",
                           "memory_entropy_term", "cross_entropy_term", "total_loss_reference_wiring",
                           "reconstruction_term_views_1_5"}
    assert max(errors.values()) < 1e-5, errors
    # kerastl reads each view's own memories for views 6 and 7: a different decoder input there.
    assert kerastl_wiring > 1e-5


def test_shimmed_reference_trains_and_scores_each_window(reference):
    rng = np.random.default_rng(0)
    t = np.arange(amsl_parity.WINDOW)[None, :, None]
    x = (0.5 + 0.4 * np.sin(t / 5.0 + rng.uniform(0, 6, (40, 1, 6)))).astype(np.float32)
    with tempfile.TemporaryDirectory() as workdir:
        result = amsl_parity.reference_scores(reference, x[:24], x[24:], seed=0, epochs=1, batch_size=8,
                                              workdir=workdir)
    train, test = np.asarray(result["train_scores"]), np.asarray(result["test_scores"])
    assert train.shape == (24,) and test.shape == (16,)
    # One score per window (the reference's evaluation would give one value per batch).
    assert len(np.unique(np.round(test, 9))) == 16 and np.all(test > 0)
    assert np.isfinite(result["final_loss"]) and result["versions"]["keras"].startswith("2.")
