"""Each view transformation's defining property, on batches of windows."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.anomaly import transforms

SEED = tf.constant([3, 4], tf.int64)


def windows(batch=4, steps=50, channels=3, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, steps, channels)).astype("float32")


def test_negation_flips_sign_and_reversal_reverses_time():
    x = windows()
    np.testing.assert_array_equal(transforms.negate(x).numpy(), -x)
    np.testing.assert_array_equal(transforms.reverse(x).numpy(), x[:, ::-1, :])
    ramp = np.arange(5, dtype="float32").reshape(1, 5, 1)
    assert transforms.reverse(ramp).numpy().ravel().tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_noise_reaches_the_requested_snr(snr_db):
    x = windows(batch=8, steps=4000, channels=2) + 3.0   # an offset: power is mean square, not variance
    noisy = transforms.add_noise(x, SEED, snr_db=snr_db).numpy()
    noise = noisy - x
    measured = 10 * np.log10(np.mean(x ** 2, axis=1) / np.mean(noise ** 2, axis=1))  # per window, channel
    np.testing.assert_allclose(measured, snr_db, atol=0.3)
    assert abs(np.mean(noise)) < 0.05


def test_permutation_keeps_the_multiset_of_chunks():
    steps, chunks = 23, 5                       # chunk lengths 4, 5, 4, 5, 5: not all equal
    ramp = np.tile(np.arange(steps, dtype="float32")[None, :, None], [16, 1, 2])
    ramp[:, :, 1] *= -1
    out = transforms.permute_chunks(ramp, SEED, num_chunks=chunks).numpy()
    bounds = [(k * steps) // chunks for k in range(chunks + 1)]
    original_chunks = {bounds[k]: list(range(bounds[k], bounds[k + 1])) for k in range(chunks)}
    orders = set()
    for row in out:
        np.testing.assert_array_equal(row[:, 1], -row[:, 0])   # channels move together
        values, position, order = row[:, 0].astype(int).tolist(), 0, []
        while position < steps:                 # read the output chunk by chunk
            chunk = original_chunks[values[position]]
            assert values[position:position + len(chunk)] == chunk
            order.append(values[position])
            position += len(chunk)
        assert sorted(order) == sorted(original_chunks)   # every chunk exactly once
        orders.add(tuple(order))
    assert len(orders) > 5                      # random orders, one per window


def test_scaling_multiplies_each_window_by_one_of_the_factors():
    x = windows(batch=64) + 5.0
    out = transforms.scale(x, SEED).numpy()
    ratios = (out / x).reshape(64, -1)
    np.testing.assert_allclose(ratios, ratios[:, :1] * np.ones_like(ratios), rtol=1e-5)
    assert set(np.round(ratios[:, 0].astype(float), 4).tolist()) == {0.5, 0.8, 1.5, 2.0}


def test_time_warp_resamples_along_a_monotone_curve_with_fixed_ends():
    steps = 100
    ramp = np.tile(np.arange(steps, dtype="float32")[None, :, None], [8, 1, 1])
    warped = transforms.time_warp(ramp, SEED, sigma=0.3).numpy()[..., 0]   # = the warped times
    np.testing.assert_allclose(warped[:, 0], 0.0, atol=1e-4)
    np.testing.assert_allclose(warped[:, -1], steps - 1, atol=1e-3)
    assert np.all(np.diff(warped, axis=1) > 0)
    assert np.max(np.abs(warped - np.arange(steps))) > 1.0      # a real warp, not the identity
    # Any signal is sampled at those times: sin(t / 7) becomes sin(warped / 7), up to the linear
    # interpolation error bound h^2 / 8 * max|f''| = 1 / (8 * 49).
    sine = np.sin(np.arange(steps) / 7.0).astype("float32")[None, :, None]
    out = transforms.time_warp(np.repeat(sine, 8, 0), SEED, sigma=0.3).numpy()[..., 0]
    np.testing.assert_allclose(out, np.sin(warped / 7.0), atol=1 / (8 * 49) + 1e-5)


def test_smoothing_is_savitzky_golay():
    # SG(11, 2) reproduces any quadratic exactly away from the ends and keeps constants everywhere.
    t = np.arange(40, dtype="float32")
    quadratic = (0.5 * t ** 2 - 3 * t + 2)[None, :, None]
    out = transforms.smooth(quadratic).numpy()
    np.testing.assert_allclose(out[0, 5:-5, 0], quadratic[0, 5:-5, 0], rtol=1e-4)
    np.testing.assert_allclose(transforms.smooth(np.full((2, 30, 3), 7.0, "float32")).numpy(), 7.0, rtol=1e-5)
    # The 5-point order-2 weights, known from Savitzky & Golay's table: (-3, 12, 17, 12, -3) / 35.
    np.testing.assert_allclose(transforms.savgol_coefficients(5, 2), np.array([-3, 12, 17, 12, -3]) / 35, atol=1e-12)
    noisy = windows(batch=1, steps=400, channels=1)
    assert np.std(transforms.smooth(noisy).numpy()) < 0.6 * np.std(noisy)


def test_views_stack_original_first_and_shared_draws_make_views_per_sample():
    x = windows(batch=6, steps=40)
    views = transforms.make_views(x, transforms.DEFAULT_TRANSFORMATIONS, SEED).numpy()
    assert views.shape == (6, 7, 40, 3)
    np.testing.assert_array_equal(views[:, 0], x)
    np.testing.assert_array_equal(views[:, 2], -x)
    np.testing.assert_array_equal(views[:, 3], x[:, ::-1])
    # Shared (scoring) draws: a window's views do not depend on its neighbours or position.
    shared = transforms.make_views(x, transforms.DEFAULT_TRANSFORMATIONS, SEED, shared=True).numpy()
    alone = transforms.make_views(x[4:5], transforms.DEFAULT_TRANSFORMATIONS, SEED, shared=True).numpy()
    np.testing.assert_allclose(shared[4], alone[0], rtol=1e-6, atol=1e-6)
    # Per-window draws (training): windows get different noise / order / factor / warp.
    assert not np.allclose(views[0, 1] - x[0], views[1, 1] - x[1])
    # Stateless: the same seed gives the same views.
    again = transforms.make_views(x, transforms.DEFAULT_TRANSFORMATIONS, SEED).numpy()
    np.testing.assert_array_equal(views, again)


def test_unknown_transformation_is_refused():
    with pytest.raises(ValueError, match="unknown transformation 'flip'"):
        transforms.check_transformations(["noise", "flip"])
