"""Tests for `kerastl.data.files` (npz images, CSV tables) and the `npz:` route of
`kerastl.data.images.load_image_dataset`, on files written into `tmp_path`."""

import numpy as np
import pytest

from kerastl import InputError
from kerastl.data.files import load_npz_images, read_csv_table, read_npz
from kerastl.data.images import IMAGE_DATASETS, load_image_dataset
from kerastl.data.splits import stratified_holdout


def tagged_images(n, shape=(8, 8, 3)):
    """uint8 images whose every pixel is the image's index (n <= 256): an image identifies itself."""
    ids = np.arange(n, dtype=np.uint8).reshape((n,) + (1,) * len(shape))
    return np.broadcast_to(ids, (n, *shape)).copy()


def image_ids(x):
    """The index each tagged image carries (checks the image is constant)."""
    flat = x.reshape(len(x), -1)
    assert np.all(flat == flat[:, :1])
    return flat[:, 0].astype(np.int64)


def write_npz(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def assert_one_line_naming(err, path):
    message = str(err.value)
    assert path in message
    assert "\n" not in message


# Labels: 3 classes with 10, 20 and 5 examples, shuffled.
Y = np.random.default_rng(0).permutation(np.repeat([0, 1, 2], [10, 20, 5]))
X = tagged_images(len(Y))


# -------------------------------------------------------------------------------- load_npz_images


def test_x_y_only_holds_out_a_seeded_stratified_split(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y)
    data = load_npz_images(path, test_fraction=0.2, seed=4)
    assert data.name == f"npz:{path}"
    assert data.num_classes == 3 and data.class_names is None
    # round(0.2 * n_c) per class: 2 of 10, 4 of 20, 1 of 5.
    assert np.bincount(data.y_test, minlength=3).tolist() == [2, 4, 1]
    assert np.bincount(data.y_train, minlength=3).tolist() == [8, 16, 4]
    assert data.x_train.shape == (28, 8, 8, 3) and data.x_test.shape == (7, 8, 8, 3)
    assert data.x_train.dtype == np.uint8 and data.y_train.dtype == np.int64
    train_ids, test_ids = image_ids(data.x_train), image_ids(data.x_test)
    assert np.intersect1d(train_ids, test_ids).size == 0
    assert np.array_equal(np.sort(np.concatenate([train_ids, test_ids])), np.arange(len(Y)))
    # Images stay paired with their labels, and the split is the one stratified_holdout gives.
    assert np.array_equal(data.y_train, Y[train_ids]) and np.array_equal(data.y_test, Y[test_ids])
    keep, held = stratified_holdout(Y, 0.2, 4)
    assert np.array_equal(train_ids, keep) and np.array_equal(test_ids, held)


def test_x_y_only_split_depends_on_seed_only(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y)
    a, b = load_npz_images(path, seed=1), load_npz_images(path, seed=1)
    c = load_npz_images(path, seed=2)
    assert np.array_equal(image_ids(a.x_test), image_ids(b.x_test))
    assert not np.array_equal(image_ids(a.x_test), image_ids(c.x_test))


def test_test_fraction_is_honoured(tmp_path):
    data = load_npz_images(write_npz(tmp_path, x=X, y=Y), test_fraction=0.5, seed=0)
    # round(0.5 * 10) = 5, round(0.5 * 20) = 10, round(0.5 * 5) = round(2.5) = 2
    assert np.bincount(data.y_test, minlength=3).tolist() == [5, 10, 2]


def test_given_test_split_is_used_as_is(tmp_path):
    x_test = tagged_images(4) + 100
    y_test = np.array([2, 0, 1, 0])
    path = write_npz(tmp_path, x=X, y=Y, x_test=x_test, y_test=y_test)
    data = load_npz_images(path)
    assert np.array_equal(data.x_train, X) and np.array_equal(data.y_train, Y)
    assert np.array_equal(data.x_test, x_test) and np.array_equal(data.y_test, y_test)


def test_rank3_grayscale_gets_a_channel_axis(tmp_path):
    x = tagged_images(len(Y), shape=(6, 5))
    data = load_npz_images(write_npz(tmp_path, x=x, y=Y), seed=0)
    assert data.x_train.shape == (28, 6, 5, 1) and data.x_test.shape == (7, 6, 5, 1)
    assert data.image_shape == (6, 5, 1)
    ids = image_ids(data.x_train)
    assert np.array_equal(data.x_train[..., 0], x[ids])


def test_float_images_in_unit_range_stay_float32(tmp_path):
    x = (X.astype(np.float64) / 255.0)
    data = load_npz_images(write_npz(tmp_path, x=x, y=Y), seed=0)
    assert data.x_train.dtype == np.float32 and data.x_test.dtype == np.float32
    ids = np.rint(data.x_train[:, 0, 0, 0] * 255).astype(int)
    np.testing.assert_allclose(data.x_train, x[ids].astype(np.float32))
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_class_names_set_num_classes(tmp_path):
    # Labels only use 0..2, but 5 names make 5 classes.
    names = np.array(["a", "b", "c", "d", "e"])
    data = load_npz_images(write_npz(tmp_path, x=X, y=Y, class_names=names), seed=0)
    assert data.num_classes == 5
    assert data.class_names == ["a", "b", "c", "d", "e"]


def test_without_class_names_num_classes_is_max_label_plus_one(tmp_path):
    y = Y.copy()
    y[y == 2] = 4  # classes 2 and 3 absent
    data = load_npz_images(write_npz(tmp_path, x=X, y=y, x_test=X[:2], y_test=np.array([0, 4])))
    assert data.num_classes == 5


def test_extra_arrays_are_passed_on(tmp_path):
    x_unlabeled = tagged_images(3) + 200
    client = np.arange(len(Y)) % 4
    data = load_npz_images(write_npz(tmp_path, x=X, y=Y, x_unlabeled=x_unlabeled, client=client), seed=0)
    assert np.array_equal(data.x_unlabeled, x_unlabeled)
    # client ids follow the training examples they belong to
    assert np.array_equal(data.client, client[image_ids(data.x_train)])


def test_read_npz_returns_every_array(tmp_path):
    path = write_npz(tmp_path, x=np.arange(6).reshape(2, 3), y=np.array([1, 0]), extra=np.float32(2.5))
    arrays = read_npz(path)
    assert sorted(arrays) == ["extra", "x", "y"]
    assert arrays["x"].tolist() == [[0, 1, 2], [3, 4, 5]] and arrays["y"].tolist() == [1, 0]
    assert float(arrays["extra"]) == 2.5
    assert sorted(read_npz(path, required=("extra",))) == ["extra", "x", "y"]


def test_read_npz_missing_required_key(tmp_path):
    path = write_npz(tmp_path, a=np.zeros(2))
    with pytest.raises(InputError, match=r"no array named 'b'.*found: a") as err:
        read_npz(path, required=("a", "b"))
    assert_one_line_naming(err, path)


# ------------------------------------------------------------------------------------- bad inputs


def test_missing_file(tmp_path):
    path = str(tmp_path / "nope.npz")
    with pytest.raises(InputError, match="file not found") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)
    with pytest.raises(InputError, match="file not found"):
        read_npz(path)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_npz_images(str(tmp_path))


