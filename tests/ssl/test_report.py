"""Tests for `kerastl.ssl.report`: error summaries and the learning-curve figure."""

import struct

import pytest

from kerastl.ssl.report import error_summary, plot_learning

# 25 evaluations: the best (0.99) is early, outside the last 20; the last 20 are 0.89 down to 0.70
ACCURACIES = [0.1, 0.2, 0.3, 0.4, 0.99] + [round(0.89 - 0.01 * i, 2) for i in range(20)]


def test_error_summary_hand_computed():
    assert len(ACCURACIES) == 25 and ACCURACIES[-1] == 0.70
    summary = error_summary(ACCURACIES)
    assert set(summary) == {"test_error_best", "test_error_final", "test_error_median_last20"}
    assert summary["test_error_best"] == pytest.approx(1.0)         # 100 * (1 - 0.99)
    assert summary["test_error_final"] == pytest.approx(30.0)       # 100 * (1 - 0.70)
    # median of 0.70..0.89 = (0.79 + 0.80) / 2 = 0.795 (the median of all 25 would be 0.78)
    assert summary["test_error_median_last20"] == pytest.approx(20.5)


def test_error_summary_short_and_empty():
    assert error_summary([0.5, 0.9, 0.8]) == {"test_error_best": 10.0, "test_error_final": 20.0,
                                              "test_error_median_last20": 20.0}
    assert error_summary([0.25]) == {"test_error_best": 75.0, "test_error_final": 75.0,
                                     "test_error_median_last20": 75.0}
    # an even count below 20: median of all of them
    assert error_summary([0.6, 0.9, 0.7, 0.8])["test_error_median_last20"] == pytest.approx(25.0)
    with pytest.raises(ValueError):
        error_summary([])


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_plot_learning_without_curriculum(tmp_path):
    history = {"val_accuracy": [0.3, 0.5, 0.62, 0.7, 0.74, 0.75]}
    path = plot_learning(history, steps_per_eval=100, path=str(tmp_path / "curve.png"), title="fixmatch")
    assert path == str(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5000
    assert png_size(path) == (550, 380)    # one panel: 5.5 x 3.8 inches at 100 dpi


def test_plot_learning_with_classwise_acc(tmp_path):
    history = {"val_accuracy": [0.3, 0.5, 0.62, 0.7],
               "classwise_acc": [[0.0, 0.0, 0.0], [0.2, 0.1, 0.05], [0.6, 0.4, 0.3], [1.0, 0.8, 0.7]]}
    path = plot_learning(history, steps_per_eval=50, path=str(tmp_path / "flex.png"))
    assert (tmp_path / "flex.png").stat().st_size > 5000
    assert png_size(path) == (1100, 380)   # two panels: 11 x 3.8 inches at 100 dpi
