"""SoftMatch on hand-made probabilities: uniform alignment, the truncated Gaussian, the loss.

Weak-view rows (logits = ln p, so softmax gives p back):
    r0 = [.8, .1, .1]   argmax 0
    r1 = [.2, .5, .3]   argmax 1
    r2 = [.5, .1, .4]   argmax 0
Their mean [1/2, 7/30, 4/15] is the class prior after the first step. Alignment multiplies
each row by (1/3) / prior, i.e. by [2, 30/7, 15/4] / 3, and renormalises (USB's 1e-6 terms
move these by < 1e-5):
    r0 -> [8/5, 3/7, 3/8]   = [448, 120, 105] / 673
    r1 -> [2/5, 15/7, 9/8]  = [112, 600, 315] / 1027
    r2 -> [1, 3/7, 3/2]     = [14, 6, 21] / 41       aligned argmax 2, raw argmax 0
The over-predicted class 0 is pulled down: r2's confidence is now its class-2 share.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kerastl.ssl import build_algorithm
from kerastl.ssl.algorithms import SoftMatch, algorithm_spec

LN = math.log
ROWS = np.array([[0.8, 0.1, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4]])
WEAK = np.log(ROWS).astype(np.float32)
ALIGNED = np.array([[448 / 673, 120 / 673, 105 / 673], [112 / 1027, 600 / 1027, 315 / 1027], [14 / 41, 6 / 41, 21 / 41]])


def unsupervised(algorithm, weak, strong):
    return algorithm.unsupervised_loss({"weak": tf.constant(weak), "strong": tf.constant(strong, tf.float32)}, None,
                                       tf.constant(0))


def test_uniform_alignment_starts_from_the_first_batch_mean_then_averages():
    algorithm = SoftMatch(num_classes=3, ema_p=0.5)
    np.testing.assert_array_equal(algorithm.class_prior.numpy(), 0.0)   # no prediction seen yet
    np.testing.assert_allclose(algorithm.align(tf.constant(ROWS, tf.float32)).numpy(), ALIGNED, atol=1e-5)
    np.testing.assert_allclose(algorithm.class_prior.numpy(), [1 / 2, 7 / 30, 4 / 15], atol=1e-7)
    # a uniform batch next: prior = (prior + 1/3) / 2
    algorithm.align(tf.fill((2, 3), 1 / 3))
    np.testing.assert_allclose(algorithm.class_prior.numpy(), [5 / 12, 17 / 60, 3 / 10], atol=1e-7)


def test_truncated_gaussian_weights():
    """mu 0.6, var 0.04, n_sigma 2: 2 var / n_sigma^2 = 0.02, so a confidence x below mu
    weighs exp(-(x - 0.6)^2 / 0.02)."""
    algorithm = SoftMatch(num_classes=3)
    algorithm.confidence_mean.assign(0.6)
    algorithm.confidence_variance.assign(0.04)
    weights = algorithm.sample_weights(tf.constant([0.7, 0.6, 0.5, 0.2])).numpy()
    np.testing.assert_allclose(weights, [1.0, 1.0, math.exp(-0.5), math.exp(-8.0)], rtol=1e-5)
    algorithm.n_sigma = 1.0     # a wider Gaussian: 2 var = 0.08
    np.testing.assert_allclose(algorithm.sample_weights(tf.constant([0.2])).numpy(), [math.exp(-2.0)], rtol=1e-5)


def test_two_examples_without_memory_weigh_one_and_exp_minus_one():
    """ema_p 0 keeps the batch statistics alone. With two confidences a > b: mu = (a + b) / 2,
    unbiased var = (a - b)^2 / 2, so (b - mu)^2 / (2 var / 4) = ((a - b)^2 / 4) / ((a - b)^2 / 4) = 1:
    weights [1, e^-1] whatever a and b. r0, r1 aligned by their own mean [1/2, 3/10, 1/5]:
    a = 48/73, b = 50/107."""
    algorithm = SoftMatch(num_classes=3, ema_p=0.0)
    loss, weights = unsupervised(algorithm, WEAK[:2], np.zeros((2, 3)))
    a, b = 48 / 73, 50 / 107
    assert float(algorithm.confidence_mean.numpy()) == pytest.approx((a + b) / 2, abs=1e-6)
    assert float(algorithm.confidence_variance.numpy()) == pytest.approx((a - b) ** 2 / 2, rel=1e-4)
    np.testing.assert_allclose(weights.numpy(), [1.0, math.exp(-1.0)], rtol=1e-4)
    assert float(loss) == pytest.approx((1 + math.exp(-1.0)) * LN(3) / 2, rel=1e-4)  # CE on zero logits: ln 3


def test_usb_defaults_keep_early_examples_and_label_with_the_raw_argmax():
    """ema_p .999 from mu 1/3, var 1: after one step mu = .999/3 + .001 * mean(aligned
    confidences), about .3336, below every aligned confidence (448/673, 600/1027, 21/41), so
    every weight is 1. Pseudo-labels are the raw argmax [0, 1, 0]: strong s2 = [ln 2, 0, 0]
    costs CE(label 0) = ln 2 (with the aligned argmax 2 it would be ln 4)."""
    algorithm = build_algorithm("softmatch", num_unlabeled=10, num_classes=3, total_steps=100)
    strong = np.array([[0, 0, 0], [0, 0, 0], [LN(2), 0, 0]])
    loss, weights = unsupervised(algorithm, WEAK, strong)
    confidences = np.array([448 / 673, 600 / 1027, 21 / 41])
    mean = confidences.mean()
    variance = ((confidences - mean) ** 2).sum() / 2
    assert float(algorithm.confidence_mean.numpy()) == pytest.approx(0.999 / 3 + 0.001 * mean, abs=1e-6)
    assert float(algorithm.confidence_variance.numpy()) == pytest.approx(0.999 + 0.001 * variance, abs=1e-6)
    np.testing.assert_array_equal(weights.numpy(), [1, 1, 1])
    assert float(loss) == pytest.approx((2 * LN(3) + LN(2)) / 3, abs=1e-6)


def test_without_alignment_the_raw_confidences_are_weighed():
    algorithm = SoftMatch(num_classes=3, ema_p=0.0, uniform_alignment=False)
    _, weights = unsupervised(algorithm, WEAK[:2], np.zeros((2, 3)))
    assert float(algorithm.confidence_mean.numpy()) == pytest.approx((0.8 + 0.5) / 2, abs=1e-6)
    np.testing.assert_array_equal(algorithm.class_prior.numpy(), 0.0)
    np.testing.assert_allclose(weights.numpy(), [1.0, math.exp(-1.0)], rtol=1e-4)


def test_registry_defaults_are_usb_s():
    spec = algorithm_spec("softmatch")
    assert (spec.cls, spec.uratio, spec.tau, spec.views) == (SoftMatch, 7, None, ("weak", "strong"))
    algorithm = build_algorithm("softmatch", num_unlabeled=50, num_classes=10, total_steps=100)
    assert (algorithm.num_classes, algorithm.lambda_u, algorithm.n_sigma, algorithm.ema_p) == (10, 1.0, 2.0, 0.999)
    assert algorithm.uniform_alignment is True and algorithm.threshold is None
    assert algorithm.logged_state() == {"confidence_mean": pytest.approx(0.1), "confidence_variance": 1.0}