@pytest.mark.parametrize("content", [
    b"this is not a numpy archive at all\n" * 20,
    b"PK\x03\x04" + b"\x00garbage" * 20,   # zip magic, corrupt archive
    b"",
])
def test_not_an_npz(tmp_path, content):
    path = tmp_path / "garbage.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match="not a readable NumPy .npz archive") as err:
        load_npz_images(str(path))
    assert_one_line_naming(err, str(path))


def test_a_single_npy_array_is_not_an_npz(tmp_path):
    path = tmp_path / "array.npy"
    np.save(path, X)
    with pytest.raises(InputError, match="expected an .npz archive") as err:
        load_npz_images(str(path))
    assert_one_line_naming(err, str(path))


def test_npz_without_x(tmp_path):
    path = write_npz(tmp_path, y=Y)
    with pytest.raises(InputError, match=r"no array named 'x'; expected arrays x, y \(found: y\)") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_npz_without_y(tmp_path):
    path = write_npz(tmp_path, x=X, labels=Y)
    with pytest.raises(InputError, match=r"no array named 'y'; expected arrays x, y \(found: labels, x\)") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_negative_label(tmp_path):
    y = Y.copy()
    y[3] = -1
    path = write_npz(tmp_path, x=X, y=y)
    with pytest.raises(InputError, match=r"y: labels in \[-1, 2\], expected 0\.\.C-1") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_label_beyond_class_names(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y, class_names=np.array(["a", "b"]))
    with pytest.raises(InputError, match=r"y: labels in \[0, 2\], expected 0\.\.1") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_y_test_label_beyond_classes_of_y(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y, x_test=X[:3], y_test=np.array([0, 3, 1]))
    with pytest.raises(InputError, match=r"y_test: labels in \[0, 3\], expected 0\.\.2") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_float_labels_that_are_not_integers(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y + 0.5)
    with pytest.raises(InputError, match="expected integer class indices") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_single_class(tmp_path):
    path = write_npz(tmp_path, x=X, y=np.zeros(len(X), np.int64))
    with pytest.raises(InputError, match="at least 2 classes") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("shape, rank", [((35, 64), 2), ((35, 8, 8, 3, 1), 5)])
