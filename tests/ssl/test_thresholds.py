"""Tests for `kerastl.ssl.thresholds`: FixedThreshold and FlexMatch's CurriculumThreshold (CPL).

The multi-step example below is worked out by hand (N = 6 unlabeled, C = 3, tau = 0.9):

call 1  idx [0 1 2]      labels [0 1 1]      maxp [.95 .5 .92]
        before: sel = [-1]*6, cnt = [6 0 0 0]: one bucket -> classwise_acc kept at [0 0 0]
        beta = 0 -> every threshold is 0 -> mask all 1
        select (maxp >= .9): idx 0 -> 0, idx 2 -> 1          sel = [0 -1 1 -1 -1 -1]
call 2  idx [3 4 5 1]    labels [0 2 1 1]    maxp [.91 .85 .2 .25]
        before: cnt = [4 1 1 0]; warmup acc = cnt[1:]/4 = [1/4 1/4 0]; no warmup /1 = [1 1 0]
        warmup thresholds 0.9*M(1/4) for labels 0, 1 and 0 for label 2:
            convex 0.9*(1/7) = .128571, linear .225, concave 0.9*log2(1.25) = .289735
        no warmup: M(1) = 1 for every mapping -> .9 (labels 0, 1), 0 (label 2)
        select: idx 3 -> 0                                   sel = [0 -1 1 0 -1 -1]
call 3  idx [0 2 5 4 3]  labels [2 0 1 1 1]  maxp [.93 .5 .4 .28 .2]
        before: cnt = [3 2 1 0]; warmup acc = [2/3 1/3 0]; no warmup acc = [1 1/2 0]
        warmup convex M(2/3) = 1/2, M(1/3) = 1/5   -> thr [0 .45 .18 .18 .18]
        warmup linear                              -> thr [0 .6  .3  .3  .3 ]
        warmup concave log2(5/3), log2(4/3)        -> thr [0 .663269 .373534 ...]
        no warmup convex M(1) = 1, M(1/2) = 1/3    -> thr [0 .9 .3 .3 .3]
        no warmup linear                           -> thr [0 .9 .45 .45 .45]
        no warmup concave log2(1.5) = .584963      -> thr [0 .9 .526466 ...]
        select: idx 0 -> 2 (overwrites 0); idx 3 (maxp .2) keeps 0: never reset
                                                             sel = [2 -1 1 0 -1 -1]
call 4  idx [1 4 5]      labels [0 1 2]      maxp [.99 .95 .92]
        before: cnt = [3 1 1 1]; warmup acc = [1/3 1/3 1/3]; no warmup acc = [1 1 1]
        thresholds: warmup convex .18, linear .3, concave .373534; no warmup .9 -> mask all 1
        select all                                           sel = [2 0 1 0 1 2]
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from kerastl.ssl.thresholds import CurriculumThreshold, FixedThreshold

N, C, TAU = 6, 3, 0.9

CALLS = [  # (max_probs, pseudo_labels, index)
    ([0.95, 0.5, 0.92], [0, 1, 1], [0, 1, 2]),
    ([0.91, 0.85, 0.2, 0.25], [0, 2, 1, 1], [3, 4, 5, 1]),
    ([0.93, 0.5, 0.4, 0.28, 0.2], [2, 0, 1, 1, 1], [0, 2, 5, 4, 3]),
    ([0.99, 0.95, 0.92], [0, 1, 2], [1, 4, 5]),
]

# selected_label after each call (independent of warmup and mapping: the fixed tau decides)
SELECTED = [
    [0, -1, 1, -1, -1, -1],
    [0, -1, 1, 0, -1, -1],
    [2, -1, 1, 0, -1, -1],
    [2, 0, 1, 0, 1, 2],
]
# counts = bincount(selected_label + 1) seen at the START of each call
COUNTS = [[6, 0, 0, 0], [4, 1, 1, 0], [3, 2, 1, 0], [3, 1, 1, 1]]
# classwise_acc (beta) used by each call's mask
ACC = {
    True: [[0, 0, 0], [1 / 4, 1 / 4, 0], [2 / 3, 1 / 3, 0], [1 / 3, 1 / 3, 1 / 3]],
    False: [[0, 0, 0], [1, 1, 0], [1, 1 / 2, 0], [1, 1, 1]],
}
MASKS = {
    (True, "convex"): [[1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1]],
    (True, "linear"): [[1, 1, 1], [1, 1, 0, 1], [1, 0, 1, 0, 0], [1, 1, 1]],
    (True, "concave"): [[1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1]],
    (False, "convex"): [[1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 1]],
    (False, "linear"): [[1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1]],
    (False, "concave"): [[1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1]],
}
# per-example thresholds tau * M(beta[label]) of calls 2 and 3, written out by hand
THRESHOLDS = {
    (True, "convex"): [[0.9 / 7, 0, 0.9 / 7, 0.9 / 7], [0, 0.45, 0.18, 0.18, 0.18]],
    (True, "linear"): [[0.225, 0, 0.225, 0.225], [0, 0.6, 0.3, 0.3, 0.3]],
    (True, "concave"): [[0.2897352853986263, 0, 0.2897352853986263, 0.2897352853986263],
                        [0, 0.6632690, 0.3735338, 0.3735338, 0.3735338]],
    (False, "convex"): [[0.9, 0, 0.9, 0.9], [0, 0.9, 0.3, 0.3, 0.3]],
    (False, "linear"): [[0.9, 0, 0.9, 0.9], [0, 0.9, 0.45, 0.45, 0.45]],
    (False, "concave"): [[0.9, 0, 0.9, 0.9], [0, 0.9, 0.5264663, 0.5264663, 0.5264663]],
}


def run(cpl, calls=CALLS, fn=None):
    """Feeds `calls` to `cpl` (through `fn` if given); returns masks, selected_label and acc per call."""
    fn = fn or cpl
    masks, selected, acc = [], [], []
    for maxp, labels, index in calls:
        mask = fn(tf.constant(maxp, tf.float32), tf.constant(labels, tf.int32), tf.constant(index, tf.int32))
        masks.append(mask.numpy().tolist())
        selected.append(cpl.selected_label.numpy().tolist())
        acc.append(cpl.classwise_acc.numpy().copy())
    return masks, selected, acc


# --------------------------------------------------------------------------------- hand example

@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("mapping", ["convex", "linear", "concave"])
def test_hand_computed_sequence(warmup, mapping):
    cpl = CurriculumThreshold(N, C, tau=TAU, warmup=warmup, mapping=mapping)
    assert cpl.selected_label.numpy().tolist() == [-1] * N
    np.testing.assert_array_equal(cpl.classwise_acc.numpy(), np.zeros(C, np.float32))
    for step, (maxp, labels, index) in enumerate(CALLS):
        # counts seen at the start of this call
        counts = np.bincount(cpl.selected_label.numpy() + 1, minlength=C + 1)
        np.testing.assert_array_equal(counts, COUNTS[step])
        # the per-example threshold the mask is built from, before this call touches the state
        beta = np.asarray(cpl.learning_effect())
        np.testing.assert_allclose(beta, ACC[warmup][step], atol=1e-6)
        if step in (1, 2):
            threshold = TAU * np.asarray(cpl.mapped(tf.constant(beta[labels], tf.float32)))
            np.testing.assert_allclose(threshold, THRESHOLDS[(warmup, mapping)][step - 1], atol=1e-6)
        mask = cpl(tf.constant(maxp, tf.float32), tf.constant(labels, tf.int32), tf.constant(index, tf.int32))
        assert mask.dtype == tf.float32
        np.testing.assert_array_equal(mask.numpy(), MASKS[(warmup, mapping)][step])
        np.testing.assert_allclose(cpl.classwise_acc.numpy(), ACC[warmup][step], atol=1e-6)
        assert cpl.selected_label.numpy().tolist() == SELECTED[step]
    # after the last call every entry has a class: cnt = [0 2 2 2], so both modes give beta = 1
    np.testing.assert_allclose(np.asarray(cpl.learning_effect()), [1.0, 1.0, 1.0], atol=1e-6)


def test_mappings_by_formula():
    x = np.array([0.0, 0.25, 0.5, 1 / 3, 2 / 3, 1.0], np.float32)
    expected = {"convex": x / (2 - x), "linear": x, "concave": np.log1p(x) / math.log(2)}
    for mapping, values in expected.items():
        cpl = CurriculumThreshold(4, 2, mapping=mapping)
        np.testing.assert_allclose(np.asarray(cpl.mapped(tf.constant(x))), values, atol=1e-6)
        # every mapping sends 0 -> 0 and 1 -> 1
        np.testing.assert_allclose(np.asarray(cpl.mapped(tf.constant([0.0, 1.0]))), [0.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="mapping"):
        CurriculumThreshold(4, 2, mapping="cubic")


def test_mask_uses_state_before_this_batch():
    """A batch whose own confident predictions would raise the threshold is masked with the old one."""
    cpl = CurriculumThreshold(4, 2, tau=0.9, warmup=True)
    # all four examples confidently class 0: after the update beta_0 would be 1 (threshold .9),
    # but the mask is computed from the all-unused state (beta 0, threshold 0)
    mask = cpl(tf.constant([0.95, 0.92, 0.91, 0.5]), tf.constant([0, 0, 0, 0]), tf.constant([0, 1, 2, 3]))
    np.testing.assert_array_equal(mask.numpy(), [1, 1, 1, 1])
    np.testing.assert_array_equal(cpl.classwise_acc.numpy(), [0, 0])
    assert cpl.selected_label.numpy().tolist() == [0, 0, 0, -1]
    # next call: cnt = [1 3 0] -> warmup beta = [1, 0] -> class 0 threshold .9, class 1 threshold 0
    mask = cpl(tf.constant([0.5, 0.5, 0.95]), tf.constant([0, 1, 0]), tf.constant([3, 3, 3]))
    np.testing.assert_array_equal(mask.numpy(), [0, 1, 1])
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [1.0, 0.0])


# ------------------------------------------------------------------------------- fixed-tau record

def test_only_fixed_tau_confident_predictions_are_recorded():
    cpl = CurriculumThreshold(5, 3, tau=0.9)
    below = float(np.nextafter(np.float32(0.9), np.float32(0)))
    cpl(tf.constant([0.9, below, 0.3, 1.0, 0.89]), tf.constant([2, 1, 0, 1, 2]), tf.constant([0, 1, 2, 3, 4]))
    # equality with tau counts (>=); the float just below does not
    assert cpl.selected_label.numpy().tolist() == [2, -1, -1, 1, -1]


def test_labels_are_overwritten_never_reset():
    cpl = CurriculumThreshold(3, 3, tau=0.9)
    cpl(tf.constant([0.95, 0.95]), tf.constant([1, 2]), tf.constant([0, 1]))
    assert cpl.selected_label.numpy().tolist() == [1, 2, -1]
    # unconfident predictions (even of another class) leave the recorded labels alone
    cpl(tf.constant([0.1, 0.5, 0.2]), tf.constant([0, 0, 0]), tf.constant([0, 1, 2]))
    assert cpl.selected_label.numpy().tolist() == [1, 2, -1]
    # a later confident prediction replaces the earlier label
    cpl(tf.constant([0.99]), tf.constant([0]), tf.constant([1]))
    assert cpl.selected_label.numpy().tolist() == [1, 0, -1]


def test_int64_inputs_and_empty_selection():
    cpl = CurriculumThreshold(3, 2, tau=0.9)
    mask = cpl(tf.constant([0.2, 0.3]), tf.constant([1, 0], tf.int64), tf.constant([2, 0], tf.int64))
    np.testing.assert_array_equal(mask.numpy(), [1, 1])
    assert cpl.selected_label.numpy().tolist() == [-1, -1, -1]


# ---------------------------------------------------------------------------- one-bucket freeze

def test_classwise_acc_frozen_while_all_entries_unused():
    cpl = CurriculumThreshold(3, 2, tau=0.9, warmup=True)
    cpl.classwise_acc.assign([0.5, 1.0])  # e.g. restored from somewhere: must not be overwritten
    # thresholds from the kept values: class 0 -> .9 * (.5/1.5) = .3, class 1 -> .9
    mask = cpl(tf.constant([0.31, 0.29, 0.89]), tf.constant([0, 0, 1]), tf.constant([0, 1, 2]))
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 0])
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [0.5, 1.0])
    assert cpl.selected_label.numpy().tolist() == [-1, -1, -1]


def test_classwise_acc_frozen_while_all_entries_one_class():
    cpl = CurriculumThreshold(3, 2, tau=0.9, warmup=True)
    cpl(tf.constant([0.95]), tf.constant([1]), tf.constant([0]))          # sel [1 -1 -1]
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [0.0, 0.0])
    cpl(tf.constant([0.95, 0.95]), tf.constant([1, 1]), tf.constant([1, 2]))  # cnt [2 0 1] -> [0, 1/2]
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [0.0, 0.5])
    assert cpl.selected_label.numpy().tolist() == [1, 1, 1]
    # cnt = [0 0 3]: every entry in one bucket -> kept at [0, 1/2] (not [0, 1])
    # class 1 threshold .9 * (.5/1.5) = .3
    mask = cpl(tf.constant([0.31, 0.29, 0.01]), tf.constant([1, 1, 0]), tf.constant([0, 1, 2]))
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [0.0, 0.5])
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1])
    # once the entries spread over two classes beta moves again: sel [0 1 1] -> [1/2, 1]
    cpl(tf.constant([0.99]), tf.constant([0]), tf.constant([0]))
    cpl(tf.constant([0.0]), tf.constant([0]), tf.constant([0]))
    np.testing.assert_allclose(cpl.classwise_acc.numpy(), [0.5, 1.0])


# ------------------------------------------------------------------------ graph mode and state

@pytest.mark.parametrize("warmup", [True, False])
def test_tf_function_matches_eager(warmup):
    eager = CurriculumThreshold(N, C, tau=TAU, warmup=warmup, mapping="concave")
    graph = CurriculumThreshold(N, C, tau=TAU, warmup=warmup, mapping="concave")
    fn = tf.function(graph, input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.int32),
                                             tf.TensorSpec([None], tf.int32)])
    masks_e, sel_e, acc_e = run(eager)
    masks_g, sel_g, acc_g = run(graph, fn=fn)
    assert masks_g == masks_e == MASKS[(warmup, "concave")]
    assert sel_g == sel_e == SELECTED
    np.testing.assert_allclose(np.stack(acc_g), np.stack(acc_e), atol=0)
    np.testing.assert_allclose(np.stack(acc_g), ACC[warmup], atol=1e-6)


def test_state_is_non_trainable_weights():
    cpl = CurriculumThreshold(N, C)
    assert cpl.trainable_weights == []
    names = sorted(v.name for v in cpl.non_trainable_weights)
    assert names == ["classwise_acc", "selected_label"]
    assert cpl.selected_label.dtype == "int32" and tuple(cpl.selected_label.shape) == (N,)
    assert cpl.classwise_acc.dtype == "float32" and tuple(cpl.classwise_acc.shape) == (C,)
    assert FixedThreshold(0.5).weights == []


def test_checkpoint_carries_state(tmp_path):
    cpl = CurriculumThreshold(N, C, tau=TAU, warmup=False, mapping="linear")
    run(cpl, CALLS[:3])
    path = tf.train.Checkpoint(threshold=cpl).write(str(tmp_path / "ckpt"))
    fresh = CurriculumThreshold(N, C, tau=TAU, warmup=False, mapping="linear")
    tf.train.Checkpoint(threshold=fresh).read(path).assert_consumed()
    assert fresh.selected_label.numpy().tolist() == SELECTED[2]
    np.testing.assert_allclose(fresh.classwise_acc.numpy(), ACC[False][2], atol=1e-6)
    # the restored threshold continues exactly like the original
    masks, selected, _ = run(fresh, CALLS[3:])
    assert masks == [MASKS[(False, "linear")][3]] and selected == [SELECTED[3]]


def test_config_round_trip_and_weights():
    import keras

    cpl = CurriculumThreshold(N, C, tau=0.7, warmup=False, mapping="concave", name="cpl")
    run(cpl, CALLS[:2])
    config = keras.saving.serialize_keras_object(cpl)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is CurriculumThreshold
    assert (clone.num_unlabeled, clone.num_classes, clone.tau, clone.warmup, clone.mapping, clone.name) == \
        (N, C, 0.7, False, "concave", "cpl")
    assert clone.selected_label.numpy().tolist() == [-1] * N  # the config carries no state...
    clone.set_weights(cpl.get_weights())                      # ...the weights do
    assert clone.selected_label.numpy().tolist() == cpl.selected_label.numpy().tolist()
    np.testing.assert_array_equal(clone.classwise_acc.numpy(), cpl.classwise_acc.numpy())
    fixed = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(FixedThreshold(0.8)))
    assert type(fixed) is FixedThreshold and fixed.tau == 0.8


# ------------------------------------------------------------------------------ FixedThreshold

def test_fixed_threshold_is_max_probs_at_least_tau():
    below = float(np.nextafter(np.float32(0.95), np.float32(0)))
    threshold = FixedThreshold(0.95)
    mask = threshold(tf.constant([0.95, below, 0.99, 0.0, 1.0]), tf.constant([0, 1, 2, 0, 1]),
                     tf.constant([0, 1, 2, 3, 4]))
    assert mask.dtype == tf.float32
    np.testing.assert_array_equal(mask.numpy(), [1, 0, 1, 0, 1])
    # stateless: the same call gives the same mask, and the default tau is 0.95
    assert FixedThreshold().tau == 0.95
    np.testing.assert_array_equal(FixedThreshold(0.0)(tf.constant([0.0, 0.3]), tf.constant([0, 0]),
                                                      tf.constant([0, 1])).numpy(), [1, 1])
