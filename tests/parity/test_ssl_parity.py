"""Step parity of kerastl's TorchSSL algorithms with USB's (semilearn 0.3.2), short version of
benchmarks/parity/ssl.py: 5 steps on the small CNN, from the same weights on the same arrays,
the same random draws (MixUp, VAT's direction, ReMixMatch's rotations) on both sides.

Run with both sides in float64 and a constant learning rate, so float32 rounding does not
hide what the methods compute: then every quantity agrees within the parity tolerances. Each
pairing's switches (ssl.ALGORITHMS: UDA without sharpening, MixMatch / ReMixMatch without
interleaving, ReMixMatch's alignment epsilon) and the batch-norm switch (kerastl's network with
`TorchBatchNormalization`, whose moving variance averages the unbiased batch variance as
PyTorch's) set kerastl to what USB 0.3.2 computes; docs/parity.md says why each exists. The
`keras-bn` variant keeps Keras' layer: then the moving variance alone differs, asserted below.

VAT is checked at a probe step xi of 1e-3 (`vat_xi1e-3`, both sides): at its default 1e-6 the
power iteration's direction amplifies rounding by ~1/xi, so USB moves its own adversarial
logits by ~1e-6 when its weights move by 1e-12 (asserted below with the `usb-self` variant),
and any two implementations separate within a few steps."""

import numpy as np
import pytest

from parity import common
from parity import ssl as ssl_parity

STEPS = 5
ALGORITHMS = ("fixmatch", "flexmatch", "uda", "pseudolabel", "flex_pseudolabel", "pimodel", "meanteacher",
              "vat_xi1e-3", "mixmatch", "remixmatch")
RUNS = tuple(f"{name}/small_cnn/lr-constant+float64" for name in ALGORITHMS)


class Runs(dict):
    """Each run is made when a test first asks for it, so `-k vat` runs VAT alone."""

    def __missing__(self, name):
        self[name] = ssl_parity.run(ssl_parity.Setting.from_run(name, steps=STEPS))
        return self[name]


@pytest.fixture(scope="module")
def runs():
    return Runs()


@pytest.mark.parametrize("name", RUNS)
def test_every_quantity_agrees_within_tolerance(runs, name):
    comparison, extras = runs[name]
    summary = comparison.summary()
    pairing = ssl_parity.ALGORITHMS[name.split("/")[0]]
    expected = {"lr", "logits", "sup_loss", "unsup_loss", "total_loss", "weights", "bn_moving_mean",
                "bn_moving_variance", "ema_weights"} | set(pairing.state)
    if pairing.masked:
        expected |= {"pseudo_label", "mask"}
    if pairing.warmup is not None:
        expected |= {"classwise_acc", "selected_label"}
    assert set(summary) == expected
    assert all(entry["steps"] == STEPS for entry in summary.values())
    failing = {quantity: entry for quantity, entry in summary.items() if not entry["ok"]}
    assert failing == {}
    if pairing.masked:  # the comparison is not vacuous: some unlabeled examples pass the mask
        assert max(extras["mask_ratio"]) > 0
        assert extras["mask_flips"] == []


@pytest.mark.parametrize("name", ["flexmatch/small_cnn/lr-constant+float64",
                                  "flex_pseudolabel/small_cnn/lr-constant+float64"])
def test_cpl_state_moves_and_matches_exactly(runs, name):
    comparison, _ = runs[name]
    exact = [row for row in comparison.rows if row["quantity"] in ("classwise_acc", "selected_label")]
    assert len(exact) == 2 * STEPS and all(row["differing"] == 0 for row in exact)


