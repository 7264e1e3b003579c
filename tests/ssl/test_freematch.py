"""FreeMatch on hand-made logits: the self-adaptive thresholds, the mask, the fairness term.

Weak-view logits (rows), their softmax p and argmax:
    w0 = [ln 18, 0, 0]  -> p = [.9, .05, .05]    argmax 0, confidence .9
    w1 = [0, 0, ln 2]   -> p = [1/4, 1/4, 1/2]   argmax 2, confidence .5
    w2 = [0, 0, ln 38]  -> p = [1/40, 1/40, .95] argmax 2, confidence .95
Batch means: max confidence 2.35 / 3 = 47/60; probabilities [47/120, 13/120, 1/2]; argmax
histogram [1/3, 0, 2/3]. With ema_p 0.5 and the state at its start (1/3 everywhere):
    tau_1 = 1/6 + 47/120 = 67/120
    p_1   = 1/6 + [47, 13, 60] / 240 = [29/80, 53/240, 5/12]        p_1 / max = [.87, .53, 1]
    h_1   = 1/6 + [1/6, 0, 1/3] = [1/3, 1/6, 1/2]
    class thresholds = 67/120 * [.87, .53, 1] = [.48575, .2959166.., .5583333..]
    mask = [.9 >= .48575, .5 >= .5583, .95 >= .5583] = [1, 0, 1]
Strong-view logits: s0 = [ln 2, 0, 0] -> q = [1/2, 1/4, 1/4] (argmax 0), s1 = [0, 0, 0]
(masked out), s2 = [0, 0, ln 3] -> q = [1/5, 1/5, 3/5] (argmax 2).
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.checkpoint import TrainingCheckpoint
from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer
from kerastl.ssl.algorithms import FreeMatch, algorithm_spec

LN = math.log
WEAK = np.array([[LN(18), 0, 0], [0, 0, LN(2)], [0, 0, LN(38)]], np.float32)
STRONG = np.array([[LN(2), 0, 0], [0, 0, 0], [0, 0, LN(3)]], np.float32)


def unsupervised(algorithm, weak=WEAK, strong=STRONG):
    return algorithm.unsupervised_loss({"weak": tf.constant(weak), "strong": tf.constant(strong)}, None,
                                       tf.constant(0))


def test_one_step_moves_the_three_averages_and_masks_by_class():
    algorithm = FreeMatch(num_classes=3, ema_p=0.5)
    loss, mask = unsupervised(algorithm)
    assert float(algorithm.global_threshold.numpy()) == pytest.approx(67 / 120, abs=1e-6)
    np.testing.assert_allclose(algorithm.class_confidence.numpy(), [29 / 80, 53 / 240, 5 / 12], atol=1e-6)
    np.testing.assert_allclose(algorithm.label_histogram.numpy(), [1 / 3, 1 / 6, 1 / 2], atol=1e-6)
    np.testing.assert_allclose(algorithm.class_thresholds().numpy(), [0.48575, 67 / 120 * 0.53, 67 / 120], atol=1e-6)
    # Row 1 (.5) passes FixMatch-style thresholds below .5 but not its class's .5583 here.
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1])
    # CE(s0, 0) = ln 2, CE(s2, 2) = ln(5/3); divided by all 3 examples
    assert float(loss) == pytest.approx((LN(2) + LN(5 / 3)) / 3, abs=1e-6)


def test_the_averages_are_exponential_moving_averages():
    algorithm = FreeMatch(num_classes=3, ema_p=0.5)
    unsupervised(algorithm)
    unsupervised(algorithm)
    # second step: tau_2 = tau_1 / 2 + 47/120 = 67/240 + 94/240
    assert float(algorithm.global_threshold.numpy()) == pytest.approx(161 / 240, abs=1e-6)
    np.testing.assert_allclose(algorithm.label_histogram.numpy(), [1 / 3, 1 / 12, 7 / 12], atol=1e-6)
    # USB's momentum: after one step from 1/3, tau = .999 / 3 + .001 * 47/60
    usb = FreeMatch(num_classes=3)
    unsupervised(usb)
    assert float(usb.global_threshold.numpy()) == pytest.approx(0.999 / 3 + 0.001 * 47 / 60, abs=1e-7)


def test_clip_threshold_caps_tau_at_0_95():
    algorithm = FreeMatch(num_classes=3, ema_p=0.0, clip_threshold=True)
    confident = np.array([[LN(990), 0, 0], [0, LN(990), 0]], np.float32)   # confidence 990/992
    unsupervised(algorithm, confident, confident)
    assert float(algorithm.global_threshold.numpy()) == pytest.approx(0.95)
    unclipped = FreeMatch(num_classes=3, ema_p=0.0)
    unsupervised(unclipped, confident, confident)
    assert float(unclipped.global_threshold.numpy()) == pytest.approx(990 / 992, abs=1e-6)


def test_fairness_loss_by_hand():
    """After the step above: p_1 / h_1 = [87/80, 53/40, 5/6] -> SumNorm = [261, 318, 200] / 779.
    Masked strong views (rows 0 and 2): mean q = [7/20, 9/40, 17/40], argmax histogram
    [1/2, 0, 1/2], q / h = [7/10, 0 (1/0 read as 0), 17/20] -> SumNorm = [14/31, 0, 17/31].
    L_f = 261/779 ln(14/31) + 318/779 ln(1e-12) + 200/779 ln(17/31)."""
    algorithm = FreeMatch(num_classes=3, ema_p=0.5)
    _, mask = unsupervised(algorithm)
    strong = tf.Variable(STRONG)
    with tf.GradientTape() as tape:
        fairness = algorithm.fairness_loss(strong, mask)
    expected = (261 * LN(14 / 31) + 318 * LN(1e-12) + 200 * LN(17 / 31)) / 779
    assert float(fairness) == pytest.approx(expected, rel=1e-5)
    # Only q reaches the loss: L = t0 ln q0 + t2 ln q2 - (t0 + t2) ln(q0 + q2) + const (class 1's
    # factor 1/h is read as 0), so dL/dq = [t0/q0 - t02/q02, 0, t2/q2 - t02/q02] = [.19368, 0,
    # -.15950]; q is the mean of the two rows' softmax, so row i gets p_i (dL/dq - p_i . dL/dq) / 2.
    t0, t2, q0, q2 = 261 / 779, 200 / 779, 7 / 20, 17 / 40
    d_q = np.array([t0 / q0 - (t0 + t2) / (q0 + q2), 0.0, t2 / q2 - (t0 + t2) / (q0 + q2)])
    rows = np.array([[1 / 2, 1 / 4, 1 / 4], [0, 0, 0], [1 / 5, 1 / 5, 3 / 5]])
    expected_gradient = rows * (d_q - rows @ d_q[:, None]) / 2   # row 1 (masked out): zeros
    np.testing.assert_allclose(tape.gradient(fairness, strong).numpy(), expected_gradient, atol=1e-6)
    assert expected_gradient[0, 0] == pytest.approx(0.0341787, abs=1e-6)


def test_fairness_loss_is_zero_with_finite_gradients_when_nothing_passes():
    algorithm = FreeMatch(num_classes=3)
    strong = tf.Variable(STRONG)
    with tf.GradientTape() as tape:
        fairness = algorithm.fairness_loss(strong, tf.zeros(3))
    assert float(fairness) == 0.0
    np.testing.assert_array_equal(tape.gradient(fairness, strong).numpy(), 0.0)


def test_step_losses_add_the_weighted_fairness_term():
    """compute_losses: one forward pass over [labeled, weak, strong]; total =
    CE_lb + lambda_u * L_u + lambda_f * L_f."""
    labeled = np.array([[0, LN(3), 0]], np.float32)          # label 1: CE = ln(5/3)
    logits = tf.constant(np.concatenate([labeled, WEAK, STRONG]))
    algorithm = FreeMatch(num_classes=3, lambda_u=2.0, lambda_f=0.1, ema_p=0.5)
    losses = algorithm.compute_losses(lambda x: logits, tf.zeros((1, 4)), tf.constant([1]), None,
                                      [tf.zeros((3, 4)), tf.zeros((3, 4))], tf.constant(0))
    unsup = (LN(2) + LN(5 / 3)) / 3
    fairness = (261 * LN(14 / 31) + 318 * LN(1e-12) + 200 * LN(17 / 31)) / 779
    assert float(losses["sup_loss"]) == pytest.approx(LN(5 / 3), abs=1e-6)
    assert float(losses["unsup_loss"]) == pytest.approx(unsup, abs=1e-6)
    assert float(losses["fairness_loss"]) == pytest.approx(fairness, rel=1e-5)
    assert float(losses["loss"]) == pytest.approx(LN(5 / 3) + 2 * unsup + 0.1 * fairness, rel=1e-5)
    np.testing.assert_array_equal(losses["mask"].numpy(), [1, 0, 1])


def test_registry_defaults_are_usb_s():
    spec = algorithm_spec("freematch")
    assert (spec.cls, spec.uratio, spec.tau, spec.views) == (FreeMatch, 7, None, ("weak", "strong"))
    algorithm = build_algorithm("freematch", num_unlabeled=50, num_classes=10, total_steps=100)
    assert (algorithm.num_classes, algorithm.lambda_u, algorithm.lambda_f, algorithm.ema_p) == (10, 1.0, 0.001, 0.999)
    assert algorithm.clip_threshold is False and algorithm.threshold is None
    for state in (algorithm.global_threshold, algorithm.class_confidence, algorithm.label_histogram):
        np.testing.assert_allclose(state.numpy(), 0.1)
    assert algorithm.logged_state() == {"global_threshold": pytest.approx(0.1),
                                        "class_thresholds": pytest.approx([0.1] * 10)}


def tiny_net(seed):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.BatchNormalization(momentum=0.5)(keras.layers.Dense(5)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def tiny_stream(seed):
    rng = np.random.default_rng(seed)
    images = lambda n: rng.normal(size=(n, 4)).astype("float32")  # noqa: E731
    batch = ((images(2), np.array([0, 1])), (np.arange(6), images(6), images(6)))
    return tf.data.Dataset.from_tensors(batch).repeat()


STATE = {"freematch": ("global_threshold", "class_confidence", "label_histogram"),
         "softmatch": ("confidence_mean", "confidence_variance", "class_prior")}


@pytest.mark.parametrize("name", sorted(STATE))
def test_a_resumed_run_continues_exactly(name, tmp_path):
    """The moving averages are checkpointed with the weights: 2 steps, a restore into a
    model built from other weights, 2 more steps == 4 steps without interruption (both
    algorithms; tests/ssl/test_softmatch.py has SoftMatch's values)."""
    def make(seed):
        algorithm = build_algorithm(name, num_unlabeled=6, num_classes=3, total_steps=20)
        algorithm.ema_p = 0.5  # visible moves in a few steps
        model = SemiSupervisedModel(tiny_net(seed), algorithm, ema_decay=0.9)
        model.compile(optimizer=torchssl_optimizer(0.1, total_steps=20))
        return model

    def state(model):
        return [getattr(model.algorithm, variable).numpy().copy() for variable in STATE[name]]

    original = make(seed=0)
    checkpoint = TrainingCheckpoint(str(tmp_path / "ckpt"), original)
    checkpoint.restore()
    original.fit(tiny_stream(1), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[checkpoint])
    halfway = state(original)
    resumed = make(seed=1)
    assert TrainingCheckpoint(str(tmp_path / "ckpt"), resumed).restore() == 2
    for restored, saved in zip(state(resumed), halfway):
        np.testing.assert_array_equal(restored, saved)
    for model in (original, resumed):
        model.fit(tiny_stream(2), steps_per_epoch=2, epochs=1, verbose=0)
    for before, after in zip(halfway, state(original)):
        assert not np.allclose(before, after)                  # the state kept moving
    for a, b in zip(state(original), state(resumed)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(original.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
