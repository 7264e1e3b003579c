"""Tests for `kerastl.ssl.model.SemiSupervisedModel` and `kerastl.ssl.optim` on tiny networks."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.checkpoint import TrainingCheckpoint
from kerastl.ssl import (CosineSchedule, FixedThreshold, SemiSupervisedModel, SGDWithL2,
                         build_algorithm, torchssl_optimizer)
from kerastl.ssl.algorithms import FixMatch, PiModel, PseudoLabel, Supervised, flexmatch

B, MU, D, C = 2, 3, 4, 2   # labeled batch, unlabeled ratio, input features, classes
EAGER_CALLS = []           # (id(layer), batch size, training) of every eager call of a CallCounter


class CallCounter(keras.layers.Layer):
    """Identity layer that records its Python-side eager calls."""

    def call(self, x, training=None):
        if tf.executing_eagerly():
            EAGER_CALLS.append((id(self), int(x.shape[0]), bool(training)))
        return x


def tiny_net(counter=False, bn_momentum=0.5, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    x = keras.layers.Dense(3, name="d1")(inputs)
    x = keras.layers.BatchNormalization(momentum=bn_momentum, name="bn")(x)
    if counter:
        x = CallCounter(name="counter")(x)
    outputs = keras.layers.Dense(C, name="d2")(x)
    return keras.Model(inputs, outputs, name="tiny")


def batch(seed=0, num_unlabeled=MU * B):
    rng = np.random.default_rng(seed)
    x_lb = rng.normal(size=(B, D)).astype("float32")
    y_lb = np.arange(B, dtype=np.int64) % C
    index = np.arange(num_unlabeled, dtype=np.int64)
    weak = rng.normal(size=(num_unlabeled, D)).astype("float32")
    strong = (weak + rng.normal(scale=0.5, size=(num_unlabeled, D))).astype("float32")
    return (x_lb, y_lb), (index, weak, strong)


def stream(seed=0, num_unlabeled=MU * B):
    return tf.data.Dataset.from_tensors(batch(seed, num_unlabeled)).repeat()


def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


# --------------------------------------------------------------------------- one forward per step

@pytest.mark.parametrize("algorithm, views", [(FixMatch(FixedThreshold(0.0)), 2),
                                              (Supervised(), 0)])
def test_one_forward_pass_over_the_concatenation(algorithm, views):
    network = tiny_net(counter=True)
    model = SemiSupervisedModel(network, algorithm)
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    counter = id(network.get_layer("counter"))
    EAGER_CALLS.clear()
    history = model.fit(stream(), steps_per_epoch=3, epochs=1, verbose=0)
    calls = [(size, training) for layer, size, training in EAGER_CALLS if layer == counter]
    assert calls == [(B + views * MU * B, True)] * 3          # one call per step, everything in it
    assert all(layer == counter for layer, _, _ in EAGER_CALLS)  # the EMA copy is not run in training
    assert ("mask_ratio" in history.history) == (views > 0)


@pytest.mark.parametrize("algorithm", [PseudoLabel(FixedThreshold(0.0)), PiModel()])
def test_labeled_pass_alone_moves_batch_norm_and_each_view_runs_alone(algorithm):
    """TorchSSL's Pseudo-Label and Pi-Model: the labeled batch, then each unlabeled view
    with the BN moving statistics frozen."""
    network = tiny_net(counter=True)
    model = SemiSupervisedModel(network, algorithm)
    model.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True)   # lr 0: only BN moves
    counter = id(network.get_layer("counter"))
    EAGER_CALLS.clear()
    model.fit(stream(num_unlabeled=B), steps_per_epoch=1, epochs=1, verbose=0)
    calls = [(size, training) for layer, size, training in EAGER_CALLS if layer == counter]
    assert calls == [(B, True)] + [(B, True)] * len(algorithm.views)
    labeled_only = tiny_net()
    labeled_only(batch(num_unlabeled=B)[0][0], training=True)
    bn, expected_bn = network.get_layer("bn"), labeled_only.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected_bn.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), expected_bn.moving_variance.numpy(), rtol=1e-6)


def test_loss_is_sup_plus_lambda_unsup_on_one_joint_forward():
    network = tiny_net()
    (x_lb, y_lb), (index, weak, strong) = batch(seed=3)
    inputs = np.concatenate([x_lb, weak, strong])
    logits = network(inputs, training=True).numpy().astype(np.float64)  # BN statistics of all 14 images
    lb, lw, ls = logits[:B], logits[B:B + MU * B], logits[B + MU * B:]
    sup = -log_softmax(lb)[np.arange(B), y_lb].mean()
    probs = np.exp(log_softmax(lw))
    maxp, pseudo = probs.max(1), probs.argmax(1)
    cut = np.sort(maxp)
    tau = float((cut[2] + cut[3]) / 2)                              # 3 of the 6 pass (far from ties)
    mask = (maxp >= tau).astype(np.float64)
    assert mask.sum() == 3
    unsup = (-log_softmax(ls)[np.arange(MU * B), pseudo] * mask).sum() / (MU * B)
    lambda_u = 2.0
    expected = sup + lambda_u * unsup

    # the same step with separate forwards (BN statistics per part) gives a different value
    separate = [network(part, training=True).numpy() for part in (x_lb, weak, strong)]
    sup_separate = -log_softmax(separate[0].astype(np.float64))[np.arange(B), y_lb].mean()
    assert abs(sup_separate - sup) > 1e-3

    model = SemiSupervisedModel(network, FixMatch(FixedThreshold(tau), lambda_u=lambda_u))
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True)
    logs = model.fit(tf.data.Dataset.from_tensors(batch(seed=3)).repeat(), steps_per_epoch=1, verbose=0).history
    assert logs["sup_loss"][0] == pytest.approx(sup, abs=1e-5)
    assert logs["unsup_loss"][0] == pytest.approx(unsup, abs=1e-5)
    assert logs["loss"][0] == pytest.approx(expected, abs=1e-5)
    assert logs["mask_ratio"][0] == pytest.approx(0.5)             # share that passes (not 1 - share)


def test_rampup_weight_uses_the_step_index_before_the_update():
    model = SemiSupervisedModel(tiny_net(), PseudoLabel(FixedThreshold(0.0), lambda_u=1.0, rampup_steps=2))
    model.compile(optimizer=keras.optimizers.SGD(0.01), run_eagerly=True)
    logs = model.fit(stream(), steps_per_epoch=1, epochs=3, verbose=0).history
    assert all(u > 0.01 for u in logs["unsup_loss"])
    for k, weight in enumerate([0.0, 0.5, 1.0]):                  # min(1, k / 2) at steps k = 0, 1, 2
        assert logs["loss"][k] == pytest.approx(logs["sup_loss"][k] + weight * logs["unsup_loss"][k], abs=1e-6)


# ------------------------------------------------------------------------------------------- EMA

class Recorder(keras.callbacks.Callback):
    def __init__(self, model):
        super().__init__()
        self.network = [model.network.get_weights()]
        self.ema = [model.ema_network.get_weights()]
        self._ssl = model

    def on_train_batch_end(self, batch, logs=None):
        self.network.append(self._ssl.network.get_weights())
        self.ema.append(self._ssl.ema_network.get_weights())


@pytest.mark.parametrize("ema_warmup", [False, True])
def test_ema_recursion_and_copied_bn_statistics(ema_warmup):
    network = tiny_net()
    decay = 0.7 if not ema_warmup else 0.999
    model = SemiSupervisedModel(network, FixMatch(FixedThreshold(0.0)), ema_decay=decay, ema_warmup=ema_warmup)
    model.compile(optimizer=keras.optimizers.SGD(0.5), run_eagerly=False)   # the compiled step
    recorder = Recorder(model)
    steps = 4
    model.fit(stream(seed=1), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[recorder])
    trainable = [w.trainable for w in network.weights]
    names = [w.path for w in network.weights]
    assert trainable.count(False) == 2 and sum("moving" in n for n in names) == 2
    # EMA starts from the initial weights
    for e, w in zip(recorder.ema[0], recorder.network[0]):
        np.testing.assert_array_equal(e, w)
    ema = [w.astype(np.float64) for w in recorder.network[0]]
    for k in range(steps):
        d = min(decay, (1 + k) / (10 + k)) if ema_warmup else decay
        online = recorder.network[k + 1]
        for i, is_trainable in enumerate(trainable):
            if is_trainable:
                ema[i] = d * ema[i] + (1 - d) * online[i]
                np.testing.assert_allclose(recorder.ema[k + 1][i], ema[i], rtol=1e-5, atol=1e-6,
                                           err_msg=f"{names[i]} step {k}")
            else:   # BN moving statistics: a copy of the online ones, not an average
                np.testing.assert_array_equal(recorder.ema[k + 1][i], online[i])
                assert not np.allclose(online[i], recorder.network[k][i])  # they moved this step
    # the EMA is not just the online weights
    assert not np.allclose(recorder.ema[-1][0], recorder.network[-1][0], atol=1e-3)


def test_inference_uses_the_ema_network():
    model = SemiSupervisedModel(tiny_net(), FixMatch())
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    d2 = model.ema_network.get_layer("d2")
    d2.kernel.assign(np.zeros((3, C), np.float32))
    d2.bias.assign([1.0, -1.0])           # the EMA network now outputs logits [1, -1] for everything
    x = np.random.default_rng(0).normal(size=(5, D)).astype("float32")
    y = np.array([0, 0, 0, 1, 1])
    expected = np.tile([[1.0, -1.0]], (5, 1))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(model(x).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(model(x, training=False).numpy(), expected, atol=1e-6)
    assert not np.allclose(model(x, training=True).numpy(), expected, atol=1e-2)  # the online network
    results = model.evaluate(x, y, batch_size=5, verbose=0, return_dict=True)
    # CE of logits [1, -1]: ln(1 + e^-2) for class 0, ln(1 + e^2) for class 1
    assert results["loss"] == pytest.approx((3 * math.log1p(math.exp(-2)) + 2 * math.log1p(math.exp(2))) / 5,
                                            abs=1e-5)
    assert results["accuracy"] == pytest.approx(0.6)


# ------------------------------------------------------------------------------------- optimizer

def build_layers():
    keras.utils.set_random_seed(4)
    dense, conv, bn = keras.layers.Dense(3), keras.layers.Conv2D(2, 3), keras.layers.BatchNormalization()
    dense.build((None, 4))
    conv.build((None, 5, 5, 1))
    bn.build((None, 3))
    bn.gamma.assign([1.5, 0.5, 2.0])
    bn.beta.assign([0.1, -0.2, 0.3])
    dense.bias.assign([0.4, -0.5, 0.6])
    conv.bias.assign([0.7, -0.8])
    return [dense.kernel, dense.bias, conv.kernel, conv.bias, bn.gamma, bn.beta]


def test_sgd_l2_first_step_with_zero_gradient():
    variables = build_layers()
    before = [v.numpy().copy() for v in variables]
    lr, l2, momentum = 0.5, 0.1, 0.9
    optimizer = SGDWithL2(l2=l2, learning_rate=lr, momentum=momentum, nesterov=True)
    optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    # Nesterov, first step: b = g; w -= lr (g + momentum b) = lr (1 + momentum) g, with g = l2 w
    for v, w in zip(variables, before):
        if v.name == "kernel":
            np.testing.assert_allclose(v.numpy(), w * (1 - lr * (1 + momentum) * l2), rtol=1e-6)
        else:   # biases, BN gamma / beta: no decay
            np.testing.assert_array_equal(v.numpy(), w)


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_l2_matches_pytorch_sgd_under_the_cosine_schedule(nesterov):
    """torch.optim.SGD's update (lr outside the momentum buffer) step by step while the
    learning rate changes: a 4-step cosine horizon takes it from 0.1 to 0.02."""
    variables = build_layers()
    rng = np.random.default_rng(5)
    lr, l2, momentum, total = 0.1, 0.05, 0.9, 4
    schedule = CosineSchedule(lr, total)
    optimizer = SGDWithL2(l2=l2, learning_rate=schedule, momentum=momentum, nesterov=nesterov)
    # torch.optim.SGD(momentum, nesterov, weight_decay=l2) applied to kernels only
    weights = [v.numpy().astype(np.float64) for v in variables]
    buffers = [None] * len(variables)
    for k in range(total + 1):
        grads = [rng.normal(size=v.shape).astype("float32") for v in variables]
        optimizer.apply([tf.constant(g) for g in grads], variables)
        lr_k = lr * math.cos(7 * math.pi * k / (16 * total))
        for i, v in enumerate(variables):
            d = grads[i] + (l2 * weights[i] if v.name == "kernel" else 0.0)
            buffers[i] = d if buffers[i] is None else momentum * buffers[i] + d
            weights[i] = weights[i] - lr_k * (d + momentum * buffers[i] if nesterov else buffers[i])
            np.testing.assert_allclose(v.numpy(), weights[i], rtol=1e-5, atol=1e-6)


def test_torchssl_optimizer_preset():
    optimizer = torchssl_optimizer(0.03, total_steps=100)
    assert isinstance(optimizer, SGDWithL2)
    assert optimizer.l2 == 5e-4 and optimizer.momentum == 0.9 and optimizer.nesterov
    assert float(optimizer.learning_rate) == pytest.approx(0.03)        # cos(0) at step 0
    variables = build_layers()
    before = [v.numpy().copy() for v in variables]
    optimizer.apply([tf.zeros_like(v) for v in variables], variables)
    np.testing.assert_allclose(variables[0].numpy(), before[0] * (1 - 0.03 * 1.9 * 5e-4), rtol=1e-6)
    np.testing.assert_array_equal(variables[1].numpy(), before[1])


def test_cosine_schedule():
    lr, total = 0.03, 1000
    schedule = CosineSchedule(lr, total)
    for k in (0, total // 2, total):
        assert float(schedule(k)) == pytest.approx(lr * math.cos(7 * math.pi * k / (16 * total)), rel=1e-6)
    assert float(schedule(total)) == pytest.approx(lr * 0.19509, rel=1e-4)   # ends at ~0.2 lr


# ---------------------------------------------------------------- CPL state and the EMA network

def test_fit_records_the_cpl_state_and_predicts_with_the_ema_network():
    algorithm = flexmatch(8, C)
    algorithm.threshold.tau = 0.0                   # every unlabeled example gets recorded
    model = SemiSupervisedModel(tiny_net(), algorithm, ema_decay=0.9)
    model.compile(optimizer=torchssl_optimizer(0.1, total_steps=50))
    model.fit(stream(seed=2), steps_per_epoch=2, verbose=0)
    selected = algorithm.threshold.selected_label.numpy()
    assert (selected[:MU * B] >= 0).all() and (selected[MU * B:] == -1).all()
    acc = algorithm.threshold.classwise_acc.numpy()
    assert acc.max() > 0
    x = batch(seed=9)[1][1]
    # predictions are the EMA network's, not the online network's
    assert not np.allclose(model.predict(x, verbose=0), model.network(x, training=False).numpy(), atol=1e-3)


def test_training_checkpoint_resumes_identically(tmp_path):
    """`kerastl.checkpoint.TrainingCheckpoint` carries weights, EMA, optimizer and CPL state."""
    def make(seed):
        algorithm = flexmatch(8, C)
        algorithm.threshold.tau = 0.0
        model = SemiSupervisedModel(tiny_net(seed=seed), algorithm, ema_decay=0.9, ema_warmup=True)
        model.compile(optimizer=torchssl_optimizer(0.1, total_steps=50), run_eagerly=True)
        return model

    original = make(seed=0)
    checkpoint = TrainingCheckpoint(str(tmp_path / "ckpt"), original)
    assert checkpoint.restore() == 0
    original.fit(stream(seed=2), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[checkpoint])
    resumed = make(seed=1)   # different initial weights: everything must come from the checkpoint
    assert not np.allclose(resumed.network.get_weights()[0], original.network.get_weights()[0])
    assert TrainingCheckpoint(str(tmp_path / "ckpt"), resumed).restore() == 2
    np.testing.assert_array_equal(resumed.algorithm.threshold.selected_label.numpy(),
                                  original.algorithm.threshold.selected_label.numpy())
    for model in (original, resumed):
        model.fit(stream(seed=4), steps_per_epoch=1, epochs=1, verbose=0)
    for a, b in zip(original.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(resumed.algorithm.threshold.classwise_acc.numpy(),
                                  original.algorithm.threshold.classwise_acc.numpy())


# ------------------------------------------------------------------------ a real 28x28 step

def test_real_training_steps_on_ssl_stream():
    from kerastl.augment.randaugment import strong_augment
    from kerastl.augment.weak import weak_augment
    from kerastl.data.pipeline import ssl_stream
    from kerastl.nets.small_cnn import small_cnn

    rng = np.random.default_rng(0)
    x_lb = rng.integers(0, 256, size=(4, 28, 28, 1), dtype=np.uint8)
    y_lb = np.array([0, 1, 2, 1])
    x_ulb = rng.integers(0, 256, size=(16, 28, 28, 1), dtype=np.uint8)
    batch_size, uratio, classes = 2, 2, 3

    keras.utils.set_random_seed(0)
    algorithm = build_algorithm("flexmatch", num_unlabeled=len(x_ulb), num_classes=classes, total_steps=10)
    algorithm.threshold.tau = 0.0
    model = SemiSupervisedModel(small_cnn((28, 28, 1), classes, width=4), algorithm, ema_warmup=True)
    model.compile(optimizer=torchssl_optimizer(0.03, total_steps=10))

    def make_stream():
        return ssl_stream(x_lb, y_lb, x_ulb, batch_size, uratio, weak=weak_augment,
                          unlabeled_views=(weak_augment, strong_augment), seed=0)

    indices = [el[1][0].numpy() for el in make_stream().take(2)]   # the unlabeled indices of steps 1, 2
    assert len(set(np.concatenate(indices).tolist())) == 2 * uratio * batch_size

    cpl = algorithm.threshold
    states = []
    callback = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: states.append(
        (cpl.selected_label.numpy().copy(), cpl.classwise_acc.numpy().copy())))
    history = model.fit(make_stream(), steps_per_epoch=2, epochs=1, verbose=0, callbacks=[callback]).history
    for name in ("loss", "sup_loss", "unsup_loss", "mask_ratio"):
        assert np.isfinite(history[name][0])
    assert history["unsup_loss"][0] > 0 and history["mask_ratio"][0] == 1.0

    (sel1, acc1), (sel2, acc2) = states
    # step 1: exactly its unlabeled indices were recorded; beta untouched (all entries were unused)
    assert sorted(np.flatnonzero(sel1 >= 0).tolist()) == sorted(indices[0].tolist())
    assert set(sel1[sel1 >= 0].tolist()) <= set(range(classes))
    np.testing.assert_array_equal(acc1, np.zeros(classes))
    # step 2: beta from step 1's state (warmup: counts over the 12 still unused entries), then 4 more
    counts = np.bincount(sel1 + 1, minlength=classes + 1)
    assert counts[0] == 12
    np.testing.assert_allclose(acc2, counts[1:] / 12, atol=1e-7)
    assert sorted(np.flatnonzero(sel2 >= 0).tolist()) == sorted(np.concatenate(indices).tolist())
    np.testing.assert_array_equal(sel2[indices[0]], sel1[indices[0]])
    # the EMA (evaluation) model gives finite predictions
    assert np.isfinite(model.predict(x_ulb[:4].astype("float32") / 255.0, verbose=0)).all()
