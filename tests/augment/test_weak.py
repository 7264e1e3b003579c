"""Tests for `kerastl.augment.weak.weak_augment`: reflect-pad, random crop, optional flip."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.augment.weak import weak_augment

SEEDS = range(200)


def seed(s, salt=0):
    return tf.constant([salt, s], tf.int64)


def distinct_image(height, width, channels):
    """float32 image in [0, 1) with every value distinct (so a crop can be located)."""
    size = height * width * channels
    return (np.arange(size, dtype=np.float32) / size).reshape(height, width, channels)


def reflect(k, n):
    """Index into a side of length n after REFLECT padding (edge not repeated)."""
    if k < 0:
        return -k
    if k >= n:
        return 2 * (n - 1) - k
    return k


def locate(out, image, pad):
    """Every (dy, dx, flipped) with |dy|, |dx| <= pad such that the centre of `out` (unflipped
    if `flipped`) is `image` shifted by (dy, dx)."""
    h, w = image.shape[:2]
    found = []
    for flipped in (False, True):
        o = out[:, ::-1] if flipped else out
        centre = o[pad:h - pad, pad:w - pad]
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                if np.array_equal(centre, image[pad + dy:h - pad + dy, pad + dx:w - pad + dx]):
                    found.append((dy, dx, flipped))
    return found


def expected_view(image, dy, dx, flipped):
    """The whole view a crop at shift (dy, dx) of the reflect-padded image gives."""
    h, w = image.shape[:2]
    rows = [reflect(i + dy, h) for i in range(h)]
    cols = [reflect(j + dx, w) for j in range(w)]
    view = image[rows][:, cols]
    return view[:, ::-1] if flipped else view


def augment(image, s, **kwargs):
    return weak_augment(tf.constant(image), seed(s), **kwargs).numpy()


@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1), (16, 24, 3)])
def test_shape_and_dtype_kept(shape):
    out = weak_augment(tf.constant(distinct_image(*shape)), seed(0))
    assert out.shape == shape and out.dtype == tf.float32


def test_docstring_example():
    assert weak_augment(tf.zeros([32, 32, 3]), seed=tf.constant([0, 1], tf.int64)).shape == (32, 32, 3)


def test_deterministic_per_seed():
    image = distinct_image(32, 32, 3)
    for s in range(5):
        np.testing.assert_array_equal(augment(image, s), augment(image, s))
        np.testing.assert_array_equal(weak_augment(tf.constant(image), seed(s, salt=9)).numpy(),
                                      weak_augment(tf.constant(image), seed(s, salt=9)).numpy())
    outs = [augment(image, s) for s in range(10)]
    assert len({o.tobytes() for o in outs}) > 5


@pytest.mark.parametrize("shape, pad", [((32, 32, 3), 4), ((28, 28, 1), 4), ((16, 16, 3), 2)])
def test_output_is_a_shifted_possibly_flipped_reflect_padded_crop(shape, pad):
    image = distinct_image(*shape)
    shifts, flips = set(), 0
    for s in SEEDS:
        out = augment(image, s)
        found = locate(out, image, pad)
        assert len(found) == 1, f"seed {s}: centre of the view found at {found}"
        dy, dx, flipped = found[0]
        # the whole view, borders included, is the crop of the reflect-padded image
        np.testing.assert_array_equal(out, expected_view(image, dy, dx, flipped))
        shifts.add((dy, dx))
        flips += flipped
    # every shift within +-pad occurs (and no larger one could have been found)
    assert {dy for dy, _ in shifts} == set(range(-pad, pad + 1))
    assert {dx for _, dx in shifts} == set(range(-pad, pad + 1))
    assert 0.35 * len(SEEDS) < flips < 0.65 * len(SEEDS)


def test_pad_fraction_sets_the_largest_shift():
    image = distinct_image(32, 32, 1)
    dys = set()
    for s in range(100):
        found = locate(augment(image, s, pad_fraction=0.0625, flip=False), image, 2)
        assert len(found) == 1 and not found[0][2]
        dys.add(found[0][0])
    assert dys == {-2, -1, 0, 1, 2}


def test_no_flip_never_mirrors():
    # left half 0, right half 1: a shift of at most 4 keeps column 0 at 0 and column 31 at 1,
    # so only a mirror could swap them.
    halves = np.zeros((32, 32, 3), np.float32)
    halves[:, 16:] = 1.0
    distinct = distinct_image(32, 32, 3)
    for s in SEEDS:
        out = augment(halves, s, flip=False)
        assert np.all(out[:, 0] == 0.0) and np.all(out[:, -1] == 1.0)
        # columns stay ordered: 0s then 1s, with the boundary moved by at most 4
        boundary = int(np.argmax(out[0, :, 0]))
        assert 12 <= boundary <= 20 and np.all(out[:, :boundary] == 0) and np.all(out[:, boundary:] == 1)
        found = locate(augment(distinct, s, flip=False), distinct, 4)
        assert len(found) == 1 and found[0][2] is False


def test_flip_gives_both_orientations():
    halves = np.zeros((32, 32, 1), np.float32)
    halves[:, 16:] = 1.0
    mirrored = 0
    for s in SEEDS:
        out = augment(halves, s)
        left, right = out[:, 0, 0], out[:, -1, 0]
        assert (np.all(left == 0) and np.all(right == 1)) or (np.all(left == 1) and np.all(right == 0))
        mirrored += bool(left[0] == 1)
    assert 0.35 * len(SEEDS) < mirrored < 0.65 * len(SEEDS)


def test_reflect_padding_at_maximal_shift():
    # Rows are constant (row r holds (r + 1) / 32), so flips do not matter and the row values
    # of the view tell where each row came from; zero padding would show up as 0.
    h = 32
    image = np.repeat(((np.arange(h, dtype=np.float32) + 1) / h)[:, None, None], 32, axis=1)
    image = np.repeat(image, 3, axis=2)
    row_of = {}
    for s in SEEDS:
        out = augment(image, s)
        assert np.all(out == out[:, :1]), "rows stay constant"
        rows = np.rint(out[:, 0, 0] * h).astype(int) - 1
        assert out.min() > 0, "no zero padding"
        dy = rows[h // 2] - h // 2
        row_of.setdefault(dy, rows.tolist())
    assert set(row_of) == set(range(-4, 5))
    # crop at the top of the padded image: rows 4, 3, 2, 1 (reflected, edge not repeated), then 0, 1, ...
    assert row_of[-4] == [4, 3, 2, 1] + list(range(0, 28))
    # crop at the bottom: ..., 30, 31, then 30, 29, 28, 27
    assert row_of[4] == list(range(4, 32)) + [30, 29, 28, 27]
    assert row_of[0] == list(range(32))


def test_reflect_padding_horizontally_without_flip():
    w = 28
    image = np.repeat(((np.arange(w, dtype=np.float32) + 1) / w)[None, :, None], 28, axis=0)
    cols_of = {}
    for s in SEEDS:
        out = augment(image, s, flip=False)
        assert out.min() > 0
        cols = np.rint(out[0, :, 0] * w).astype(int) - 1
        cols_of.setdefault(cols[w // 2] - w // 2, cols.tolist())
    assert cols_of[-4] == [4, 3, 2, 1] + list(range(0, 24))
    assert cols_of[4] == list(range(4, 28)) + [26, 25, 24, 23]
