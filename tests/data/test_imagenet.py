"""Tests for `kerastl.data.imagenet`: building imagenet2012 from the archives, streaming it.

Two fakes (tests/fake_imagenet.py): tiny archives in the ILSVRC2012 layout, which tfds' real
imagenet2012 builder turns into real TFRecords offline in about a second, and
`tfds.testing.mock_data` records (tfds' random examples, or records with chosen labels).
Images are uniform greys, level 10 * k + 5 for image k, so a decoded image tells which
record it came from.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from fake_imagenet import (SYNSETS, VALIDATION_SYNSETS, flat_images, mock_imagenet, place_archive_stand_ins,
                           write_archives)

from kerastl.data import labeled_unlabeled_split
from kerastl.data.imagenet import (IMAGENET_ARCHIVES, imagenet_strong, imagenet_views, imagenet_weak,
                                   load_imagenet, resize_size)
from kerastl.errors import InputError

IDENTITY = lambda image, seed: image  # noqa: E731
GREYS = flat_images(12)
# The real-archive fixture's classes: synset -> grey images (k of GREYS).
TRAIN = {SYNSETS[0]: [0, 1, 2], SYNSETS[5]: [3, 4], SYNSETS[999]: [5, 6, 7, 8]}


def grey_levels(images):
    """The grey level (0..255) of each uniform image in a batch."""
    return np.round(np.asarray(images).reshape(len(images), -1).mean(axis=1) * 255).astype(int)


def image_of_level(level):
    return (level - 5) // 10


@pytest.fixture
def mock_dir(tmp_path):
    """A data_dir for mock_data: the archives' names are there (tfds builds nothing from them)."""
    place_archive_stand_ins(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    write_archives(root / "downloads" / "manual", {s: [GREYS[k] for k in ks] for s, ks in TRAIN.items()},
                   [GREYS[k] for k in (9, 10, 11)])
    return root, load_imagenet(root, image_size=16)


def test_builds_from_the_archives_and_streams_every_record_under_its_index(built):
    root, data = built
    assert (root / "imagenet2012" / "5.1.0").is_dir()
    assert data.num_classes == 1000 and data.class_names[999] == SYNSETS[999] and data.image_shape == (16, 16, 3)
    assert data.train_labels.dtype == np.int64
    assert sorted(data.train_labels.tolist()) == [0, 0, 0, 5, 5, 999, 999, 999, 999]
    label_of_image = {k: SYNSETS.index(s) for s, ks in TRAIN.items() for k in ks}
    batches = list(data.unlabeled_stream(9, [IDENTITY], seed=0).take(2))
    for index, images in batches:  # two epochs: each record once, under its own index
        # views get the image resized to 18 = 16 * 256 / 224, the side they crop 16 from
        assert images.shape == (9, 18, 18, 3) and images.dtype == tf.float32
        assert sorted(index.numpy().tolist()) == list(range(9))
        images_seen = [image_of_level(v) for v in grey_levels(images)]
        assert [label_of_image[k] for k in images_seen] == data.train_labels[index.numpy()].tolist()
    assert batches[0][0].numpy().tolist() != batches[1][0].numpy().tolist()  # reshuffled per epoch


def test_validation_split_is_the_test_set_resized_to_the_image_size(built):
    _, data = built
    (images, labels), = list(data.eval_dataset())
    assert images.shape == (3, 16, 16, 3) and images.dtype == tf.float32 and labels.dtype == tf.int64
    # tfds labels the n-th validation file by line n of its validation_labels.txt
    expected = {(10 * k + 5, SYNSETS.index(VALIDATION_SYNSETS[n])) for n, k in enumerate((9, 10, 11))}
    assert set(zip(grey_levels(images).tolist(), labels.numpy().tolist())) == expected


def test_a_built_dataset_needs_the_archives_no_more(built, tmp_path):
    root, data = built
    for name in IMAGENET_ARCHIVES:
        (root / "downloads" / "manual" / name).rename(tmp_path / name)
    try:
        again = load_imagenet(root, image_size=16)
    finally:
        for name in IMAGENET_ARCHIVES:
            (tmp_path / name).rename(root / "downloads" / "manual" / name)
    np.testing.assert_array_equal(again.train_labels, data.train_labels)


@pytest.mark.parametrize("present, missing", [((), IMAGENET_ARCHIVES), (("train",), IMAGENET_ARCHIVES[1:])])
def test_missing_archives_are_one_line_naming_the_folder_and_files(present, missing, tmp_path, snapshot):
    manual = tmp_path / "manual"
    write_archives(manual, {SYNSETS[0]: GREYS[:1]}, GREYS[:1], which=present)
    before = snapshot(tmp_path)
    with pytest.raises(InputError) as info:
        load_imagenet(tmp_path / "tfds", manual_dir=manual)
    message = str(info.value)
    assert "\n" not in message and info.value.__cause__ is None
    assert f"{manual} lacks {' and '.join(missing)};" in message
    assert "ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar" in message and "--manual-dir" in message
    assert snapshot(tmp_path) == before  # nothing built


def test_default_manual_folder_is_tfds_downloads_manual(tmp_path):
    with pytest.raises(InputError, match=f"{tmp_path}/downloads/manual lacks ILSVRC2012_img_train.tar and "):
        load_imagenet(tmp_path)


def test_a_dataset_built_without_the_train_split_is_refused(tmp_path):
    manual = tmp_path / "manual"
    write_archives(manual, {}, GREYS[:2], which=("validation",))
    tfds.builder("imagenet2012", data_dir=str(tmp_path)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))  # tfds builds what it finds
    with pytest.raises(InputError, match=r"has no 'train' split; rebuild it with both ILSVRC2012_img_train"):
        load_imagenet(tmp_path)


