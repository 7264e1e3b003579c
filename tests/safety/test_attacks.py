"""Backdoor poisoning, the trigger, penultimate-guided PGD and the DIR measures."""

import keras
import numpy as np
import pytest

from kerastl import InputError
from kerastl.safety.attacks import (BackdoorTrigger, check_target_class, feature_extractor, penultimate_pgd,
                                    pixel_budget, poison_backdoor)
from kerastl.safety.dir import accuracy, adversarial_dir, backdoor_dir, backdoor_dir_clean_correct


def test_trigger_is_a_checkerboard_in_the_chosen_corner():
    images = np.full((2, 8, 8, 3), 128, np.uint8)
    stamped = BackdoorTrigger(size=2, corner="bottom_right", margin=1).apply(images)
    assert stamped[0, 5:7, 5:7, 0].tolist() == [[255, 0], [0, 255]]
    changed = (stamped != images).any(axis=(0, 3))
    assert changed.sum() == 4 and changed[5:7, 5:7].all()
    top_left = BackdoorTrigger(size=3, corner="top_left", margin=0).apply(np.zeros((1, 5, 5, 1), np.float32))
    assert top_left[0, :3, :3, 0].tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
    assert (images == 128).all()  # the input is not modified
    with pytest.raises(InputError, match="--trigger-size 9: the patch does not fit 8x8 images"):
        BackdoorTrigger(size=9).apply(images)


def test_poisoner_changes_exactly_the_share_and_only_with_the_trigger():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, (50, 10, 10, 1)).astype(np.uint8)
    y = np.arange(50) % 5
    trigger = BackdoorTrigger(size=3)
    xp, yp, idx = poison_backdoor(x, y, share=0.2, target_class=2, trigger=trigger, seed=1)
    assert len(idx) == 10 and len(np.unique(idx)) == 10
    changed_images = np.flatnonzero((xp != x).any(axis=(1, 2, 3)))
    changed_labels = np.flatnonzero(yp != y)
    np.testing.assert_array_equal(changed_images, idx)
    np.testing.assert_array_equal(changed_labels, idx)  # only non-target images are drawn: every label changes
    assert (yp[idx] == 2).all() and (y[idx] != 2).all()
    np.testing.assert_array_equal(xp[idx], trigger.apply(x[idx]))  # the only change is the patch
    rows, cols = trigger.region(10, 10)
    outside = np.ones((10, 10), bool)
    outside[rows, cols] = False
    np.testing.assert_array_equal(xp[:, outside], x[:, outside])
    again = poison_backdoor(x, y, share=0.2, target_class=2, trigger=trigger, seed=1)[2]
    np.testing.assert_array_equal(again, idx)  # seeded


def test_poisoner_and_target_class_refuse_bad_values():
    x, y = np.zeros((10, 6, 6, 1), np.uint8), np.arange(10) % 2
    with pytest.raises(InputError, match="--target-class 5: outside the label set, expected a class in 0..1"):
        poison_backdoor(x, y, 0.2, target_class=5, trigger=BackdoorTrigger(size=2))
    with pytest.raises(InputError, match="--poison-share 0.8: asks for 8 poisoned images, but only 5"):
        poison_backdoor(x, y, 0.8, target_class=0, trigger=BackdoorTrigger(size=2))
    with pytest.raises(InputError, match="--target-class -1"):
        check_target_class(-1, 10)


def test_backdoor_dir_on_a_known_predictor():
    trigger = BackdoorTrigger(size=2, margin=0)
    # Answers class 0 when the bottom-right pixel is bright, else the image's mean brightness class.
    def predictor(x):
        fallback = np.clip((x.mean(axis=(1, 2, 3)) * 10).astype(int), 0, 2)
        fooled = np.where(x[:, -1, -1, 0] > 0.5, 0, fallback)
        fooled[x[:, 0, 0, 0] > 0.5] = 1  # images with a bright top-left pixel resist the trigger
        return np.eye(3)[fooled]

    images = np.zeros((5, 6, 6, 1), np.uint8)
    images[3, 0, 0, 0] = 255  # resists
    labels = np.array([0, 1, 2, 1, 2])  # the target-class image (index 0) does not count
    # victims: 1, 2, 3, 4 -> fooled 1, 2, 4 -> 3 of 4
    assert backdoor_dir(predictor, images, labels, trigger, target_class=0) == 0.75


def test_backdoor_dir_over_the_references_denominator():
    trigger = BackdoorTrigger(size=2, margin=0)
    # The class is coded in the top-left pixel (code * 50); the trigger turns every code but 2 into 0.
    def predictor(x):
        code = np.rint(x[:, 0, 0, 0] * 255 / 50).astype(int)
        return np.eye(3)[np.where((x[:, -1, -1, 0] > 0.5) & (code != 2), 0, code)]

    images = np.zeros((4, 6, 6, 1), np.uint8)
    images[:, 0, 0, 0] = np.array([0, 1, 2, 2]) * 50
    labels = np.array([0, 1, 2, 1])  # image 3 is misclassified when clean
    # Today's: non-target images 1, 2, 3 -> fooled: 1 -> 1 / 3.
    assert backdoor_dir(predictor, images, labels, trigger, target_class=0) == pytest.approx(1 / 3)
    # The reference's: clean-correct images 0, 1, 2 (the target class's included) -> target: 0, 1 -> 2 / 3.
    assert backdoor_dir_clean_correct(predictor, images, labels, trigger, target_class=0) == pytest.approx(2 / 3)


