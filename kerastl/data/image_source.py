"""`ImageSource`: an image dataset ready for semi-supervised training, in memory or streamed.

One object gives what a training run needs from its images, wherever they come from:

- the label split: `num_labels` labeled training images balanced over classes, chosen by a
  seeded generator (`labeled_unlabeled_split`); every training image is unlabeled data too,
  plus any extra unlabeled images the dataset has (STL-10's, an npz's `x_unlabeled`);
- the views: `weak` (flip, 12.5 % reflect padding, crop) and `strong` (RandAugment and
  Cutout first, then the weak view, as TorchSSL's transform order), by name (`"weak"`,
  `"weak2"`, `"strong"`, `"strong2"`: a view named twice is drawn twice with independent seeds);
- the streams: `stream(views, batch_size, uratio)` yields `((x_lb, y_lb), (index, *views))`
  batches, or `(x_lb, y_lb)` when no unlabeled view is asked for; `test()` the evaluation
  batches. Streams are deterministic functions of `(seed, step)`: `start_step=k` gives what an
  uninterrupted run sees from step k on, so a resumed run continues its data position.

`ImageSource.load(dataset, num_labels)` reads `mnist5k` (offline), `npz:PATH` (your arrays),
`svhn` / `cifar10` / `cifar100` / `stl10` (tensorflow-datasets, from `data_dir`) into memory,
and streams `imagenet` (tfds' imagenet2012: labels in memory, images decoded and augmented on
the fly, TorchSSL's resize / crop views, see `kerastl.data.imagenet`). `from_arrays` and
`from_imagenet` wrap data you loaded yourself.

Horizontal flips are part of the views unless `flip=False`; by default (`flip=None`) they are
left out for digits, where a mirrored digit is another glyph: svhn, mnist5k and datasets
whose name contains "digit".

Normalisation: the streams yield images in [0, 1]; `mean` and `std` are the per-channel
constants a model trained on the source subtracts and divides by as its first layer (so an
exported model still takes [0, 1] images): TorchSSL's constants for cifar10, cifar100, svhn,
stl10 (`TORCHSSL_MEAN_STD`) and imagenet, the training images' own per-channel statistics for
mnist5k and every other in-memory dataset (`channel_mean_std`).

Example:
>>> from kerastl.data import ImageSource
>>> source = ImageSource.load("mnist5k", num_labels=40, seed=0)
>>> source.num_classes, source.image_shape, source.num_labels, source.num_unlabeled
(10, (28, 28, 1), 40, 4000)
>>> stream = source.stream(("weak", "strong"), batch_size=32, uratio=7)     # doctest: +SKIP
>>> (x_lb, y_lb), (index, x_weak, x_strong) = next(iter(stream))          # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

#: Datasets `ImageSource.load` streams rather than reads into memory.
STREAMED_DATASETS = ("imagenet",)
#: Per-channel (mean, std) in [0, 1] units of TorchSSL's transforms (its
#: ``datasets/ssl_dataset.py``; ImageNet's are `kerastl.nets.resnet.IMAGENET_MEAN` / `IMAGENET_STD`);
#: other datasets use their training images' statistics.
TORCHSSL_MEAN_STD = {
    "cifar10": ((125.3 / 255, 123.0 / 255, 113.9 / 255), (63.0 / 255, 62.1 / 255, 66.7 / 255)),
    "cifar100": ((129.3 / 255, 124.1 / 255, 112.4 / 255), (68.2 / 255, 65.4 / 255, 70.4 / 255)),
    "svhn": ((0.4380, 0.4440, 0.4730), (0.1751, 0.1771, 0.1744)),
    "stl10": ((112.4 / 255, 109.1 / 255, 98.6 / 255), (68.4 / 255, 66.6 / 255, 68.5 / 255)),
}
#: The view names `ImageSource.stream` accepts, and the view each one is drawn from.
VIEW_KINDS = {"weak": "weak", "weak2": "weak", "strong": "strong", "strong2": "strong"}


def guess_flip(name: str) -> bool:
    """Whether horizontal flips suit the dataset `name`: not for digits (svhn, mnist5k, names
    containing "digit"), yes otherwise."""
    return name not in ("svhn", "mnist5k") and "digit" not in name.lower()


def pixel_std(images: np.ndarray, sample: int = 10_000) -> float:
    """Standard deviation of pixel values in [0, 1] over (at most) the first `sample` images."""
    part = images[:sample].astype("float32")
    return float(np.std(part / 255.0 if images.dtype == np.uint8 else part))


def channel_mean_std(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) standard deviation of `images` (`[N, H, W, C]`, uint8
    in [0, 255] or floats in [0, 1]) in [0, 1] units, accumulated in float64 over chunks of
    `chunk` images. A constant channel gets std 1 (normalising it only removes its mean).

    Example:
    >>> channel_mean_std(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1))
    ((0.5,), (0.5,))
    """
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float64).reshape(-1, images.shape[-1]) / scale
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    count = images.size // images.shape[-1]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return tuple(mean.tolist()), tuple(np.where(std > 0, std, 1.0).tolist())


