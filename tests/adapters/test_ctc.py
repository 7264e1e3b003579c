"""CTC with blank 0: hand-computed losses, greedy decoding, beam search, feasibility."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.adapters.ctc import (beam_search_decode, ctc_feasible, ctc_loss, greedy_decode,
                                  greedy_decode_graph)


def log_probs(rows):
    return np.log(np.array(rows, dtype="float64")).astype("float32")


def test_greedy_decoding_collapses_repeats_drops_blanks_and_stops_at_the_length():
    # frames:       a     a     _     a     b     b     _     c (beyond the length)
    frames = [1, 1, 0, 1, 2, 2, 0, 3]
    logits = np.full((1, 8, 4), -5.0, "float32")
    logits[0, np.arange(8), frames] = 5.0
    assert greedy_decode(logits, [8]) == [[1, 1, 2, 3]]
    assert greedy_decode(logits, [7]) == [[1, 1, 2]]
    second = np.full((1, 8, 4), -5.0, "float32")
    second[0, :, 0] = 5.0                                   # all blank
    batch = np.concatenate([logits, second])
    assert greedy_decode(batch, [7, 8]) == [[1, 1, 2], []]
    graph = greedy_decode_graph(tf.constant(batch), tf.constant([7, 8])).numpy()
    np.testing.assert_array_equal(graph, [[1, 1, 2], [0, 0, 0]])


def test_loss_equals_the_sum_over_alignments():
    # T = 2, classes (blank, a): p(blank) = .6, p(a) = .4 at both frames.
    # "a" has the alignments (a, _), (_, a), (a, a): .4*.6 + .6*.4 + .4*.4 = .64.
    logits = log_probs([[[.6, .4], [.6, .4]]])
    loss = ctc_loss(tf.constant([[1]]), tf.constant([1]), logits, tf.constant([2]))
    assert float(loss[0]) == pytest.approx(-np.log(0.64), rel=1e-5)
    # "a a" over 3 frames needs a blank between: only (a, _, a).
    probs = [[.2, .5, .3], [.7, .2, .1], [.1, .6, .3]]
    loss = ctc_loss(tf.constant([[1, 1, 0]]), tf.constant([2]), log_probs([probs]), tf.constant([3]))
    assert float(loss[0]) == pytest.approx(-np.log(.5 * .7 * .6), rel=1e-5)
    # "b" (id 2) over 2 frames: (b, _), (_, b), (b, b) with the padding label 0 ignored.
    loss = ctc_loss(tf.constant([[2, 0]]), tf.constant([1]), log_probs([probs[:2]]), tf.constant([2]))
    assert float(loss[0]) == pytest.approx(-np.log(.3 * .7 + .2 * .1 + .3 * .1), rel=1e-5)


def test_batch_loss_respects_logit_lengths_and_unnormalised_logits():
    probs = np.array([[.6, .4], [.6, .4], [.1, .9]])
    logits = np.log(probs).astype("float32") + 3.0            # softmax is shift invariant
    batch = np.stack([logits, logits])
    loss = ctc_loss(tf.constant([[1], [1]]), tf.constant([1, 1]), batch, tf.constant([2, 3])).numpy()
    three = .4 * .6 * .1 + .6 * .4 * .1 + .6 * .6 * .9 + .4 * .4 * .1 + .6 * .4 * .9 + .4 * .4 * .9
    np.testing.assert_allclose(loss, [-np.log(.64), -np.log(three)], rtol=1e-5)


def test_infeasible_transcripts_are_found_and_get_zero_loss():
    labels = tf.constant([[1, 2, 0], [1, 1, 0], [1, 1, 2]])
    lengths = tf.constant([2, 2, 3])
    frames = tf.constant([2, 2, 4])
    # [1, 2] fits 2 frames; [1, 1] needs a blank between (3 frames); [1, 1, 2] needs 4.
    np.testing.assert_array_equal(ctc_feasible(labels, lengths, frames).numpy(), [True, False, True])
    logits = tf.Variable(np.random.default_rng(0).normal(size=(3, 4, 3)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = ctc_loss(labels, lengths, logits, frames)
        total = tf.reduce_sum(loss)
    gradient = tape.gradient(total, logits).numpy()
    loss = loss.numpy()
    assert loss[1] == 0.0 and loss[0] > 0 and loss[2] > 0
    assert np.isfinite(gradient).all() and (gradient[1] == 0).all() and (gradient[0] != 0).any()


def test_beam_search_agrees_with_greedy_when_peaked_and_finds_the_most_probable_labels_otherwise():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 5, size=(2, 12))
    peaked = np.full((2, 12, 5), -8.0, "float32")
    np.put_along_axis(peaked, frames[..., None], 8.0, axis=-1)
    assert beam_search_decode(peaked, [12, 9], beam_width=8) == greedy_decode(peaked, [12, 9])
    # Best path: blank blank (p .36) -> ""; but "a" sums to .64 over three paths.
    crafted = log_probs([[[.6, .4], [.6, .4]]])
    assert greedy_decode(crafted, [2]) == [[]]
    assert beam_search_decode(crafted, [2], beam_width=4) == [[1]]
