"""ImageNet (ILSVRC 2012) for semi-supervised training, streamed from tensorflow-datasets.

The 1.28 million training images do not fit in memory as arrays, so unlike
`load_tfds_images`, `load_imagenet` keeps only the labels in memory and reads the images
as a tf.data stream of JPEG records, decoded, resized and augmented on the fly.

Getting the data. ImageNet cannot be downloaded by a program: register at
https://image-net.org/download-images, fetch ILSVRC2012_img_train.tar (138 GB) and
ILSVRC2012_img_val.tar (6.3 GB), and put both in `<data_dir>/downloads/manual/` (tfds' manual
download folder; `manual_dir` / the apps' `--manual-dir` names another one). The first call
builds tfds' `imagenet2012` from them (hours; it writes about 150 GB of TFRecords to
`<data_dir>/imagenet2012/`); later calls read what was built and need the archives no more.
When the data is neither built nor the archives there, `InputError` says so in one line.

TorchSSL's ImageNet setting (`datasets/ssl_dataset.py`, `ImageNetLoader`), reproduced here:

- labeled set: `num_labels // 1000` random training images per class (100,000 labels = 100
  per class), chosen by `kerastl.data.labeled_unlabeled_split`; the unlabeled set is the
  whole training split, labeled images included;
- training views: the image resized to 256x256 (aspect ratio not kept, as
  `transforms.Resize([256, 256])`), then the weak view = random horizontal flip + 4-pixel
  reflect padding + random 224x224 crop; the strong view = RandAugment (3 ops + Cutout) on
  the resized image, then the same flip and crop (TorchSSL applies RandAugment before
  resizing; on the resized image the ops are the same up to interpolation);
- evaluation: the validation split (50,000 images) resized to 224x224.
Normalisation with ImageNet's mean and std is the network's job (`kerastl.nets.resnet50`);
the streams give float32 images in [0, 1]. `image_size` scales every size (224 -> crop,
round(image_size * 256 / 224) -> resize), so small sizes run on a CPU.

Streams. Records keep the fixed order of tfds' files (`shuffle_files=False`); an example's
index is its position in that order, which is what per-example state (FlexMatch's
`selected_label`) is keyed by. tfds writes the records in a hash-shuffled order already;
each epoch permutes every window of `shuffle_window` consecutive records with a stateless
shuffle seeded by `(seed, epoch, window)` (a random file order is not possible: record
indices must stay known), and the augmentation of the element at stream position p uses the
stateless seed `(salt, p)` as in `kerastl.data.pipeline`. A stream started at `start_step`
therefore yields the batches an uninterrupted run would have seen, after skipping (reading,
not decoding) at most one epoch of records. The labeled stream reads the whole split and
keeps the labeled records (filtered before decoding), so one labeled epoch reads every
record once: with 100 labels per class and B = 32 next to 224 unlabeled images, about 2.8
times the reads of the unlabeled stream alone (decoding, the costly part, is not repeated).

Example:
>>> data = load_imagenet("/data/tfds")                                    # doctest: +SKIP
>>> labeled, _ = labeled_unlabeled_split(data.train_labels, 100_000, 1000, seed=0)  # doctest: +SKIP
>>> weak, strong = imagenet_views(data.image_size)                        # doctest: +SKIP
>>> stream = data.ssl_stream(labeled, 32, 7, weak, (weak, strong), seed=0)  # doctest: +SKIP
>>> (x_lb, y_lb), (index, x_weak, x_strong) = next(iter(stream))          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tarfile
from typing import Any, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kerastl.augment import rand_augment, weak_augment
from kerastl.data.pipeline import AUTOTUNE, View, _distributable, _element_seed, _MAX_EPOCHS, apply_views
from kerastl.data.tfds_images import _one_line
from kerastl.errors import InputError

TFDS_NAME = "imagenet2012"
#: What tfds builds imagenet2012 from, in its manual download folder.
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
#: TorchSSL's ImageNet sizes: resize to 256, crop 224; reflect padding 4 pixels of the 256.
CROP_SIZE, RESIZE_SIZE, PAD_PIXELS = 224, 256, 4
SHUFFLE_WINDOW = 10_000  # records shuffled together: about 1.1 GB of JPEGs in memory per stream


def resize_size(image_size: int) -> int:
    """The side training images are resized to before the crop: 256 for a 224 crop."""
    return int(round(image_size * RESIZE_SIZE / CROP_SIZE))


def imagenet_weak(image: tf.Tensor, seed: tf.Tensor, image_size: int = CROP_SIZE, flip: bool = True) -> tf.Tensor:
    """TorchSSL's ImageNet weak view of a resized image: flip, 4-pixel reflect padding (of 256;
    scaled with the size), random `image_size` crop."""
    return weak_augment(image, seed, flip=flip, pad_fraction=PAD_PIXELS / RESIZE_SIZE, crop_size=image_size)


def imagenet_strong(image: tf.Tensor, seed: tf.Tensor, image_size: int = CROP_SIZE, flip: bool = True) -> tf.Tensor:
    """RandAugment (3 ops + Cutout) on the resized image, then the weak view's flip and crop."""
    rand_seed, weak_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    return imagenet_weak(rand_augment(image, rand_seed), weak_seed, image_size, flip)


