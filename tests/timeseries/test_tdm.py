"""The boosting rule, the TDM callback's phases and the gates' softmax over time."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.timeseries import AdaRNN, TDMCallback, TemporalGate, boosting_update


def test_boosting_multiplies_exactly_the_weights_whose_distance_grew_and_renormalises():
    weights = np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]], "float32")
    old = np.array([[1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5]], "float32")
    new = np.array([[1.5, 0.5, 1.0, 3.0], [0.5, 0.7, 0.2, 0.5]], "float32")
    updated = boosting_update(weights, old, new).numpy()
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    expected = weights.copy()
    expected[0, 0] *= 1 + sigmoid(0.5)
    expected[0, 3] *= 1 + sigmoid(2.0)
    expected[1, 1] *= 1 + sigmoid(0.2)
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(updated, expected, rtol=1e-6)
    np.testing.assert_allclose(updated.sum(axis=1), 1.0, rtol=1e-6)
    # Unchanged (equal) distances are not boosted: the ratio between them is kept.
    assert updated[0, 1] / updated[0, 2] == pytest.approx(0.2 / 0.3, rel=1e-6)


def test_gate_gives_a_softmax_over_time_for_every_pair():
    tf.keras.utils.set_random_seed(0)
    gate = TemporalGate(len_seq=12)
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(2, 3, 16, 12, 8)).astype("float32")  # [pairs, batch, time, hidden]
    alpha = gate(source, target, training=True).numpy()
    assert alpha.shape == (3, 12) and (alpha > 0).all()
    np.testing.assert_allclose(alpha.sum(axis=-1), 1.0, rtol=1e-5)
    assert alpha.std() > 1e-4  # the gate does weight the time steps differently
    # softmax of the batch-mean of sigmoid(BN(Dense(flatten([h_s; h_t])))), written out:
    flat = np.concatenate([source, target], -1).reshape(3, 16, -1)
    logits = flat @ gate.dense.kernel.numpy() + gate.dense.bias.numpy()
    normed = (logits - logits.reshape(-1, 12).mean(0)) / np.sqrt(logits.reshape(-1, 12).var(0) + 1e-5)  # BN eps 1e-5 as the reference
    scores = (1 / (1 + np.exp(-normed))).mean(axis=1)
    np.testing.assert_allclose(alpha, np.exp(scores) / np.exp(scores).sum(-1, keepdims=True), rtol=1e-4)


def test_callback_phases_gate_then_boosting():
    model = AdaRNN(len_seq=4, num_features=2, num_domains=2, hidden_sizes=[3, 3])
    callback = TDMCallback(pre_epoch=2)
    callback.set_model(model)
    uniform = np.full((2, 4), 0.25, "float32")
    gates = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]], "float32")
    for epoch in range(2):  # pre-training: W stays uniform until the end of epoch pre_epoch - 1
        callback.on_epoch_begin(epoch)
        assert float(model.boosting.numpy()) == 0.0
        model.gate_weights.assign(gates)
        np.testing.assert_allclose(model.tdm_weights.numpy(), uniform)
        callback.on_epoch_end(epoch)
    np.testing.assert_allclose(model.tdm_weights.numpy(), gates)
    first = np.array([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]], "float32")
    callback.on_epoch_begin(2)
    assert float(model.boosting.numpy()) == 1.0 and not model.distance_epoch.numpy().any()
    model.distance_epoch.assign(first)
    callback.on_epoch_end(2)  # the first boosting epoch only records its distances
    np.testing.assert_allclose(model.tdm_weights.numpy(), gates)
    np.testing.assert_allclose(model.distance_previous.numpy(), first)
    second = np.array([[2.0, 1.0, 0.5, 1.0], [1.0, 1.0, 1.0, 3.0]], "float32")
    callback.on_epoch_begin(3)
    model.distance_epoch.assign(second)
    callback.on_epoch_end(3)
    np.testing.assert_allclose(model.tdm_weights.numpy(), boosting_update(gates, first, second).numpy(), rtol=1e-6)
    np.testing.assert_allclose(model.distance_previous.numpy(), second)


def test_boosting_keeps_float64_weights_in_float64():
    weights = np.array([[0.1, 0.2, 0.3, 0.4]])
    old, new = np.ones((1, 4)), np.array([[1.0 + 1e-9, 1.0, 0.5, 1.0 + 3e-9]])
    updated = boosting_update(weights, old, new)
    assert updated.dtype == tf.float64
    expected = weights * np.where(new > old + 1e-12, 1 + 1 / (1 + np.exp(-(new - old))), 1.0)
    np.testing.assert_allclose(updated.numpy(), expected / expected.sum(), rtol=1e-14)
    # float32 could not even tell these distances apart from the old ones.
    assert not (np.float32(new) > np.float32(old) + 1e-12).any()
