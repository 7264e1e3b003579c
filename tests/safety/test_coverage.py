"""Coverage profiling: hand-made activations and a tiny network with known weights."""

import keras
import numpy as np
import pytest

from kerastl.safety.coverage import (ChannelCoverage, LayerCoverage, profile_coverage, sliceable_layers, tapped_calls,
                                     unit_axes)
from kerastl.safety.slicing import weight_coverage


def test_channel_coverage_on_a_hand_made_activation():
    # One sample, 2x2 positions, 3 channels. Layer min 0, max 8: scaled = x / 8.
    # Channel means of the scaled values: c0 (8, 8, 8, 0)/8 -> 0.75, c1 (4, 4, 0, 0)/8 -> 0.25,
    # c2 (4, 4, 4, 4)/8 -> 0.5 (not above alpha 0.5).
    activation = np.array([[[[8, 4, 4], [8, 4, 4]], [[8, 0, 4], [0, 0, 4]]]], np.float32)
    assert ChannelCoverage(alpha=0.5)(activation).numpy().tolist() == [[1.0, 0.0, 0.0]]
    assert ChannelCoverage(alpha=0.4)(activation).numpy().tolist() == [[1.0, 0.0, 1.0]]
    # Min-max is per sample: the same pattern at another scale and offset covers the same channels.
    two = np.concatenate([activation, 3 * activation - 7])
    assert ChannelCoverage(alpha=0.4)(two).numpy().tolist() == [[1.0, 0.0, 1.0]] * 2


def test_constant_activation_covers_nothing_and_dense_inputs_work():
    assert ChannelCoverage()(np.full((2, 3, 3, 4), 5.0, np.float32)).numpy().sum() == 0
    # rank-2 (dense) activations: each unit is its own "spatial mean".
    dense = np.array([[0.0, 1.0, 0.6, 0.2]], np.float32)
    assert ChannelCoverage(alpha=0.5)(dense).numpy().tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_padding_positions_do_not_count_in_sequences():
    # 1 sentence, 3 positions (the last is padding with a huge value), 2 channels.
    activation = np.array([[[0.0, 2.0], [2.0, 0.0], [100.0, 100.0]]], np.float32)
    mask = np.array([[True, True, False]])
    # Without the padding: min 0, max 2, channel means 0.5 and 0.5 -> alpha 0.4 covers both.
    assert ChannelCoverage(alpha=0.4)(activation, mask=mask).numpy().tolist() == [[1.0, 1.0]]
    # With it, the padding's 100 sets the scale: means (0.34, 0.34), nothing covered.
    assert ChannelCoverage(alpha=0.4)(activation).numpy().tolist() == [[0.0, 0.0]]


def test_channel_coverage_serialises():
    layer = ChannelCoverage(alpha=0.3, name="cov")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, ChannelCoverage) and clone.alpha == 0.3


def tiny_network():
    inputs = keras.Input((2, 2, 2), name="images")
    conv = keras.layers.Conv2D(2, 1, use_bias=False, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(conv)
    hidden = keras.layers.Dense(3, use_bias=False, name="hidden")(pooled)
    logits = keras.layers.Dense(2, name="head")(hidden)
    model = keras.Model(inputs, logits)
    model.get_layer("conv").set_weights([np.eye(2, dtype="float32").reshape(1, 1, 2, 2)])  # identity
    model.get_layer("hidden").set_weights([np.array([[1, 0, 1], [0, 1, 1]], "float32")])
    return model


def test_profile_counts_input_and_output_coverage_of_each_layer():
    model = tiny_network()
    assert sliceable_layers(model) == ["conv", "hidden"]
    assert sliceable_layers(model, include_head=True) == ["conv", "hidden", "head"]
    # Sample A: channel 0 bright everywhere, channel 1 dark -> covers channel 0.
    # Sample B: channel 1 bright -> covers channel 1. Sample C: both bright on all positions but one.
    a = np.stack([np.ones((2, 2)), np.zeros((2, 2))], -1)
    b = np.stack([np.zeros((2, 2)), np.ones((2, 2))], -1)
    c = np.ones((2, 2, 2)); c[0, 0, :] = 0
    counts = profile_coverage(model, np.stack([a, b, c]).astype("float32"), batch_size=2)
    # conv is the identity: its input and output coverage agree.
    assert counts["conv"].input.tolist() == [2, 2] and counts["conv"].output.tolist() == [2, 2]
    # hidden's input = pooled conv: A (1, 0), B (0, 1), C (.75, .75) -> scaled (1, 0), (0, 1), (0, 0).
    assert counts["hidden"].input.tolist() == [1, 1]
    # hidden's output = (p0, p1, p0 + p1): A (1, 0, 1), B (0, 1, 1), C (.75, .75, 1.5)
    # -> scaled A (1, 0, 1), B (0, 1, 1), C (0, 0, 1).
    assert counts["hidden"].output.tolist() == [1, 1, 3]
    assert counts["hidden"].samples == 3


def test_output_coverage_is_taken_before_a_fused_activation():
    # Dense with a fused relu: outputs (x, -x). After the relu, unit 1 is always 0 (never covered)
    # and unit 0 covered whenever x > 0; before it (the reference's view of a PyTorch linear), the
    # scaled pair is (1, 0) for x > 0 and (0, 1) for x < 0: each unit covered by one sample.
    inputs = keras.Input((1,))
    dense = keras.layers.Dense(2, activation="relu", use_bias=False, name="fused")
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(dense(inputs)))
    dense.set_weights([np.array([[1.0, -1.0]], "float32")])
    x = np.array([[2.0], [-3.0]], "float32")
    before = model.predict(x, verbose=0)
    counts = profile_coverage(model, x, ["fused"])
    assert counts["fused"].output.tolist() == [1, 1]
    np.testing.assert_array_equal(model.predict(x, verbose=0), before)  # the model computes as before
    assert dense.activation is keras.activations.relu and "call" not in dense.__dict__