def imagenet_views(image_size: int = CROP_SIZE, flip: bool = True) -> tuple[View, View]:
    """`(weak, strong)` view functions for the streams of a `StreamedImageNet` of `image_size`."""
    return (functools.partial(imagenet_weak, image_size=image_size, flip=flip),
            functools.partial(imagenet_strong, image_size=image_size, flip=flip))


def decode_resized(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """JPEG bytes -> float32 `[size, size, 3]` in [0, 1] (bilinear with antialiasing, as PIL's
    resize; grey images get 3 channels)."""
    image = tf.io.decode_jpeg(encoded, channels=3)
    image = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.clip_by_value(image / 255.0, 0.0, 1.0)


def prepare_imagenet(data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None):
    """The tfds `imagenet2012` builder, built from the archives first if it is not built yet.

    Raises:
        InputError: the dataset is not built and `manual_dir` (default
            `<data_dir>/downloads/manual`) lacks an archive, or building it failed.
    """
    builder = tfds.builder(TFDS_NAME, data_dir=None if data_dir is None else os.fspath(data_dir))
    if builder.is_prepared():
        return builder
    root = os.fspath(builder.data_dir_root if data_dir is None else data_dir)
    manual = os.fspath(manual_dir) if manual_dir is not None else os.path.join(root, "downloads", "manual")
    missing = [name for name in IMAGENET_ARCHIVES if not os.path.isfile(os.path.join(manual, name))]
    if missing:
        raise InputError(f"dataset 'imagenet': {manual} lacks {' and '.join(missing)}; tfds builds {TFDS_NAME} "
                         f"once from {' and '.join(IMAGENET_ARCHIVES)} (https://image-net.org/download-images) "
                         "placed in that folder, or in the folder --manual-dir names")
    try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    except (tarfile.TarError, OSError, tf.errors.OpError) as err:  # a broken archive, a full disk
        raise InputError(f"dataset 'imagenet': tfds could not build {TFDS_NAME} from {manual} "
                         f"({_one_line(err)})") from None
    return builder


def _records(builder, split: str) -> tf.data.Dataset:
    """`(index, jpeg bytes, label)` of a split, in the fixed order of tfds' files."""
    records = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()},
                                 read_config=tfds.ReadConfig(try_autocache=False))
    return records.enumerate().map(lambda index, example: (index, example["image"], example["label"]))


def _epochs(records: tf.data.Dataset, epoch_size: int, seed: int, start: int, window: int) -> tf.data.Dataset:
    """Infinite `(position, record)`: in epoch e, each run of `window` consecutive records is
    permuted by a stateless shuffle seeded by `(seed, e, run)`; `position` counts from the
    stream's beginning, `start` is the first produced. (Stateless, so no global seed and no
    iterator state decide the order.)"""
    first_epoch, offset = divmod(int(start), epoch_size)

    def epoch(e):
        def permute(run, batch):
            key = tf.random.experimental.stateless_fold_in(tf.stack([tf.constant(seed, tf.int64), e]), run)
            order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(batch[0])[0]), seed=key)
            return tf.data.Dataset.from_tensor_slices(tuple(tf.gather(part, order) for part in batch))

        return records.batch(window).enumerate().flat_map(permute)

    shuffled = tf.data.Dataset.range(first_epoch, _MAX_EPOCHS).flat_map(epoch).skip(offset)
    return tf.data.Dataset.zip(tf.data.Dataset.range(int(start), 2**62), shuffled)