def test_every_forward_pass_is_compared(runs):
    """The logits row covers every pass kerastl runs: Pseudo-Label 2 (labeled, unlabeled
    frozen), Pi-Model and Mean Teacher 3, VAT 4 (labeled, clean, probe, adversarial),
    MixMatch 5 (2 guesses, 3 chunks), ReMixMatch 7 (guess, 4 chunks, strong view, rotation)."""
    passes = {"fixmatch": 1, "pseudolabel": 2, "pimodel": 3, "meanteacher": 3, "vat_xi1e-3": 4, "mixmatch": 5,
              "remixmatch": 7}
    for algorithm, count in passes.items():
        comparison, _ = runs[f"{algorithm}/small_cnn/lr-constant+float64"]
        rows = [row for row in comparison.rows if row["quantity"] == "logits"]
        assert all(row["tensors"] == count for row in rows), algorithm


def test_with_keras_batch_norm_only_the_running_variance_differs(runs):
    """Without the switch (`keras-bn`) the moving variance differs, by about (1 - momentum) / n
    per step, and nothing else does; with it the moving variance agrees to float64 rounding."""
    switched, _ = runs["fixmatch/small_cnn/lr-constant+float64"]
    keras_bn, _ = runs["fixmatch/small_cnn/lr-constant+float64+keras-bn"]
    assert switched.summary()["bn_moving_variance"]["worst"] < 1e-10
    summary = keras_bn.summary()
    assert 1e-6 < summary["bn_moving_variance"]["worst"] < 2e-3
    assert [quantity for quantity, entry in summary.items() if not entry["ok"]] == ["bn_moving_variance"]


def test_float64_runs_keep_kerastl_state_in_float64():
    from kerastl.ssl import build_algorithm

    def p_model():
        return build_algorithm("remixmatch", 64, 10, 50).p_model.dtype

    with ssl_parity.float64_state():
        assert p_model() == "float64"
    assert p_model() == "float32"  # kerastl's own: float32 under any dtype policy


def test_at_the_default_xi_vat_amplifies_a_1e_12_change_of_usbs_own_weights_a_million_fold(runs):
    """Why VAT's default setting cannot show step parity for long in any pair of
    implementations: USB against itself, weights moved by 1e-12, differs by ~1e-6 in the
    adversarial pass at step 1; at xi 1e-3 the same change stays at ~1e-12."""
    default, _ = runs["vat/small_cnn/lr-constant+float64+usb-self"]
    larger_xi, _ = runs["vat_xi1e-3/small_cnn/lr-constant+float64+usb-self"]
    first_step = {name: [row for row in comparison.rows if row["quantity"] == "logits" and row["step"] == 1][0]
                  for name, comparison in (("default", default), ("larger_xi", larger_xi))}
    assert first_step["default"]["relative_error"] > 1e-7 and first_step["default"]["worst_tensor"] == "pass 3"
    assert first_step["larger_xi"]["relative_error"] < 1e-9


def test_vat_at_the_default_xi_agrees_for_its_first_two_steps(runs):
    comparison, _ = runs["vat/small_cnn/lr-constant+float64"]
    rows = [row for row in comparison.rows if row["step"] <= 2]
    assert rows and all(row["ok"] for row in rows), [row for row in rows if not row["ok"]]


def test_usb_loads_with_stubs_only_for_unused_packages():
    usb = ssl_parity.load_usb()
    assert {pairing.usb for pairing in ssl_parity.ALGORITHMS.values()} <= set(usb["registry"].keys())
    assert {"torchvision", "wandb", "transformers", "timm", "torchaudio", "skimage"} <= set(usb["stubbed"])
    assert common.reference_info("semilearn") == {"package": "semilearn", "version": "0.3.2"}


