"""tensorflow-datasets loaders for the semi-supervised image benchmarks (SVHN, CIFAR, STL-10).

`load_tfds_images(name)` builds the tfds dataset named by `TFDS_DATASETS[name]`, reads its
train and test splits fully into NumPy (images `uint8` `[N, H, W, 3]`, labels `int64`) and
returns them as an `ImageData`:

    svhn      svhn_cropped   32x32x3, 10 classes; `svhn_extra=True` appends the 531,131
                             `extra` images to the 73,257 training images (TorchSSL's convention)
    cifar10   cifar10        32x32x3, 10 classes
    cifar100  cifar100       32x32x3, 100 classes (the fine `label`; `coarse_label` is ignored)
    stl10     stl10          96x96x3, 10 classes; the 100,000-image `unlabelled` split becomes
                             `ImageData.x_unlabeled`

Where the data lives: `data_dir` is handed to tfds unchanged (the apps pass their `--data-dir`
option here); None means tfds' default, `$TFDS_DATA_DIR` or `~/tensorflow_datasets`. tfds
looks for `data_dir/<tfds name>/<version>/`. With `download=True` a dataset that is not there
yet is downloaded and prepared first; that needs internet. For an offline machine, prepare it
where there is internet and copy the folder:

    tfds build svhn_cropped --data_dir /some/dir      # then copy /some/dir/svhn_cropped
    python -m apps.<app> --dataset svhn --data-dir /copied/dir ...

When the data is neither prepared nor downloadable, `load_tfds_images` raises `InputError`
with one line saying so (no TensorFlow traceback). Offline alternatives that need no tfds data
are the apps' `--dataset mnist5k` and `--dataset npz:PATH`.

Splits are read in chunks into arrays allocated once from the splits' sizes (tfds' auto-cache
off), so memory is about one copy of the result: 1.9 GB for SVHN with extra, 2.8 GB for STL-10's
unlabelled split, 0.2 GB for CIFAR. (`batch_size=-1` is not used: it batches by the total number
of examples tfds has on record, which is unknown, hence `sys.maxsize`, for datasets built from
code alone, as under `tfds.testing.mock_data`, and that aborts the process.)
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from kerastl.data.arrays import ImageData
from kerastl.errors import InputError

#: Our dataset names -> tensorflow-datasets names.
TFDS_DATASETS: dict[str, str] = {
    "svhn": "svhn_cropped",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "stl10": "stl10",
}

_CHUNK = 4096  # images per read step

_OFFLINE_HINT = ("on a machine with internet run `tfds build {tfds_name} --data_dir DIR` and copy "
                 "DIR/{tfds_name} into {root} (or copy it anywhere and pass its parent folder as "
                 "--data-dir), or use "
                 "--dataset mnist5k or --dataset npz:PATH offline")


def load_tfds_images(name: str, data_dir: str | os.PathLike | None = None, svhn_extra: bool = False,
                     download: bool = True) -> ImageData:
    """Loads a tfds image dataset's train and test splits (and STL-10's unlabelled one) into memory.

    Args:
        name: one of `TFDS_DATASETS` (`"svhn"`, `"cifar10"`, `"cifar100"`, `"stl10"`).
        data_dir: tfds data directory (the apps' `--data-dir`); None for tfds' default.
        svhn_extra: SVHN only: append the `extra` split to the training set.
        download: download and prepare the dataset if it is not in `data_dir` yet.

    Returns:
        `ImageData` with uint8 images, int64 labels, `num_classes` and `class_names` from the
        dataset's info, and `x_unlabeled` for STL-10 (None otherwise).

    Raises:
        InputError: unknown `name`, or the data is not prepared in `data_dir` and could not be
            downloaded (or `download=False`), or the prepared files cannot be read.

    Example:
        >>> data = load_tfds_images("cifar10", data_dir="/data/tfds")  # doctest: +SKIP
        >>> data.x_train.shape, data.y_train.dtype, data.num_classes  # doctest: +SKIP
        ((50000, 32, 32, 3), dtype('int64'), 10)
    """
    if name not in TFDS_DATASETS:
        raise InputError(f"dataset {name!r}: not a tfds image dataset, expected one of "
                         f"{', '.join(TFDS_DATASETS)}")
    tfds_name = TFDS_DATASETS[name]
    builder = tfds.builder(tfds_name, data_dir=None if data_dir is None else os.fspath(data_dir))
    _prepare(builder, name, download)

    train_splits = ["train", "extra"] if name == "svhn" and svhn_extra else ["train"]
    x_train, y_train = _read_splits(builder, name, train_splits)
    x_test, y_test = _read_splits(builder, name, ["test"])
    x_unlabeled = _read_splits(builder, name, ["unlabelled"])[0] if name == "stl10" else None

    label = builder.info.features["label"]
    return ImageData(name=name, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                     num_classes=int(label.num_classes), x_unlabeled=x_unlabeled,
                     class_names=[str(n) for n in label.names])


# What a download the user's machine cannot make raises: no internet or a blocked URL
# (requests' and urllib's errors are OSErrors), a full disk (OSError, or TF's file-system
# errors), a source that changed or arrived broken (tfds' checksum and download errors).
# Anything else is a bug and keeps its traceback.
DOWNLOAD_ERRORS = (OSError, tf.errors.OpError, tfds.download.DownloadError, NonMatchingChecksumError)


def _prepare(builder, name: str, download: bool) -> None:
    """Makes sure the builder's data is on disk, downloading it if allowed; else `InputError`."""
    if download:
        try:
            builder.download_and_prepare()  # a no-op when the data is already prepared
        except DOWNLOAD_ERRORS as err:
            why = f"could not be downloaded ({_one_line(err)})"
            raise InputError(_unavailable(builder, name, why)) from None
    elif not builder.is_prepared():
        raise InputError(_unavailable(builder, name, "downloading is disabled"))


def _unavailable(builder, name: str, why: str) -> str:
    root = os.fspath(builder.data_dir_root)
    hint = _OFFLINE_HINT.format(tfds_name=builder.name, root=root)
    return f"dataset {name!r}: tfds dataset {builder.name!r} is not prepared in {root} and {why}; {hint}"


def _read_splits(builder, name: str, splits: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reads whole splits, one after the other, as `(uint8 images [N, H, W, C], int64 labels [N])`.

    The arrays are allocated once from the splits' sizes and filled chunk by chunk, so peak
    memory is the result plus one chunk.
    """
    read_config = tfds.ReadConfig(try_autocache=False)  # no extra in-memory copy via ds.cache()
    try:
        datasets = [builder.as_dataset(split=split, as_supervised=True, read_config=read_config)
                    for split in splits]
        sizes = [int(ds.cardinality()) for ds in datasets]
        if min(sizes) < 0:  # size unknown (tfds normally knows it): collect chunks, then join
            chunks = [chunk for ds in datasets for chunk in tfds.as_numpy(ds.batch(_CHUNK))]
            return (np.concatenate([x for x, _ in chunks]).astype(np.uint8, copy=False),
                    np.concatenate([y for _, y in chunks]).astype(np.int64, copy=False))
        images = np.empty((sum(sizes), *builder.info.features["image"].shape), np.uint8)
        labels = np.empty(sum(sizes), np.int64)
        start = 0
        for ds in datasets:
            for x, y in tfds.as_numpy(ds.batch(_CHUNK)):
                images[start:start + len(x)], labels[start:start + len(x)] = x, y
                start += len(x)
        if start != len(images):
            raise OSError(f"read {start} examples, the dataset info says {len(images)}")
    except (tf.errors.OpError, OSError) as err:
        raise InputError(f"dataset {name!r}: cannot read split {'+'.join(splits)!r} of {builder.name!r} "
                         f"from {os.fspath(builder.data_dir)} ({_one_line(err)}); expected a complete "
                         f"`tfds build {builder.name}` folder") from None
    return images, labels


def _one_line(err: BaseException, limit: int = 200) -> str:
    text = " ".join(str(err).split()) or "no message"
    text = text if len(text) <= limit else text[:limit - 3] + "..."
    return f"{type(err).__name__}: {text}"
