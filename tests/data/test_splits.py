"""Tests for `kerastl.data.splits`: seeded stratified held-out sets and balanced labeled subsets."""

import numpy as np
import pytest

from kerastl.data.splits import labeled_unlabeled_split, stratified_holdout
from kerastl.errors import InputError

# Unbalanced classes: 10, 7, 20 and 3 examples, interleaved so indices are not grouped by class.
COUNTS = {0: 10, 1: 7, 2: 20, 3: 3}
Y = np.random.default_rng(123).permutation(np.repeat(list(COUNTS), list(COUNTS.values())))


# ----------------------------------------------------------------------------- stratified_holdout


@pytest.mark.parametrize("fraction, expected_held", [
    # round(f * n_c) per class, n_c = 10, 7, 20, 3 (Python rounds half to even: 0.5 * 7 = 3.5 -> 4)
    (0.2, {0: 2, 1: 1, 2: 4, 3: 1}),     # 1.4 -> 1, 0.6 -> 1
    (0.5, {0: 5, 1: 4, 2: 10, 3: 2}),    # 3.5 -> 4, 1.5 -> 2
    (0.1, {0: 1, 1: 1, 2: 2, 3: 1}),     # 0.7 -> 1, 0.3 -> 0 but at least one
    (0.9, {0: 9, 1: 6, 2: 18, 3: 2}),    # 2.7 -> 3 but at most n_c - 1 = 2
])
def test_holdout_per_class_counts(fraction, expected_held):
    keep, held = stratified_holdout(Y, fraction, seed=0)
    assert {c: int(np.sum(Y[held] == c)) for c in COUNTS} == expected_held
    assert {c: int(np.sum(Y[keep] == c)) for c in COUNTS} == {c: COUNTS[c] - expected_held[c] for c in COUNTS}


def test_holdout_docstring_example():
    keep, held = stratified_holdout(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, seed=0)
    assert (len(keep), len(held)) == (6, 2)
    assert sorted(np.array([0, 0, 0, 0, 1, 1, 1, 1])[held].tolist()) == [0, 1]


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_holdout_is_a_sorted_disjoint_cover(seed):
    keep, held = stratified_holdout(Y, 0.3, seed=seed)
    assert np.intersect1d(keep, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(Y)))
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)


def test_holdout_same_seed_same_split_other_seed_other_split():
    keep_a, held_a = stratified_holdout(Y, 0.3, seed=5)
    keep_b, held_b = stratified_holdout(Y, 0.3, seed=5)
    assert np.array_equal(keep_a, keep_b) and np.array_equal(held_a, held_b)
    keep_c, held_c = stratified_holdout(Y, 0.3, seed=6)
    assert not np.array_equal(held_a, held_c)
    assert len(held_a) == len(held_c)  # same per-class counts, different members


def test_holdout_single_example_class_is_kept():
    # A class with one example holds out round(f * 1); with f < 0.5 that is 0.
    y = np.array([0, 0, 0, 0, 1])
    keep, held = stratified_holdout(y, 0.25, seed=0)
    assert 4 in keep and y[held].tolist() == [0]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_holdout_fraction_outside_open_interval(fraction):
    with pytest.raises(InputError, match="strictly between 0 and 1"):
        stratified_holdout(Y, fraction, seed=0)


# ------------------------------------------------------------------------ labeled_unlabeled_split

Y_BAL = np.random.default_rng(7).permutation(np.repeat(np.arange(4), [6, 9, 5, 12]))


@pytest.mark.parametrize("num_labels", [4, 12, 20])
def test_labeled_exactly_per_class_sorted_int64(num_labels):
    labeled, unlabeled = labeled_unlabeled_split(Y_BAL, num_labels, num_classes=4, seed=3)
    assert labeled.dtype == np.int64 and unlabeled.dtype == np.int64
    assert len(labeled) == num_labels
    assert np.bincount(Y_BAL[labeled], minlength=4).tolist() == [num_labels // 4] * 4
    assert np.all(np.diff(labeled) > 0)          # sorted, no duplicates
    assert labeled.min() >= 0 and labeled.max() < len(Y_BAL)
    assert np.array_equal(unlabeled, np.arange(len(Y_BAL)))  # default: every example


def test_labeled_docstring_example():
    y = np.repeat(np.arange(3), 5)
    labeled, unlabeled = labeled_unlabeled_split(y, num_labels=6, num_classes=3, seed=1)
    assert np.bincount(y[labeled]).tolist() == [2, 2, 2]
    assert len(unlabeled) == 15


def test_labeled_reproducible_by_seed():
    a, _ = labeled_unlabeled_split(Y_BAL, 8, 4, seed=11)
    b, _ = labeled_unlabeled_split(Y_BAL, 8, 4, seed=11)
    assert np.array_equal(a, b)
    others = [labeled_unlabeled_split(Y_BAL, 8, 4, seed=s)[0] for s in (12, 13, 14)]
    assert any(not np.array_equal(a, o) for o in others)


def test_unlabeled_excludes_labeled_when_asked():
    labeled, unlabeled = labeled_unlabeled_split(Y_BAL, 8, 4, seed=2, include_labeled_in_unlabeled=False)
    labeled_all, _ = labeled_unlabeled_split(Y_BAL, 8, 4, seed=2)
    assert np.array_equal(labeled, labeled_all)  # the flag does not change the labeled subset
    assert np.intersect1d(labeled, unlabeled).size == 0
    assert np.array_equal(np.sort(np.concatenate([labeled, unlabeled])), np.arange(len(Y_BAL)))
    assert len(unlabeled) == len(Y_BAL) - 8 and unlabeled.dtype == np.int64
    assert np.all(np.diff(unlabeled) > 0)


def test_all_examples_of_smallest_class_can_be_labeled():
    labeled, unlabeled = labeled_unlabeled_split(Y_BAL, 20, 4, seed=0, include_labeled_in_unlabeled=False)
    assert np.array_equal(np.sort(labeled[Y_BAL[labeled] == 2]), np.flatnonzero(Y_BAL == 2))
    assert not np.any(Y_BAL[unlabeled] == 2)


@pytest.mark.parametrize("num_labels", [6, 5, 0, -4])
def test_num_labels_not_a_positive_multiple_of_classes(num_labels):
    with pytest.raises(InputError, match=rf"--num-labels {num_labels}: expected a positive multiple of the 4 classes"):
        labeled_unlabeled_split(Y_BAL, num_labels, 4, seed=0)


def test_more_labels_per_class_than_a_class_has():
    # 6 per class: class 2 has only 5 examples (class 0 has exactly 6 and is fine).
    with pytest.raises(InputError) as info:
        labeled_unlabeled_split(Y_BAL, 24, 4, seed=0)
    message = str(info.value)
    assert "--num-labels 24" in message
    assert "6 labels per class" in message
    assert "class 2 has only 5 training examples" in message
    assert "classes short: 1" in message


def test_first_short_class_is_named():
    # 10 per class: classes 0 (6), 1 (9) and 2 (5) are short; the message names class 0.
    with pytest.raises(InputError, match=r"class 0 has only 6 training examples \(classes short: 3\)"):
        labeled_unlabeled_split(Y_BAL, 40, 4, seed=0)