def test_same_arrays_reach_both_sides():
    setting = ssl_parity.Setting.from_run("flexmatch/small_cnn", steps=2)
    first, second = ssl_parity.batches(setting), ssl_parity.batches(setting)
    for a, b in zip(first, second):
        assert all(np.array_equal(a[key], b[key]) for key in a)
    batch = first[0]
    assert batch["x_lb"].shape == (16, 28, 28, 1) and batch["x_ulb_s"].shape == (112, 28, 28, 1)
    assert not np.array_equal(batch["x_ulb_w"], batch["x_ulb_s"])  # weak and strong views differ
    # ReMixMatch's extras come from their own generator: the base arrays are FixMatch's.
    remix = ssl_parity.batches(ssl_parity.Setting.from_run("remixmatch/small_cnn", steps=1, uratio=7))[0]
    assert all(np.array_equal(remix[key], batch[key]) for key in batch)
    assert remix["mixup_order"].shape == (16 * (1 + 3 * 7),) and 0 <= remix["mixup_lambda"] <= 1
    for image, rotated, k in zip(remix["x_ulb_s_0"], remix["x_ulb_s_0_rot"], remix["rot_v"]):
        np.testing.assert_array_equal(rotated, np.rot90(image, k))


def test_run_names_are_checked():
    with pytest.raises(ValueError, match="run 'fixmatch/vgg'"):
        ssl_parity.Setting.from_run("fixmatch/vgg")
    setting = ssl_parity.Setting.from_run("fixmatch/wrn_28_2/float64+lr-constant")
    assert setting.float64 and setting.horizon == ssl_parity.CONSTANT_LR_HORIZON
    assert setting.name == "fixmatch/wrn_28_2/lr-constant+float64"
    assert not setting.keras_bn and ssl_parity.Setting.from_run("fixmatch/small_cnn/keras-bn+float64").name == \
        "fixmatch/small_cnn/float64+keras-bn"
    assert ssl_parity.Setting.from_run("pimodel/small_cnn").uratio == 1


# ---------------------------------------------------------------- --merge (no training)


def test_merge_takes_the_newest_version_of_runs_made_elsewhere(monkeypatch):
    # commits "new", "old" and "before" made today's code; "stale" did not
    monkeypatch.setattr(ssl_parity.common.provenance, "current",
                        lambda made_by, dependencies: made_by["commit"] != "stale")
    reference = {"package": "semilearn", "version": "0.3.2"}
    # This harness made fixmatch; it read an old remixmatch from the file when it started.
    ours = {"reference": reference, "runs": {"fixmatch/small_cnn/float64": {"made_by": {"commit": "new"}, "v": 1},
                                             "remixmatch/small_cnn/float64": {"made_by": {"commit": "old"}, "v": 0}}}
    # Meanwhile a harness beside it re-made remixmatch and added vat; the file also holds
    # an old fixmatch, and a run with no made_by of its own.
    on_disk = {"reference": reference, "provenance": {"command": "c", "commit": "before"},
               "runs": {"fixmatch/small_cnn/float64": {"made_by": {"commit": "old"}, "v": 0},
                        "remixmatch/small_cnn/float64": {"made_by": {"commit": "new"}, "v": 2},
                        "vat/small_cnn/float64": {"v": 3},
                        "uda/small_cnn/float64": {"made_by": {"commit": "stale"}, "v": 4}}}
    merged = ssl_parity.merged_runs(ours, on_disk, made_here={"fixmatch/small_cnn/float64"},
                                    dependencies=["benchmarks/parity/ssl.py"])["runs"]
    assert merged["fixmatch/small_cnn/float64"]["v"] == 1  # ours is never replaced
    assert merged["remixmatch/small_cnn/float64"]["v"] == 2  # the other harness's newest
    assert merged["vat/small_cnn/float64"] == {"made_by": {"command": "c", "commit": "before"}, "v": 3}
    assert "uda/small_cnn/float64" not in merged  # made by older code: run again, not carried over


def test_merge_takes_nothing_made_against_another_reference():
    ours = {"reference": {"version": "0.3.2"}, "runs": {}}
    other = {"reference": {"version": "0.3.1"}, "runs": {"vat/small_cnn/float64": {"v": 3}}}
    assert ssl_parity.merged_runs(ours, other, made_here=set(), dependencies=[])["runs"] == {}
