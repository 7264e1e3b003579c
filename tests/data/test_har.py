"""Activity windows for classification: the UCI HAR folder layout, the cross-time split, the
watch windows, and batches drawn from K segments. (Bad input: tests/apps/test_adarnn.py.)"""

import os

import numpy as np

from kerastl.data import har


def encoded_windows(count, first_row=0):
    """x[i, t, c] = 100 c + (first_row + i) + t / 128: every value says where it belongs."""
    rows = np.arange(first_row, first_row + count)[:, None, None]
    return (100.0 * np.arange(9)[None, None, :] + rows + np.arange(128)[None, :, None] / 128.0).astype(np.float32)


def write_small_har(folder, train_subjects=(1, 3), test_subjects=(2,), per_subject=20, class_names=None):
    parts, row = {}, 0
    for part, subjects in (("train", train_subjects), ("test", test_subjects)):
        count = per_subject * len(subjects)
        labels = np.arange(count) % 6 + 1
        parts[part] = (encoded_windows(count, row), labels, np.repeat(subjects, per_subject))
        row += count
    return har.write_uci_har(str(folder), parts, class_names)


def test_uci_har_layout_is_read_value_for_value(tmp_path):
    folder = write_small_har(tmp_path, class_names=["A", "B", "C", "D", "E", "F"])
    assert sorted(os.listdir(tmp_path / "train" / "Inertial Signals"))[0] == "body_acc_x_train.txt"
    # One file as the dataset writes it: leading spaces, double spaces, 3-digit exponents.
    with open(tmp_path / "test" / "Inertial Signals" / "total_acc_z_test.txt", "w") as f:
        for i in range(20):
            f.write("".join(f"  {v:.7e}".replace("e+00", "e+000").replace("e-00", "e-000").replace("e+01", "e+001")
                            .replace("e+02", "e+002") for v in 0.5 * i + np.arange(128) / 4.0) + "\n")
    windows = har.load_uci_har(folder)
    assert windows.x.shape == (60, 128, 9) and windows.x.dtype == np.float32
    assert windows.channel_names == ["body_acc_x", "body_acc_y", "body_acc_z", "body_gyro_x", "body_gyro_y",
                                     "body_gyro_z", "total_acc_x", "total_acc_y", "total_acc_z"]
    expected = encoded_windows(60)
    expected[40:, :, 8] = 0.5 * np.arange(20)[:, None] + np.arange(128)[None, :] / 4.0
    np.testing.assert_allclose(windows.x, expected, rtol=1e-6)
    assert windows.class_names == ["A", "B", "C", "D", "E", "F"]
    assert windows.y.tolist() == [i % 6 for i in range(40)] + [i % 6 for i in range(20)]  # labels 1..6 -> 0..5
    assert windows.groups.tolist() == [1] * 20 + [3] * 20 + [2] * 20
    assert windows.position.tolist() == list(range(20)) * 3
    assert windows.part.tolist() == ["train"] * 40 + ["test"] * 20 and windows.overlap == 1
    assert windows.group_names[3] == f"subject 3 ({tmp_path}/train/subject_train.txt)"
    os.remove(tmp_path / "activity_labels.txt")
    assert har.load_uci_har(folder).class_names == list(har.UCI_HAR_CLASSES)  # the dataset's names by default


def test_cross_time_split_by_hand(tmp_path):
    windows = har.load_uci_har(write_small_har(tmp_path))
    split = har.time_split(windows, "time", train_fraction=0.7, valid_fraction=0.1)
    # 20 windows per subject: edges at 12 and 14; the window after each edge overlaps the
    # one before it by half (UCI HAR's 50 % overlap) and is dropped.
    for offset in (0, 20, 40):
        assert (offset + np.arange(12)).tolist() == [i for i in split.train if offset <= i < offset + 20]
        assert [offset + 13] == [i for i in split.valid if offset <= i < offset + 20]
        assert (offset + np.arange(15, 20)).tolist() == [i for i in split.test if offset <= i < offset + 20]
    np.testing.assert_allclose(split.relative_time[:20], np.arange(20) / 20)
    info = split.to_dict(windows)
    assert info["windows"] == {"train": 36, "valid": 3, "test": 15} and info["groups"] == 3


def test_original_split_keeps_the_files_and_validates_on_the_end_of_training_subjects(tmp_path):
    windows = har.load_uci_har(write_small_har(tmp_path, per_subject=30))
    split = har.time_split(windows, "original", train_fraction=0.7, valid_fraction=0.1)
    assert split.test.tolist() == list(range(60, 90))  # the test file, whole
    assert split.train.tolist() == list(range(27)) + list(range(30, 57))
    assert split.valid.tolist() == [28, 29, 58, 59]  # 27 (and 57) overlap the last training windows


def test_watch_cross_time_split_tests_later_samples_than_it_trains_on():
    window, stride = 64, 16
    windows = har.load_windows("watch", window, stride)
    assert windows.x.shape[1:] == (64, 6) and windows.overlap == 3
    split = har.time_split(windows, "time", 0.7, 0.1)
    first_sample = windows.position * stride  # of each window, in its recording
    for recording in np.unique(windows.groups):
        def samples(part):  # [first sample, end) of the part's windows of this recording
            rows = part[windows.groups[part] == recording]
            return first_sample[rows].min(), first_sample[rows].max() + window

        train, valid, test = samples(split.train), samples(split.valid), samples(split.test)
        assert train[1] <= valid[0] and valid[1] <= test[0]  # in time order, no shared sample
    for part in (split.train, split.valid, split.test):  # every exercise on every side of the split
        assert np.bincount(windows.y[part], minlength=7).min() > 0
    assert len(np.intersect1d(split.train, split.test)) == 0


def test_window_batches_draw_each_segment_and_resume_exactly():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 4, 2)).astype(np.float32)
    y = np.arange(30) // 10  # segment k holds rows 10k..10k+9, all of class k
    segments = [np.arange(0, 10), np.arange(10, 20), np.arange(20, 30)]
    stream = har.window_batches(x, y, segments, batch_size=4, seed=1)
    batches = [b for _, b in zip(range(5), stream)]
    inputs, labels = batches[0]
    assert inputs.shape == (3, 4, 4, 2) and labels.numpy().tolist() == [[0] * 4, [1] * 4, [2] * 4]
    for k in range(3):
        rows = [int(np.flatnonzero((x == window).all(axis=(1, 2)))[0]) for window in inputs.numpy()[k]]
        assert all(10 * k <= row < 10 * k + 10 for row in rows) and len(set(rows)) == 4
    resumed = next(iter(har.window_batches(x, y, segments, batch_size=4, seed=1, start_step=3)))
    np.testing.assert_array_equal(resumed[0].numpy(), batches[3][0].numpy())