@dataclasses.dataclass(frozen=True)
class StreamedImageNet:
    """ImageNet as streams: labels in memory, images read, decoded and augmented on the fly.

    `train_labels[i]` is the label of training record i (the index the unlabeled stream
    carries); images come out float32 `[image_size, image_size, 3]` in [0, 1].
    """

    builder: Any
    train_labels: np.ndarray
    num_classes: int
    class_names: list
    image_size: int = CROP_SIZE
    shuffle_window: int = SHUFFLE_WINDOW
    name: str = "imagenet"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.image_size, self.image_size, 3)

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    def labeled_stream(self, labeled: np.ndarray, batch_size: int, augment: View, seed: int = 0,
                       start_step: int = 0) -> tf.data.Dataset:
        """Infinite `(images, labels)` batches of the training records whose index is in `labeled`."""
        labeled = np.unique(np.asarray(labeled, np.int64))
        if len(labeled) == 0 or labeled[0] < 0 or labeled[-1] >= self.num_train:
            raise ValueError(f"labeled indices must be in 0..{self.num_train - 1}")
        mask = np.zeros(self.num_train, bool)
        mask[labeled] = True
        mask = tf.constant(mask)
        records = _records(self.builder, "train").filter(lambda index, jpeg, label: tf.gather(mask, index))
        salt, size = seed * 2 + 1, resize_size(self.image_size)

        def load(position, record):
            _, jpeg, label = record
            return augment(decode_resized(jpeg, size), _element_seed(salt, position)), label

        return _distributable(_epochs(records, len(labeled), seed, start_step * batch_size, self.shuffle_window)
                              .map(load, num_parallel_calls=AUTOTUNE)
                              .batch(batch_size, drop_remainder=True)
                              .prefetch(AUTOTUNE))

    def unlabeled_stream(self, batch_size: int, views: Sequence[View], seed: int = 0,
                         start_step: int = 0) -> tf.data.Dataset:
        """Infinite `(index, view_1, ..., view_n)` batches over the whole training split, every
        view made from the same decoded image with its own seed."""
        views = tuple(views)
        if not views:
            raise ValueError("unlabeled_stream needs at least one view function")
        salt, size = seed * 2 + 2, resize_size(self.image_size)

        def load(position, record):
            index, jpeg, _ = record
            return (index, *apply_views(decode_resized(jpeg, size), views, _element_seed(salt, position)))

        return _distributable(_epochs(_records(self.builder, "train"), self.num_train, seed + 7919,
                                      start_step * batch_size, self.shuffle_window)
                              .map(load, num_parallel_calls=AUTOTUNE)
                              .batch(batch_size, drop_remainder=True)
                              .prefetch(AUTOTUNE))

    def ssl_stream(self, labeled: np.ndarray, batch_size: int, uratio: int, weak: View,
                   unlabeled_views: Sequence[View], seed: int = 0, start_step: int = 0) -> tf.data.Dataset:
        """`((x_lb, y_lb), (index, *unlabeled_views))` batches, as `kerastl.data.pipeline.ssl_stream`."""
        return tf.data.Dataset.zip(self.labeled_stream(labeled, batch_size, weak, seed, start_step),
                                   self.unlabeled_stream(uratio * batch_size, unlabeled_views, seed, start_step)
                                   ).prefetch(AUTOTUNE)

    def eval_dataset(self, batch_size: int = 256) -> tf.data.Dataset:
        """The validation split: `(images, labels)` batches, images resized to `image_size`."""
        size = self.image_size
        return _distributable(_records(self.builder, "validation")
                              .map(lambda index, jpeg, label: (decode_resized(jpeg, size), label),
                                   num_parallel_calls=AUTOTUNE)
                              .batch(batch_size)
                              .prefetch(AUTOTUNE))


def load_imagenet(data_dir: str | os.PathLike | None = None, manual_dir: str | os.PathLike | None = None,
                  image_size: int = CROP_SIZE, shuffle_window: int = SHUFFLE_WINDOW) -> StreamedImageNet:
    """Builds imagenet2012 if needed (`prepare_imagenet`), reads the training labels (one pass
    over the records, images left encoded) and returns the streams' source.

    Raises:
        InputError: `image_size` below 8, archives missing, a split missing from a built
            dataset, or records that cannot be read.
    """
    if image_size < 8:
        raise InputError(f"--image-size {image_size}: expected at least 8 pixels")
    builder = prepare_imagenet(data_dir, manual_dir)
    built = set(builder.info.splits)  # empty under tfds.testing.mock_data, which knows no splits
    absent = [split for split in ("train", "validation") if built and split not in built]
    if absent:
        raise InputError(f"dataset 'imagenet': the {TFDS_NAME} built in {os.fspath(builder.data_dir)} has no "
                         f"{absent[0]!r} split; rebuild it with both {' and '.join(IMAGENET_ARCHIVES)}")
    try:
        labels = [y for y in tfds.as_numpy(_records(builder, "train").map(lambda i, jpeg, y: y).batch(65_536))]
    except (tf.errors.OpError, OSError) as err:
        raise InputError(f"dataset 'imagenet': cannot read the train split of {TFDS_NAME} from "
                         f"{os.fspath(builder.data_dir)} ({_one_line(err)})") from None
    if not labels:
        raise InputError(f"dataset 'imagenet': the train split of {TFDS_NAME} in {os.fspath(builder.data_dir)} "
                         "is empty")
    label = builder.info.features["label"]
    return StreamedImageNet(builder=builder, train_labels=np.concatenate(labels).astype(np.int64),
                            num_classes=int(label.num_classes), class_names=[str(n) for n in label.names],
                            image_size=image_size, shuffle_window=shuffle_window)
