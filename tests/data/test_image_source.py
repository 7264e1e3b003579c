"""Tests for `kerastl.data.ImageSource`: the label split, the views and the streams, for arrays
held in memory (mnist5k, npz files) and for streamed ImageNet (tfds' mock records)."""

import numpy as np
import pytest
import tensorflow as tf
from fake_imagenet import SYNSETS, flat_images, mock_imagenet, place_archive_stand_ins

from kerastl.data import ImageData, ImageSource, labeled_unlabeled_split, load_image_dataset
from kerastl.data.image_source import channel_mean_std, dataset_mean_std, guess_flip, pixel_std
from kerastl.errors import InputError
from kerastl.nets.resnet import IMAGENET_MEAN, IMAGENET_STD


def grey_arrays(num_train=40, num_test=8, num_extra=0, classes=4, size=8):
    """Uniform images whose grey level names them: train image i is (i + 1) / 256, its label
    i % classes; test and extra images are darker or brighter than every training image."""
    def greys(levels):
        return np.repeat(np.asarray(levels, "float32")[:, None, None, None], size * size, 1).reshape(-1, size, size, 1)

    train = np.arange(num_train)
    return {"x": greys((train + 1) / 256), "y": train % classes, "x_test": greys(np.zeros(num_test)),
            "y_test": np.arange(num_test) % classes,
            **({"x_unlabeled": greys(np.full(num_extra, 0.9))} if num_extra else {})}


def source_of(tmp_path, name="grey.npz", num_labels=8, seed=0, flip=None, **arrays):
    path = tmp_path / name
    np.savez(path, **(arrays or grey_arrays()))
    return ImageSource.load(f"npz:{path}", num_labels=num_labels, seed=seed, flip=flip)


def image_numbers(images):
    """The training-image number i of each uniform grey image (level (i + 1) / 256)."""
    return np.round(np.asarray(images).reshape(len(images), -1).mean(axis=1) * 256).astype(int) - 1


def test_mnist5k_split_is_balanced_seeded_and_keeps_every_training_image_unlabeled():
    source = ImageSource.load("mnist5k", num_labels=40, seed=0)
    data = load_image_dataset("mnist5k")
    assert (source.name, source.image_shape, source.num_classes) == ("mnist5k", (28, 28, 1), 10)
    assert source.num_labels == 40 and source.num_unlabeled == len(data.x_train) == 4000
    np.testing.assert_array_equal(np.bincount(source.labeled_labels, minlength=10), 4)
    labeled, _ = labeled_unlabeled_split(data.y_train, 40, 10, seed=0)
    np.testing.assert_array_equal(source.labeled_index, labeled)
    np.testing.assert_array_equal(source.labeled_labels, data.y_train[labeled])
    assert not np.array_equal(ImageSource.load("mnist5k", 40, seed=1).labeled_index, labeled)
    assert source.input_scale == pytest.approx(np.std(data.x_train[:10_000] / 255.0), rel=1e-5)
    assert source.flip is False and source.preprocessing is None  # digits are not flipped


@pytest.mark.parametrize("name, flip", [("svhn", False), ("mnist5k", False), ("npz:/data/my_Digits.npz", False),
                                        ("cifar10", True), ("stl10", True), ("imagenet", True),
                                        ("npz:/data/cats.npz", True)])
def test_flips_are_guessed_from_the_name(name, flip):
    assert guess_flip(name) is flip


def test_an_explicit_flip_overrides_the_guess(tmp_path):
    assert source_of(tmp_path, "digits.npz").flip is False
    assert source_of(tmp_path, "digits.npz", flip=True).flip is True
    assert source_of(tmp_path, "cats.npz").flip is True
    assert source_of(tmp_path, "cats.npz", flip=False).flip is False


def test_pixel_std_is_in_unit_range_for_bytes_and_floats():
    images = np.array([[0, 255], [0, 255]], np.uint8).reshape(2, 1, 2, 1)
    assert pixel_std(images) == pytest.approx(0.5)
    assert pixel_std(images.astype("float32") / 255.0) == pytest.approx(0.5)
    assert pixel_std(np.concatenate([images, np.zeros_like(images)]), sample=2) == pytest.approx(0.5)


def test_streams_carry_the_labeled_images_and_every_unlabeled_image_under_its_index(tmp_path):
    arrays = grey_arrays(num_extra=6)
    source = source_of(tmp_path, num_labels=8, **arrays)
    assert source.num_unlabeled == 40 + 6  # the training images, then the dataset's extra ones
    (x_lb, y_lb), (index, weak, weak2, strong) = next(iter(source.stream(("weak", "weak2", "strong"),
                                                                         batch_size=4, uratio=3)))
    assert x_lb.shape == (4, 8, 8, 1) and weak.shape == weak2.shape == strong.shape == (12, 8, 8, 1)
    assert y_lb.dtype == index.dtype == tf.int64
    # Weak views of uniform images (flip, reflect padding, crop) stay uniform: their grey
    # level says which image they are.
    numbers = image_numbers(x_lb)
    assert set(numbers) <= set(source.labeled_index.tolist())
    np.testing.assert_array_equal(y_lb.numpy(), arrays["y"][numbers])
    seen = index.numpy()
    for images in (weak, weak2):
        expected = np.where(seen < 40, seen, -1)  # extra images: level 0.9, not a training number
        np.testing.assert_array_equal(np.where(seen < 40, image_numbers(images), -1), expected)
    indices = np.concatenate([b[1][0].numpy() for b in source.stream(("weak",), 4, 3).take(8)])
    assert sorted(set(indices.tolist())) == list(range(46))  # 96 draws: two epochs over 46 images