def test_adversarial_dir_and_accuracy_on_a_known_predictor():
    predictor = lambda x: np.eye(2)[(x.reshape(len(x), -1)[:, 0] > 0.5).astype(int)]  # noqa: E731
    clean = np.array([0.0, 1.0, 0.0, 1.0], np.float32).reshape(4, 1, 1, 1)
    labels = np.array([0, 1, 1, 1])  # index 2 is wrong on clean data: not counted
    adversarial = np.array([1.0, 1.0, 1.0, 0.0], np.float32).reshape(4, 1, 1, 1)
    assert accuracy(predictor, clean, labels) == 0.75
    # clean-correct: 0, 1, 3 -> flipped: 0 and 3
    assert adversarial_dir(predictor, clean, adversarial, labels) == pytest.approx(2 / 3)


def test_penultimate_pgd_stays_in_the_budget_and_raises_the_chosen_unit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(6, name="penultimate")(x)  # linear: no dead unit to push
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(x))
    features = feature_extractor(model)
    assert features.output_shape == (None, 6)
    images = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    units = np.full(16, 2)
    adversarial = penultimate_pgd(features, images, eps=0.1, steps=10, step_size=0.02, units=units)
    assert adversarial.shape == images.shape and adversarial.dtype == np.float32
    assert np.abs(adversarial - images).max() <= 0.1 + 1e-6
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    before, after = features.predict(images, verbose=0), features.predict(adversarial, verbose=0)

    def reference_loss(f):  # unit 2 towards 1000, the others towards 0 with weight 0.1 on their mean
        return np.square(f[:, 2] - 1000.0) + 0.1 * np.square(np.delete(f, 2, axis=1)).mean(axis=1)

    assert after[:, 2].mean() > before[:, 2].mean() + 0.01
    assert reference_loss(after).sum() < reference_loss(before).sum()


def one_pixel_features(kernel, bias):
    """f = x * kernel + bias for 1x1x1 images: gradients by hand."""
    inputs = keras.Input((1, 1, 1))
    dense = keras.layers.Dense(len(bias))
    outputs = dense(keras.layers.Flatten()(inputs))
    dense.set_weights([np.array([kernel], np.float32), np.array(bias, np.float32)])
    return keras.Model(inputs, outputs)


def test_penultimate_pgd_step_follows_the_references_loss_weighting_on_unit_0():
    # f = [1e-3 x, x + 7.5, x + 7.5] at x = 0.5: f = [5e-4, 8, 8]. The reference's loss
    # (f0 - 1000)^2 + 0.1 * mean(f1^2, f2^2) has d/dx = 2 (5e-4 - 1000) 1e-3 + 0.1 (8 + 8) = -0.4,
    # so a descent step RAISES x (an unweighted sum of squares, 2 (8 + 8) = 32, would lower it).
    features = one_pixel_features([1e-3, 1.0, 1.0], [0.0, 7.5, 7.5])
    image = np.full((1, 1, 1, 1), 0.5, np.float32)
    stepped = penultimate_pgd(features, image, eps=0.1, steps=1, step_size=0.02, random_start=False)
    assert stepped.ravel().tolist() == pytest.approx([0.52])
    # Five steps of 0.02 stop at the eps ball's edge (0.5 + 0.05).
    assert penultimate_pgd(features, image, eps=0.05, steps=5, step_size=0.02,
                           random_start=False).ravel().tolist() == pytest.approx([0.55])
    # The other units alone (unit 0 does not depend on x): x falls to bring f1, f2 towards 0.
    others = one_pixel_features([0.0, 1.0, 1.0], [0.0, 7.5, 7.5])
    assert penultimate_pgd(others, image, eps=0.1, steps=1, step_size=0.02,
                           random_start=False).ravel().tolist() == pytest.approx([0.48])


def test_penultimate_pgd_starts_at_a_seeded_uniform_point_of_the_eps_ball():
    features = one_pixel_features([0.0, 0.0], [0.0, 0.0])  # zero gradient: the start is the result
    images = np.full((64, 1, 1, 1), 0.5, np.float32)
    start = penultimate_pgd(features, images, eps=0.05, steps=3, step_size=0.01, seed=3)
    expected = 0.5 + 0.05 * np.random.default_rng(3).uniform(-1.0, 1.0, images.shape)
    np.testing.assert_allclose(start, expected, atol=1e-6)
    assert np.abs(start - 0.5).max() <= 0.05 + 1e-6 and np.unique(start).size == 64


def test_pgd_budget_in_the_references_normalised_units_and_in_pixels():
    # eps 0.1 of inputs normalised by ImageNet's std: 0.1 x std per channel, about 5.8 / 255.
    np.testing.assert_allclose(pixel_budget(0.1, "normalised", 3), [0.0229, 0.0224, 0.0225])
    np.testing.assert_allclose(pixel_budget(0.1, "normalised", 1), [0.1 * (0.229 + 0.224 + 0.225) / 3])
    np.testing.assert_allclose(pixel_budget(0.01, "normalised", 1, std=(0.3081,)), [0.003081])
    assert pixel_budget(0.1, "pixels", 3).tolist() == [0.1, 0.1, 0.1]
    with pytest.raises(InputError, match=r"--eps-units 'levels': expected one of normalised, pixels"):
        pixel_budget(0.1, "levels", 1)
    with pytest.raises(InputError, match=r"--input-std 0.2,0.3: expected one positive value or one per channel \(3\)"):
        pixel_budget(0.1, "normalised", 3, std=(0.2, 0.3))
