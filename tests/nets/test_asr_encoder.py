"""ASREncoder: subsampled lengths, shapes, padding invariance, bad sizes (serialisation:
tests/test_keras_objects.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.nets.asr_encoder import ASREncoder, subsampled_lengths


def small_encoder(**options):
    keras.utils.set_random_seed(0)
    encoder = ASREncoder(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, dropout=0.0, **options)
    encoder.build()
    return encoder


def test_subsampled_lengths_match_two_valid_stride_2_convolutions():
    # conv 3x3 stride 2 'valid': L -> (L - 1) // 2, twice; 6 frames leave nothing.
    assert [subsampled_lengths(n) for n in (6, 7, 8, 10, 11, 100)] == [0, 1, 1, 1, 2, 24]
    np.testing.assert_array_equal(subsampled_lengths(np.array([100, 7, 3])), [24, 1, 0])
    np.testing.assert_array_equal(subsampled_lengths(tf.constant([100, 11])).numpy(), [24, 2])


def test_output_shapes_and_lengths():
    encoder = small_encoder()
    features = np.random.default_rng(0).normal(size=(3, 50, 80)).astype("float32")
    hidden, lengths = encoder(features, np.array([50, 30, 9]))
    assert tuple(hidden.shape) == (3, subsampled_lengths(50), 16)
    np.testing.assert_array_equal(lengths.numpy(), [11, 6, 1])
    assert encoder.compute_output_shape((None, 50, 80)) == ((None, 11, 16), (None,))


def test_valid_frames_do_not_see_the_padding():
    encoder = small_encoder()
    rng = np.random.default_rng(1)
    utterance = rng.normal(size=(1, 37, 80)).astype("float32")
    alone, alone_lengths = encoder(utterance, np.array([37]))
    padded = np.concatenate([utterance, rng.normal(size=(1, 23, 80)).astype("float32")], axis=1)
    together, lengths = encoder(padded, np.array([37]))
    valid = int(alone_lengths[0])
    assert int(lengths[0]) == valid == 8
    np.testing.assert_allclose(together[0, :valid], alone[0, :valid], atol=1e-5)


def test_every_frame_is_valid_without_lengths_and_hook_runs_after_each_layer():
    encoder = small_encoder()
    features = np.random.default_rng(2).normal(size=(2, 20, 80)).astype("float32")
    calls = []

    def hook(i, x, padding_mask, training, feed_forward_input):
        calls.append((i, tuple(x.shape), padding_mask.numpy().all()))
        return x

    hidden, lengths = encoder.encode(features, after_layer=hook)
    np.testing.assert_array_equal(lengths.numpy(), [4, 4])
    assert calls == [(0, (2, 4, 16), True), (1, (2, 4, 16), True)]
    np.testing.assert_allclose(hidden, encoder(features)[0], atol=1e-6)


def test_wrong_feature_size_and_sizes():
    encoder = small_encoder()
    with pytest.raises(ValueError, match="expects 80"):
        encoder(np.zeros((1, 24, 40), "float32"))
    with pytest.raises(ValueError, match="num_heads"):
        ASREncoder(hidden_dim=10, num_heads=4)
