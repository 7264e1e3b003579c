"""Pi-Model, Mean Teacher, VAT, MixMatch and ReMixMatch: each one's distinctive computation
against hand-computed values, their TorchSSL defaults, and a real training step each."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.ssl import SemiSupervisedModel, torchssl_optimizer
from kerastl.ssl.algorithms import (VAT, MeanTeacher, MixMatch, ReMixMatch, StepNetworks,
                                    algorithm_spec, build_algorithm)
from kerastl.ssl.algorithms.base import chunked_forward, cross_entropy, interleave_order, mixup, sharpen, softmax_mse, step_seed
from kerastl.ssl.algorithms.remixmatch import rotate_randomly
from kerastl.ssl.algorithms.vat import kl_divergence, l2_normalize

OLDER = ("pimodel", "meanteacher", "vat", "mixmatch", "remixmatch")


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def dense_net(inputs=4, classes=3, seed=0, bn=True):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((inputs,))
    x = keras.layers.Dense(5, name="hidden")(x_in)
    if bn:
        x = keras.layers.BatchNormalization(momentum=0.5, name="bn")(x)
    x = keras.layers.Activation("tanh", name="features")(x)
    return keras.Model(x_in, keras.layers.Dense(classes, name="logits")(x))


# ------------------------------------------------------------------------------- shared helpers

def test_sharpen_by_hand():
    # [0.6, 0.4] at T = 0.5: squares 0.36, 0.16 over 0.52.
    np.testing.assert_allclose(sharpen(tf.constant([[0.6, 0.4]]), 0.5).numpy(), [[0.36 / 0.52, 0.16 / 0.52]],
                               rtol=1e-6)
    # T = 1 is the identity; every row stays a distribution.
    p = tf.constant([[0.2, 0.3, 0.5], [0.9, 0.05, 0.05]])
    np.testing.assert_allclose(sharpen(p, 1.0).numpy(), p.numpy(), rtol=1e-6)
    np.testing.assert_allclose(sharpen(p, 0.3).numpy().sum(-1), 1.0, rtol=1e-6)


def test_softmax_mse_is_pytorch_mean_over_examples_and_classes():
    logits = tf.constant([[0.0, 0.0], [math.log(3.0), 0.0]])
    targets = tf.constant([[1.0, 0.0], [0.5, 0.5]])
    # softmax rows [.5, .5] and [.75, .25]: squared errors .25, .25, .0625, .0625 -> mean .15625
    assert float(softmax_mse(logits, targets)) == pytest.approx(0.15625, abs=1e-7)


def test_mixup_mixes_inputs_and_targets_with_one_lambda_and_a_permutation():
    x = tf.eye(6)                        # row i = one-hot i reveals the partner of each example
    targets = tf.constant(np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32))
    mixed_x, mixed_t, lam = mixup(x, targets, 0.75, step_seed(0, tf.constant(3)))
    lam = float(lam)
    assert 0.5 <= lam <= 1.0
    partners = []
    for i, row in enumerate(mixed_x.numpy()):
        if lam == 1.0:
            partners.append(i)
            continue
        own = row[i]
        others = np.flatnonzero(row > 1e-6)
        partner = i if own == pytest.approx(1.0) else int(others[others != i][0])
        assert own == pytest.approx(lam if partner != i else 1.0, abs=1e-6)
        partners.append(partner)
        np.testing.assert_allclose(mixed_t.numpy()[i], lam * i + (1 - lam) * partner, rtol=1e-6)
    assert sorted(partners) == list(range(6))  # a permutation
    # Stateless: the same step gives the same mix, another step another.
    again = mixup(x, targets, 0.75, step_seed(0, tf.constant(3)))
    np.testing.assert_array_equal(again[0].numpy(), mixed_x.numpy())
    lams = [float(mixup(x, targets, 0.75, step_seed(0, tf.constant(s)))[2]) for s in range(200)]
    assert min(lams) >= 0.5 and len(set(lams)) > 150
    # Beta(.75, .75) folded onto [.5, 1]: mean 0.5 + E|lam - .5| (about 0.78 for alpha 0.75).
    assert 0.72 < np.mean(lams) < 0.84


def test_frozen_bn_pass_leaves_the_moving_statistics_unchanged():
    net = dense_net()
    nets = StepNetworks(net)
    x = tf.random.stateless_normal([8, 4], [1, 2])
    before = [v.numpy().copy() for v in net.non_trainable_variables]
    frozen = nets.frozen_bn(x)
    np.testing.assert_allclose(frozen.numpy(), net(x, training=True).numpy(), rtol=1e-6)  # batch statistics
    after_training_call = [v.numpy() for v in net.non_trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(before, after_training_call))  # a plain pass moves them

    net2 = dense_net()
    before = [v.numpy().copy() for v in net2.non_trainable_variables]
    tf.function(StepNetworks(net2).frozen_bn)(x)
    for a, b in zip(before, net2.non_trainable_variables):
        np.testing.assert_array_equal(a, b.numpy())


# ----------------------------------------------------------------------------------- Pi-Model

def test_pimodel_loss_gradient_and_rampup():
    algorithm = build_algorithm("pimodel", 10, 3, total_steps=1000)
    assert (algorithm.lambda_u, algorithm.rampup_steps, algorithm.views) == (10.0, 400, ("weak", "weak2"))
    w1 = tf.Variable([[math.log(3.0), 0.0, 0.0]])
    w2 = tf.Variable([[0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        loss, mask = algorithm.unsupervised_loss({"weak": w1, "weak2": w2}, None, tf.constant(0))
    # softmax(w1) = [.6, .2, .2], target [1/3]*3: ((.6-1/3)^2 + 2 (.2-1/3)^2) / 3
    expected = ((0.6 - 1 / 3) ** 2 + 2 * (0.2 - 1 / 3) ** 2) / 3
    assert float(loss) == pytest.approx(expected, rel=1e-5) and mask is None
    g1, g2 = tape.gradient(loss, [w1, w2], unconnected_gradients=tf.UnconnectedGradients.ZERO)
    assert np.abs(g1.numpy()).sum() > 0 and np.abs(g2.numpy()).sum() == 0  # the second view is the target
    assert float(algorithm.loss_weight(tf.constant(100))) == pytest.approx(10 * 100 / 400)
    assert float(algorithm.loss_weight(tf.constant(5000))) == pytest.approx(10.0)


# ------------------------------------------------------------------------------- Mean Teacher

def test_meanteacher_consistency_uses_the_ema_teacher_without_gradient():
    algorithm = build_algorithm("meanteacher", 10, 3, total_steps=100)
    assert (algorithm.lambda_u, algorithm.rampup_steps) == (50.0, 40)
    student, teacher = dense_net(seed=0), dense_net(seed=1)
    x_lb = tf.random.stateless_normal([2, 4], [0, 1])
    y_lb = tf.constant([0, 2])
    view1, view2 = tf.random.stateless_normal([3, 4], [0, 2]), tf.random.stateless_normal([3, 4], [0, 3])
    nets = StepNetworks(student, teacher)
    with tf.GradientTape(persistent=True) as tape:
        losses = algorithm.compute_losses(nets, x_lb, y_lb, None, [view1, view2], tf.constant(20))
    # The labeled batch alone moves the student's BN statistics (TorchSSL's freeze_bn).
    labeled_only = dense_net(seed=0)
    labeled_only(x_lb, training=True)
    for ours, expected_stat in zip(student.non_trainable_variables, labeled_only.non_trainable_variables):
        np.testing.assert_allclose(ours.numpy(), expected_stat.numpy(), rtol=1e-6)
    student_logits = student(view2, training=True).numpy()       # the student's view alone
    target = softmax(teacher(view1, training=True).numpy())
    expected = np.mean((softmax(student_logits) - target) ** 2)
    assert float(losses["unsup_loss"]) == pytest.approx(expected, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(float(losses["sup_loss"]) + 50 * 20 / 40 * expected, rel=1e-4)
    assert all(g is None for g in tape.gradient(losses["loss"], teacher.trainable_variables))


def test_meanteacher_teacher_is_the_ema_of_the_student():
    net = dense_net(bn=False)
    model = SemiSupervisedModel(net, MeanTeacher(50.0, rampup_steps=0), ema_decay=0.5)
    model.compile(optimizer=torchssl_optimizer(0.1, total_steps=10))
    rng = np.random.default_rng(0)
    data = ((rng.normal(size=(2, 4)).astype("float32"), np.array([0, 1])),
            (np.arange(3), rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(3, 4)).astype("float32")))
    ema = [w.copy() for w in net.get_weights()]
    recorded = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            recorded.append([w.copy() for w in net.get_weights()])

    model.fit(tf.data.Dataset.from_tensors(data).repeat(), steps_per_epoch=3, epochs=1, verbose=0,
              callbacks=[Record()])
    for online in recorded:
        ema = [0.5 * e + 0.5 * w for e, w in zip(ema, online)]
    assert not np.allclose(recorded[-1][0], recorded[0][0])  # the student moved
    for expected, actual in zip(ema, model.ema_network.get_weights()):
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- VAT

def test_vat_perturbation_has_norm_eps_and_beats_random_directions():
    net = dense_net(inputs=6, bn=False, seed=3)
    algorithm = VAT(eps=2.0, input_scale=0.5)
    x = tf.random.stateless_normal([64, 6], [5, 5])
    logits = net(x)
    nets = StepNetworks(net)
    r_adv = algorithm.adversarial_perturbation(nets, x, logits, step_seed(0, tf.constant(0)))
    np.testing.assert_allclose(np.linalg.norm(r_adv.numpy(), axis=1), 1.0, rtol=1e-4)  # eps * input_scale
    random = 1.0 * l2_normalize(tf.random.stateless_normal([64, 6], [9, 9]))

    def per_example_kl(r):
        p, q = softmax(logits.numpy()), softmax(net(x + r).numpy())
        return (p * (np.log(p) - np.log(q))).sum(-1)

    adversarial, baseline = per_example_kl(r_adv), per_example_kl(random)
    assert adversarial.mean() > 2 * baseline.mean()
    assert np.mean(adversarial > baseline) > 0.8


def test_vat_losses_and_defaults():
    algorithm = build_algorithm("vat", 10, 3, total_steps=1000, input_scale=0.25)
    assert (algorithm.lambda_u, algorithm.eps, algorithm.xi, algorithm.entmin_weight, algorithm.rampup_steps,
            algorithm.power_iterations) == (0.3, 6.0, 1e-6, 0.06, 400, 1)
    assert algorithm.input_scale == 0.25 and algorithm.views == ("weak",) and algorithm.default_uratio == 1
    net = dense_net(inputs=4, bn=False)
    x_lb, y_lb = tf.random.stateless_normal([2, 4], [0, 1]), tf.constant([1, 2])
    x_ulb = tf.random.stateless_normal([5, 4], [0, 2])
    step = tf.constant(200)
    losses = algorithm.compute_losses(StepNetworks(net), x_lb, y_lb, None, [x_ulb], step)
    logits = net(x_ulb)
    r_adv = algorithm.adversarial_perturbation(StepNetworks(net), x_ulb, logits, step_seed(11, step))
    expected_vat = float(kl_divergence(logits, net(x_ulb + r_adv)))
    p = softmax(logits.numpy())
    entropy = -(p * np.log(p)).sum(-1).mean()
    sup = -np.log(softmax(net(x_lb).numpy())[[0, 1], [1, 2]]).mean()
    assert float(losses["unsup_loss"]) == pytest.approx(expected_vat, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(sup + 0.3 * 0.5 * expected_vat + 0.06 * entropy, rel=1e-4)


def test_vat_direction_in_a_float64_network_is_the_hessian_power_iteration():
    """With xi = 1e-6 the probe's divergence is a ~1e-6 difference from the clean logits: a
    float64 network computes both (and the input) in float64, so the direction is the
    normalised Hessian-vector product H d of KL(p(x) || p(x + r)) at r = 0, computed here by
    double differentiation. Clean logits rounded to float32 tilt it (1 - cosine 0.04 here)."""
    previous_policy, previous_floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy("float64")
    keras.config.set_floatx("float64")
    try:
        net = dense_net(inputs=6, bn=False, seed=5)
        x = tf.random.stateless_normal([16, 6], [4, 4], dtype=tf.float64) * 2.0
        start = tf.random.stateless_normal([16, 6], [6, 6], dtype=tf.float64)
        algorithm = VAT(eps=1.0)
        algorithm.replay_draws = lambda name, step: start
        perturbations = []
        perturb = algorithm.adversarial_perturbation
        object.__setattr__(algorithm, "adversarial_perturbation",
                           lambda *args: perturbations.append(perturb(*args)) or perturbations[-1])
        losses = algorithm.compute_losses(StepNetworks(net), x[:2], tf.constant([0, 1]), None, [x], tf.constant(0))
        clean = net(x)
        d = l2_normalize(start)
        r = tf.zeros_like(x)
        with tf.GradientTape() as outer:
            outer.watch(r)
            with tf.GradientTape() as inner:
                inner.watch(r)
                divergence = kl_divergence(clean, net(x + r))
            directional = tf.reduce_sum(inner.gradient(divergence, r) * d)
        hessian_d = l2_normalize(outer.gradient(directional, r)).numpy()
    finally:
        keras.config.set_dtype_policy(previous_policy)
        keras.config.set_floatx(previous_floatx)
    (r_adv,) = perturbations
    assert r_adv.dtype == tf.float64
    cosine = (r_adv.numpy() * hessian_d).sum(-1)
    assert cosine.min() > 1 - 1e-4
    # The step's losses are float64 too (float32 losses would round every gradient at ~1e-7),
    # and equal the float64 hand computation far below float32's resolution.
    assert {losses[k].dtype for k in ("loss", "sup_loss", "unsup_loss")} == {tf.float64}
    p_clean, p_adv = softmax(clean.numpy()), softmax(net(x + r_adv).numpy())
    vat = (p_clean * (np.log(p_clean) - np.log(p_adv))).sum(-1).mean()
    sup = -np.log(softmax(net(x[:2]).numpy())[[0, 1], [0, 1]]).mean()
    entropy = -(p_clean * np.log(p_clean)).sum(-1).mean()
    assert float(losses["unsup_loss"]) == pytest.approx(vat, rel=1e-12)
    assert float(losses["sup_loss"]) == pytest.approx(sup, rel=1e-12)
    assert float(losses["loss"]) == pytest.approx(sup + 0.3 * vat + 0.06 * entropy, rel=1e-12)


def test_vat_losses_follow_a_float32_network_in_float32():
    net = dense_net(inputs=4, bn=False)
    algorithm = VAT(eps=1.0)
    x = tf.random.stateless_normal([5, 4], [0, 2])
    losses = algorithm.compute_losses(StepNetworks(net), x[:2], tf.constant([0, 1]), None, [x], tf.constant(0))
    assert {losses[k].dtype for k in ("loss", "sup_loss", "unsup_loss")} == {tf.float32}


def test_cross_entropy_keeps_float64_and_rounds_the_rest_to_float32():
    # CE of logits [ln 3, 0] against class 0: -ln(3/4); soft target [1/2, 1/2]: -(ln 3/4 + ln 1/4) / 2.
    logits = np.array([[math.log(3.0), 0.0]])
    hard, soft = -math.log(0.75), -(math.log(0.75) + math.log(0.25)) / 2
    for dtype, rel in ((tf.float64, 1e-15), (tf.float32, 1e-6), (tf.float16, 1e-3)):
        z = tf.constant(logits, dtype)
        out_hard = cross_entropy(tf.constant([0]), z)
        out_soft = cross_entropy(tf.constant([[0.5, 0.5]]), z)
        expected_dtype = tf.float64 if dtype == tf.float64 else tf.float32
        assert out_hard.dtype == out_soft.dtype == expected_dtype
        assert float(out_hard[0]) == pytest.approx(hard, rel=rel)
        assert float(out_soft[0]) == pytest.approx(soft, rel=rel)


def test_kl_divergence_by_hand():
    p, q = tf.constant([[math.log(3.0), 0.0]]), tf.constant([[0.0, 0.0]])
    # KL([.75, .25] || [.5, .5]) = .75 ln 1.5 + .25 ln .5
    assert float(kl_divergence(p, q)) == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-5)
    assert float(kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-7)


# ----------------------------------------------------------------------------------- MixMatch

def test_mixmatch_guess_is_the_sharpened_mean_of_both_views():
    algorithm = MixMatch()
    assert (algorithm.lambda_u, algorithm.temperature, algorithm.alpha) == (100.0, 0.5, 0.5)  # TorchSSL's configs
    net = dense_net(bn=False)
    v1, v2 = tf.random.stateless_normal([3, 4], [1, 1]), tf.random.stateless_normal([3, 4], [1, 2])
    guess = algorithm.guess_labels(StepNetworks(net), [v1, v2]).numpy()
    mean = (softmax(net(v1).numpy()) + softmax(net(v2).numpy())) / 2
    expected = mean ** 2 / (mean ** 2).sum(-1, keepdims=True)
    np.testing.assert_allclose(guess, expected, rtol=1e-5)


def test_mixmatch_losses_on_the_mixed_batch():
    algorithm = build_algorithm("mixmatch", 10, 3, total_steps=100, seed=4)
    assert algorithm.rampup_steps == 40
    net = dense_net(bn=False)
    nets = StepNetworks(net)
    x_lb, y_lb = tf.random.stateless_normal([2, 4], [2, 1]), tf.constant([0, 2])
    v1, v2 = tf.random.stateless_normal([2, 4], [2, 2]), tf.random.stateless_normal([2, 4], [2, 3])
    step = tf.constant(10)
    losses = algorithm.compute_losses(nets, x_lb, y_lb, None, [v1, v2], step)
    guess = algorithm.guess_labels(nets, [v1, v2])
    targets = tf.concat([tf.one_hot(y_lb, 3), guess, guess], 0)
    assert algorithm.alpha == 0.5
    mixed_x, mixed_t, lam = mixup(tf.concat([x_lb, v1, v2], 0), targets, 0.5, step_seed(4 * 3 + 13, step))
    logits, t = net(mixed_x).numpy(), mixed_t.numpy()
    sup = -(t[:2] * np.log(softmax(logits[:2]))).sum(-1).mean()
    unsup = np.mean((softmax(logits[2:]) - t[2:]) ** 2)
    assert float(losses["sup_loss"]) == pytest.approx(sup, rel=1e-4)
    assert float(losses["unsup_loss"]) == pytest.approx(unsup, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(sup + 100 * 10 / 40 * unsup, rel=1e-4)
    np.testing.assert_allclose(t.sum(-1), 1.0, rtol=1e-5)  # mixed targets stay distributions


def test_interleave_order_by_hand():
    # 3 chunks of 4 rows: groups of 1, 1, 2 rows; chunk 1 swaps its group 1 (row 5) with chunk
    # 0's (row 1), chunk 2 its group 2 (rows 10, 11) with chunk 0's (rows 2, 3).
    order = interleave_order(3, 4)
    np.testing.assert_array_equal(order, [0, 5, 10, 11, 4, 1, 6, 7, 8, 9, 2, 3])
    np.testing.assert_array_equal(order[order], np.arange(12))      # a swap: its own inverse
    np.testing.assert_array_equal(interleave_order(1, 5), np.arange(5))


@pytest.mark.parametrize("interleave", [True, False])
def test_chunked_forward_first_chunk_alone_moves_batch_norm(interleave):
    net, reference = dense_net(seed=2), dense_net(seed=2)
    x = tf.random.stateless_normal([9, 4], [7, 1])
    logits = chunked_forward(StepNetworks(net), x, 3, interleave).numpy()
    order = interleave_order(3, 3) if interleave else np.arange(9)
    chunks = [tf.gather(x, order[k * 3:(k + 1) * 3]) for k in range(3)]
    # Each chunk normalised with its own batch statistics, logits back in the input order.
    expected = np.concatenate([reference(chunk, training=True).numpy() for chunk in chunks])
    np.testing.assert_allclose(logits[order], expected, rtol=1e-5, atol=1e-6)
    only_first = dense_net(seed=2)
    only_first(chunks[0], training=True)
    for ours, first in zip(net.non_trainable_variables, only_first.non_trainable_variables):
        np.testing.assert_allclose(ours.numpy(), first.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="whole chunks"):
        chunked_forward(StepNetworks(net), x, 4)


def test_replayed_draws_replace_mixup_and_rotation_draws():
    net = dense_net(bn=False)
    algorithm = MixMatch(rampup_steps=0)
    x_lb, y_lb = tf.random.stateless_normal([2, 4], [3, 1]), tf.constant([0, 1])
    v1, v2 = tf.random.stateless_normal([2, 4], [3, 2]), tf.random.stateless_normal([2, 4], [3, 3])
    order = np.array([5, 4, 3, 2, 1, 0])
    calls = []

    def replay(name, step):
        calls.append((name, step))
        return {"mixup_lambda": 0.3, "mixup_order": order}[name]

    algorithm.replay_draws = replay
    losses = algorithm.compute_losses(StepNetworks(net), x_lb, y_lb, None, [v1, v2], tf.constant(7))
    assert calls == [("mixup_lambda", 7), ("mixup_order", 7)]
    guess = algorithm.guess_labels(StepNetworks(net), [v1, v2]).numpy()
    x = np.concatenate([x_lb, v1, v2])
    t = np.concatenate([np.eye(3)[[0, 1]], guess, guess])
    mixed_x, mixed_t = 0.7 * x + 0.3 * x[order], 0.7 * t + 0.3 * t[order]   # lam = max(0.3, 0.7)
    logits = net(mixed_x).numpy()
    sup = -(mixed_t[:2] * np.log(softmax(logits[:2]))).sum(-1).mean()
    assert float(losses["sup_loss"]) == pytest.approx(sup, rel=1e-5)
    images = tf.reshape(tf.range(2 * 3 * 3, dtype=tf.float32), [2, 3, 3, 1])
    rotated, turns = rotate_randomly(images, step_seed(0, tf.constant(0)), [3, 1])
    np.testing.assert_array_equal(turns.numpy(), [3, 1])
    np.testing.assert_array_equal(rotated[0].numpy(), np.rot90(images[0].numpy(), 3))


# --------------------------------------------------------------------------------- ReMixMatch

def test_remixmatch_distribution_alignment_by_hand():
    algorithm = ReMixMatch(num_classes=3)
    probs = tf.constant([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2]])
    aligned = algorithm.align(probs, tf.constant(0)).numpy()
    # Step 0: p_model = batch mean [.6, .25, .15]; p_target uniform.
    np.testing.assert_allclose(algorithm.p_model.numpy(), [0.6, 0.25, 0.15], rtol=1e-6)
    row = np.array([0.7 / 0.6, 0.2 / 0.25, 0.1 / 0.15])
    np.testing.assert_allclose(aligned[0], row / row.sum(), rtol=1e-5)
    # Next step: running mean with momentum 0.999.
    second = tf.constant([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8]])
    aligned = algorithm.align(second, tf.constant(1)).numpy()
    p_model = 0.999 * np.array([0.6, 0.25, 0.15]) + 0.001 * np.array([0.1, 0.1, 0.8])
    np.testing.assert_allclose(algorithm.p_model.numpy(), p_model, rtol=1e-6)
    row = np.array([0.1, 0.1, 0.8]) / p_model
    np.testing.assert_allclose(aligned[1], row / row.sum(), rtol=1e-5)
    # A skewed labeled distribution pulls predictions towards it.
    skewed = ReMixMatch(num_classes=2, p_target=[0.8, 0.2])
    out = skewed.align(tf.constant([[0.5, 0.5]]), tf.constant(0)).numpy()
    np.testing.assert_allclose(out, [[0.8, 0.2]], rtol=1e-5)


def test_remixmatch_alignment_epsilon():
    algorithm = ReMixMatch(num_classes=2, alignment_epsilon=0.1)
    aligned = algorithm.align(tf.constant([[0.5, 0.5], [0.5, 0.5]]), tf.constant(0)).numpy()
    np.testing.assert_allclose(aligned, [[0.5, 0.5]] * 2, rtol=1e-6)
    aligned = algorithm.align(tf.constant([[0.9, 0.1], [0.9, 0.1]]), tf.constant(0)).numpy()
    row = np.array([0.9 * 0.6 / 1.0, 0.1 * 0.6 / 0.2])       # (p_target + eps) / (p_model + eps)
    np.testing.assert_allclose(aligned[0], row / row.sum(), rtol=1e-5)


def test_remixmatch_rotations():
    images = tf.reshape(tf.range(2 * 3 * 3, dtype=tf.float32), [2, 3, 3, 1])
    rotated, turns = rotate_randomly(tf.tile(images, [20, 1, 1, 1]), step_seed(1, tf.constant(0)))
    turns = turns.numpy()
    assert set(turns.tolist()) == {0, 1, 2, 3}
    for i, k in enumerate(turns):
        np.testing.assert_array_equal(rotated[i].numpy(), np.rot90(images[i % 2].numpy(), k))


def test_remixmatch_defaults_losses_and_rotation_head():
    algorithm = build_algorithm("remixmatch", 10, 3, total_steps=640, p_target=[0.5, 0.25, 0.25])
    assert (algorithm.lambda_u, algorithm.w_kl, algorithm.w_rot, algorithm.temperature, algorithm.alpha,
            algorithm.rampup_steps) == (1.5, 0.5, 0.5, 0.5, 0.75, 10)
    assert algorithm.views == ("weak", "strong", "strong2") and algorithm.p_target == [0.5, 0.25, 0.25]
    with pytest.raises(ValueError, match="square"):
        algorithm.attach(keras.Sequential([keras.Input((4, 6, 1)), keras.layers.Flatten(name="features"),
                                           keras.layers.Dense(3)]))
    with pytest.raises(ValueError, match="p_target"):
        ReMixMatch(num_classes=3, p_target=[1.0, 0.0, 0.0])


# ------------------------------------------------------------------------------- every algorithm

@pytest.mark.parametrize("name", OLDER)
def test_no_threshold_and_torchssl_uratio(name):
    algorithm = build_algorithm(name, 10, 3, total_steps=100, seed=2)
    assert algorithm.threshold is None and algorithm_spec(name).tau is None
    assert algorithm_spec(name).uratio == 1


@pytest.fixture(scope="module")
def digits():
    from kerastl.data import labeled_unlabeled_split, load_image_dataset

    data = load_image_dataset("mnist5k")
    labeled, unlabeled = labeled_unlabeled_split(data.y_train, 40, 10, 0)
    return data, labeled, unlabeled


@pytest.mark.parametrize("name", OLDER)
def test_one_real_step_on_digits_is_finite_and_moves_the_weights(name, digits):
    from kerastl.augment import strong_augment, weak_augment
    from kerastl.data.pipeline import ssl_stream
    from kerastl.nets import small_cnn

    data, labeled, unlabeled = digits
    keras.utils.set_random_seed(0)
    algorithm = build_algorithm(name, len(unlabeled), 10, total_steps=4, seed=0, input_scale=0.3)
    model = SemiSupervisedModel(small_cnn((28, 28, 1), 10, width=8), algorithm)
    model.compile(optimizer=torchssl_optimizer(0.03, total_steps=4))
    views = {"weak": weak_augment, "weak2": weak_augment, "strong": strong_augment, "strong2": strong_augment}
    stream = ssl_stream(data.x_train[labeled], data.y_train[labeled], data.x_train[unlabeled], 16,
                        algorithm.default_uratio, weak_augment, [views[v] for v in algorithm.views], seed=0)
    before = [w.copy() for w in model.network.get_weights()]
    extra_before = [w.numpy().copy() for w in algorithm.trainable_variables]
    history = model.fit(stream, steps_per_epoch=2, epochs=1, verbose=0).history
    for key in ("loss", "sup_loss", "unsup_loss"):
        assert np.isfinite(history[key]).all(), (key, history[key])
    assert all(np.isfinite(w).all() for w in model.network.get_weights())
    assert any(not np.allclose(a, b) for a, b in zip(before, model.network.get_weights()))
    # ReMixMatch's rotation head trains with the network.
    for a, b in zip(extra_before, algorithm.trainable_variables):
        assert not np.allclose(a, b.numpy())
    if name == "remixmatch":
        assert len(extra_before) == 2
        np.testing.assert_allclose(algorithm.p_model.numpy().sum(), 1.0, rtol=1e-5)


def test_trainable_variables_are_what_the_optimizer_trains():
    from kerastl.nets import small_cnn

    model = SemiSupervisedModel(small_cnn((8, 8, 1), 4, width=4), build_algorithm("remixmatch", 10, 4, 10))
    trained = {id(v) for v in model.trainable_variables}
    assert trained == ({id(v) for v in model.network.trainable_variables}
                       | {id(v) for v in model.algorithm.trainable_variables})
    assert len(model.algorithm.trainable_variables) == 2                       # the rotation head
    assert not trained & {id(v) for v in model.ema_network.weights}            # the EMA copy is never trained
    # A checkpoint built before training (as --resume does) sees the same optimizer variables.
    model.compile(optimizer=torchssl_optimizer(0.03, total_steps=10))
    model.optimizer.build(model.trainable_variables)
    assert len(model.optimizer.variables) == 1 + len(model.trainable_variables)  # iterations + a momentum each
