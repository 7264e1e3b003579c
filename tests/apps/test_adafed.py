"""apps.adafed (local engine, main environment): outputs, per-client exports, bad input, and
FedAP against FedAvg on the real smartwatch clients. The TFF engine is tested in
tests/federated/test_fedap_process.py (federated environment)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from apps import adafed
from kerastl import app


def run_app(args):
    return app.main(adafed.build_parser, adafed.run, args)


def write_npz(path, clients=3, per_client=30, **overrides):
    rng = np.random.default_rng(0)
    n = clients * per_client
    y = rng.integers(0, 3, n)
    arrays = {"x": (np.eye(3, 4)[y][:, None, :] * 2 + rng.normal(size=(n, 32, 4))).astype(np.float32), "y": y,
              "client": np.repeat(np.arange(clients), per_client)}
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def test_run_writes_metrics_plots_and_one_export_per_client(tmp_path):
    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedap,fedavg,base", "--rounds", "3",
            "--lr", "0.05", "--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["algorithms"] == ["fedap", "fedavg", "base"] and metrics["clients"] == 3
    for name, result in metrics["results"].items():
        best = int(np.argmax(result["history"]["val_mean"]))
        assert result["best_round"] == best + 1
        assert result["mean_accuracy"] == pytest.approx(np.mean(result["client_accuracy"]))
        assert result["client_accuracy"] == result["history"]["test_clients"][best]
    assert metrics["mean_accuracy"] == metrics["results"]["fedap"]["mean_accuracy"]
    w = np.array(metrics["results"]["fedap"]["weight_matrix"])
    np.testing.assert_allclose(np.diag(w), 0.5)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    assert os.path.getsize(tmp_path / "run" / "plots" / "similarity.png") > 5_000
    assert os.path.getsize(tmp_path / "run" / "plots" / "client_accuracy.png") > 5_000
    assert metrics["export"] == [str(tmp_path / "exports" / "adafed" / f"client_{i}" / "1") for i in range(3)]
    x = np.load(data)["x"][:5]
    outputs = [tf.saved_model.load(p).signatures["serving_default"](x=tf.constant(x))["probabilities"].numpy()
               for p in metrics["export"]]
    for probabilities in outputs:
        np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)
    assert not np.allclose(outputs[0], outputs[1])          # FedAP: every client has its own model


def write_medmnist(path, n=60, drop=None, size=28):
    """A MedMNIST-layout .npz (train / val / test images and [N, 1] labels); class c is
    brighter by 80 * c, so a few rounds learn it."""
    rng = np.random.default_rng(1)
    arrays = {}
    for part in ("train", "val", "test"):
        y = rng.integers(0, 3, (n, 1)).astype(np.uint8)
        arrays[f"{part}_images"] = (rng.integers(0, 60, (n, size, size)) + 80 * y[:, :, None]).astype(np.uint8)
        arrays[f"{part}_labels"] = y
    np.savez(path, **{k: v for k, v in arrays.items() if k != drop})
    return str(path)


def write_image_folder(root, per_class=12, size=32, classes=("COVID", "Normal", "Viral Pneumonia")):
    """Class-per-folder PNGs as the COVID-19 radiography sets ship; class c brighter by 80 * c."""
    rng = np.random.default_rng(2)
    for c, name in enumerate(classes):
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(per_class):
            image = (rng.integers(0, 60, (size, size, 1)) + 80 * c).astype(np.uint8)
            tf.io.write_file(os.path.join(root, name, f"{i}.png"), tf.io.encode_png(image))
    return str(root)


def image_folder_with(d, name, content):
    root = write_image_folder(f"{d}/{name}", per_class=1, classes=("A",))
    os.makedirs(f"{root}/B")
    if content is not None:
        with open(f"{root}/B/broken.png", "wb") as f:
            f.write(content)
    return ["--dataset", f"imagefolder:{root}"]


def old_run_to_resume(d, lr="0.05", checkpoint_round=None):
    """A run folder as an interrupted `--preset smoke --dataset npz:... --lr <lr>` run leaves it."""
    data = write_npz(f"{d}/resume.npz")
    args = adafed.build_parser().parse_args(["--preset", "smoke", "--dataset", f"npz:{data}", "--lr", lr])
    os.makedirs(f"{d}/old/checkpoints")
    with open(f"{d}/old/checkpoints/run.json", "w") as f:
        json.dump(adafed.resume_config(args, ["fedap"]), f)
    if checkpoint_round is not None:
        np.savez(f"{d}/old/checkpoints/fedap.npz", round=checkpoint_round)
    return ["--dataset", f"npz:{data}", "--output", f"{d}/old", "--resume", "--lr", "0.05"]


BAD_INPUTS = {
    "npz without client": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/nc.npz", client=None)],
                           r"nc\.npz: no array named 'client'"),
    "client with too little data": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/tiny.npz", client=np.r_[np.zeros(88), [1, 1]])],
        r"tiny\.npz: client 1: 2 examples, expected at least 3"),
    "labels outside the model's classes": (
        lambda d: ["--dataset", "npz:" + write_npz(f"{d}/neg.npz", y=np.r_[np.zeros(89, int), [-1]])],
        r"neg\.npz: y: expected integer class labels 0\.\.C-1"),
    "rounds below 1": (lambda d: ["--rounds", "0"], r"--rounds 0: expected at least 1"),
    "clients below 1": (lambda d: ["--clients", "0", "--dataset", "mnist5k"], r"--clients 0: expected at least 1"),
    "self weight above 1": (lambda d: ["--self-weight", "1.5"], r"--self-weight 1\.5: expected a weight in \[0, 1\]"),
    "unknown algorithm": (lambda d: ["--algorithm", "fedap,fedsgd"], r"--algorithm 'fedsgd': expected one of"),
    "unknown dataset": (lambda d: ["--dataset", "femnist"], r"--dataset 'femnist' is unknown"),
    "pamap2 folder missing": (lambda d: ["--dataset", "pamap2", "--data-dir", f"{d}/nowhere"],
                              r"--data-dir .*nowhere: not a folder"),
    "tff engine outside the federated environment": (
        lambda d: ["--engine", "tff"], r"--engine tff needs tensorflow-federated 0\.87\.0.*tox -e federated"),
    "existing run": (lambda d: ["--output", f"{d}/old_run"], r"--output .*old_run: already holds a run"),
    "medmnist file missing": (lambda d: ["--dataset", f"medmnist:{d}/organamnist.npz"],
                              r"organamnist\.npz: file not found"),
    "medmnist without test images": (lambda d: ["--dataset", "medmnist:" + write_medmnist(f"{d}/m.npz",
                                                                                          drop="test_images")],
                                     r"m\.npz: no array named 'test_images'"),
    "class folder with no images": (lambda d: image_folder_with(d, "empty", None), r"empty/B: no png/jpg/jpeg/bmp"),
    "unreadable image": (lambda d: image_folder_with(d, "broken", b"not a png"),
                         r"broken/B/broken\.png: not a readable image"),
    "model that cannot take the data": (lambda d: ["--dataset", "npz:" + write_npz(f"{d}/w.npz"), "--model",
                                                   "lenet5_bn"], r"--model lenet5_bn: lenet5_bn takes images"),
    "resume with another --lr": (lambda d: old_run_to_resume(d, lr="0.01"),
                                 r"--resume: the checkpoint in .*old/checkpoints is from --lr 0\.01, not 0\.05"),
    "resume with --rounds below the checkpoint's": (lambda d: old_run_to_resume(d, checkpoint_round=5),
                                                    r"--rounds 2: .*fedap\.npz is already at round 5"),
    "resume without checkpoints": (lambda d: ["--output", f"{d}/old_run", "--resume"],
                                   r"--resume: .*old_run holds no checkpoints/"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, tmp_path, refused):
    os.makedirs(tmp_path / "old_run")
    (tmp_path / "old_run" / "metrics.json").write_text('{"mean_accuracy": 0.8}')
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path))
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    refused(lambda: run_app(["--preset", "smoke", "--export-dir", str(tmp_path / "exports")] + args), "apps.adafed", message, tmp_path)


def test_medmnist_layout_learns_with_the_reference_lenet(tmp_path):
    data = "medmnist:" + write_medmnist(tmp_path / "organsmnist.npz")           # 28 x 28 grey
    args = ["--preset", "smoke", "--dataset", data, "--clients", "3", "--alpha", "1.0", "--rounds", "4", "--lr",
            "0.05", "--batch-size", "4", "--algorithm", "fedap", "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["model"] == "lenet5_bn" and metrics["input_shape"] == [28, 28, 1] and metrics["clients"] == 3
    assert abs(sum(metrics["train_examples"]) - 0.4 * 180) <= 3          # all three parts pooled, 40 % to train
    # Brightness separates the classes: four rounds learn them well above chance (1/3).
    assert metrics["mean_accuracy"] > 0.6, metrics["results"]["fedap"]["history"]["test_mean"]


def test_image_folder_layout_runs_alexnet_bn_and_exports_it(tmp_path):
    data = "imagefolder:" + write_image_folder(tmp_path / "covid")               # 3 classes x 12 PNGs
    args = ["--preset", "smoke", "--dataset", data, "--image-size", "32", "--color", "gray", "--model", "alexnet_bn",
            "--clients", "2", "--alpha", "1.0", "--algorithm", "fedap", "--output", str(tmp_path / "run"),
            "--export-dir", str(tmp_path / "exp")]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert metrics["model"] == "alexnet_bn" and metrics["input_shape"] == [32, 32, 1]
    assert metrics["client_names"] == ["client 0", "client 1"] and len(metrics["export"]) == 2
    assert len(metrics["results"]["fedap"]["history"]["val_mean"]) == 2                        # smoke: 2 rounds
    # The served client model (AlexNet-BN's adaptive pooling inside) takes [0, 1] images.
    served = tf.saved_model.load(metrics["export"][1]).signatures["serving_default"]
    probabilities = served(x=tf.random.uniform([2, 32, 32, 1], seed=0))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(1), 1.0, rtol=1e-5)


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch, tensorboard_scalars):
    from kerastl.federated.simulation import FederatedSimulation

    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedap,fedavg", "--rounds", "4",
            "--lr", "0.05", "--no-export"]
    assert run_app(args + ["--output", str(tmp_path / "straight")]) == 0
    run_round = FederatedSimulation.run_round

    def interrupted(self, absent=frozenset()):   # Ctrl-C before fedavg's third round (fedap has finished)
        if self.algorithm == "fedavg" and self.round == 2:
            raise KeyboardInterrupt
        return run_round(self, absent)

    monkeypatch.setattr(FederatedSimulation, "run_round", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_app(args + ["--output", str(tmp_path / "resumed")])
    assert not os.path.exists(tmp_path / "resumed" / "metrics.json")
    monkeypatch.setattr(FederatedSimulation, "run_round", run_round)
    assert run_app(args + ["--output", str(tmp_path / "resumed"), "--resume"]) == 0
    results = {}
    for name in ("straight", "resumed"):
        with open(tmp_path / name / "metrics.json") as f:
            results[name] = json.load(f)["results"]
    for algorithm in ("fedap", "fedavg"):
        straight, resumed = results["straight"][algorithm], results["resumed"][algorithm]
        # Restored weights, W and seeded per-round data orders: measured equal to float precision
        # on this machine; TF's CPU kernels are not bitwise-deterministic in general, hence 1e-2.
        for key in ("val_mean", "test_mean", "train_loss_mean"):
            np.testing.assert_allclose(resumed["history"][key], straight["history"][key], atol=1e-2)
        assert len(resumed["history"]["val_mean"]) == 4
        assert resumed["best_round"] == straight["best_round"]
        np.testing.assert_allclose(resumed["client_accuracy"], straight["client_accuracy"], atol=1e-2)
        # TensorBoard holds each round once (fedavg's rounds 3 and 4 from the resumed process), as metrics.json.
        scalars = tensorboard_scalars(str(tmp_path / "resumed" / "tensorboard" / algorithm))
        history = resumed["history"]
        for tag, mean, clients in (("validation_accuracy", "val_mean", "val_clients"),
                                   ("test_accuracy", "test_mean", "test_clients"),
                                   ("train_loss", "train_loss_mean", "train_loss_clients")):
            assert sorted(scalars[f"{tag}/mean"]) == [1, 2, 3, 4]
            np.testing.assert_allclose([scalars[f"{tag}/mean"][r] for r in range(1, 5)], history[mean], rtol=1e-6)
            for k in range(3):
                np.testing.assert_allclose([scalars[f"{tag}/client_{k:02d}"][r] for r in range(1, 5)],
                                           [row[k] for row in history[clients]], rtol=1e-6)


def test_reference_settings_w_from_a_pretrained_model_and_pytorch_start_weights(tmp_path, monkeypatch):
    from kerastl.federated import simulation

    seen = {}
    pretrain = simulation.pretrain_statistics_model

    def spy(model_fn, data, share, epochs, *args):
        seen.update(share=share, epochs=epochs, start=[w.copy() for w in model_fn().get_weights()])
        seen["weights"] = pretrain(model_fn, data, share, epochs, *args)
        return seen["weights"]

    monkeypatch.setattr(simulation, "pretrain_statistics_model", spy)
    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedap,fedprox", "--lr", "0.05",
            "--statistics-model", "pretrained", "--pretrain-epochs", "3", "--init", "pytorch", "--self-weight", "0.3",
            "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert seen["share"] == 0.3 and seen["epochs"] == 3
    # PyTorch's start: every kernel within 1/sqrt(fan_in) (Keras's Glorot bound is wider for these layers)
    kernel = seen["start"][0]                                  # conv1: 9 steps x 4 channels in
    assert np.abs(kernel).max() <= 1 / np.sqrt(36) and np.abs(seen["start"][1]).max() > 0   # biases drawn too
    fedap = metrics["results"]["fedap"]
    w = np.array(fedap["weight_matrix"])
    np.testing.assert_allclose(np.diag(w), 0.3)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-5)
    # W from the first round on (no FedAvg pre-training rounds): the clients' first models differ already.
    with np.load(tmp_path / "run" / "checkpoints" / "fedap.npz") as saved:
        assert saved["measured"].all()
    assert fedap["failed_client_rounds"] == 0 and metrics["results"]["fedprox"]["failed_client_rounds"] == 0
    assert not np.allclose(seen["weights"][0], seen["start"][0])   # the statistics model was trained


def test_a_failing_client_is_counted_in_metrics_json(tmp_path, monkeypatch):
    from kerastl.federated import simulation

    make_clients = simulation.make_clients

    def with_a_broken_client(*args, **kwargs):
        clients = make_clients(*args, **kwargs)

        def fail(x, y):
            tf.debugging.assert_less(tf.reduce_max(x), -1e9, message="broken record")
            return x, y

        clients[1].train_in_round = lambda round_index: clients[1].train.map(fail)
        return clients

    monkeypatch.setattr(simulation, "make_clients", with_a_broken_client)
    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedavg", "--lr", "0.05",
            "--output", str(tmp_path / "run"), "--no-export"]
    with pytest.warns(RuntimeWarning, match=r"client 1 \(client 1\) dropped from the round: InvalidArgumentError"):
        assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        result = json.load(f)["results"]["fedavg"]
    assert result["failed_client_rounds"] == 2 and result["history"]["failed_clients"] == [[1], [1]]


def test_fedap_beats_fedavg_on_the_real_watch_clients(tmp_path):
    # Ten subjects of seglearn's smartwatch recordings, one client each (real non-IID data).
    # One run's margin moves with the CPU's kernels: mean client test accuracy FedAP - FedAvg,
    # seeds 0 / 1 / 2, measured with oneDNN held to each instruction set (ONEDNN_MAX_CPU_ISA):
    # AVX-512 0.041 / 0.020 / 0.065, AVX2 0.035 / 0.033 / 0.042, SSE4.1 0.036 / 0.027 / 0.047
    # (and 0.025 for seed 0 on an AMX machine). So: better on every seed, and by 2.5 points on
    # average (the smallest mean measured is 3.6).
    gaps = []
    for seed in (0, 1, 2):
        args = ["--preset", "cpu", "--dataset", "watch", "--algorithm", "fedap,fedavg", "--rounds", "8", "--lr", "0.05",
                "--model", "sensor_cnn_bn", "--seed", str(seed), "--no-export", "--output", str(tmp_path / f"run{seed}")]
        assert run_app(args) == 0
        with open(tmp_path / f"run{seed}" / "metrics.json") as f:
            results = json.load(f)["results"]
        fedap, fedavg = results["fedap"]["mean_accuracy"], results["fedavg"]["mean_accuracy"]
        assert fedap > fedavg + 0.01 and fedap > 0.75, (seed, fedap, fedavg)
        gaps.append(fedap - fedavg)
    assert np.mean(gaps) > 0.025, gaps


def test_an_algorithm_added_to_the_registry_alone_runs_through_the_app(tmp_path, monkeypatch, capsys):
    from kerastl.federated.algorithms import ALGORITHMS, FederatedAlgorithm
    from kerastl.federated.models import model_for

    monkeypatch.setitem(ALGORITHMS, "fedbn_head", FederatedAlgorithm(
        "fedbn_head", "FedAvg with the BN layers and the classifier head local", local=("batch_norm", "head")))
    with pytest.raises(SystemExit):
        adafed.build_parser().parse_args(["--help"])
    assert "fedbn_head (FedAvg with the BN layers and the classifier head local)" in " ".join(
        capsys.readouterr().out.split())
    data = write_npz(tmp_path / "d.npz")
    args = ["--preset", "smoke", "--dataset", f"npz:{data}", "--algorithm", "fedbn_head", "--lr", "0.05",
            "--output", str(tmp_path / "run"), "--no-export"]
    assert run_app(args) == 0
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    result = metrics["results"]["fedbn_head"]
    assert metrics["algorithms"] == ["fedbn_head"] and metrics["mean_accuracy"] == result["mean_accuracy"]
    assert result["mean_accuracy"] == pytest.approx(np.mean(result["client_accuracy"]))
    assert len(result["client_accuracy"]) == 3 and "weight_matrix" not in result
    assert os.listdir(tmp_path / "run" / "plots") == ["client_accuracy.png"]        # no W, no similarity plot
    # The last round's weights of every client: BN layers and the head their own, the rest one shared model.
    model = model_for(metrics["input_shape"], 3, name="sensor_cnn")
    local_layers = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.BatchNormalization)]
    local = {id(v) for layer in local_layers + [model.get_layer("logits")] for v in layer.weights}
    with np.load(tmp_path / "run" / "checkpoints" / "fedbn_head.npz") as saved:
        stacks, rounds = [saved[f"weights_{k}"] for k in range(len(model.weights))], int(saved["round"])
    assert len(local_layers) == 2 and rounds == 2
    for variable, stack in zip(model.weights, stacks):
        assert stack.shape == (3, *variable.shape)
        if id(variable) in local:
            assert not np.allclose(stack[0], stack[1]) and not np.allclose(stack[1], stack[2]), variable.path
        else:
            for row in stack[1:]:
                np.testing.assert_allclose(row, stack[0], rtol=1e-6, atol=1e-7, err_msg=variable.path)
