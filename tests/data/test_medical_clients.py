"""Medical image clients (kerastl.data.clients): MedMNIST .npz files and class-per-folder image
sets as the COVID-19 radiography sets ship, written here in those layouts."""

import os

import numpy as np
import pytest
import tensorflow as tf

from kerastl.data.clients import (dirichlet_partition, imagefolder_clients, load_federated_data, medmnist_clients,
                                  paired_dirichlet_partition, read_image_folder, read_medmnist)
from kerastl.errors import InputError

PARTS = {"train": 60, "val": 20, "test": 40}


def write_medmnist(path, rgb=False, **overrides):
    """A MedMNIST-layout .npz; image k of the pooled set carries k in its first two pixels."""
    rng = np.random.default_rng(0)
    arrays, first = {}, 0
    for part, n in PARTS.items():
        ids = np.arange(first, first + n)
        first += n
        images = rng.integers(0, 256, (n, 28, 28, 3)).astype(np.uint8)
        images[:, 0, 0], images[:, 0, 1] = (ids % 256)[:, None], (ids // 256)[:, None]
        arrays[f"{part}_images"] = images if rgb else images[..., 0]   # grey sets are [N, 28, 28]
        arrays[f"{part}_labels"] = (ids % 3)[:, None].astype(np.uint8)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def ids_of(images):
    return (images[:, 0, 0, 0].astype(int) + 256 * images[:, 0, 1, 0].astype(int)).tolist()


def test_medmnist_parts_are_pooled_and_dealt_by_dirichlet(tmp_path):
    path = write_medmnist(tmp_path / "organsmnist.npz")
    x, y = read_medmnist(path)
    assert x.shape == (120, 28, 28, 1) and x.dtype == np.uint8          # grey sets get a channel axis
    assert ids_of(x) == list(range(120)) and y.tolist() == [k % 3 for k in range(120)]   # train, val, test
    data = medmnist_clients(path, num_clients=4, alpha=0.5, seed=0)
    assert len(data.clients) == 4 and data.num_classes == 3 and data.input_shape == (28, 28, 1)
    for client, members in zip(data.clients, dirichlet_partition(y, 4, 0.5, 0)):
        held = ids_of(client.x_train) + ids_of(client.x_val) + ids_of(client.x_test)
        assert sorted(held) == members.tolist()                          # exactly the partition's images
        assert client.x_train.dtype == np.uint8
        np.testing.assert_array_equal(client.y_train, [k % 3 for k in ids_of(client.x_train)])
    paired = load_federated_data(f"medmnist:{path}", num_clients=4, alpha=0.01, seed=1, partition="pairs")
    assert [len(c.y_train) + len(c.y_val) + len(c.y_test) for c in paired.clients] == \
        [len(p) for p in paired_dirichlet_partition(y, 4, 0.01, 1)]
    rgb = read_medmnist(write_medmnist(tmp_path / "rgb.npz", rgb=True))[0]
    assert rgb.shape == (120, 28, 28, 3)


@pytest.mark.parametrize("overrides, message", [
    ({"val_labels": None}, r"bad\.npz: no array named 'val_labels'"),
    ({"test_labels": np.zeros((40, 14), np.uint8)}, r"test_labels has shape \(40, 14\): 14 labels per image"),
    ({"val_labels": np.zeros((19, 1), np.uint8)}, r"val_labels has shape \(19,\) for 20 images"),
    ({"test_images": np.zeros((40, 32, 32), np.uint8)}, r"test_images are \(32, 32, 1\), the train images"),
    ({"train_images": np.zeros((60, 28, 28, 2), np.uint8)}, r"train_images has shape \(60, 28, 28, 2\)"),
])
def test_medmnist_bad_files(tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        read_medmnist(write_medmnist(tmp_path / "bad.npz", **overrides))


def test_missing_medmnist_file(tmp_path):
    with pytest.raises(InputError, match=r"nowhere\.npz: file not found"):
        medmnist_clients(str(tmp_path / "nowhere.npz"))


def write_png(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(str(path), tf.io.encode_png(np.asarray(image, np.uint8)))


def write_covid_folder(root, per_class=8):
    """COVID/images/ + COVID/masks/ (the Radiography Database's layout), Normal/ and
    'Viral Pneumonia/' with images directly inside; metadata files beside them."""
    colours = {}
    for label, name in enumerate(["COVID", "Normal", "Viral Pneumonia"]):
        folder = root / name / "images" if name == "COVID" else root / name
        for i in range(per_class):
            colour = (20 * label + i, 100 + i, 200 - 10 * label)
            write_png(folder / f"{name}-{i}.png", np.broadcast_to(colour, (16, 12, 3)))
            colours[(label, i)] = colour
    write_png(root / "COVID" / "masks" / "COVID-0.png", np.full((16, 12, 1), 255))
    (root / "Normal" / "notes.txt").write_text("not an image")
    (root / "COVID.metadata.xlsx").write_text("sheet")
    return colours


def test_image_folder_decodes_resizes_and_labels_by_class_folder(tmp_path):
    colours = write_covid_folder(tmp_path)
    x, y, classes = read_image_folder(str(tmp_path), image_size=8, color="rgb")
    assert classes == ["COVID", "Normal", "Viral Pneumonia"]
    assert x.shape == (24, 8, 8, 3) and x.dtype == np.uint8                    # masks and other files ignored
    assert y.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    for row, (label, i) in enumerate((label, i) for label in range(3) for i in range(8)):
        np.testing.assert_array_equal(x[row], np.broadcast_to(colours[(label, i)], (8, 8, 3)))
    # Grey: an RGB colour becomes one channel; a grey image keeps its value exactly.
    write_png(tmp_path / "Normal" / "grey.png", np.full((16, 12, 1), 77))
    gray, _, _ = read_image_folder(str(tmp_path), image_size=8, color="gray")
    assert gray.shape == (25, 8, 8, 1) and gray[16].min() == gray[16].max() == 77   # sorted: after Normal-7.png
    assert min(colours[(1, 0)]) < gray[8, 0, 0, 0] < max(colours[(1, 0)])           # a weighted mean of R, G, B
    # Resizing averages: a half-black, half-bright image keeps black and bright at its sides.
    write_png(tmp_path / "Normal" / "a-half.png", np.concatenate([np.zeros((16, 8, 1)), np.full((16, 8, 1), 200)], 1))
    halves, labels, _ = read_image_folder(str(tmp_path), image_size=8, color="rgb")
    half = halves[16][..., 0]                                        # a-half.png: after Normal-7.png
    assert (half[:, :3] == 0).all() and (half[:, 5:] == 200).all() and 0 < half[0, 3] < half[0, 4] < 200
    data = imagefolder_clients(str(tmp_path), num_clients=2, alpha=1.0, seed=0, image_size=8)
    assert data.class_names == classes and data.input_shape == (8, 8, 3)
    assert [len(c.y_train) + len(c.y_val) + len(c.y_test) for c in data.clients] == \
        [len(p) for p in dirichlet_partition(labels, 2, 1.0, 0)]


def test_image_folder_jpeg_and_size(tmp_path):
    for name in ("a", "b"):
        os.makedirs(tmp_path / name)
        tf.io.write_file(str(tmp_path / name / "x.JPG"), tf.io.encode_jpeg(np.full((30, 30, 3), 90, np.uint8)))
    x, y, _ = read_image_folder(str(tmp_path), image_size=5)
    assert x.shape == (2, 5, 5, 3) and y.tolist() == [0, 1]
    assert np.abs(x.astype(int) - 90).max() <= 2                         # JPEG is lossy by a level or two


def test_image_folder_bad_input(tmp_path):
    with pytest.raises(InputError, match=r"imagefolder:.*nowhere: not a folder"):
        read_image_folder(str(tmp_path / "nowhere"))
    write_png(tmp_path / "COVID" / "0.png", np.zeros((4, 4, 1)))
    with pytest.raises(InputError, match=r"1 class sub-folder\(s\)"):
        read_image_folder(str(tmp_path))
    (tmp_path / "Normal").mkdir()
    (tmp_path / "Normal" / "readme.txt").write_text("no images here")
    with pytest.raises(InputError, match=r"Normal: no png/jpg/jpeg/bmp images"):
        read_image_folder(str(tmp_path))
    (tmp_path / "Normal" / "broken.png").write_bytes(b"these bytes are not a PNG")
    with pytest.raises(InputError, match=r"Normal/broken\.png: not a readable image"):
        read_image_folder(str(tmp_path))
    with pytest.raises(InputError, match=r"--color 'grey': expected gray or rgb"):
        read_image_folder(str(tmp_path), color="grey")
