"""Datasets and tf.data pipelines.

- `load_image_dataset`: svhn / cifar10 / cifar100 / stl10 (tensorflow-datasets), mnist5k
  (offline), `npz:PATH` (your arrays) -> `ImageData`.
- `read_csv_table`, `read_npz`: your tables, time series and arrays, checked.
- `labeled_unlabeled_split`, `stratified_holdout`: seeded, reproducible splits.
- `ImageSource`: an image dataset (in memory or streamed ImageNet) for semi-supervised
  training: its label split, weak / strong views and tf.data streams.
- `ssl_stream`, `labeled_stream`, `eval_dataset`: deterministic, resumable tf.data streams.
"""

from kerastl.data.arrays import ImageData
from kerastl.data.files import Table, load_npz_images, read_csv_table, read_npz
from kerastl.data.image_source import ImageSource
from kerastl.data.images import IMAGE_DATASETS, load_image_dataset
from kerastl.data.splits import labeled_unlabeled_split, stratified_holdout

__all__ = [
    "IMAGE_DATASETS", "ImageData", "ImageSource", "Table", "labeled_unlabeled_split", "load_image_dataset",
    "load_npz_images", "read_csv_table", "read_npz", "stratified_holdout",
]


def __getattr__(name):
    # The tf.data streams import TensorFlow; load them only when asked for.
    if name in ("ssl_stream", "labeled_stream", "unlabeled_stream", "eval_dataset", "index_stream"):
        from kerastl.data import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'kerastl.data' has no attribute {name!r}")