def dataset_mean_std(name: str, x_train: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """TorchSSL's normalisation constants of the dataset `name` when it has some (and the images
    have 3 channels), else the per-channel statistics of its training images `x_train`."""
    if name in TORCHSSL_MEAN_STD and x_train.shape[-1] == 3:
        return TORCHSSL_MEAN_STD[name]
    return channel_mean_std(x_train)


class ImageSource:
    """An image dataset split into labeled and unlabeled data, with its views and streams.

    Build one with `load`, `from_arrays` or `from_imagenet`.

    Attributes:
        name: the dataset's name (`"mnist5k"`, `"npz:/data/x.npz"`, `"imagenet"`, ...).
        image_shape: `(H, W, C)` of the images the streams yield (float32 in [0, 1]).
        num_classes, class_names: the classes (`class_names` may be None).
        labeled_index: sorted indices of the labeled images among the training images.
        labeled_labels: their labels (int64).
        num_unlabeled: images in the unlabeled stream.
        input_scale: pixel standard deviation in [0, 1] units (the size of a standardised
            unit, e.g. for VAT's perturbation).
        mean, std: per-channel normalisation constants in [0, 1] units (tuples of C floats)
            that a model trained on this source applies to its [0, 1] inputs.
        flip: whether the views flip images horizontally.
        weak, strong: the view functions, `view(image, seed) -> image`.
        preprocessing: how images must be prepared for a model trained on this source when
            that is more than scaling to [0, 1] (None otherwise); apps record it with exports.
        seed: seeds the label split and the streams.
    """

    def __init__(self, *, name, image_shape, num_classes, class_names, labeled_index, labeled_labels,
                 num_unlabeled, input_scale, flip, weak, strong, seed, reader, mean, std, preprocessing=None):
        self.name = name
        self.image_shape = tuple(image_shape)
        self.num_classes = int(num_classes)
        self.class_names = class_names
        self.labeled_index = labeled_index
        self.labeled_labels = labeled_labels
        self.num_unlabeled = int(num_unlabeled)
        self.input_scale = float(input_scale)
        self.flip = bool(flip)
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self.weak, self.strong = weak, strong
        self.seed = int(seed)
        self.preprocessing = preprocessing
        self._reader = reader

    @property
    def num_labels(self) -> int:
        return len(self.labeled_labels)

    @classmethod
    def load(cls, dataset: str, num_labels: int, seed: int = 0, flip: bool | None = None,
             data_dir: str | os.PathLike | None = None, svhn_extra: bool = False,
             manual_dir: str | os.PathLike | None = None, image_size: int | None = None) -> "ImageSource":
        """The source of `dataset`: one of `kerastl.data.IMAGE_DATASETS` or `npz:PATH` (read into
        memory, see `load_image_dataset`), or `imagenet` (streamed, see `load_imagenet`; built
        once from the archives in `manual_dir`; `image_size` is the side of its crops, 224 by
        default).

        Raises:
            InputError: the data cannot be read, or `num_labels` is not a multiple of the
                classes or asks for more images than a class has.
        """
        if dataset == "imagenet":
            from kerastl.data.imagenet import CROP_SIZE, load_imagenet

            return cls.from_imagenet(load_imagenet(data_dir, manual_dir, image_size or CROP_SIZE), num_labels,
                                     seed, flip)
        from kerastl.data.images import load_image_dataset

        return cls.from_arrays(load_image_dataset(dataset, data_dir=data_dir, seed=seed, svhn_extra=svhn_extra),
                               num_labels, seed, flip)

    @classmethod
    def from_arrays(cls, data, num_labels: int, seed: int = 0, flip: bool | None = None) -> "ImageSource":
        """A source over an `ImageData` held in memory."""
        from kerastl.augment import strong_augment, weak_augment
        from kerastl.data.splits import labeled_unlabeled_split

        labeled, unlabeled = labeled_unlabeled_split(data.y_train, num_labels, data.num_classes, seed)
        x_unlabeled = data.x_train[unlabeled]
        if data.x_unlabeled is not None:
            x_unlabeled = np.concatenate([x_unlabeled, data.x_unlabeled])
        flip = guess_flip(data.name) if flip is None else flip
        mean, std = dataset_mean_std(data.name, data.x_train)
        reader = _InMemory(data.x_train[labeled], data.y_train[labeled], x_unlabeled, data.x_test, data.y_test)
        return cls(name=data.name, image_shape=data.image_shape, num_classes=data.num_classes,
                   class_names=data.class_names, labeled_index=labeled, labeled_labels=data.y_train[labeled],
                   num_unlabeled=len(x_unlabeled), input_scale=pixel_std(data.x_train), flip=flip,
                   weak=lambda image, s: weak_augment(image, s, flip=flip),
                   strong=lambda image, s: strong_augment(image, s, flip=flip), seed=seed, reader=reader,
                   mean=mean, std=std)

    @classmethod
    def from_imagenet(cls, data, num_labels: int, seed: int = 0, flip: bool | None = None) -> "ImageSource":
        """A source over a `kerastl.data.imagenet.StreamedImageNet`: the unlabeled stream is the
        whole training split; the test set is the validation split."""
        from kerastl.data.imagenet import imagenet_views
        from kerastl.data.splits import labeled_unlabeled_split
        from kerastl.nets.resnet import IMAGENET_MEAN, IMAGENET_STD

        labeled, _ = labeled_unlabeled_split(data.train_labels, num_labels, data.num_classes, seed)
        flip = guess_flip(data.name) if flip is None else flip
        weak, strong = imagenet_views(data.image_size, flip=flip)
        size = data.image_size
        return cls(name=data.name, image_shape=data.image_shape, num_classes=data.num_classes,
                   class_names=data.class_names, labeled_index=labeled, labeled_labels=data.train_labels[labeled],
                   num_unlabeled=data.num_train, input_scale=float(np.mean(IMAGENET_STD)), flip=flip,
                   weak=weak, strong=strong, seed=seed, reader=_Streamed(data, labeled),
                   mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   preprocessing=f"RGB resized to {size}x{size} (aspect ratio not kept), values in [0, 1]")

    def view(self, name: str):
        """The view function called `name` (see `VIEW_KINDS`)."""
        if name not in VIEW_KINDS:
            raise ValueError(f"view {name!r}: expected one of {', '.join(VIEW_KINDS)}")
        return self.weak if VIEW_KINDS[name] == "weak" else self.strong

    def stream(self, views, batch_size: int, uratio: int, start_step: int = 0):
        """Infinite training batches from step `start_step` on: `((x_lb, y_lb), (index, *views))`
        with `batch_size` labeled images (weak view) and `uratio * batch_size` unlabeled ones,
        one tensor per name in `views`; `(x_lb, y_lb)` alone when `views` is empty."""
        if not views:
            return self._reader.labeled_stream(batch_size, self.weak, self.seed, start_step)
        return self._reader.ssl_stream(batch_size, uratio, self.weak, [self.view(name) for name in views],
                                       self.seed, start_step)

    def test(self, batch_size: int = 256):
        """Finite, unshuffled `(images, labels)` batches of the test set."""
        return self._reader.test(batch_size)

    def __repr__(self):
        return (f"ImageSource({self.name!r}, {self.num_labels} labeled, {self.num_unlabeled} unlabeled, "
                f"{self.num_classes} classes of {self.image_shape})")


class _InMemory:
    """Streams over arrays (`kerastl.data.pipeline`)."""

    def __init__(self, x_labeled, y_labeled, x_unlabeled, x_test, y_test):
        self.x_labeled, self.y_labeled, self.x_unlabeled = x_labeled, y_labeled, x_unlabeled
        self.x_test, self.y_test = x_test, y_test

    def labeled_stream(self, batch_size, weak, seed, start_step):
        from kerastl.data.pipeline import labeled_stream

        return labeled_stream(self.x_labeled, self.y_labeled, batch_size, weak, seed=seed, start_step=start_step)

    def ssl_stream(self, batch_size, uratio, weak, views, seed, start_step):
        from kerastl.data.pipeline import ssl_stream

        return ssl_stream(self.x_labeled, self.y_labeled, self.x_unlabeled, batch_size, uratio, weak, views,
                          seed=seed, start_step=start_step)

    def test(self, batch_size):
        from kerastl.data.pipeline import eval_dataset

        return eval_dataset(self.x_test, self.y_test, batch_size)


class _Streamed:
    """Streams of a `StreamedImageNet`, restricted to the labeled records where labels count."""

    def __init__(self, data, labeled):
        self.data, self.labeled = data, labeled

    def labeled_stream(self, batch_size, weak, seed, start_step):
        return self.data.labeled_stream(self.labeled, batch_size, weak, seed=seed, start_step=start_step)

    def ssl_stream(self, batch_size, uratio, weak, views, seed, start_step):
        return self.data.ssl_stream(self.labeled, batch_size, uratio, weak, views, seed=seed, start_step=start_step)

    def test(self, batch_size):
        return self.data.eval_dataset(batch_size)
