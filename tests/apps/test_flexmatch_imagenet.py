"""apps.flexmatch --dataset imagenet: TorchSSL's ImageNet setting, streamed from tfds' imagenet2012.

Runs on `tfds.testing.mock_data` records (tests/fake_imagenet.py): 1,000 training records,
one per class, uniform grey JPEGs; tfds' preparation step is a no-op under the mock, so the
archives' names stand in the manual folder (the app checks them before asking tfds to build).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from fake_imagenet import SYNSETS, flat_images, mock_imagenet, place_archive_stand_ins

from apps import flexmatch
from kerastl import app

TRAIN_LABELS = np.arange(1000)
TEST_LABELS = np.arange(40) * 25
TINY = ["--dataset", "imagenet", "--preset", "smoke", "--iterations", "4", "--eval-every", "2",
        "--batch-size", "4", "--uratio", "2", "--image-size", "16", "--width", "8"]


def run_app(args):
    return app.main(flexmatch.build_parser, flexmatch.run, args)


def parse(args):
    parsed = flexmatch.build_parser().parse_args(args)
    flexmatch.check_args(parsed)
    return parsed


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flexmatch_imagenet")
    place_archive_stand_ins(root / "tfds")
    with mock_imagenet(TRAIN_LABELS, TEST_LABELS, flat_images(20)):
        assert run_app(TINY + ["--data-dir", str(root / "tfds"), "--output", str(root / "run"),
                               "--export-dir", str(root / "exports")]) == 0
    with open(root / "run" / "metrics.json") as f:
        return root, json.load(f)


def test_smoke_run_on_mock_imagenet_writes_metrics_plot_and_export(finished_run):
    root, metrics = finished_run
    assert metrics["dataset"] == "imagenet" and metrics["net"] == "small_cnn"
    assert metrics["num_labels"] == 1000 and metrics["num_unlabeled"] == 1000 and metrics["iterations"] == 4
    assert len(metrics["history"]["val_accuracy"]) == 2 and np.isfinite(metrics["history"]["loss"]).all()
    assert len(metrics["classwise_acc"]) == 1000 and 0.0 <= metrics["mask_ratio"] <= 1.0
    assert os.path.getsize(root / "run" / "plots" / "learning.png") > 10_000
    with open(root / "run" / "checkpoints" / "run.json") as f:
        assert json.load(f)["image_size"] == 16
    assert metrics["export"] == str(root / "exports" / "flexmatch" / "1")
    with open(os.path.join(metrics["export"], "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["class_names"] == SYNSETS and facts["preprocessing"].startswith("RGB resized to 16x16")


def test_export_scores_the_validation_images_as_the_runs_last_evaluation(finished_run):
    from kerastl.data.imagenet import decode_resized
    from fake_imagenet import jpeg

    root, metrics = finished_run
    greys = flat_images(20)
    images = tf.stack([decode_resized(jpeg(greys[i % 20]), 16) for i in range(len(TEST_LABELS))])
    served = tf.saved_model.load(metrics["export"]).signatures["serving_default"](images=images)
    assert served["probabilities"].shape == (40, 1000)
    np.testing.assert_allclose(served["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    accuracy = np.mean(served["classes"].numpy() == TEST_LABELS)
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_resuming_with_another_image_size_is_refused(finished_run, refused):
    root, _ = finished_run
    args = TINY[:-4] + ["--image-size", "24", "--width", "8", "--data-dir", str(root / "tfds"),
                        "--output", str(root / "run"), "--resume", "--no-export"]
    refused(lambda: run_app(args), "apps.flexmatch",
            r"--resume: the checkpoint in .*run/checkpoints is from --image-size 16, not 24", root)


def test_paper_preset_selects_torchssls_imagenet_hyperparameters():
    args = parse(["--dataset", "imagenet", "--preset", "paper"])
    chosen = {key: getattr(args, key) for key in flexmatch.IMAGENET_PRESETS["paper"]}
    # TorchSSL config/flexmatch/flexmatch_imagenet_100000_0.yaml; 2^20 iterations as the paper
    # reports; evaluations every 1,000 iterations in the last 20 % as TorchSSL's training loop
    assert chosen == {"num_labels": 100_000, "iterations": 2**20, "eval_every": 10_000, "late_eval_every": 1000,
                      "batch_size": 32, "uratio": 7, "lr": 0.03, "weight_decay": 3e-4, "ema_decay": 0.999,
                      "bn_momentum": 0.9, "net": "resnet50", "image_size": 224}
    assert args.tau is None and args.algorithm == "flexmatch"  # tau: FlexMatch's 0.95
    # the command line still wins, and the other datasets keep the general presets
    args = parse(["--dataset", "imagenet", "--preset", "paper", "--batch-size", "64", "--image-size", "128"])
    assert (args.batch_size, args.image_size, args.num_labels) == (64, 128, 100_000)
    args = parse(["--dataset", "cifar10", "--preset", "paper"])
    assert (args.num_labels, args.batch_size, args.bn_momentum, args.image_size) == (40, 64, 0.999, None)
    assert (args.eval_every, args.late_eval_every) == (5000, 1000)  # the general paper preset: TorchSSL's
    smoke = parse(["--dataset", "imagenet", "--preset", "smoke"])
    assert (smoke.num_labels, smoke.image_size, smoke.net) == (1000, 32, "small_cnn")


@pytest.mark.parametrize("extra, message", [
    ([], r"imagenet': .*/tfds/downloads/manual lacks ILSVRC2012_img_train\.tar and ILSVRC2012_img_val\.tar; "
         r"tfds builds imagenet2012 once from .* placed in that folder, or in the folder --manual-dir names$"),
    (["--manual-dir", "MANUAL"], r"imagenet': .*/archives lacks ILSVRC2012_img_val\.tar;"),
])
def test_missing_archives_are_one_line_exit_2_and_change_nothing(extra, message, tmp_path, refused):
    (tmp_path / "archives").mkdir()
    (tmp_path / "archives" / "ILSVRC2012_img_train.tar").write_bytes(b"")
    extra = [str(tmp_path / "archives") if value == "MANUAL" else value for value in extra]
    args = TINY + ["--data-dir", str(tmp_path / "tfds"), "--output", str(tmp_path / "run"),
                   "--export-dir", str(tmp_path / "exports"), *extra]
    refused(lambda: run_app(args), "apps.flexmatch", message, tmp_path)


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist5k", "--image-size", "32"], r"^apps.flexmatch: error: --image-size: only for --dataset "
                                                     r"imagenet, not mnist5k$"),
    (["--dataset", "mnist5k", "--manual-dir", "somewhere"], r"--manual-dir: only for --dataset imagenet"),
    (TINY + ["--num-labels", "500"], r"--num-labels 500: expected a positive multiple of the 1000 classes"),
    (TINY + ["--image-size", "4"], r"--image-size 4: expected at least 8 pixels$"),
    (["--dataset", "imagenet21k"], r"--dataset 'imagenet21k' is unknown; expected one of svhn, cifar10, cifar100, "
                                   r"stl10, mnist5k or npz:PATH \(read into memory\), or imagenet \(streamed\)$"),
])
def test_bad_imagenet_options_are_refused(args, message, tmp_path, refused):
    place_archive_stand_ins(tmp_path / "tfds")
    with mock_imagenet(TRAIN_LABELS, TEST_LABELS, flat_images(2)):
        refused(lambda: run_app(args + ["--data-dir", str(tmp_path / "tfds"), "--output", str(tmp_path / "run"),
                                        "--export-dir", str(tmp_path / "exports")]),
                "apps.flexmatch", message, tmp_path)
