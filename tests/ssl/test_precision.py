"""Precision of a training step: a float64 network's losses, masks, loss weights, learning
rate and updates are float64 (equal to float64 hand computations far below float32's
resolution); float32 and mixed-precision networks keep float32 losses."""

import contextlib
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.ssl import CosineSchedule, SemiSupervisedModel, SGDWithL2
from kerastl.ssl.algorithms import FixMatch, StepNetworks, algorithm_names, build_algorithm, flexmatch
from kerastl.ssl.precision import loss_dtype
from kerastl.ssl.thresholds import FixedThreshold


@contextlib.contextmanager
def policy(name):
    """Layers built inside compute in `name`; with float64, keras.Input takes float64 too."""
    previous_policy, previous_floatx = keras.config.dtype_policy(), keras.config.floatx()
    keras.config.set_dtype_policy(name)
    if name == "float64":
        keras.config.set_floatx("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous_policy)
        keras.config.set_floatx(previous_floatx)


def dense_net(seed=0):
    keras.utils.set_random_seed(seed)
    x_in = keras.Input((4,))
    x = keras.layers.Dense(6, activation="tanh", name="hidden")(x_in)
    return keras.Model(x_in, keras.layers.Dense(3, name="logits")(x) * 4.0)


def softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_loss_dtype():
    assert loss_dtype("float64") == tf.float64 and loss_dtype(tf.float64) == tf.float64
    assert {loss_dtype(d) for d in ("float32", "bfloat16", "float16", tf.float16)} == {tf.float32}


@pytest.mark.parametrize("algorithm", [lambda: FixMatch(FixedThreshold(0.7), lambda_u=1.5),
                                       lambda: flexmatch(16, 3, tau=0.7, lambda_u=1.5)])
def test_float64_fixmatch_losses_equal_numpy_in_float64(algorithm):
    with policy("float64"):
        net = dense_net()
    algorithm = algorithm()
    x_lb = tf.random.stateless_normal([3, 4], [1, 2], dtype=tf.float64)
    weak, strong = (tf.random.stateless_normal([8, 4], [s, 3], dtype=tf.float64) for s in (3, 4))
    y_lb = tf.constant([0, 2, 1])
    losses = algorithm.compute_losses(StepNetworks(net), x_lb, y_lb, tf.range(8), [weak, strong], tf.constant(0))
    assert {losses[k].dtype for k in ("loss", "sup_loss", "unsup_loss", "mask")} == {tf.float64}

    p_lb, p_weak, p_strong = (softmax(net(x).numpy()) for x in (x_lb, weak, strong))
    sup = -np.log(p_lb[np.arange(3), y_lb.numpy()]).mean()
    pseudo = p_weak.argmax(-1)
    # FlexMatch's first step: no class has been learned yet, the warm-up threshold is tau * 0.
    tau = 0.7 if isinstance(algorithm.threshold, FixedThreshold) else 0.0
    mask = (p_weak.max(-1) >= tau).astype(np.float64)
    assert 0 < mask.sum() < 8 or tau == 0.0
    unsup = (-np.log(p_strong[np.arange(8), pseudo]) * mask).mean()
    np.testing.assert_array_equal(losses["mask"].numpy(), mask)
    assert float(losses["sup_loss"]) == pytest.approx(sup, rel=1e-12)
    assert float(losses["unsup_loss"]) == pytest.approx(unsup, rel=1e-12)
    assert float(losses["loss"]) == pytest.approx(sup + 1.5 * unsup, rel=1e-12)


def test_float32_network_keeps_float32_losses_and_mask():
    net = dense_net()
    x = tf.random.stateless_normal([8, 4], [3, 3])
    losses = FixMatch(FixedThreshold(0.7)).compute_losses(StepNetworks(net), x[:3], tf.constant([0, 2, 1]),
                                                          tf.range(8), [x, x], tf.constant(0))
    assert {losses[k].dtype for k in ("loss", "sup_loss", "unsup_loss", "mask")} == {tf.float32}


def one_step(name, dtype_policy):
    """One `train_step` of algorithm `name` on a small CNN built under `dtype_policy` (with
    the EMA warm-up on); returns the dtypes of the step's losses."""
    from kerastl.nets import small_cnn

    rng = np.random.default_rng(0)
    with policy(dtype_policy):
        network = small_cnn((28, 28, 1), 10, width=4)
    algorithm = build_algorithm(name, 64, 10, total_steps=4, seed=0, input_scale=0.3)
    model = SemiSupervisedModel(network, algorithm, ema_warmup=True)
    model.compile(optimizer=SGDWithL2(l2=5e-4, learning_rate=CosineSchedule(0.03, 4), momentum=0.9, nesterov=True))
    recorded = {}
    compute_losses = algorithm.compute_losses

    def recording(*args, **kwargs):
        recorded.update(compute_losses(*args, **kwargs))
        return recorded

    object.__setattr__(algorithm, "compute_losses", recording)
    images = lambda n: tf.constant(rng.uniform(0, 1, (n, 28, 28, 1)).astype("float32"))  # noqa: E731
    labeled = (images(4), tf.constant(rng.integers(0, 10, 4)))
    num_unlabeled = 4 * algorithm.default_uratio
    unlabeled = (tf.range(num_unlabeled), *[images(num_unlabeled) for _ in algorithm.views])
    before = [w.copy() for w in network.get_weights()]
    model.train_step((labeled, unlabeled) if algorithm.views else labeled)
    assert any(not np.array_equal(a, b) for a, b in zip(before, network.get_weights()))
    assert all(np.isfinite(w).all() for w in network.get_weights())
    return {key: value.dtype for key, value in recorded.items() if value is not None}


@pytest.mark.parametrize("name", algorithm_names())
def test_a_float64_step_computes_every_loss_in_float64(name):
    dtypes = one_step(name, "float64")
    assert set(dtypes.values()) == {tf.float64}, dtypes


@pytest.mark.parametrize("name", algorithm_names())
def test_a_float32_step_keeps_float32_losses(name):
    dtypes = one_step(name, "float32")
    assert set(dtypes.values()) == {tf.float32}, dtypes


@pytest.mark.parametrize("name", ["fixmatch", "flexmatch", "freematch", "softmatch"])
def test_a_mixed_precision_step_keeps_float32_losses(name):
    dtypes = one_step(name, "mixed_bfloat16")
    assert set(dtypes.values()) == {tf.float32}, dtypes


def nesterov_by_hand(weights, grads, lr, total, momentum=0.9, l2=0.05):
    """torch.optim.SGD (Nesterov, weight decay on every tensor here) in float64."""
    buffers = [None] * len(weights)
    for k, step_grads in enumerate(grads):
        lr_k = lr * math.cos(7 * math.pi * k / (16 * total))
        for i, g in enumerate(step_grads):
            d = g + l2 * weights[i]
            buffers[i] = d if buffers[i] is None else momentum * buffers[i] + d
            weights[i] = weights[i] - lr_k * (d + momentum * buffers[i])
    return weights


def test_sgd_updates_float64_weights_in_float64():
    """A float64 kernel moves as torch.optim.SGD moves it in float64: the learning rate and
    the momentum are not rounded to float32 (0.9 would be 0.89999998: 1.3e-8 relative)."""
    rng = np.random.default_rng(1)
    start = rng.normal(size=(4, 3))
    kernel = keras.Variable(start, dtype="float64", name="kernel")
    grads = [[rng.normal(size=(4, 3))] for _ in range(4)]
    optimizer = SGDWithL2(l2=0.05, learning_rate=CosineSchedule(0.1, 3), momentum=0.9, nesterov=True)
    for (g,) in grads:
        optimizer.apply([tf.constant(g)], [kernel])
    assert optimizer.learning_rate.dtype == tf.float64
    (expected,) = nesterov_by_hand([start.copy()], grads, 0.1, 3)
    np.testing.assert_allclose(kernel.numpy(), expected, rtol=1e-14, atol=1e-15)


def test_sgd_keeps_a_float32_learning_rate_for_float32_weights():
    kernel = keras.Variable(np.ones((2, 2), np.float32), name="kernel")
    optimizer = SGDWithL2(l2=0.0, learning_rate=CosineSchedule(0.1, 3), momentum=0.9, nesterov=True)
    optimizer.apply([tf.ones((2, 2))], [kernel])
    assert optimizer.learning_rate.dtype == tf.float32
    # lr(0) = 0.1 in float32, Nesterov's first step 1.9 * lr * g with momentum 0.9 in float32.
    np.testing.assert_array_equal(kernel.numpy(), np.float32(1) - np.float32(0.1) * (np.float32(1) + np.float32(0.9)))
