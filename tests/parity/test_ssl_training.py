"""The smallest paths of benchmarks/parity/ssl_training.py (kerastl's FlexMatch against USB's:
step speed and training end to end), checked for consistency: from copied weights both sides'
first losses agree, the reported rates and ratios are what the step times give, and the end
to end run trains both sides on the same batches and reports what it evaluated."""

import numpy as np
import pytest

from parity import ssl_training


@pytest.fixture(scope="module")
def speed():
    try:
        ssl_training.set_threads(2)
    except RuntimeError:  # TensorFlow already ran in this process (an earlier test module): these
        pass  # checks are of consistency, which does not depend on the thread count
    return ssl_training.measure_speed("small_cnn", rounds=2, steps_per_round=1, warmup=1, threads=2)


def test_speed_first_losses_agree_from_copied_weights(speed):
    losses = speed["first_step_loss"]
    assert set(losses) == {"kerastl_float32", "kerastl_bf16", "usb"}
    # same weights, same batch, float32 on both sides; bf16 rounds its activations
    assert losses["kerastl_float32"] == pytest.approx(losses["usb"], rel=1e-4)
    assert losses["kerastl_bf16"] == pytest.approx(losses["usb"], rel=5e-2)
    assert speed["first_step_loss_relative_difference"] == pytest.approx(
        abs(losses["kerastl_float32"] - losses["usb"]) / abs(losses["usb"]))


def test_speed_rates_and_ratios_are_what_the_step_times_give(speed):
    assert speed["images_per_step"] == 32 + 2 * 224
    for side in ("kerastl_float32", "kerastl_bf16", "usb"):
        entry = speed[side]
        assert len(entry["step_s"]) == 2 and all(t > 0 for t in entry["step_s"])
        assert entry["median_step_s"] == pytest.approx(np.median(entry["step_s"]))
        assert entry["images_per_s"] == pytest.approx(480 / entry["median_step_s"])
    assert speed["ratio_kerastl_over_usb"] == pytest.approx(
        speed["kerastl_float32"]["images_per_s"] / speed["usb"]["images_per_s"])
    assert speed["ratio_bf16_over_float32"] == pytest.approx(
        speed["kerastl_bf16"]["images_per_s"] / speed["kerastl_float32"]["images_per_s"])
    peak = ssl_training.peak_flops(2)["float32"]
    assert speed["usb"]["peak_flops_share"] == pytest.approx(
        3 * speed["forward_flops_per_image"] * speed["usb"]["images_per_s"] / peak)


def test_forward_flops_of_the_small_cnn_by_hand():
    # width 16 on 28x28x1: 3x3 convs 1->16, 16->16 at 28x28; 16->32, 32->32 at 14x14;
    # 32->64, 64->64 at 7x7; dense 64->10; 2 FLOPs per multiply-add.
    convs = 28 * 28 * 9 * (1 * 16 + 16 * 16) + 14 * 14 * 9 * (16 * 32 + 32 * 32) + 7 * 7 * 9 * (32 * 64 + 64 * 64)
    network = ssl_training.kerastl_network("small_cnn", (28, 28, 1), (0.1,), (0.3,))
    assert ssl_training.forward_flops(network) == 2 * (convs + 64 * 10)


def test_end_to_end_smallest_run_reports_consistent_numbers():
    settings = {**ssl_training.CPU_PRESET, "iterations": 3, "eval_every": 2}
    progress = []
    run = ssl_training.train_seed(0, 40, settings, log=lambda text: None, progress=progress.append)
    assert run["complete"] and run["iterations_done"] == 3
    assert len(progress) == 1 and progress[0]["iterations_done"] == 2 and not progress[0]["complete"]
    assert run["history"]["iteration"] == [2, 3]
    assert run["first_step_loss"]["kerastl"] == pytest.approx(run["first_step_loss"]["usb"], rel=1e-4)
    for name in ssl_training.EVALUATED:
        assert run["final"][name] == run["history"][name][-1]
        assert run["best"][name] == min(run["history"][name])
        assert 0.0 <= run["final"][name] <= 100.0
    assert len(run["labeled_index"]) == 40
    for side in ("kerastl", "usb"):  # two timed steps (the first is not timed)
        assert run["images_per_s"][side] == pytest.approx(2 * 480 / run["step_seconds"][side])
    summary = ssl_training.summarise({"0": run, "1": {**run, "seed": 1}})
    assert summary["kerastl_ema"]["final"]["std"] == 0.0
    assert summary["images_per_s_ratio"]["mean"] == pytest.approx(
        run["images_per_s"]["kerastl"] / run["images_per_s"]["usb"])
    assert ssl_training.summarise({"0": progress[0]}) is None  # incomplete seeds are not summarised