def test_profiling_is_one_forward_pass_per_batch_and_restores_the_layers():
    model = tiny_network()
    calls = []
    with tapped_calls({"head": model.get_layer("head")}, lambda path, x, y: calls.append(int(x.shape[0]))):
        profile_coverage(model, np.zeros((5, 2, 2, 2), "float32"), ["conv", "hidden"], batch_size=2)
    assert calls == [2, 2, 1]  # the model ran once per batch, on whole batches
    # Outside the block every layer calls its own `call` again; nested taps of one layer unwind.
    assert all("call" not in model.get_layer(name).__dict__ for name in ("conv", "hidden", "head"))
    seen, hidden = [], {"hidden": model.get_layer("hidden")}
    with tapped_calls(hidden, lambda *_: seen.append("outer")):
        with tapped_calls(hidden, lambda *_: seen.append("inner")):
            model(np.zeros((1, 2, 2, 2), "float32"))
        model(np.zeros((1, 2, 2, 2), "float32"))
    model(np.zeros((1, 2, 2, 2), "float32"))
    assert seen == ["outer", "inner", "outer"] and "call" not in hidden["hidden"].__dict__


def test_einsum_dense_units_are_the_axes_shared_with_the_kernel():
    query = keras.layers.EinsumDense("abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de")
    output = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(None, 8), bias_axes="e")
    assert unit_axes(query) == (1, 2) and unit_axes(output) == (2, 1)
    assert unit_axes(keras.layers.Dense(3)) == (1, 1)
    # A kernel laid out otherwise (outputs before inputs) is not sliced.
    assert unit_axes(keras.layers.EinsumDense("abc,dc->abd", output_shape=(None, 3))) is None


def test_coverage_of_an_attention_projection_is_per_head_unit_over_the_real_tokens():
    # 1 sentence, 3 tokens (the last is padding), 2 heads x 2 units: [batch, tokens, heads, head_dim].
    activation = np.array([[[[0, 8], [4, 2]],
                            [[8, 8], [0, 2]],
                            [[100, -100], [100, 100]]]], np.float32)
    mask = np.array([[True, True, False]])
    # Real tokens: min 0, max 8. Means of x / 8 over the 2 tokens: (h0, d0) 0.5, (h0, d1) 1.0,
    # (h1, d0) 0.25, (h1, d1) 0.25.
    assert ChannelCoverage(0.5, unit_axes=2)(activation, mask=mask).numpy().tolist() == [[[0, 1], [0, 0]]]
    assert ChannelCoverage(0.4, unit_axes=2)(activation, mask=mask).numpy().tolist() == [[[1, 1], [0, 0]]]
    # With the padding token, its +-100 sets the scale: (x + 100) / 200 averaged over 3 tokens.
    assert ChannelCoverage(0.5, unit_axes=2)(activation).numpy().tolist() == [[[1, 0], [1, 1]]]
    # Weight coverage of the query kernel [hidden 2, heads 2, head_dim 2]: in_cov[i] + out_cov[h, d].
    cov = weight_coverage((2, 2, 2), LayerCoverage(np.array([1.0, 5.0]), np.array([[0.0, 2.0], [3.0, 4.0]]), 6))
    assert cov.tolist() == [[[1, 3], [4, 5]], [[5, 7], [8, 9]]]
    # ... and of the attention-output kernel [heads 2, head_dim 2, hidden 1]: in_cov[h, d] + out_cov[j].
    cov = weight_coverage((2, 2, 1), LayerCoverage(np.array([[0.0, 2.0], [3.0, 4.0]]), np.array([10.0]), 6))
    assert cov[..., 0].tolist() == [[10, 12], [13, 14]]


def test_unknown_layer_is_an_error():
    with pytest.raises(ValueError):
        profile_coverage(tiny_network(), np.zeros((1, 2, 2, 2), "float32"), ["absent"])
