"""Distances: 0 for identical batches, growing with the shift each one measures, differentiable."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.timeseries import distances

RNG = np.random.default_rng(0)
BASE = RNG.normal(size=(128, 6)).astype("float32")
OTHER = RNG.normal(size=(128, 6)).astype("float32")  # same distribution, other samples
# A mean shift along a direction the batch mean does not point to, and a covariance shift.
MEAN_SHIFT = np.array([1.5, -1.5, 1.5, 0.0, 0.0, 0.0], "float32")
SEES_MEAN = ("mmd_linear", "mmd_rbf", "cosine", "kl", "js")
SEES_COVARIANCE = ("mmd_rbf", "coral", "kl", "js")
STATELESS = ("mmd_linear", "mmd_rbf", "coral", "cosine", "kl", "js", "pairwise")


@pytest.mark.parametrize("name", [name for name in STATELESS if name != "pairwise"])  # pairwise sees the spread
def test_zero_for_identical_batches(name):
    assert abs(float(distances.get_distance(name)(BASE, BASE))) < 1e-6


@pytest.mark.parametrize("name", SEES_MEAN)
def test_grows_with_a_mean_shift(name):
    distance = distances.get_distance(name)
    # Batches with a mean away from 0 (cosine compares the means' directions), shifted
    # perpendicular to it.
    offset = np.array([0.0, 0.0, 0.0, 2.0, 2.0, 2.0], "float32")
    values = [float(distance(BASE + offset, OTHER + offset + scale * MEAN_SHIFT)) for scale in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[-1] > 10 * max(values[0], 1e-4), values


@pytest.mark.parametrize("name", SEES_COVARIANCE)
def test_grows_with_a_covariance_shift(name):
    distance = distances.get_distance(name)
    values = [float(distance(BASE, OTHER * scale)) for scale in (1.0, 1.5, 2.5, 4.0)]
    # KL / JS see the spread only through the batch-averaged softmax: a weaker signal.
    factor = 3 if name in ("kl", "js") else 10
    assert values == sorted(values) and values[-1] > factor * max(values[0], 1e-4), values


def test_coral_is_blind_to_a_mean_shift_and_linear_mmd_to_a_covariance_shift():
    assert float(distances.coral(BASE, BASE + 3.0)) == pytest.approx(0.0, abs=1e-6)
    centred = BASE - BASE.mean(0)
    assert float(distances.mmd_linear(centred, 3.0 * centred)) == pytest.approx(0.0, abs=1e-6)


def test_known_values():
    source = np.array([[0.0, 0.0], [2.0, 2.0]], "float32")
    target = np.array([[1.0, 0.0], [3.0, 0.0]], "float32")
    assert float(distances.mmd_linear(source, target)) == pytest.approx(1.0 + 1.0)
    # Covariances [[2, 2], [2, 2]] and [[2, 0], [0, 0]]: ||diff||^2 = 4 + 4 + 4 = 12, / (4 * 4).
    assert float(distances.coral(source, target)) == pytest.approx(12.0 / 16.0)
    assert float(distances.cosine(source, target)) == pytest.approx(1.0 - 2.0 / (np.sqrt(2.0) * 2.0), rel=1e-5)


@pytest.mark.parametrize("name", STATELESS)
def test_has_a_gradient_that_reduces_the_distance(name):
    distance = distances.get_distance(name)
    target = tf.Variable(OTHER * 2.0 + MEAN_SHIFT)
    with tf.GradientTape() as tape:
        value = distance(BASE, target)
    gradient = tape.gradient(value, target)
    assert gradient is not None and np.isfinite(gradient.numpy()).all()
    assert float(tf.norm(gradient)) > 0
    stepped = float(distance(BASE, target - 1e-2 * gradient / tf.norm(gradient)))
    assert stepped < float(value)


@pytest.mark.parametrize("name", STATELESS)
def test_leading_dimensions_are_independent_problems(name):
    distance = distances.get_distance(name)
    stacked_s = np.stack([BASE, BASE, OTHER])[:, None].repeat(2, axis=1)  # [3, 2, N, D]
    stacked_t = np.stack([BASE, OTHER + MEAN_SHIFT, OTHER * 2.0])[:, None].repeat(2, axis=1)
    batched = distance(stacked_s, stacked_t).numpy()
    assert batched.shape == (3, 2)
    for i in range(3):
        np.testing.assert_allclose(batched[i], float(distance(stacked_s[i, 0], stacked_t[i, 0])), rtol=1e-4, atol=1e-6)


def test_adversarial_distance_is_zero_untrained_and_grows_as_its_discriminator_learns():
    tf.keras.utils.set_random_seed(0)
    layer = distances.AdversarialDistance(hidden_units=16)
    shifted = OTHER + MEAN_SHIFT
    assert float(layer(BASE, BASE)) == 0.0 and float(layer(BASE, shifted)) == 0.0
    optimizer = tf.keras.optimizers.Adam(1e-2)
    for _ in range(150):  # only the discriminator learns here: it maximises the distance
        with tf.GradientTape() as tape:
            value = layer(BASE, shifted)
        optimizer.apply_gradients(zip(tape.gradient(value, layer.trainable_variables), layer.trainable_variables))
    separable, identical = float(layer(BASE, shifted)), float(layer(BASE, OTHER))
    assert separable > 0.8, separable  # at most 2 log 2 = 1.386
    assert identical < 0.15 * separable, (identical, separable)
    # The features get the gradient of the distance: moving them along it shrinks it.
    target = tf.Variable(shifted)
    with tf.GradientTape() as tape:
        value = layer(BASE, target)
    gradient = tape.gradient(value, target)
    assert float(layer(BASE, target - 0.5 * gradient / tf.norm(gradient) * np.sqrt(128))) < float(value)


def test_the_registry_names_every_distance_and_which_have_trainable_parts():
    assert list(distances.DISTANCES) == [*STATELESS, "adversarial", "adversarial_untrained", "mine"]
    assert distances.stateless_names() == list(STATELESS)
    assert all(entry.description for entry in distances.DISTANCES.values())
    layer = distances.get_distance("adversarial", hidden_units=4, name="discriminator_0")
    assert isinstance(layer, distances.AdversarialDistance) and layer.name == "discriminator_0"
    assert layer is not distances.get_distance("adversarial")                 # a new one, with its own weights
    assert isinstance(distances.get_distance("mine"), distances.MutualInformationDistance)
    assert isinstance(distances.get_distance("adversarial_untrained"), distances.UntrainedAdversarialDistance)
    with pytest.raises(ValueError, match="distance 'adversarial': has trainable parts; expected one of mmd_linear"):
        distances.DistributionDistance("adversarial")


def test_a_distance_added_to_the_registry_is_used_by_tdc_and_the_matching_models(monkeypatch):
    from kerastl.timeseries import AdaRNN, tdc

    def mean_l1(source, target):
        return tf.reduce_sum(tf.abs(tf.reduce_mean(source, axis=-2) - tf.reduce_mean(target, axis=-2)), axis=-1)

    monkeypatch.setitem(distances.DISTANCES, "mean_l1", distances.Distance("mean_l1", mean_l1, "L1 of the means"))
    series = np.concatenate([np.zeros((50, 2)), np.ones((50, 2))]).astype("float32")
    segmentation = tdc.split(series, 2, distance="mean_l1", split_n=4)
    assert segmentation.boundaries == [0, 50, 100] and segmentation.score == pytest.approx(2.0)
    assert "mean_l1" in distances.stateless_names()
    loss = distances.DistributionDistance("mean_l1")
    assert float(loss(BASE, BASE + 1.0)) == pytest.approx(6.0, rel=1e-5)
    model = AdaRNN(len_seq=4, num_features=2, num_domains=2, distance="mean_l1", hidden_sizes=(3,))
    model.build((None, 4, 2))
    assert model.distances == [mean_l1] and model.get_config()["distance"] == "mean_l1"


def test_distance_loss_is_the_distance():
    loss = distances.DistributionDistance("coral")
    assert float(loss(BASE, BASE * 2.0)) == pytest.approx(float(distances.coral(BASE, BASE * 2.0)), rel=1e-5)
    with pytest.raises(ValueError, match="expected one of"):
        distances.get_distance("wasserstein")


def test_pairwise_is_the_frobenius_norm_of_the_squared_distance_matrix():
    source = np.array([[0.0, 0.0], [2.0, 2.0]], "float32")
    target = np.array([[1.0, 0.0], [3.0, 0.0]], "float32")
    # Squared distances: s0-t0 1, s0-t1 9, s1-t0 1 + 4 = 5, s1-t1 1 + 4 = 5.
    assert float(distances.pairwise(source, target)) == pytest.approx(np.sqrt(1 + 81 + 25 + 25), rel=1e-6)
    # One point against itself: 0, with a finite (zero) gradient.
    point = tf.Variable(np.ones((1, 2), "float32"))
    with tf.GradientTape() as tape:
        value = distances.pairwise(point, tf.ones((1, 2)))
    assert float(value) == 0.0 and np.isfinite(tape.gradient(value, point).numpy()).all()


def test_mine_is_minus_the_donsker_varadhan_bound_of_its_statistics_network():
    layer = distances.MutualInformationDistance(hidden_units=2, seed=0)
    layer.build((4, 2), (4, 2))
    # T(x, y) = [1, -1] . leaky_relu(x @ I + y @ I): with every source row the same, the
    # permutation of the target rows cannot change the marginal term.
    layer.dense_x.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    layer.dense_y.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    layer.dense_out.set_weights([np.array([[1.0], [-1.0]], "float32"), np.zeros(1, "float32")])
    source = np.zeros((4, 2), "float32")
    target = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, -1.0]], "float32")
    statistics = np.array([1.0, -1.0, 2.0, 0.01])  # leaky_relu(-1) = -0.01, times -1
    expected = -(statistics.mean() - np.log(np.exp(statistics).mean()))
    assert float(layer(source, target)) == pytest.approx(expected, rel=1e-5)
    assert expected > 0  # Jensen: the bound is <= 0 when the marginal term sees the same values


def test_the_reference_adversarial_distance_is_a_fresh_discriminators_cross_entropy_through_gradient_reversal():
    layer = distances.UntrainedAdversarialDistance(hidden_units=2, seed=0)
    w1 = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    b1 = np.zeros(2, "float32")
    w2 = np.array([[1.0], [-1.0]], "float32")
    b2 = np.zeros(1, "float32")
    source = tf.Variable(np.array([[2.0, 0.0], [0.0, 1.0]], "float32"))
    target = np.array([[0.0, 0.0], [1.0, 3.0]], "float32")
    with tf.GradientTape() as tape:
        value = layer(source, target, weights=(w1, b1, w2, b2))
    sigmoid = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    # logits: source 2, -1; target 0, 1 - 3 = -2.
    expected = -np.mean(np.log(sigmoid(np.array([2.0, -1.0])))) - np.mean(np.log(1 - sigmoid(np.array([0.0, -2.0]))))
    assert float(value) == pytest.approx(expected, rel=1e-5)
    # Gradient reversal: the features get minus the cross-entropy's gradient. Source row 0's
    # logit is 2 = x0: d BCE / d x0 = -(1 - sigmoid(2)) / 2, reversed: +.
    gradient = tape.gradient(value, source).numpy()
    assert gradient[0, 0] == pytest.approx((1 - sigmoid(2.0)) / 2, rel=1e-5)
    # Untrained: about 2 log 2 for any batches, and new weights at every call.
    rng = np.random.default_rng(0)
    values = [float(layer(rng.normal(size=(32, 8)), rng.normal(size=(32, 8)) + shift)) for shift in (0.0, 3.0)]
    assert all(abs(v - 2 * np.log(2)) < 0.5 for v in values), values
    assert layer(np.zeros((3, 5, 8, 4)), np.ones((3, 5, 8, 4))).shape == (3, 5)



def _numpy_float64(name, source, target):
    """The stateless distances written out in numpy float64 (the definitions in the module doc)."""
    mean_s, mean_t = source.mean(0), target.mean(0)
    if name == "mmd_linear":
        return np.sum((mean_s - mean_t) ** 2)
    if name == "coral":
        difference = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
        return np.sum(difference ** 2) / (4 * source.shape[1] ** 2)
    if name == "cosine":
        return 1 - mean_s @ mean_t / (max(np.linalg.norm(mean_s), 1e-8) * max(np.linalg.norm(mean_t), 1e-8))
    if name == "pairwise":
        return np.sqrt(np.sum(np.sum((source[:, None] - target[None]) ** 2, axis=-1) ** 2))
    softmax = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
    p, q = softmax(source).mean(0), softmax(target).mean(0)
    kl = lambda a, b: np.sum(a * (np.log(a + 1e-8) - np.log(b + 1e-8)))  # noqa: E731
    if name == "kl":
        return kl(p, q)
    return 0.5 * kl(p, (p + q) / 2) + 0.5 * kl(q, (p + q) / 2)


@pytest.mark.parametrize("name", [name for name in STATELESS if name != "mmd_rbf"])
def test_float64_batches_are_measured_in_float64_to_rounding(name):
    source, target = BASE.astype("float64") * 1.3, OTHER.astype("float64") + MEAN_SHIFT
    value = distances.get_distance(name)(source, target)
    assert value.dtype == tf.float64
    expected = _numpy_float64(name, source, target)
    assert abs(float(value) - expected) <= 1e-12 * max(abs(expected), 1.0), (float(value), expected)
    # float32 batches keep float32, which is ~1e-7 away: the float64 path is no rounded copy of it.
    assert distances.get_distance(name)(BASE * 1.3, OTHER + MEAN_SHIFT).dtype == tf.float32


def test_a_float64_layer_distance_computes_in_float64():
    import keras

    source, target = BASE.astype("float64"), OTHER.astype("float64")
    for layer in (distances.AdversarialDistance(hidden_units=8, dtype="float64"),
                  distances.UntrainedAdversarialDistance(seed=0, dtype="float64"),
                  distances.MutualInformationDistance(hidden_units=8, seed=0, dtype="float64")):
        assert layer(source, target).dtype == tf.float64, layer.name
    weights = [np.asarray(w) for w in distances.UntrainedAdversarialDistance(seed=1).draw((), 6)]
    value = distances.UntrainedAdversarialDistance(dtype="float64")(source, target, weights=weights)
    w1, b1, w2, b2 = (w.astype("float64") for w in weights)
    logits = lambda x: (np.maximum(x @ w1 + b1, 0) @ w2 + b2)[:, 0]  # noqa: E731
    softplus = lambda z: np.logaddexp(0.0, z)  # noqa: E731
    expected = softplus(-logits(source)).mean() + softplus(logits(target)).mean()
    assert abs(float(value) - expected) <= 1e-12 * expected
    assert keras.config.floatx() == "float32"  # nothing here changed the global default
