"""Seeded, reproducible splits: stratified held-out sets and balanced labeled subsets."""

from __future__ import annotations

import numpy as np

from kerastl.errors import InputError


def stratified_holdout(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits indices into (keep, held_out) with `fraction` of every class held out.

    Each class c with n_c examples gives round(fraction * n_c) of them (at least one when
    n_c > 1) to the held-out set, chosen by a NumPy generator seeded with `seed`.

    Example:
    >>> keep, test = stratified_holdout(np.array([0, 0, 0, 0, 1, 1, 1, 1]), 0.25, seed=0)
    >>> len(keep), len(test)
    (6, 2)
    """
    if not 0.0 < fraction < 1.0:
        raise InputError(f"held-out fraction {fraction}, expected a number strictly between 0 and 1")
    rng = np.random.default_rng(seed)
    keep, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_held = int(round(fraction * len(idx)))
        if len(idx) > 1:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        keep.append(idx[n_held:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(held))


def labeled_unlabeled_split(
    y: np.ndarray,
    num_labels: int,
    num_classes: int,
    seed: int,
    include_labeled_in_unlabeled: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Chooses `num_labels` labeled examples, balanced over classes, and the unlabeled rest.

    Every class gets `num_labels // num_classes` examples drawn without replacement by a
    generator seeded with `seed`, so the same (labels, seed) always gives the same subset.
    The unlabeled set is every training example (TorchSSL's convention: the labeled images
    are in it too) unless `include_labeled_in_unlabeled=False`.

    Returns:
        (labeled_idx, unlabeled_idx): sorted int64 indices into `y`.

    Example:
    >>> y = np.repeat(np.arange(3), 5)
    >>> lb, ulb = labeled_unlabeled_split(y, num_labels=6, num_classes=3, seed=1)
    >>> np.bincount(y[lb]).tolist(), len(ulb)
    ([2, 2, 2], 15)
    """
    if num_labels <= 0 or num_labels % num_classes:
        raise InputError(f"--num-labels {num_labels}: expected a positive multiple of the "
                         f"{num_classes} classes (the labels are balanced over classes)")
    per_class = num_labels // num_classes
    counts = np.bincount(y, minlength=num_classes)
    short = [c for c in range(num_classes) if counts[c] < per_class]
    if short:
        c = short[0]
        raise InputError(f"--num-labels {num_labels} asks for {per_class} labels per class, but class "
                         f"{c} has only {counts[c]} training examples (classes short: {len(short)})")
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False)
                              for c in range(num_classes)])
    labeled = np.sort(labeled).astype(np.int64)
    if include_labeled_in_unlabeled:
        unlabeled = np.arange(len(y), dtype=np.int64)
    else:
        unlabeled = np.setdiff1d(np.arange(len(y), dtype=np.int64), labeled)
    return labeled, unlabeled