def test_a_stream_started_at_a_step_continues_the_uninterrupted_one(tmp_path):
    source = source_of(tmp_path)
    whole = list(source.stream(("weak", "strong"), 4, 2).take(3))
    resumed = next(iter(source.stream(("weak", "strong"), 4, 2, start_step=2)))
    for a, b in zip(tf.nest.flatten(whole[2]), tf.nest.flatten(resumed)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_without_views_the_stream_is_labeled_batches_and_test_is_the_test_set(tmp_path):
    arrays = grey_arrays()
    source = source_of(tmp_path, **arrays)
    x, y = next(iter(source.stream((), batch_size=4, uratio=7)))
    assert x.shape == (4, 8, 8, 1) and set(image_numbers(x)) <= set(source.labeled_index.tolist())
    (x_test, y_test), = list(source.test())
    np.testing.assert_array_equal(y_test.numpy(), arrays["y_test"])
    np.testing.assert_array_equal(x_test.numpy(), arrays["x_test"])


def test_views_by_name():
    data = ImageData("cats", np.zeros((8, 4, 4, 1), "uint8"), np.arange(8) % 2, np.zeros((2, 4, 4, 1), "uint8"),
                     np.arange(2), 2)
    source = ImageSource.from_arrays(data, num_labels=2)
    assert source.view("weak") is source.view("weak2") is source.weak
    assert source.view("strong") is source.view("strong2") is source.strong
    with pytest.raises(ValueError, match="view 'strong3': expected one of weak, weak2, strong, strong2"):
        source.view("strong3")


def test_too_many_labels_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="--num-labels 80 asks for 20 labels per class, but class 0 has only 10"):
        source_of(tmp_path, num_labels=80)


def test_imagenet_is_streamed_with_torchssls_views(tmp_path):
    place_archive_stand_ins(tmp_path)
    labels = np.arange(2000) % 1000
    with mock_imagenet(labels, labels[:4], flat_images(12)):
        source = ImageSource.load("imagenet", num_labels=1000, seed=0, data_dir=tmp_path, image_size=16)
        (x_lb, y_lb), (index, weak) = next(iter(source.stream(("weak",), batch_size=4, uratio=2)))
        (x_test, y_test), = list(source.test())
    assert source.image_shape == (16, 16, 3) and source.num_classes == 1000 and source.class_names == SYNSETS
    assert source.num_labels == 1000 and source.num_unlabeled == 2000  # the whole training split
    np.testing.assert_array_equal(np.bincount(source.labeled_labels, minlength=1000), 1)
    np.testing.assert_array_equal(source.labeled_labels, labels[source.labeled_index])
    assert source.flip is True and source.input_scale == pytest.approx(np.mean(IMAGENET_STD))
    assert source.mean == IMAGENET_MEAN and source.std == IMAGENET_STD
    assert source.preprocessing == "RGB resized to 16x16 (aspect ratio not kept), values in [0, 1]"
    assert x_lb.shape == (4, 16, 16, 3) and weak.shape == (8, 16, 16, 3)
    assert set(y_lb.numpy().tolist()) <= set(source.labeled_labels.tolist())
    assert x_test.shape == (4, 16, 16, 3) and y_test.numpy().tolist() == labels[:4].tolist()


def test_channel_mean_std_of_a_tiny_hand_made_set():
    # two 1x2 RGB images: R takes 0, 255, 0, 255 (mean 0.5, std 0.5); G 51, 51, 102, 102
    # (0.2 and 0.4: mean 0.3, std 0.1); B is 255 everywhere (mean 1, a constant channel: std 1)
    images = np.array([[[[0, 51, 255], [255, 51, 255]]], [[[0, 102, 255], [255, 102, 255]]]], np.uint8)
    mean, std = channel_mean_std(images)
    np.testing.assert_allclose(mean, (0.5, 0.3, 1.0), atol=1e-12)
    np.testing.assert_allclose(std, (0.5, 0.1, 1.0), atol=1e-12)
    # floats in [0, 1] are taken as they are; chunks do not change the result
    np.testing.assert_allclose(channel_mean_std(images / 255.0)[0], mean, atol=1e-12)
    np.testing.assert_allclose(channel_mean_std(images, chunk=1)[1], std, atol=1e-12)


def test_sources_carry_torchssls_constants_or_their_training_images_statistics(tmp_path):
    # TorchSSL's transforms: cifar10 mean (125.3, 123.0, 113.9) / 255, std (63.0, 62.1, 66.7) / 255
    rgb = ImageData("cifar10", np.zeros((8, 4, 4, 3), "uint8"), np.arange(8) % 2, np.zeros((2, 4, 4, 3), "uint8"),
                    np.arange(2), 2)
    source = ImageSource.from_arrays(rgb, num_labels=2)
    np.testing.assert_allclose(source.mean, (0.491373, 0.482353, 0.446667), atol=1e-6)
    np.testing.assert_allclose(source.std, (0.247059, 0.243529, 0.261569), atol=1e-6)
    assert dataset_mean_std("svhn", rgb.x_train) == ((0.4380, 0.4440, 0.4730), (0.1751, 0.1771, 0.1744))
    # npz (and mnist5k): the training images' own statistics; grey_arrays' training images are
    # uniform at (i + 1) / 256, i = 0..39: mean 20.5 / 256, std sqrt((40^2 - 1) / 12) / 256
    source = source_of(tmp_path)
    assert source.mean == pytest.approx((20.5 / 256,)) and source.std == pytest.approx((np.sqrt(1599 / 12) / 256,))
    mnist = ImageSource.load("mnist5k", num_labels=40)
    x_train = load_image_dataset("mnist5k").x_train / 255.0
    assert mnist.mean == pytest.approx((x_train.mean(),)) and mnist.std == pytest.approx((x_train.std(),))
