"""Ordinal scores, exact slice shares and the ReMoSSlicing callback."""

import keras
import numpy as np
import pytest

from kerastl import InputError
from kerastl.safety.coverage import LayerCoverage
from kerastl.safety.coverage import profile_coverage
from kerastl.safety.slicing import (ReMoSSlicing, apply_masks, kept_share, layer_kernels, masks_from_scores,
                                    ordinal_scores, remos_slice, slice_masks, threshold_masks, weight_coverage)


def test_weight_coverage_is_input_plus_output_coverage_for_every_tap():
    coverage = LayerCoverage(np.array([1, 4]), np.array([0, 2, 5]), 6)
    cov = weight_coverage((3, 3, 2, 3), coverage)
    assert cov.shape == (3, 3, 2, 3)
    assert cov[0, 0].tolist() == [[1, 3, 6], [4, 6, 9]]
    assert (cov == cov[1, 2]).all()  # all kh x kw taps share the pair's coverage


def test_reference_scores_and_threshold_against_a_hand_computed_ranking():
    # The layers of the average-rank test below, ranked as the reference code does.
    kernels = {"a": np.array([[0.9, -0.2], [0.05, 0.4]]), "b": np.array([[-0.3], [0.7]])}
    coverage = {"a": LayerCoverage(np.array([0, 3]), np.array([1, 2]), 5),
                "b": LayerCoverage(np.array([2, 0]), np.array([4]), 5)}
    # Pairs (input-major, layer order): a00 1, a01 2, a10 4, a11 5, b00 6, b10 4; sorted stably:
    # a00 a01 a10 b10 a11 b00 -> coverage ranks a [[0, 1], [2, 4]], b [[5], [3]].
    # |w| output-major: a00 .9, a10 .05, a01 .2, a11 .4, b00 .3, b10 .7 -> ranks a [[5, 1], [0, 3]], b [[2], [4]].
    scores = ordinal_scores(kernels, coverage)
    assert scores["a"].tolist() == [[-5, 0], [2, 1]]
    assert scores["b"].tolist() == [[3], [-1]]
    # Ratio 1/3: threshold = sorted scores [-5, -1, 0, 1, 2, 3] at int(6 / 3) = 2, i.e. 0; every score
    # at or below it goes: 3 weights, one more than exact-share removes.
    masks = threshold_masks(scores, 1 / 3)
    assert masks["a"].tolist() == [[False, False], [True, True]]
    assert masks["b"].tolist() == [[True], [False]]
    assert slice_masks(kernels, coverage, 1 / 3)["a"].tolist() == masks["a"].tolist()


def test_reference_ranks_share_a_pair_rank_across_taps_and_break_magnitude_ties_output_major():
    # A 2x1 conv from 1 to 2 channels, all |w| equal, both output channels equally covered.
    kernel = np.full((2, 1, 1, 2), 0.5)
    coverage = {"c": LayerCoverage(np.array([1]), np.array([0, 0]), 3)}
    # Coverage: pair (0, 0) rank 0, pair (0, 1) rank 2 (after pair 0's two taps), taps sharing it.
    # Magnitude ties in PyTorch's [out, in, kh, kw] order: (out 0: tap 0, tap 1), (out 1: tap 0, tap 1).
    scores = ordinal_scores({"c": kernel}, coverage)["c"]
    assert scores[:, 0, 0, 0].tolist() == [0, -1] and scores[:, 0, 0, 1].tolist() == [0, -1]
    # Ratio 0.25: threshold sorted [-1, -1, 0, 0][1] = -1, so both tied weights go (half of the kernel).
    assert threshold_masks({"c": scores}, 0.25)["c"][:, 0, 0, :].tolist() == [[True, True], [False, False]]


def test_ordinal_scores_against_a_hand_computed_ranking():
    # Two tiny dense layers, ranked together (6 weights), average ranks (the exact-share ranking).
    kernels = {"a": np.array([[0.9, -0.2], [0.05, 0.4]]), "b": np.array([[-0.3], [0.7]])}
    coverage = {"a": LayerCoverage(np.array([0, 3]), np.array([1, 2]), 5),
                "b": LayerCoverage(np.array([2, 0]), np.array([4]), 5)}
    # cov:  a [[1, 2], [4, 5]], b [[6], [4]]  -> ascending ranks (ties averaged):
    #       a [[1, 2], [3.5, 5]], b [[6], [3.5]]
    # |w|:  a [[.9, .2], [.05, .4]], b [[.3], [.7]] -> ranks a [[6, 2], [1, 4]], b [[3], [5]]
    scores = ordinal_scores(kernels, coverage, ties="average")
    assert scores["a"].tolist() == [[-5.0, 0.0], [2.5, 1.0]]
    assert scores["b"].tolist() == [[3.0], [-1.5]]
    # Slicing away a third (2 of 6) removes the lowest scores: a[0, 0] (-5) and b[1, 0] (-1.5),
    # the large weights that the data covers least.
    masks = masks_from_scores(scores, 1 / 3)
    assert masks["a"].tolist() == [[False, True], [True, True]]
    assert masks["b"].tolist() == [[True], [False]]


