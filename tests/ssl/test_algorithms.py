"""Tests for `kerastl.ssl.algorithms`: unsupervised losses on hand-made logits.

Weak-view logits (rows) and their softmax, chosen so everything has a closed form:
    w0 = [ln 18, 0, 0]   -> p = [.9, .05, .05]      argmax 0
    w1 = [0, ln 4, 0]    -> p = [1/6, 2/3, 1/6]     argmax 1
    w2 = [0, 0, ln 38]   -> p = [1/40, 1/40, .95]   argmax 2
Strong-view logits:
    s0 = [0, 0, 0]       -> q = [1/3, 1/3, 1/3]
    s1 = [ln 2, 0, 0]    -> q = [1/2, 1/4, 1/4]
    s2 = [ln 2, 0, ln 2] -> q = [2/5, 1/5, 2/5]
With a fixed tau of 0.85 the mask is [1, 0, 1]; every loss is divided by the 3 examples.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kerastl.ssl.algorithms import (UDA, FixMatch, PseudoLabel, SSLAlgorithm, SSLSetting, Supervised, algorithm_names,
                                    algorithm_spec, build_algorithm, flex_pseudolabel, flex_uda, flexmatch, pseudolabel,
                                    register_algorithm, unregister_algorithm)
from kerastl.ssl.algorithms.base import cross_entropy, hard_pseudo_labels, linear_rampup, masked_mean
from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold

LN = math.log
WEAK = np.array([[LN(18), 0, 0], [0, LN(4), 0], [0, 0, LN(38)]], np.float32)
STRONG = np.array([[0, 0, 0], [LN(2), 0, 0], [LN(2), 0, LN(2)]], np.float32)
INDEX = tf.constant([0, 1, 2])
Q = np.array([[1 / 3, 1 / 3, 1 / 3], [1 / 2, 1 / 4, 1 / 4], [2 / 5, 1 / 5, 2 / 5]])  # softmax(STRONG)
P = np.array([[0.9, 0.05, 0.05], [1 / 6, 2 / 3, 1 / 6], [1 / 40, 1 / 40, 0.95]])    # softmax(WEAK)
ONEHOT = np.eye(3)                                                                   # argmax of WEAK


def loss_and_grads(algorithm, step=0):
    """Loss, mask and the gradients of the loss wrt the weak and strong logits (zeros if unconnected)."""
    weak, strong = tf.Variable(WEAK), tf.Variable(STRONG)
    with tf.GradientTape() as tape:
        logits = {"weak": weak, "strong": strong}
        loss, mask = algorithm.unsupervised_loss({v: logits[v] for v in algorithm.views}, INDEX, tf.constant(step))
    g_weak, g_strong = tape.gradient(loss, [weak, strong], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return float(loss), mask.numpy(), g_weak.numpy(), g_strong.numpy()


def test_closed_forms_of_the_fixture():
    np.testing.assert_allclose(tf.nn.softmax(WEAK).numpy(), P, atol=1e-6)
    np.testing.assert_allclose(tf.nn.softmax(STRONG).numpy(), Q, atol=1e-6)


# ------------------------------------------------------------------------------ FixMatch / FlexMatch

def test_fixmatch_loss_divides_by_all_unlabeled_examples():
    algorithm = FixMatch(FixedThreshold(0.85))
    loss, mask, g_weak, g_strong = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 0, 1])
    # CE(s0, 0) = ln 3, CE(s2, 2) = ln(5/2): masked sum / 3 (not / sum(mask) = 2)
    assert loss == pytest.approx((LN(3) + LN(2.5)) / 3, abs=1e-6)
    np.testing.assert_array_equal(g_weak, np.zeros((3, 3)))  # no gradient into the pseudo-labels
    expected = np.array([[-2 / 9, 1 / 9, 1 / 9], [0, 0, 0], [2 / 15, 1 / 15, -1 / 5]])  # mask*(q - onehot)/3
    np.testing.assert_allclose(g_strong, expected, atol=1e-6)


def test_fixmatch_default_threshold_and_lambda():
    algorithm = FixMatch()
    assert isinstance(algorithm.threshold, FixedThreshold) and algorithm.threshold.tau == 0.95
    assert algorithm.views == ("weak", "strong") and algorithm.lambda_u == 1.0
    assert not algorithm.soft_labels and algorithm.temperature == 0.5
    # tau .91: rows 0 (.9) and 1 (2/3) fall below it, row 2 (.95) passes
    _, mask, _, _ = loss_and_grads(FixMatch(FixedThreshold(0.91)))
    np.testing.assert_array_equal(mask, [0, 0, 1])
    assert float(FixMatch(lambda_u=2.5).loss_weight(tf.constant(7))) == 2.5


def test_flexmatch_fresh_state_lets_everything_through_and_records():
    algorithm = flexmatch(num_unlabeled=3, num_classes=3, tau=0.85)
    loss, mask, g_weak, g_strong = loss_and_grads(algorithm)
    # all entries unused -> beta = 0 -> threshold 0 -> mask all ones
    np.testing.assert_array_equal(mask, [1, 1, 1])
    assert loss == pytest.approx((LN(3) + LN(4) + LN(2.5)) / 3, abs=1e-6)
    np.testing.assert_array_equal(g_weak, np.zeros((3, 3)))
    np.testing.assert_allclose(g_strong, (Q - ONEHOT) / 3, atol=1e-6)
    # the fixed tau (.85) decides what is recorded: rows 0 and 2
    assert algorithm.threshold.selected_label.numpy().tolist() == [0, -1, 2]
    # second call: cnt = [1 1 0 1] -> warmup beta = [1, 0, 1] -> thresholds .85, 0, .85 -> mask [1 1 1]
    _, mask, _, _ = loss_and_grads(algorithm)
    np.testing.assert_allclose(algorithm.threshold.classwise_acc.numpy(), [1, 0, 1])
    np.testing.assert_array_equal(mask, [1, 1, 1])


def test_flexmatch_second_call_uses_curriculum_mask():
    algorithm = flexmatch(num_unlabeled=4, num_classes=3, tau=0.85, warmup=False)
    algorithm.threshold.selected_label.assign([0, 0, 1, 2])
    # no warmup: cnt = [0 2 1 1] -> beta = [1, 1/2, 1/2]; convex: thresholds .85, .85/3, .85/3
    loss, mask, _, _ = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 1, 1])   # .9 >= .85, 2/3 >= .283, .95 >= .283
    assert loss == pytest.approx((LN(3) + LN(4) + LN(2.5)) / 3, abs=1e-6)
    algorithm.threshold.selected_label.assign([1, 1, 1, 0])
    # cnt = [0 1 3 0] -> beta = [1/3, 1, 0] -> thresholds .85/5 = .17, .85, 0: row 1 (2/3) fails
    loss, mask, _, _ = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 0, 1])
    assert loss == pytest.approx((LN(3) + LN(2.5)) / 3, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0])
def test_soft_label_fixmatch_honours_temperature(temperature):
    algorithm = FixMatch(FixedThreshold(0.85), soft_labels=True, temperature=temperature)
    loss, mask, g_weak, g_strong = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 0, 1])  # the mask comes from the T = 1 confidences
    # targets softmax(w / T): T = .5 -> row 0 [324, 1, 1]/326, row 2 [1, 1, 1444]/1446
    a, c = 18 ** (1 / temperature), 38 ** (1 / temperature)
    t0 = np.array([a, 1, 1]) / (a + 2)
    t2 = np.array([1, 1, c]) / (c + 2)
    ce0 = LN(3)                                    # uniform strong logits: ln 3 for any target
    ce2 = -(t2[0] * LN(0.4) + t2[1] * LN(0.2) + t2[2] * LN(0.4))
    assert loss == pytest.approx((ce0 + ce2) / 3, abs=1e-6)
    if temperature == 0.5:
        assert ce2 == pytest.approx(-(1445 / 1446 * LN(0.4) + 1 / 1446 * LN(0.2)), abs=1e-12)
    np.testing.assert_array_equal(g_weak, np.zeros((3, 3)))
    np.testing.assert_allclose(g_strong, np.stack([Q[0] - t0, np.zeros(3), Q[2] - t2]) / 3, atol=1e-6)


# ------------------------------------------------------------------------------------------- UDA

def test_uda_defaults_and_loss():
    algorithm = UDA()
    assert algorithm.temperature == 0.4 and isinstance(algorithm.threshold, FixedThreshold)
    assert algorithm.threshold.tau == 0.8 and algorithm.views == ("weak", "strong")
    loss, mask, g_weak, g_strong = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 0, 1])     # .9 and .95 pass .8, 2/3 does not
    a, c = 18 ** 2.5, 38 ** 2.5                          # softmax(w / 0.4)
    t0 = np.array([a, 1, 1]) / (a + 2)
    t2 = np.array([1, 1, c]) / (c + 2)
    ce2 = -((1 + c) / (c + 2) * LN(0.4) + 1 / (c + 2) * LN(0.2))
    assert loss == pytest.approx((LN(3) + ce2) / 3, abs=1e-6)
    np.testing.assert_array_equal(g_weak, np.zeros((3, 3)))
    np.testing.assert_allclose(g_strong, np.stack([Q[0] - t0, np.zeros(3), Q[2] - t2]) / 3, atol=1e-6)


def test_flex_uda_uses_cpl_at_tau_08():
    algorithm = flex_uda(num_unlabeled=3, num_classes=3)
    assert isinstance(algorithm.threshold, CurriculumThreshold)
    assert algorithm.threshold.tau == 0.8 and algorithm.temperature == 0.4
    _, mask, _, _ = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 1, 1])     # fresh CPL state
    assert algorithm.threshold.selected_label.numpy().tolist() == [0, -1, 2]


# ----------------------------------------------------------------------------------- Pseudo-Label

def test_pseudolabel_loss_and_gradient_through_prediction_only():
    algorithm = PseudoLabel(FixedThreshold(0.85))
    assert algorithm.views == ("weak",)
    loss, mask, g_weak, g_strong = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 0, 1])
    assert loss == pytest.approx((-LN(0.9) - LN(0.95)) / 3, abs=1e-6)
    # d/dw of CE(stop_grad(argmax), w) * stop_grad(mask) / 3 = mask * (p - onehot) / 3
    expected = np.array([[-0.1, 0.05, 0.05], [0, 0, 0], [1 / 40, 1 / 40, -0.05]]) / 3
    np.testing.assert_allclose(g_weak, expected, atol=1e-6)
    np.testing.assert_array_equal(g_strong, np.zeros((3, 3)))  # the strong view is not used


def test_flex_pseudolabel():
    algorithm = flex_pseudolabel(num_unlabeled=3, num_classes=3, total_steps=100, tau=0.85)
    assert isinstance(algorithm.threshold, CurriculumThreshold) and algorithm.rampup_steps == 40
    loss, mask, g_weak, _ = loss_and_grads(algorithm)
    np.testing.assert_array_equal(mask, [1, 1, 1])
    assert loss == pytest.approx((-LN(0.9) - LN(2 / 3) - LN(0.95)) / 3, abs=1e-6)
    np.testing.assert_allclose(g_weak, (P - ONEHOT) / 3, atol=1e-6)


def test_pseudolabel_linear_rampup():
    algorithm = PseudoLabel(lambda_u=2.0, rampup_steps=10)
    weights = [float(algorithm.loss_weight(tf.constant(k))) for k in (0, 3, 5, 10, 25)]
    np.testing.assert_allclose(weights, [0.0, 0.6, 1.0, 2.0, 2.0], atol=1e-6)
    assert float(PseudoLabel(lambda_u=3.0, rampup_steps=0).loss_weight(tf.constant(0))) == 3.0
    preset = pseudolabel(total_steps=1000)             # ramp over the first 40 %
    assert preset.rampup_steps == 400 and preset.threshold.tau == 0.95
    np.testing.assert_allclose([float(preset.loss_weight(tf.constant(k))) for k in (0, 100, 400, 999)],
                               [0.0, 0.25, 1.0, 1.0], atol=1e-6)


# ------------------------------------------------------------------------------- base and names

def test_base_helpers():
    probs, labels = hard_pseudo_labels(tf.constant(WEAK), temperature=0.5)
    np.testing.assert_allclose(probs.numpy()[0], np.array([324, 1, 1]) / 326, atol=1e-6)
    assert labels.dtype == tf.int32 and labels.numpy().tolist() == [0, 1, 2]
    np.testing.assert_allclose(cross_entropy(tf.constant([0, 1, 2]), tf.constant(STRONG)).numpy(),
                               [LN(3), LN(4), LN(2.5)], atol=1e-6)
    np.testing.assert_allclose(cross_entropy(tf.constant(ONEHOT, tf.float32), tf.constant(STRONG)).numpy(),
                               [LN(3), LN(4), LN(2.5)], atol=1e-6)
    assert float(masked_mean(tf.constant([1.0, 2.0, 3.0, 4.0]), tf.constant([1.0, 0.0, 0.0, 1.0]))) == 1.25
    assert float(linear_rampup(tf.constant(3), 4)) == 0.75 and float(linear_rampup(tf.constant(3), 0)) == 1.0
    with pytest.raises(NotImplementedError):
        SSLAlgorithm().unsupervised_loss({}, INDEX, tf.constant(0))


EXPECTED = {  # name: (class, threshold class, tau, temperature or None)
    "flexmatch": (FixMatch, CurriculumThreshold, 0.95, 0.5),
    "fixmatch": (FixMatch, FixedThreshold, 0.95, 0.5),
    "pseudolabel": (PseudoLabel, FixedThreshold, 0.95, None),
    "flex_pseudolabel": (PseudoLabel, CurriculumThreshold, 0.95, None),
    "uda": (UDA, FixedThreshold, 0.8, 0.4),
    "flex_uda": (UDA, CurriculumThreshold, 0.8, 0.4),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("warmup", [True, False])
def test_build_algorithm_defaults(name, warmup):
    algorithm = build_algorithm(name, num_unlabeled=50, num_classes=7, total_steps=200, warmup=warmup)
    cls, threshold_cls, tau, temperature = EXPECTED[name]
    assert type(algorithm) is cls and type(algorithm.threshold) is threshold_cls
    assert algorithm.threshold.tau == tau and algorithm.lambda_u == 1.0
    if temperature is not None:
        assert algorithm.temperature == temperature
    if cls is FixMatch:
        assert algorithm.soft_labels is False
    if cls is PseudoLabel:
        assert algorithm.rampup_steps == 80 and algorithm.views == ("weak",)
    else:
        assert algorithm.views == ("weak", "strong")
    if threshold_cls is CurriculumThreshold:
        cpl = algorithm.threshold
        assert (cpl.num_unlabeled, cpl.num_classes, cpl.warmup, cpl.mapping) == (50, 7, warmup, "convex")


def test_build_algorithm_names_and_errors():
    older = {"pimodel", "meanteacher", "vat", "mixmatch", "remixmatch"}  # tests/ssl/test_older_algorithms.py
    successors = {"freematch", "softmatch"}  # tests/ssl/test_freematch.py, test_softmatch.py
    assert set(algorithm_names()) == set(EXPECTED) | older | successors | {"supervised"}
    supervised = build_algorithm("supervised", 10, 3, 100)
    assert type(supervised) is Supervised and supervised.views == () and supervised.threshold is None
    with pytest.raises(ValueError, match="remixmatch"):
        build_algorithm("fixmatch2", 10, 3, 100)
    with pytest.raises(ValueError):
        build_algorithm("FlexMatch", 10, 3, 100)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_registry_entries_hold_the_class_defaults_and_views(name):
    spec = algorithm_spec(name)
    cls, _, tau, _ = EXPECTED[name]
    uratio = 1 if cls is PseudoLabel else 7   # TorchSSL's configs
    assert spec.name == name and spec.cls is cls and spec.tau == tau and spec.uratio == uratio
    assert spec.views == cls.views and spec.summary
    assert type(spec.build(SSLSetting(50, 7, 200))) is cls


def test_registering_checks_the_name_and_the_class_and_can_be_undone():
    class Toy(Supervised):
        default_uratio = 3

    with pytest.raises(ValueError, match="algorithm 'fixmatch' is registered already \\(FixMatch\\)"):
        register_algorithm("fixmatch", Toy, lambda setting: Toy(), "a copy")
    with pytest.raises(ValueError, match="algorithm 'toy': .*dict.* is not a subclass of SSLAlgorithm"):
        register_algorithm("toy", dict, lambda setting: Toy(), "not an algorithm")
    spec = register_algorithm("toy", Toy, lambda setting: Toy(), "a toy", tau=0.5)
    try:
        assert algorithm_names()[-1] == "toy" and algorithm_spec("toy") is spec
        assert (spec.uratio, spec.tau, spec.views) == (3, 0.5, ())  # the class's uratio, the given tau
        assert type(build_algorithm("toy", 10, 3, 100)) is Toy
    finally:
        unregister_algorithm("toy")
    assert "toy" not in algorithm_names()
    with pytest.raises(ValueError, match="algorithm 'toy': expected one of flexmatch, fixmatch"):
        unregister_algorithm("toy")


def test_algorithm_in_tf_function_matches_eager():
    eager = flexmatch(num_unlabeled=3, num_classes=3, tau=0.85)
    graph = flexmatch(num_unlabeled=3, num_classes=3, tau=0.85)
    fn = tf.function(lambda w, s: graph.unsupervised_loss({"weak": w, "strong": s}, INDEX, tf.constant(0)))
    for _ in range(2):
        loss_e, mask_e = eager.unsupervised_loss({"weak": tf.constant(WEAK), "strong": tf.constant(STRONG)},
                                                 INDEX, tf.constant(0))
        loss_g, mask_g = fn(tf.constant(WEAK), tf.constant(STRONG))
        assert float(loss_g) == pytest.approx(float(loss_e), abs=1e-7)
        np.testing.assert_array_equal(mask_g.numpy(), mask_e.numpy())
    assert graph.threshold.selected_label.numpy().tolist() == eager.threshold.selected_label.numpy().tolist()
