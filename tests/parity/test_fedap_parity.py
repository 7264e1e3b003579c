"""Step parity of kerastl's FedAP, FedAvg, FedBN, FedProx and Base with PersonalizedFL: two
rounds on four mnist5k clients from the same LeNet-5-BN weights and batches
(benchmarks/parity/fedap.py). Needs the checkout: KERASTL_REF_PERSONALIZEDFL (docs/parity.md);
without it the harness exits with code 2 and these tests fail.

Every quantity agrees within relative 1e-5 except the known differences of
`fedap.KNOWN`, each asserted small here. The watch setting's network: kerastl's sensor_cnn
copied into the reference's PamapModel resized to the windows computes the same."""

import pytest

from parity import common
from parity import fedap as fedap_parity


@pytest.fixture(scope="module")
def comparisons():
    folder = common.reference_dir(fedap_parity.NAME)
    return fedap_parity.step_parity(folder, rounds=2)


@pytest.mark.parametrize("algorithm", fedap_parity.ALGORITHMS)
def test_weights_after_local_training_and_aggregation_agree(comparisons, algorithm):
    summary = comparisons[algorithm].summary()
    assert {"weights", "bn_moving_mean", "bn_moving_variance"} <= set(summary)
    assert summary["weights"]["steps"] == 2 * 4                       # two rounds x four clients
    # float32: measured worst 7.6e-5 .. 1.3e-3, always conv1_bn's beta (starts at 0, so its own
    # scale is tiny) after BN's float32 reductions; the means of the BN moving statistics 1.2e-5 .. 4.3e-5
    # (benchmarks/results/parity_fedap.md). Within 1e-5 they do not agree in float32.
    assert summary["weights"]["worst"] < 5e-3 and summary["bn_moving_mean"]["worst"] < 1e-4, summary
    assert summary["bias_before_bn"]["ok"], summary
    # PyTorch's running variance takes the unbiased batch variance: small, and only there.
    assert summary["bn_moving_variance"]["worst"] < 1e-2


def test_fedap_statistics_and_w_agree(comparisons):
    summary = comparisons["fedap"].summary()
    for layer in (1, 2):
        assert summary[f"statistics_mean/layer{layer}"]["ok"], summary
        # per-batch unbiased variances merged (the reference) vs the exact population variance
        assert summary[f"statistics_variance/layer{layer}"]["worst"] < 1e-2
    assert summary["w_same_statistics"]["ok"], summary                # get_weight_matrix1 == fedap_weights
    assert summary["w_own_statistics"]["worst"] < 1e-2


# ---------------------------------------------------------------- the watch setting's network


def test_sensor_cnn_copied_into_the_resized_pamap_model_computes_the_same(reference_checkout):
    """kerastl's sensor_cnn with random weights and BN moving statistics, copied into the
    reference's PamapModel resized to the watch windows (6 channels, 100 steps): in inference
    mode the logits, fc1's features (`getfinalfea`, through the swapped reshape) and FedAP's
    statistics layers (`getallfea`: conv1's and conv2's outputs, kerastl's BN inputs) agree."""
    import keras
    import numpy as np
    import torch

    from kerastl.data.clients import load_federated_data
    from kerastl.federated.models import model_for
    from kerastl.federated.statistics import bn_input_model

    x = load_federated_data("watch", seed=0).clients[0].x_test[:8]
    assert x.shape == (8, 100, 6)
    model = model_for(x.shape[1:], fedap_parity.PAMAP_CLASSES, 0, "sensor_cnn", 1.0, "pytorch")
    rng = np.random.default_rng(1)
    for layer in (model.get_layer("conv1_bn"), model.get_layer("conv2_bn")):
        for variable in layer.weights:   # gamma, beta, moving mean, moving variance: none at its default
            low = 0.5 if "variance" in variable.name or "gamma" in variable.name else -0.5
            variable.assign(rng.uniform(low, low + 1.0, variable.shape).astype(np.float32))
    for name in ("conv1", "conv2", "fc1", "logits"):
        bias = model.get_layer(name).bias
        bias.assign(rng.uniform(-0.3, 0.3, bias.shape).astype(np.float32))
    with fedap_parity.reference(reference_checkout(fedap_parity.NAME), x.shape[1:]) as ref:
        module = ref.pamap()
        fedap_parity.copy_sensor_cnn(model, module)
    assert (module.conv1.in_channels, module.fc1.in_features, module.fc2.out_features) == (6, 32 * 19, 10)
    assert module.conv2.in_channels == 16 and module.fc1.out_features == 64       # the reference's
    module.eval()
    inputs = torch.from_numpy(fedap_parity.nchw(x))
    assert inputs.shape == (8, 6, 1, 100)
    with torch.no_grad():
        logits, features, statistics = module(inputs), module.getfinalfea(inputs)[0], module.getallfea(inputs)
    ours = model(x, training=False).numpy()
    assert np.std(ours) > 0.1                                    # random weights: logits far from constant
    assert common.relative_error(ours, logits.numpy()) <= 1e-5
    fc1 = keras.Model(model.input, model.get_layer("fc1").output)
    assert common.relative_error(fc1(x, training=False).numpy(), features.numpy()) <= 1e-5
    ours_statistics = bn_input_model(model)(x, training=False)
    for keras_side, torch_side in zip(ours_statistics, statistics, strict=True):
        # PyTorch's (N, channels, 1, time) as Keras's (N, time, channels)
        assert common.relative_error(keras_side.numpy(), torch_side[:, :, 0].permute(0, 2, 1).numpy()) <= 1e-5
    # the flatten order matters: fc1 copied in Keras's row order computes other logits
    kernel = model.get_layer("fc1").kernel.numpy()
    with torch.no_grad():
        module.fc1.weight.copy_(torch.from_numpy(kernel.T.copy()))
        assert common.relative_error(ours, module(inputs).numpy()) > 1e-2