@pytest.mark.parametrize("ratio", [0.03, 0.1, 0.25, 0.5, 0.9])
def test_kept_share_is_exactly_one_minus_ratio_even_with_ties(ratio):
    rng = np.random.default_rng(0)
    scores = {"x": rng.integers(0, 3, (10, 20)).astype(float), "y": np.zeros((3, 3, 4, 25))}  # many ties
    masks = masks_from_scores(scores, ratio)
    total = 200 + 900
    assert sum((~m).sum() for m in masks.values()) == round(ratio * total)
    assert kept_share(masks) == pytest.approx(1 - round(ratio * total) / total)


def test_ties_drop_the_larger_magnitude_first():
    scores = {"x": np.zeros((1, 4))}
    masks = masks_from_scores(scores, 0.5, tie_break={"x": np.array([[0.1, 0.9, 0.5, 0.2]])})
    assert masks["x"].tolist() == [[True, False, False, True]]


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_the_open_interval_is_refused(ratio):
    for cut in (masks_from_scores, threshold_masks):
        with pytest.raises(InputError, match=rf"--ratio {ratio}: expected the share of weights to slice away, "
                                             "strictly between 0 and 1"):
            cut({"x": np.zeros((2, 2))}, ratio)


def test_unknown_ranking_is_refused():
    with pytest.raises(InputError, match=r"--ranking 'dense': expected one of reference, exact-share"):
        slice_masks({"x": np.zeros((1, 2))}, {"x": LayerCoverage(np.zeros(1), np.zeros(2), 1)}, 0.5, "dense")


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.Conv2D(8, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_remos_slice_covers_the_body_and_keeps_the_exact_share():
    model = small_model()
    data = np.random.default_rng(1).random((20, 6, 6, 1)).astype("float32")
    masks = remos_slice(model, data, ratio=0.1, ranking="exact-share")
    assert list(masks) == ["conv_a", "conv_b"]  # not the head, which the student replaces
    total = 3 * 3 * 1 * 4 + 3 * 3 * 4 * 8
    assert sum((~m).sum() for m in masks.values()) == round(0.1 * total)


def test_remos_slice_by_default_removes_every_weight_at_or_below_the_threshold_score():
    model = small_model()
    data = np.random.default_rng(1).random((20, 6, 6, 1)).astype("float32")
    masks = remos_slice(model, data, ratio=0.1)
    names = ["conv_a", "conv_b"]
    assert list(masks) == names
    scores = ordinal_scores(layer_kernels(model, names), profile_coverage(model, data, names))
    flat = np.sort(np.concatenate([scores[name].ravel() for name in names]))
    threshold = flat[int(0.1 * flat.size)]
    assert sum((~m).sum() for m in masks.values()) == int((flat <= threshold).sum()) >= int(0.1 * flat.size) + 1
    for name in names:
        assert (masks[name] == (scores[name] > threshold)).all()


def test_callback_applies_masks_at_the_start_of_fit_only_once():
    model = small_model()
    masks = {"conv_b": np.random.default_rng(2).random((3, 3, 4, 8)) > 0.3}
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.MeanSquaredError())
    x, y = np.ones((4, 6, 6, 1), "float32"), np.zeros((4, 3), "float32")
    before = model.get_layer("conv_b").kernel.numpy()
    slicing = ReMoSSlicing(masks)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[slicing])  # lr 0: only the slicing changes weights
    after = model.get_layer("conv_b").kernel.numpy()
    np.testing.assert_array_equal(after, np.where(masks["conv_b"], before, 0.0))
    # A later fit (or a resumed run: optimizer steps already taken) does not slice again.
    model.get_layer("conv_b").kernel.assign(before)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[ReMoSSlicing(masks)])
    np.testing.assert_array_equal(model.get_layer("conv_b").kernel.numpy(), before)


def test_reinit_mode_redraws_only_the_sliced_weights_reproducibly():
    masks = {"conv_b": np.random.default_rng(3).random((3, 3, 4, 8)) > 0.5}
    first, second = small_model(), small_model()
    before = first.get_layer("conv_b").kernel.numpy()
    apply_masks(first, masks, "reinit", seed=5)
    apply_masks(second, masks, "reinit", seed=5)
    after = first.get_layer("conv_b").kernel.numpy()
    np.testing.assert_array_equal(after[masks["conv_b"]], before[masks["conv_b"]])
    assert (after[~masks["conv_b"]] != before[~masks["conv_b"]]).all()
    np.testing.assert_array_equal(after, second.get_layer("conv_b").kernel.numpy())


def test_callback_refuses_an_unknown_mode():
    masks = {"conv_a": np.array([[True, False]])}
    with pytest.raises(InputError, match="--slice-mode 'random'"):
        ReMoSSlicing(masks, mode="random")