def test_images_of_the_wrong_rank(tmp_path, shape, rank):
    path = write_npz(tmp_path, x=np.zeros(shape, np.uint8), y=Y)
    with pytest.raises(InputError, match=rf"images of rank {rank} .*expected rank 4") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_images_with_too_many_channels(tmp_path):
    path = write_npz(tmp_path, x=np.zeros((35, 8, 8, 5), np.uint8), y=Y)
    with pytest.raises(InputError, match="images with 5 channels") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_pixel_values_out_of_range(tmp_path):
    path = write_npz(tmp_path, x=np.full((35, 4, 4, 1), 300, np.int32), y=Y)
    with pytest.raises(InputError, match=r"pixel values in \[300, 300\]") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_x_y_length_mismatch(tmp_path):
    path = write_npz(tmp_path, x=X[:30], y=Y)
    with pytest.raises(InputError, match="30 images in x but 35 labels in y") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_x_test_y_test_length_mismatch(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y, x_test=X[:4], y_test=np.array([0, 1, 2]))
    with pytest.raises(InputError, match="4 test images but 3 test labels") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


def test_x_test_image_shape_differs(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y, x_test=np.zeros((2, 4, 4, 3), np.uint8), y_test=np.array([0, 1]))
    with pytest.raises(InputError, match=r"x_test has images of shape \(4, 4, 3\)") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("only", ["x_test", "y_test"])
def test_only_one_of_x_test_y_test(tmp_path, only):
    extra = {"x_test": X[:3]} if only == "x_test" else {"y_test": Y[:3]}
    path = write_npz(tmp_path, x=X, y=Y, **extra)
    with pytest.raises(InputError, match="only one of x_test / y_test") as err:
        load_npz_images(path)
    assert_one_line_naming(err, path)


# ----------------------------------------------------------------------------- load_image_dataset


def test_load_image_dataset_npz_route(tmp_path):
    path = write_npz(tmp_path, x=X, y=Y)
    data = load_image_dataset(f"npz:{path}", seed=3)
    direct = load_npz_images(path, seed=3)
    assert data.name == f"npz:{path}" and data.num_classes == 3
    assert np.array_equal(data.x_test, direct.x_test) and np.array_equal(data.y_train, direct.y_train)
    # the seed is passed on: another seed gives another split
    other = load_image_dataset(f"npz:{path}", seed=4)
    assert not np.array_equal(image_ids(other.x_test), image_ids(data.x_test))


