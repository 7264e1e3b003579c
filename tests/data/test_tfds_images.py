"""Tests for `kerastl.data.tfds_images`.

They run the real tfds builders (`tfds.builder` -> `download_and_prepare` -> `as_dataset` with
`batch_size=-1`) under `tfds.testing.mock_data`, which skips the download and generates the
records from each builder's real feature spec (image shape, number of classes). Nothing touches
the network: the not-downloadable cases use an empty tmp dir.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kerastl.data.tfds_images import TFDS_DATASETS, load_tfds_images
from kerastl.errors import InputError

# Marks which split a record came from: pixel value and (offset) label.
SPLIT_TAG = {"train": 1, "extra": 2, "test": 3, "unlabelled": 4}


def mock_random(num_examples):
    """tfds' own fake records: random pixels, random labels in 0..C-1, `num_examples` per split."""
    return tfds.testing.mock_data(num_examples=num_examples, policy=tfds.testing.MockPolicy.USE_CODE)


def mock_tagged(counts, label_offset=0):
    """Fake records with a different count per split; every pixel and every ClassLabel of a
    record is `SPLIT_TAG[split]` (the `label` feature: plus `label_offset`)."""

    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        split = str(split)
        n, tag = counts[split], SPLIT_TAG[split]
        features = self.info.features
        record = {"image": np.full((n, *features["image"].shape), tag, np.uint8)}
        for key, feature in features.items():
            if isinstance(feature, tfds.features.ClassLabel):
                record[key] = np.full(n, tag + (label_offset if key == "label" else 0), np.int64)
        return tf.data.Dataset.from_tensor_slices(record)

    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset)


@pytest.mark.parametrize("name, tfds_name, shape, num_classes", [
    ("svhn", "svhn_cropped", (32, 32, 3), 10),
    ("cifar10", "cifar10", (32, 32, 3), 10),
    ("cifar100", "cifar100", (32, 32, 3), 100),
    ("stl10", "stl10", (96, 96, 3), 10),
])
def test_loads_train_and_test_splits(name, tfds_name, shape, num_classes):
    assert TFDS_DATASETS[name] == tfds_name
    with mock_random(num_examples=6):
        data = load_tfds_images(name)
    assert data.name == name
    assert data.x_train.shape == (6, *shape) and data.x_test.shape == (6, *shape)
    assert data.x_train.dtype == np.uint8 and data.x_test.dtype == np.uint8
    assert data.y_train.shape == (6,) and data.y_test.shape == (6,)
    assert data.y_train.dtype == np.int64 and data.y_test.dtype == np.int64
    for y in (data.y_train, data.y_test):
        assert 0 <= y.min() and y.max() <= num_classes - 1
    assert data.num_classes == num_classes
    assert len(data.class_names) == num_classes and all(isinstance(n, str) for n in data.class_names)
    assert data.image_shape == shape
    assert data.x_train.std() > 0  # real (random) pixels came through, not a blank array
    if name == "stl10":
        assert data.x_unlabeled.shape == (6, *shape) and data.x_unlabeled.dtype == np.uint8
    else:
        assert data.x_unlabeled is None
    assert data.client is None


