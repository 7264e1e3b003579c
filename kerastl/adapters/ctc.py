"""CTC with the blank at id 0: loss, greedy decoding and beam search.

The vocabularies put the CTC blank at id 0 (`kerastl.data.vocabulary`). TensorFlow's CTC
kernels want the blank as the LAST class, so the loss and the beam search move class 0 to the
end of the logits (and labels 1..V-1 down by one), then move decoded ids back up.

Example:
>>> import numpy as np
>>> logits = np.log(np.array([[[.1, .8, .1], [.1, .8, .1], [.8, .1, .1], [.1, .8, .1]]], "float32"))
>>> greedy_decode(logits, [4])      # a a _ a -> a a (repeats collapse, blanks separate)
[[1, 1]]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def _blank_last(logits):
    """Moves class 0 (the blank) to the end of the class axis."""
    return tf.concat([logits[..., 1:], logits[..., :1]], axis=-1)


def _lengths(lengths, batch: int):
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.shape[0] != batch:
        raise ValueError(f"{lengths.shape[0]} lengths for a batch of {batch}")
    return lengths


def ctc_loss(labels, label_lengths, logits, logit_lengths):
    """Per-utterance CTC negative log-likelihood `[B]` (blank = id 0).

    Args:
        labels: int `[B, L]`, padded (the padding value is ignored beyond label_lengths).
        label_lengths: int `[B]`.
        logits: float `[B, T, V]` (unnormalised; softmax over V is applied inside).
        logit_lengths: int `[B]`, valid frames per utterance.

    An utterance whose transcript cannot fit its frames (`ctc_feasible` is False: fewer
    frames than labels plus repeated neighbours) gets loss 0 and no gradient, so one bad
    utterance does not turn a batch's loss into infinity; data pipelines should drop them.
    """
    logits = tf.cast(logits, tf.float32)
    labels = tf.cast(labels, tf.int32)
    logit_lengths = tf.cast(logit_lengths, tf.int32)
    feasible = ctc_feasible(labels, label_lengths, logit_lengths)
    # Infeasible utterances are scored as the one-character transcript "1" over at least one
    # frame (finite; the kernel refuses empty ones), then masked out below.
    labels = tf.where(feasible[:, None], labels, 1)
    label_lengths = tf.where(feasible, tf.cast(label_lengths, tf.int32), 1)
    logit_lengths = tf.where(feasible, logit_lengths, tf.maximum(logit_lengths, 1))
    valid = tf.sequence_mask(label_lengths, tf.shape(labels)[1])
    # Sparse labels select TF's CTC kernel (several times faster on CPU than the dense
    # implementation); in blank-last ids every character moves down by one.
    indices = tf.where(valid)
    sparse = tf.SparseTensor(indices, tf.gather_nd(labels, indices) - 1, tf.cast(tf.shape(labels), tf.int64))
    loss = tf.compat.v1.nn.ctc_loss(sparse, tf.transpose(_blank_last(logits), [1, 0, 2]), logit_lengths,
                                    preprocess_collapse_repeated=False, ctc_merge_repeated=True,
                                    ignore_longer_outputs_than_inputs=True, time_major=True)
    return tf.where(feasible, loss, 0.0)


def ctc_feasible(labels, label_lengths, logit_lengths):
    """Bool `[B]`: whether each transcript fits its frames (labels + repeated neighbours <= frames).

    Works on tensors inside tf.data (e.g. `dataset.filter` on single examples with `[None]`
    slices) and in eager code.
    """
    labels = tf.cast(labels, tf.int32)
    label_lengths = tf.cast(label_lengths, tf.int32)
    valid = tf.sequence_mask(label_lengths, tf.shape(labels)[1])
    repeats = tf.logical_and(tf.equal(labels[:, 1:], labels[:, :-1]), valid[:, 1:])
    needed = label_lengths + tf.reduce_sum(tf.cast(repeats, tf.int32), axis=1)
    return needed <= tf.cast(logit_lengths, tf.int32)


def greedy_decode(logits, logit_lengths) -> list[list[int]]:
    """Best path per utterance: argmax per frame, repeats merged, blanks (0) removed.

    Returns python lists of ids (the decoding used for CER/WER).
    """
    best = np.argmax(np.asarray(logits), axis=-1)
    lengths = _lengths(logit_lengths, best.shape[0])
    decoded = []
    for row, length in zip(best, lengths):
        row = row[:length]
        keep = (row != 0) & np.concatenate([[True], row[1:] != row[:-1]])
        decoded.append(row[keep].astype(int).tolist())
    return decoded


def greedy_decode_graph(logits, logit_lengths):
    """`greedy_decode` in TF ops (for SavedModel signatures): int32 `[B, N]`, each row the
    decoded ids left-aligned and padded with 0 (the blank, which text decoding ignores)."""
    best = tf.argmax(logits, axis=-1, output_type=tf.int32)
    valid = tf.sequence_mask(logit_lengths, tf.shape(best)[1])
    previous = tf.concat([tf.fill([tf.shape(best)[0], 1], -1), best[:, :-1]], axis=1)
    keep = valid & tf.not_equal(best, 0) & tf.not_equal(best, previous)
    return tf.ragged.boolean_mask(best, keep).to_tensor(0)


def beam_search_decode(logits, logit_lengths, beam_width: int = 10) -> list[list[int]]:
    """CTC prefix beam search (TF's decoder; sums the probability of all paths of a label
    sequence, unlike the best path), returning the most probable id sequence per utterance."""
    logits = tf.convert_to_tensor(logits, tf.float32)
    lengths = _lengths(logit_lengths, int(logits.shape[0]))
    decoded, _ = tf.nn.ctc_beam_search_decoder(tf.transpose(_blank_last(logits), [1, 0, 2]),
                                               tf.constant(lengths, tf.int32), beam_width=int(beam_width),
                                               top_paths=1)
    rows = tf.RaggedTensor.from_sparse(decoded[0]).to_list()
    rows += [[] for _ in range(len(lengths) - len(rows))]    # trailing empty results
    return [[int(i) + 1 for i in row] for row in rows]
