"""SimAdapter: the fusion formula, attention, temperature, the regulariser and the guide loss
(the layer against the reference's own modules: tests/parity/test_adapters_parity.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.adapters.simadapter import OFF_DIAGONAL, GuideWeightDecay, SimAdapter


def built(dim, sources, **options):
    keras.utils.set_random_seed(0)
    layer = SimAdapter(**options)
    layer.build((None, None, dim), (None, None, sources, dim))
    return layer


def inputs(batch=2, time=3, sources=2, dim=4, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, time, dim)).astype("float32"),
            rng.normal(size=(batch, time, sources, dim)).astype("float32"))


def test_identity_value_and_one_source_returns_that_adapter_output_plus_the_residual():
    layer = built(4, 1)
    layer.value_kernel.assign(np.eye(4, dtype="float32"))
    z, outputs = inputs(sources=1)
    residual = np.random.default_rng(5).normal(size=z.shape).astype("float32")
    # One source: softmax over one adapter is 1 whatever q and k are.
    np.testing.assert_allclose(layer(z, outputs, residual), outputs[:, :, 0] + residual, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(z, outputs), outputs[:, :, 0], rtol=1e-5, atol=1e-5)   # no residual
    np.testing.assert_allclose(layer.last_attention, [1.0])
    # The layer has no LayerNorm of its own: q, k and W_V are all its parameters.
    assert sorted(v.path.split("/", 1)[1] for v in layer.trainable_weights) == [
        "key/bias", "key/kernel", "query/bias", "query/kernel", "value_kernel"]


def test_value_kernel_starts_at_identity_and_the_regulariser_is_0_01_times_squared_off_diagonal():
    dim = 8
    layer = built(dim, 2)
    expected_kernel = np.eye(dim) + OFF_DIAGONAL * (1 - np.eye(dim))
    np.testing.assert_allclose(layer.value_kernel.numpy(), expected_kernel, rtol=1e-6)
    # ||I - W_V||^2 = 56 off-diagonal entries of 1e-6 squared: 0.01 * 56e-12 = 5.6e-13.
    assert float(layer.stability_loss()) == pytest.approx(0.01 * dim * (dim - 1) * OFF_DIAGONAL ** 2, rel=1e-3)
    layer.value_kernel.assign(np.eye(dim, dtype="float32") * 2.0)        # ||I - 2I||^2 = dim
    assert float(layer.stability_loss()) == pytest.approx(0.01 * dim)


def test_attention_is_a_softmax_of_q_dot_k_over_temperature_and_temperature_sharpens():
    dim, sources = 3, 3
    z, outputs = inputs(batch=1, time=2, sources=sources, dim=dim, seed=1)
    weights = {}
    for temperature in (1.0, 0.25):
        layer = built(dim, sources, temperature=temperature)
        for dense in (layer.query, layer.key):           # q = z, k_i = a_i
            dense.kernel.assign(np.eye(dim, dtype="float32"))
        attention = layer.attention_weights(z, outputs).numpy()
        scores = np.einsum("btd,btsd->bts", z, outputs) / temperature
        expected = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        np.testing.assert_allclose(attention, expected, rtol=1e-5)
        np.testing.assert_allclose(attention.sum(-1), 1.0, rtol=1e-6)
        weights[temperature] = attention
    assert (weights[0.25].max(-1) > weights[1.0].max(-1)).all()
    entropy = {t: -(w * np.log(w)).sum(-1).mean() for t, w in weights.items()}
    assert entropy[0.25] < entropy[1.0]


def test_output_mixes_adapters_with_the_attention_then_w_v_plus_residual_and_padding_is_left_out_of_the_average():
    dim, sources = 4, 3
    layer = built(dim, sources)
    rng = np.random.default_rng(2)
    value = rng.normal(size=(dim, dim)).astype("float32")
    layer.value_kernel.assign(value)
    z, outputs = inputs(batch=2, time=5, sources=sources, dim=dim, seed=2)
    attention = layer.attention_weights(z, outputs).numpy()
    mask = np.array([[True] * 5, [True, True, False, False, False]])
    residual = rng.normal(size=z.shape).astype("float32")
    result = layer(z, outputs, residual, padding_mask=mask).numpy()
    expected = np.einsum("bts,btsd,de->bte", attention, outputs, value) + residual
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(layer.last_attention, attention[mask].mean(0), rtol=1e-5)


def reference_guide_loss(mean_attention, label):
    """The reference's guide loss: softmax cross-entropy of the logits exp(mean attention)."""
    logits = np.exp(mean_attention)
    return np.log(np.exp(logits).sum()) - logits[label]


def test_losses_are_added_in_training_calls_only():
    layer = built(4, 3, guide_weight=0.5, guide_index=2)
    z, outputs = inputs(sources=3)
    for training in (None, False):
        layer(z, outputs, training=training)
        assert layer.losses == []
    layer(z, outputs, training=True)
    assert len(layer.losses) == 2


def test_guide_loss_is_cross_entropy_of_exp_mean_attention_and_falls_as_attention_moves_to_own_adapter():
    dim, sources, own = 4, 3, 2
    layer = built(dim, sources, guide_weight=0.5, guide_index=own)
    z, outputs = inputs(batch=2, time=4, sources=sources, dim=dim, seed=3)
    layer(z, outputs, training=True)
    stability, guide = (float(x) for x in layer.losses)
    assert stability == pytest.approx(float(layer.stability_loss()))
    assert guide == pytest.approx(0.5 * reference_guide_loss(layer.last_attention, own), rel=1e-5)
    # Hand-computed: mean attention (0.2, 0.3, 0.5), label 2: log(e^e^0.2 + e^e^0.3 + e^e^0.5) - e^0.5.
    assert float(layer.guide_loss(tf.constant([0.2, 0.3, 0.5]))) == pytest.approx(0.5 * 0.8729310, rel=1e-5)
    optimizer = keras.optimizers.SGD(2.0)
    history = []
    for _ in range(15):                                   # only the guide loss trains q and k
        with tf.GradientTape() as tape:
            layer(z, outputs, training=True)
            loss = layer.losses[1]
        history.append((float(loss), layer.last_attention[own]))
        variables = layer.query.trainable_weights + layer.key.trainable_weights
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    losses, own_attention = np.array(history).T
    assert losses[-1] < 0.8 * losses[0]
    assert own_attention[-1] > own_attention[0] + 0.1 and (np.diff(losses) < 0).all()
    layer.set_guide_weight(0.0)
    layer(z, outputs, training=True)
    assert float(layer.losses[1]) == 0.0


def test_guide_weight_decay_is_linear_to_zero_over_the_decay_steps():
    layers = [built(4, 2, guide_weight=0.4, guide_index=1) for _ in range(2)]
    decay = GuideWeightDecay(layers, weight=0.4, decay_steps=4)
    seen = []
    for step in range(6):
        decay.on_train_batch_begin(step)
        seen.append([float(layer.guide_weight_variable.numpy()) for layer in layers])
    np.testing.assert_allclose(seen, [[w, w] for w in (0.4, 0.3, 0.2, 0.1, 0.0, 0.0)], atol=1e-7)
    constant = GuideWeightDecay(layers, weight=0.25)
    for step in range(3):
        constant.on_train_batch_begin(step)
    assert float(layers[0].guide_weight_variable.numpy()) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="decay_steps -1"):
        GuideWeightDecay(layers, 0.1, decay_steps=-1)


def test_guide_index_must_name_one_of_the_adapters():
    with pytest.raises(ValueError, match="guide_index 3"):
        built(4, 2, guide_index=3)