def test_image_size_below_8_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"^--image-size 4: expected at least 8 pixels$"):
        load_imagenet(tmp_path, image_size=4)


def test_tfds_random_mock_examples_stream_with_the_right_shapes_and_ranges(mock_dir):
    # tfds' own mock: random JPEGs of random sizes (5..50 pixels a side), random labels 0..999.
    with tfds.testing.mock_data(num_examples=10):
        data = load_imagenet(mock_dir, image_size=24)
        weak, _ = imagenet_views(24)  # (the app's test streams the strong view; tracing it takes seconds)
        labeled = np.array([1, 4, 7])
        (x, y), (index, x_weak, x_weak2) = next(iter(data.ssl_stream(labeled, 3, 2, weak, (weak, weak))))
        (x_test, y_test), = list(data.eval_dataset())
    assert data.num_train == 10 and data.train_labels.min() >= 0 and data.train_labels.max() <= 999
    assert x.shape == (3, 24, 24, 3) and x_weak.shape == x_weak2.shape == (6, 24, 24, 3)
    assert x.dtype == x_weak.dtype == x_weak2.dtype == tf.float32 and y.dtype == index.dtype == tf.int64
    for images in (x, x_weak, x_weak2, x_test):
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        assert float(tf.math.reduce_std(images)) > 0.05  # random pixels came through
    assert sorted(y.numpy().tolist()) == sorted(data.train_labels[labeled].tolist())
    assert len(set(index.numpy().tolist())) == 6 and 0 <= index.numpy().min() and index.numpy().max() <= 9
    assert x_test.shape == (10, 24, 24, 3) and y_test.dtype == tf.int64
    assert 0 <= y_test.numpy().min() and y_test.numpy().max() <= 999


def test_labeled_stream_visits_exactly_the_class_balanced_subset_every_epoch(mock_dir):
    # 2,000 records, 2 per class (label i % 1000); image i % 12 -> (label, grey) names record i.
    labels = np.arange(2000) % 1000
    with mock_imagenet(labels, labels[:4], GREYS):
        data = load_imagenet(mock_dir, image_size=8)
        labeled, unlabeled = labeled_unlabeled_split(data.train_labels, 1000, 1000, seed=3)
        batches = list(data.labeled_stream(labeled, 250, IDENTITY, seed=3).take(8))
    np.testing.assert_array_equal(data.train_labels, labels)
    np.testing.assert_array_equal(np.bincount(data.train_labels[labeled], minlength=1000), 1)
    assert len(unlabeled) == 2000  # TorchSSL: the unlabeled set is the whole training split
    expected = sorted((int(labels[i]), 10 * (i % 12) + 5) for i in labeled)
    for epoch in (batches[:4], batches[4:]):
        seen = sorted((int(y), int(level)) for x, ys in epoch for y, level in zip(ys.numpy(), grey_levels(x)))
        assert seen == expected