def test_load_image_dataset_npz_route_bad_file(tmp_path):
    path = str(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="file not found"):
        load_image_dataset(f"npz:{path}")


@pytest.mark.parametrize("spec", ["imagenet", "CIFAR10", "", "mnist"])
def test_load_image_dataset_unknown_name(spec):
    assert IMAGE_DATASETS == ("svhn", "cifar10", "cifar100", "stl10", "mnist5k")
    with pytest.raises(InputError) as err:
        load_image_dataset(spec)
    message = str(err.value)
    assert message.startswith(f"--dataset {spec!r} is unknown")
    assert "svhn, cifar10, cifar100, stl10, mnist5k or npz:PATH" in message
    assert "\n" not in message


# -------------------------------------------------------------------------------- read_csv_table


def write_csv(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_csv_numeric_features(tmp_path):
    path = write_csv(tmp_path, "a,b,name\n1,2.5,x\n3,-4,y\n")
    table = read_csv_table(path)
    assert table.feature_names == ["a", "b"]  # the text column is not a feature
    assert table.features.dtype == np.float32
    assert table.features.tolist() == [[1.0, 2.5], [3.0, -4.0]]
    assert table.time is None and table.labels is None


def test_csv_time_column_parsed_and_rows_sorted(tmp_path):
    path = write_csv(tmp_path, "when,v,label\n"
                               "2021-03-01 12:00,3,c\n"
                               "2021-01-15 00:00,1,a\n"
                               "2021-02-01 06:30,2,b\n")
    table = read_csv_table(path, time_column="when", label_column="label")
    assert table.time.dtype == np.dtype("datetime64[ns]")
    assert table.time.tolist() == np.array(["2021-01-15T00:00", "2021-02-01T06:30", "2021-03-01T12:00"],
                                           dtype="datetime64[ns]").tolist()
    assert table.feature_names == ["v"]
    assert table.features[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert table.labels.tolist() == ["a", "b", "c"]  # labels follow their rows


def test_csv_label_column(tmp_path):
    path = write_csv(tmp_path, "f1,target,f2\n0.5,1,10\n1.5,0,20\n2.5,2,30\n")
    table = read_csv_table(path, label_column="target")
    assert table.feature_names == ["f1", "f2"]
    assert table.features.tolist() == [[0.5, 10.0], [1.5, 20.0], [2.5, 30.0]]
    assert table.labels.dtype == np.int64 and table.labels.tolist() == [1, 0, 2]


def test_csv_integral_float_labels_become_int64(tmp_path):
    path = write_csv(tmp_path, "f,y\n1,1.0\n2,0.0\n")
    table = read_csv_table(path, label_column="y")
    assert table.labels.dtype == np.int64 and table.labels.tolist() == [1, 0]
    regression = read_csv_table(write_csv(tmp_path, "f,y\n1,1.5\n2,0.0\n", "reg.csv"), label_column="y")
    assert regression.labels.dtype == np.float64 and regression.labels.tolist() == [1.5, 0.0]


def test_csv_feature_columns_selection(tmp_path):
    path = write_csv(tmp_path, "a,b,c\n1,2,3\n4,5,6\n")
    table = read_csv_table(path, feature_columns=["c", "a"])
    assert table.feature_names == ["c", "a"]
    assert table.features.tolist() == [[3.0, 1.0], [6.0, 4.0]]


def test_csv_interpolate_fills_linearly(tmp_path):
    # After sorting by t: a = 1, _, _, 7, _  and b = _, 10, _, 40, 50
    path = write_csv(tmp_path, "t,a,b\n"
                               "2020-01-04,7,40\n"
                               "2020-01-01,1,\n"
                               "2020-01-03,,\n"
                               "2020-01-02,,10\n"
                               "2020-01-05,,50\n")
    table = read_csv_table(path, time_column="t", missing="interpolate")
    np.testing.assert_array_equal(table.features, np.array([
        [1.0, 10.0],   # b: nearest value at the start
        [3.0, 10.0],   # a: 1 + (7 - 1) / 3
        [5.0, 25.0],   # a: 1 + 2 * (7 - 1) / 3; b: (10 + 40) / 2
        [7.0, 40.0],
        [7.0, 50.0],   # a: nearest value at the end
    ], np.float32))


def test_csv_interpolate_entirely_empty_column(tmp_path):
    path = write_csv(tmp_path, "a,b\n1,\n2,\n")
    with pytest.raises(InputError, match="column 'b' is entirely empty") as err:
        read_csv_table(path, feature_columns=["a", "b"], missing="interpolate")
    assert_one_line_naming(err, path)


def test_csv_missing_file(tmp_path):
    path = str(tmp_path / "absent.csv")
    with pytest.raises(InputError, match="file not found") as err:
        read_csv_table(path)
    assert_one_line_naming(err, path)


@pytest.mark.parametrize("role, kwargs", [("time column", {"time_column": "date"}),
                                          ("label column", {"label_column": "y"})])
def test_csv_missing_time_or_label_column(tmp_path, role, kwargs):
    path = write_csv(tmp_path, "a,b\n1,2\n")
    with pytest.raises(InputError, match=rf"no {role} '{list(kwargs.values())[0]}'; columns are a, b") as err:
        read_csv_table(path, **kwargs)
    assert_one_line_naming(err, path)


def test_csv_missing_feature_column(tmp_path):
    path = write_csv(tmp_path, "a,b\n1,2\n")
    with pytest.raises(InputError, match="no column 'z'; columns are a, b"):
        read_csv_table(path, feature_columns=["a", "z"])


@pytest.mark.filterwarnings("ignore:Could not infer format")
def test_csv_time_column_that_is_not_dates(tmp_path):
    path = write_csv(tmp_path, "t,a\nyesterday,1\nnot a date,2\n")
    with pytest.raises(InputError, match="time column 't' does not parse as dates") as err:
        read_csv_table(path, time_column="t")
    assert str(path) in str(err.value)


def test_csv_non_numeric_column(tmp_path):
    path = write_csv(tmp_path, "a,b\n1,2\n3,oops\n")
    with pytest.raises(InputError, match="column 'b' holds non-numeric values") as err:
        read_csv_table(path, feature_columns=["a", "b"])
    assert_one_line_naming(err, path)


def test_csv_no_numeric_columns(tmp_path):
    path = write_csv(tmp_path, "a,b\nx,y\n")
    with pytest.raises(InputError, match="no numeric feature columns") as err:
        read_csv_table(path)
    assert_one_line_naming(err, path)


def test_csv_empty_cells_with_missing_error(tmp_path):
    path = write_csv(tmp_path, "a,b\n1,2\n,3\n4,\n5,\n")
    with pytest.raises(InputError, match=r"column 'a' has 1 empty cells; .*missing='interpolate'") as err:
        read_csv_table(path)
    assert_one_line_naming(err, path)


def test_csv_unknown_missing_option(tmp_path):
    path = write_csv(tmp_path, "a\n1\n")
    with pytest.raises(InputError, match="missing='drop', expected 'error' or 'interpolate'"):
        read_csv_table(path, missing="drop")


@pytest.mark.parametrize("text, what", [("", "not a readable CSV table"), ("a,b\n", "no data rows")])
def test_csv_empty_file(tmp_path, text, what):
    path = write_csv(tmp_path, text)
    with pytest.raises(InputError, match=what) as err:
        read_csv_table(path)
    assert_one_line_naming(err, path)
