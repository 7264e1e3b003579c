"""Fake ImageNet for the tests: tiny archives in the ILSVRC2012 layout that tfds' real
imagenet2012 builder reads, and `tfds.testing.mock_data` records with chosen labels."""

import io
import os
import tarfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def _lines(name):
    with open(tfds.core.tfds_path(f"datasets/imagenet2012/{name}")) as f:
        return f.read().split()


#: tfds' class order (label i = SYNSETS[i]) and the validation archive's labels in file-name order.
SYNSETS = _lines("labels.txt")
VALIDATION_SYNSETS = _lines("validation_labels.txt")


def jpeg(image):
    return tf.io.encode_jpeg(tf.constant(image, tf.uint8), quality=100).numpy()


def flat_images(count, height=20, width=28):
    """`count` uint8 images, image k a uniform grey of level 10 * k + 5 (JPEG keeps them exact)."""
    return [np.full((height, width, 3), 10 * k + 5, np.uint8) for k in range(count)]


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_archives(folder, train, validation, which=("train", "validation")):
    """ILSVRC2012_img_train.tar ({synset: [images]} as one <synset>.tar of <synset>_<i>.JPEG
    each) and ILSVRC2012_img_val.tar (ILSVRC2012_val_<n>.JPEG; tfds labels image n with line n
    of its validation_labels.txt) in `folder`; `which` picks the archives written."""
    os.makedirs(folder, exist_ok=True)
    if "train" in which:
        with tarfile.open(os.path.join(folder, "ILSVRC2012_img_train.tar"), "w") as outer:
            for synset, images in train.items():
                inner = io.BytesIO()
                with tarfile.open(fileobj=inner, mode="w") as tar:
                    for i, image in enumerate(images):
                        _add(tar, f"{synset}_{i}.JPEG", jpeg(image))
                _add(outer, f"{synset}.tar", inner.getvalue())
    if "validation" in which:
        with tarfile.open(os.path.join(folder, "ILSVRC2012_img_val.tar"), "w") as tar:
            for n, image in enumerate(validation, start=1):
                _add(tar, f"ILSVRC2012_val_{n:08d}.JPEG", jpeg(image))


def mock_imagenet(train_labels, validation_labels, images):
    """tfds mock data for imagenet2012: record i of a split has label `labels[i]` and image
    `images[i % len(images)]` (JPEG); decoded by tfds' own feature code, so `decoders` work."""
    encoded = [jpeg(image) for image in images]

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        labels = np.asarray({"train": train_labels, "validation": validation_labels}[str(split)], np.int64)
        records = tf.data.Dataset.from_tensor_slices({
            "image": [encoded[i % len(encoded)] for i in range(len(labels))],
            "label": labels,
            "file_name": [f"record_{i}.JPEG" for i in range(len(labels))]})
        return records.map(lambda example: self.info.features.decode_example(example, decoders=decoders))

    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset)


def place_archive_stand_ins(data_dir):
    """Empty files where tfds looks for the archives: under mock_data nothing is built from
    them, but the app checks that they are there before it asks tfds to build."""
    manual = os.path.join(data_dir, "downloads", "manual")
    os.makedirs(manual, exist_ok=True)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        open(os.path.join(manual, name), "wb").close()