def test_a_stream_started_at_a_step_continues_the_uninterrupted_one(mock_dir):
    labels = np.arange(20) % 4
    with mock_imagenet(labels, labels[:2], GREYS):
        data = load_imagenet(mock_dir, image_size=16, shuffle_window=8)
        weak, _ = imagenet_views(16)  # two weak views: each must continue with its own seeds
        full = list(data.unlabeled_stream(6, (weak, weak), seed=5).take(7))
        resumed = list(data.unlabeled_stream(6, (weak, weak), seed=5, start_step=3).take(4))
        other_seed = next(iter(data.unlabeled_stream(20, [IDENTITY], seed=6)))[0].numpy()
    order = np.concatenate([index.numpy() for index, _, _ in full])
    epochs = order[:20], order[20:40]
    for epoch in epochs:  # each window of 8 records is permuted within itself
        assert [sorted(epoch[w:w + 8].tolist()) for w in (0, 8, 16)] == [list(range(w, min(w + 8, 20)))
                                                                         for w in (0, 8, 16)]
    assert epochs[0].tolist() != epochs[1].tolist() and other_seed.tolist() != epochs[0].tolist()
    for (index, view1, view2), (index2, view1_again, view2_again) in zip(full[3:], resumed):
        np.testing.assert_array_equal(index.numpy(), index2.numpy())
        np.testing.assert_array_equal(view1.numpy(), view1_again.numpy())
        np.testing.assert_array_equal(view2.numpy(), view2_again.numpy())
        assert not np.array_equal(view1.numpy(), view2.numpy())


def test_weak_view_is_torchssl_flip_and_224_crop_of_the_4_pixel_padded_256_image():
    assert resize_size(224) == 256 and resize_size(32) == 37
    side = 256
    image = (np.arange(side * side * 3, dtype=np.float32) / (side * side * 3)).reshape(side, side, 3)
    padded = np.pad(image, [(4, 4), (4, 4), (0, 0)], mode="reflect")
    offsets = set()
    for s in range(24):
        view = imagenet_weak(tf.constant(image), tf.constant([7, s], tf.int64)).numpy()
        assert view.shape == (224, 224, 3)
        found = []  # (dy, dx, flipped): the view is padded[dy:dy + 224, dx:dx + 224], maybe mirrored
        for y, x in zip(*np.nonzero(padded[:, :, 0] == view[0, 0, 0])):
            for flipped, dx in ((False, x), (True, x - 223)):
                window = padded[y:y + 224, dx:dx + 224] if 0 <= dx <= 40 and y <= 40 else None
                if window is not None and np.array_equal(window[:, ::-1] if flipped else window, view):
                    found.append((int(y), int(dx), flipped))
        assert len(found) == 1, (s, found)
        offsets.update(found)
    dys = {dy for dy, _, _ in offsets}
    assert min(dys) >= 0 and max(dys) <= 40 and max(dys) - min(dys) > 20  # offsets spread over 0..40
    assert {flip for _, _, flip in offsets} == {False, True}


def test_strong_view_is_randaugment_then_the_weak_crop():
    image = tf.random.stateless_uniform([37, 37, 3], seed=[1, 2])
    seed = tf.constant([3, 4], tf.int64)
    strong = imagenet_strong(image, seed, image_size=32)
    weak = imagenet_weak(image, seed, image_size=32)
    assert strong.shape == weak.shape == (32, 32, 3)
    assert 0.0 <= float(tf.reduce_min(strong)) and float(tf.reduce_max(strong)) <= 1.0
    assert not np.allclose(strong.numpy(), weak.numpy(), atol=0.05)
    np.testing.assert_array_equal(strong.numpy(), imagenet_strong(image, seed, image_size=32).numpy())
