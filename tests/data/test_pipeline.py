"""Tests for `kerastl.data.pipeline`: deterministic, resumable tf.data streams.

Most tests use "tagged" images whose every pixel is the image's own index, so a batch can be
checked against the indices and labels it claims to hold.
"""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.augment.weak import weak_augment
from kerastl.data.pipeline import (eval_dataset, index_stream, labeled_stream, ssl_stream, to_float_images,
                                   unlabeled_stream)


def tagged(n, shape=(4, 4, 1)):
    """uint8 images, image i filled with the value i (n <= 256)."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1), (n, *shape)).copy()


def take(ds, count):
    return [tf.nest.map_structure(lambda t: t.numpy(), el) for el in ds.take(count)]


def identity(image, seed):
    return image


def invert(image, seed):
    return 1.0 - image


def strong_like(image, seed):
    """A seeded random view (noise on top of the weak view), different from `weak_augment`."""
    noise = tf.random.stateless_uniform(tf.shape(image), seed=seed, maxval=0.1)
    return tf.clip_by_value(weak_augment(image, seed) + noise, 0.0, 1.0)


# ----------------------------------------------------------------------------------- index_stream


def test_index_stream_epochs_are_permutations_and_differ():
    n = 10
    pairs = take(index_stream(n, seed=3), 5 * n)
    positions = [p for p, _ in pairs]
    indices = np.array([i for _, i in pairs]).reshape(5, n)
    assert positions == list(range(5 * n))
    for epoch in indices:
        assert sorted(epoch.tolist()) == list(range(n))
    # reshuffled every epoch: no two of these 5 epochs share an order
    assert len({tuple(e) for e in indices}) == 5
    # and it is shuffled at all
    assert any(e.tolist() != list(range(n)) for e in indices)


def test_index_stream_matches_stateless_shuffle_definition():
    n, seed = 7, 11
    got = np.array([i for _, i in take(index_stream(n, seed), 2 * n)]).reshape(2, n)
    for epoch in range(2):
        expected = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.constant([seed, epoch], tf.int64)).numpy()
        assert got[epoch].tolist() == expected.tolist()


def test_index_stream_depends_on_seed():
    a = take(index_stream(20, seed=0), 20)
    b = take(index_stream(20, seed=0), 20)
    c = take(index_stream(20, seed=1), 20)
    assert a == b
    assert [i for _, i in a] != [i for _, i in c]


@pytest.mark.parametrize("start", [0, 1, 6, 7, 8, 13, 14, 23])
def test_index_stream_start_equals_skip(start):
    n, count = 7, 12
    full = take(index_stream(n, seed=5), start + count)
    resumed = take(index_stream(n, seed=5, start=start), count)
    assert resumed == full[start:]
    assert resumed[0][0] == start  # positions count from the beginning of the stream


def test_index_stream_needs_an_example():
    with pytest.raises(ValueError):
        index_stream(0, seed=0)


# --------------------------------------------------------------------------------- labeled_stream


def test_labeled_stream_pairs_images_with_their_labels():
    n, batch = 23, 5
    x = tagged(n)
    y = (np.arange(n) * 7) % 4
    batches = take(labeled_stream(x, y, batch, augment=None, seed=2), 10)  # 50 elements: > 2 epochs
    order = [i for _, i in take(index_stream(n, seed=2), 10 * batch)]
    seen = []
    for images, labels in batches:
        assert images.shape == (batch, 4, 4, 1) and images.dtype == np.float32
        assert labels.shape == (batch,) and labels.dtype == np.int64
        assert 0.0 <= images.min() and images.max() <= 1.0
        ids = np.rint(images[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_allclose(images, x[ids].astype(np.float32) / 255.0, rtol=0, atol=1e-7)
        assert labels.tolist() == y[ids].tolist()
        seen.extend(ids.tolist())
    assert seen == order  # the stream walks the index stream's order


def test_labeled_stream_applies_augment_with_position_seeds():
    def seed_view(image, seed):
        # encodes the element seed in the image: (salt, position)
        return tf.fill(tf.shape(image), tf.cast(seed[0] * 1000 + seed[1], tf.float32))

    x, y = tagged(6), np.arange(6) % 2
    batches = take(labeled_stream(x, y, 4, augment=seed_view, seed=3), 3)
    values = np.concatenate([images[:, 0, 0, 0] for images, _ in batches])
    salt = 3 * 2 + 1
    assert values.tolist() == [salt * 1000 + p for p in range(12)]


def test_labeled_stream_float_images_are_only_cast():
    x = tagged(8).astype(np.float32) / 10.0  # values 0.0 .. 0.7
    (images, labels), = take(labeled_stream(x, np.arange(8), 8, seed=0), 1)
    np.testing.assert_allclose(images, x[labels])


def test_labeled_stream_start_step():
    x, y = tagged(9), np.arange(9) % 3
    full = take(labeled_stream(x, y, 4, augment=weak_augment, seed=1), 6)
    resumed = take(labeled_stream(x, y, 4, augment=weak_augment, seed=1, start_step=4), 2)
    for (xa, ya), (xb, yb) in zip(full[4:], resumed):
        assert ya.tolist() == yb.tolist()
        np.testing.assert_allclose(xa, xb)


# ------------------------------------------------------------------------------- unlabeled_stream


def test_unlabeled_stream_indices_match_both_views():
    n, batch = 17, 6
    x = tagged(n)
    batches = take(unlabeled_stream(x, batch, (identity, invert), seed=4), 6)
    expected_order = [i for _, i in take(index_stream(n, seed=4 + 7919), 6 * batch)]
    got_order = []
    for idx, weak, strong in batches:
        assert idx.shape == (batch,) and idx.dtype == np.int64
        assert weak.shape == strong.shape == (batch, 4, 4, 1)
        expected = x[idx].astype(np.float32) / 255.0
        np.testing.assert_allclose(weak, expected, atol=1e-7)
        # both views come from the same element
        np.testing.assert_allclose(strong, 1.0 - weak, atol=1e-6)
        got_order.extend(idx.tolist())
    assert got_order == expected_order
    for epoch in range(2):
        assert sorted(got_order[epoch * n:(epoch + 1) * n]) == list(range(n))


def test_unlabeled_stream_without_strong_view():
    x = tagged(5)
    batches = take(unlabeled_stream(x, 5, (invert,), seed=0), 2)
    for element in batches:
        assert len(element) == 2
        idx, weak = element
        assert sorted(idx.tolist()) == list(range(5))
        np.testing.assert_allclose(weak, 1.0 - x[idx] / 255.0, atol=1e-6)


def test_unlabeled_stream_views_get_different_seeds():
    def seed_view(image, seed):
        return tf.fill(tf.shape(image), tf.cast(seed[1] % 100003, tf.float32))

    (idx, weak, strong), = take(unlabeled_stream(tagged(8), 8, (seed_view, seed_view), seed=0), 1)
    weak_seeds, strong_seeds = weak[:, 0, 0, 0], strong[:, 0, 0, 0]
    assert np.all(weak_seeds != strong_seeds)          # weak and strong seeds differ
    assert len(set(weak_seeds.tolist())) == 8          # and differ between elements


def test_unlabeled_stream_weak_augment_reproducible_by_seed():
    x = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), dtype=np.uint8)

    def run(seed):
        return take(unlabeled_stream(x, 4, (weak_augment, strong_like), seed=seed), 3)

    a, b, c = run(5), run(5), run(6)
    for (ia, wa, sa), (ib, wb, sb) in zip(a, b):
        assert ia.tolist() == ib.tolist()
        np.testing.assert_array_equal(wa, wb)
        np.testing.assert_array_equal(sa, sb)
    assert any(ia.tolist() != ic.tolist() for (ia, _, _), (ic, _, _) in zip(a, c))
    assert any(not np.allclose(wa, wc) for (_, wa, _), (_, wc, _) in zip(a, c))
    # the views stay images in [0, 1], the two views of a batch are not the same, and the weak
    # view is the indexed image shifted by at most the pad (2 for 16x16), possibly mirrored
    for idx, weak, strong in a:
        assert weak.shape == strong.shape == (4, 16, 16, 3)
        assert 0.0 <= weak.min() and weak.max() <= 1.0 and 0.0 <= strong.min() and strong.max() <= 1.0
        assert not np.allclose(weak, strong)
        for i, view in zip(idx, weak):
            assert is_shifted_view(view, x[i].astype(np.float32) / 255.0, pad=2)


def is_shifted_view(view, image, pad):
    h, w = image.shape[:2]
    for v in (view, view[:, ::-1]):
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.allclose(v[pad:h - pad, pad:w - pad],
                               image[pad + dy:h - pad + dy, pad + dx:w - pad + dx], atol=1e-7):
                    return True
    return False


# ------------------------------------------------------------------------------------- ssl_stream


@pytest.mark.parametrize("k", [1, 3, 7])
def test_ssl_stream_resume_gives_batch_k(k):
    rng = np.random.default_rng(1)
    x_lb = rng.integers(0, 256, (10, 12, 12, 3), dtype=np.uint8)
    y_lb = rng.integers(0, 4, 10)
    x_ulb = rng.integers(0, 256, (25, 12, 12, 3), dtype=np.uint8)
    kwargs = dict(batch_size=3, uratio=2, weak=weak_augment, unlabeled_views=(weak_augment, strong_like), seed=9)
    full = take(ssl_stream(x_lb, y_lb, x_ulb, **kwargs), k + 2)
    resumed = take(ssl_stream(x_lb, y_lb, x_ulb, start_step=k, **kwargs), 2)
    for ((xa, ya), (ia, wa, sa)), ((xb, yb), (ib, wb, sb)) in zip(full[k:], resumed):
        assert ya.tolist() == yb.tolist()
        assert ia.tolist() == ib.tolist()
        np.testing.assert_allclose(xa, xb, atol=1e-6)
        np.testing.assert_allclose(wa, wb, atol=1e-6)
        np.testing.assert_allclose(sa, sb, atol=1e-6)


def test_ssl_stream_structure_and_pairing():
    x_lb, y_lb = tagged(8, (6, 6, 1)), np.arange(8) % 2
    x_ulb = tagged(30, (6, 6, 1))
    (xl, yl), (idx, weak, strong) = take(
        ssl_stream(x_lb, y_lb, x_ulb, batch_size=4, uratio=3, weak=identity, unlabeled_views=(identity, invert), seed=0), 1)[0]
    assert xl.shape == (4, 6, 6, 1) and yl.shape == (4,)
    assert idx.shape == (12,) and weak.shape == strong.shape == (12, 6, 6, 1)
    ids = np.rint(xl[:, 0, 0, 0] * 255).astype(int)
    assert yl.tolist() == y_lb[ids].tolist()
    np.testing.assert_allclose(weak, x_ulb[idx] / 255.0, atol=1e-7)
    np.testing.assert_allclose(strong, 1.0 - weak, atol=1e-6)


# ----------------------------------------------------------------------------------- eval_dataset


def test_eval_dataset_keeps_order_and_covers_once():
    x = tagged(10, (3, 3, 1))
    y = np.arange(10)[::-1] % 3
    batches = take(eval_dataset(x, y, batch_size=4), 10)
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(images, x / 255.0, atol=1e-7)
    assert labels.tolist() == y.tolist()


def test_eval_dataset_without_labels():
    x = tagged(7, (2, 2, 3))
    batches = take(eval_dataset(x, batch_size=3), 10)
    assert [b.shape[0] for b in batches] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate(batches), x / 255.0, atol=1e-7)


def test_to_float_images():
    assert to_float_images(tf.constant([0, 51, 255], tf.uint8)).numpy().tolist() == pytest.approx([0.0, 0.2, 1.0])
    assert to_float_images(tf.constant([0.25], tf.float64)).dtype == tf.float32
