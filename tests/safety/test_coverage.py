"""Coverage profiling: hand-made activations and a tiny network with known weights."""

import keras
import numpy as np
import pytest

from kerastl.safety.coverage import ChannelCoverage, coverage_profiler, profile_coverage, sliceable_layers


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


def test_profiler_is_one_functional_model_over_the_layer_tensors():
    profiler = coverage_profiler(tiny_network(), ["conv", "hidden"])
    assert isinstance(profiler, keras.Model) and len(profiler.outputs) == 4
    assert [tuple(o.shape) for o in profiler.outputs] == [(None, 2), (None, 2), (None, 2), (None, 3)]


def test_unknown_layer_is_an_error():
    with pytest.raises(ValueError):
        profile_coverage(tiny_network(), np.zeros((1, 2, 2, 2), "float32"), ["absent"])