def test_svhn_extra_is_appended_to_train():
    with mock_tagged({"train": 3, "extra": 7, "test": 2}):
        data = load_tfds_images("svhn", svhn_extra=True)
        plain = load_tfds_images("svhn")
    assert data.x_train.shape == (3 + 7, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.y_train.shape == (10,) and data.y_train.dtype == np.int64
    # train first, then extra (TorchSSL's order)
    np.testing.assert_array_equal(data.x_train[:3], 1)
    np.testing.assert_array_equal(data.x_train[3:], 2)
    np.testing.assert_array_equal(data.y_train, [1] * 3 + [2] * 7)
    np.testing.assert_array_equal(data.x_test, 3)
    np.testing.assert_array_equal(data.y_test, [3, 3])
    assert data.num_classes == 10
    # without svhn_extra the extra split is left out
    assert plain.x_train.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(plain.y_train, [1, 1, 1])


def test_svhn_extra_ignored_for_other_datasets():
    with mock_tagged({"train": 4, "test": 2}):
        data = load_tfds_images("cifar10", svhn_extra=True)
    assert data.x_train.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(data.y_train, [1] * 4)


def test_stl10_unlabelled_split_becomes_x_unlabeled():
    with mock_tagged({"train": 3, "test": 2, "unlabelled": 5}):
        data = load_tfds_images("stl10")
    assert data.x_train.shape == (3, 96, 96, 3) and data.x_test.shape == (2, 96, 96, 3)
    assert data.x_unlabeled.shape == (5, 96, 96, 3) and data.x_unlabeled.dtype == np.uint8
    np.testing.assert_array_equal(data.x_unlabeled, 4)
    np.testing.assert_array_equal(data.x_train, 1)
    np.testing.assert_array_equal(data.y_train, [1, 1, 1])
    np.testing.assert_array_equal(data.y_test, [3, 3])
    assert data.num_classes == 10


def test_cifar100_uses_the_fine_label():
    # fine label = tag + 90 (91 train, 93 test), coarse_label = tag: only the fine one is > 19
    with mock_tagged({"train": 3, "test": 2}, label_offset=90):
        data = load_tfds_images("cifar100")
    np.testing.assert_array_equal(data.y_train, [91, 91, 91])
    np.testing.assert_array_equal(data.y_test, [93, 93])
    assert data.num_classes == 100 and len(data.class_names) == 100


def test_data_dir_is_passed_to_tfds(tmp_path, monkeypatch):
    seen = []
    real_builder = tfds.builder

    def spy(name, **kwargs):
        seen.append((name, kwargs.get("data_dir")))
        return real_builder(name, **kwargs)

    monkeypatch.setattr(tfds, "builder", spy)
    with mock_random(num_examples=2):
        load_tfds_images("svhn", data_dir=tmp_path)
        load_tfds_images("cifar10", data_dir=str(tmp_path / "tfds"))
        load_tfds_images("stl10")
    assert seen == [("svhn_cropped", str(tmp_path)), ("cifar10", str(tmp_path / "tfds")),
                    ("stl10", None)]


def test_unknown_name_lists_known_names():
    with pytest.raises(InputError) as info:
        load_tfds_images("imagenet")
    message = str(info.value)
    assert "'imagenet'" in message and "\n" not in message
    for known in ("svhn", "cifar10", "cifar100", "stl10"):
        assert known in message


def test_not_prepared_and_download_disabled(tmp_path):
    # real tfds, no mock: an empty data_dir has no prepared svhn_cropped
    with pytest.raises(InputError) as info:
        load_tfds_images("svhn", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message
    assert "'svhn'" in message and "'svhn_cropped'" in message and str(tmp_path) in message
    assert "downloading is disabled" in message
    assert "tfds build svhn_cropped --data_dir DIR" in message
    assert "mnist5k" in message and "npz:PATH" in message
    assert not any(tmp_path.iterdir())  # nothing was written


def test_download_failure_becomes_one_line_input_error(tmp_path, monkeypatch):
    # real tfds builder; its download step fails the way it does without internet
    calls = []

    def offline_download(self, *args, **kwargs):
        calls.append(self.name)
        raise ConnectionError("Failed to establish a new connection:\n[Errno -3] Temporary failure "
                              "in name resolution")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline_download)
    with pytest.raises(InputError) as info:
        load_tfds_images("stl10", data_dir=tmp_path)
    message = str(info.value)
    assert calls == ["stl10"]
    assert "\n" not in message
    assert "'stl10'" in message and str(tmp_path) in message
    assert "could not be downloaded (ConnectionError: Failed to establish a new connection" in message
    assert "tfds build stl10 --data_dir DIR" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no TF traceback chained


def test_splits_of_unknown_size_are_read_too():
    # a dataset whose cardinality tf.data does not know (a generator): read in chunks and joined
    def as_dataset(self, split, decoders=None, read_config=None, **kwargs):
        n, tag = {"train": 5, "extra": 4, "test": 3}[str(split)], SPLIT_TAG[str(split)]
        shape = self.info.features["image"].shape
        return tf.data.Dataset.from_generator(
            lambda: ({"image": np.full(shape, tag, np.uint8), "label": np.int64(tag)}
                     for _ in range(n)),
            output_signature={"image": tf.TensorSpec(shape, tf.uint8),
                              "label": tf.TensorSpec((), tf.int64)})

    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_dataset_fn=as_dataset):
        data = load_tfds_images("svhn", svhn_extra=True)
    assert data.x_train.shape == (9, 32, 32, 3) and data.x_train.dtype == np.uint8
    np.testing.assert_array_equal(data.y_train, [1] * 5 + [2] * 4)
    assert data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.x_test, 3)