# ---------------------------------------------------------------- --merge (no training)


def _summary(worst):
    return {"weights": {"steps": 8, "worst": worst, "ok": True}}


def _run(algorithm, seed, accuracy, made_by=None):
    run = {"setting": "mnist5k-0.1", "algorithm": algorithm, "seed": seed,
           "kerastl": {"mean_accuracy": accuracy, "seconds_per_round": 1.0},
           "reference": {"mean_accuracy": accuracy - 0.1, "seconds_per_round": 2.0}}
    return {**run, "made_by": made_by} if made_by else run


def _previous_file(tmp_path, reference, rounds=20):
    import json

    head = common.provenance.git("rev-parse", "HEAD").stdout.strip()
    unknown = {"command": "older", "commit": "0" * 40, "dirty": False}   # a commit git does not know: not today's
    content = {"reference": reference,
               "step": {"fedap": {"summary": _summary(1e-3)}, "fedprox": {"summary": _summary(2e-3)}},
               "step_float64": {"fedap": {"summary": _summary(1e-7)}, "base": {"summary": _summary(3e-7),
                                                                               "made_by": unknown}},
               "end_to_end": {"rounds": rounds, "pretrain_epochs": 150,
                              "runs": [_run("fedap", 0, 0.4), _run("fedap", 1, 0.5), _run("fedprox", 0, 0.9, unknown)]},
               "provenance": {"commit": head, "command": "old command", "dirty_dependencies": []}}
    path = tmp_path / "parity_fedap.json"
    path.write_text(json.dumps(content))
    return str(path)


# A path no commit and no working tree has: nothing it names changed since HEAD.
NO_CHANGE = ["tests/parity/no_such_dependency.py"]


def test_merge_keeps_the_parts_this_command_does_not_make(tmp_path):
    reference = {"repository": "r", "commit": "c"}
    previous = fedap_parity.load_previous(_previous_file(tmp_path, reference), reference, NO_CHANGE,
                                          log=lambda text: None)
    # Parts without their own made_by get the file's provenance; one made at an unknown commit is dropped.
    assert previous["step"]["fedap"]["made_by"]["command"] == "old command"
    assert set(previous["step_float64"]) == {"fedap"}
    assert [(r["algorithm"], r["seed"]) for r in previous["end_to_end"]["runs"]] == [("fedap", 0), ("fedap", 1)]

    new = {"command": "new command", "commit": "abc", "dirty": False}
    ours = {"step": {"fedprox": {"summary": _summary(4e-3), "made_by": new}},
            "step_float64": {"fedprox": {"summary": _summary(5e-7), "made_by": new}},
            "end_to_end": {"rounds": 20, "pretrain_epochs": 150,
                           "runs": [_run("fedprox", 0, 0.3, new), _run("fedprox", 1, 0.5, new)]}}
    content = fedap_parity.merged(previous, ours)
    assert list(content["step"]) == ["fedap", "fedprox"]
    assert content["step"]["fedprox"]["summary"]["weights"]["worst"] == 4e-3          # ours replaces theirs
    assert content["step"]["fedap"]["summary"]["weights"]["worst"] == 1e-3            # theirs kept
    assert list(content["step_float64"]) == ["fedap", "fedprox"]
    summary = content["end_to_end"]["summary"]["mnist5k-0.1"]
    assert summary["fedap"]["kerastl"]["mean_accuracy"]["values"] == [0.4, 0.5]
    assert summary["fedprox"]["kerastl"]["mean_accuracy"]["mean"] == pytest.approx(0.4)
    assert summary["fedprox"]["reference"]["mean_accuracy"]["n"] == 2
    text = fedap_parity.markdown(content)
    assert "| mnist5k-0.1 | fedap | 2 | 45.00 +- 7.07 |" in text
    assert "| mnist5k-0.1 | fedprox | 2 | 40.00 +- 14.14 |" in text
    assert "| fedap | weights | 8 | 1.00e-03 | ok |" in text and "| fedprox | weights | 8 | 4.00e-03 | ok |" in text
    assert "`old command`" in text and "`new command`" in text
    assert f"- mnist5k-0.1: {fedap_parity.SETTINGS['mnist5k-0.1']}" in text and "- watch:" not in text


def test_merge_keeps_no_runs_of_other_rounds_nor_another_reference(tmp_path):
    reference = {"repository": "r", "commit": "c"}
    path = _previous_file(tmp_path, reference, rounds=10)
    previous = fedap_parity.load_previous(path, reference, NO_CHANGE, log=lambda text: None)
    ours = {"end_to_end": {"rounds": 20, "pretrain_epochs": 150, "runs": [_run("base", 0, 0.2)]}}
    content = fedap_parity.merged(previous, ours)
    assert [r["algorithm"] for r in content["end_to_end"]["runs"]] == ["base"]
    assert list(content["step"]) == ["fedap", "fedprox"]                              # step parity still kept
    assert fedap_parity.load_previous(path, {"repository": "r", "commit": "d"}, NO_CHANGE, log=lambda t: None) == {}
    # The same commit in another folder is the same reference; a checkout of unknown commit is none.
    assert fedap_parity.load_previous(path, {**reference, "path": "/elsewhere"}, NO_CHANGE, log=lambda t: None)
    unknown = _previous_file(tmp_path, {"repository": "r", "commit": None})
    assert fedap_parity.load_previous(unknown, {"repository": "r", "commit": None}, NO_CHANGE, log=lambda t: None) == {}
