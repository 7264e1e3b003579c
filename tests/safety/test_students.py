"""Students of each method, teachers from files and applications, the digit transfer task."""

import keras
import numpy as np
import pytest

from kerastl import InputError
from kerastl.data.arrays import ImageData
from kerastl.safety.baselines import (HEAD_NAME, METHODS, StudentMethod, get_method, magnitude_masks,
                                      prepare_student, student_from_teacher, top_layer_masks)
from kerastl.safety.slicing import layer_kernels
from kerastl.safety.tasks import apply_shift, digit_transfer_task
from kerastl.safety.teachers import load_teacher


def teacher_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="images")
    x = keras.layers.Conv2D(4, 3, name="conv_a")(inputs)
    x = keras.layers.Conv2D(6, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="teacher")


def test_student_copies_the_teacher_body_and_gets_a_new_head():
    teacher = teacher_model()
    student = student_from_teacher(teacher, num_classes=3)
    assert [layer.name for layer in student.layers][-1] == HEAD_NAME and student.output_shape == (None, 3)
    for name in ("conv_a", "conv_b"):
        np.testing.assert_array_equal(student.get_layer(name).kernel.numpy(), teacher.get_layer(name).kernel.numpy())
        assert student.get_layer(name) is not teacher.get_layer(name)  # a copy: fine-tuning leaves the teacher alone
    scratch = student_from_teacher(teacher, num_classes=3, copy_weights=False)
    assert not np.allclose(scratch.get_layer("conv_b").kernel.numpy(), teacher.get_layer("conv_b").kernel.numpy())


def test_magnitude_masks_drop_the_smallest_weights_globally():
    teacher = teacher_model()
    masks = magnitude_masks(teacher, 0.25)
    kernels = np.concatenate([np.abs(teacher.get_layer(n).kernel.numpy()).ravel() for n in ("conv_a", "conv_b")])
    kept = np.concatenate([masks[n].ravel() for n in ("conv_a", "conv_b")])
    assert (~kept).sum() == round(0.25 * kernels.size)
    assert kernels[~kept].max() <= kernels[kept].min()


def test_top_layer_masks_and_prepared_students():
    teacher = teacher_model()
    masks = top_layer_masks(teacher, 1)
    assert list(masks) == ["conv_b"] and not masks["conv_b"].any()
    with pytest.raises(InputError, match="--reinit-layers 3: expected 1..2"):
        top_layer_masks(teacher, 3)
    x = np.random.default_rng(0).random((12, 8, 8, 1)).astype("float32")
    for method, has_masks in (("finetune", False), ("scratch", False), ("magprune", True), ("reinit", True),
                              ("remos", True)):
        prepared = prepare_student(method, teacher, 3, x, ratio=0.1)
        assert (prepared.masks is not None) == has_masks and len(prepared.callbacks) == int(has_masks)
        assert prepared.model.output_shape == (None, 3)
    with pytest.raises(InputError, match="--method 'distill': expected one of finetune, magprune"):
        prepare_student("distill", teacher, 3, x)


def test_the_method_registry_says_what_each_method_removes():
    expected = {  # name: (has masks, from the teacher, re-initialises, removes the ratio share)
        "finetune": (False, True, False, False), "magprune": (True, True, False, True),
        "scratch": (False, False, False, False), "reinit": (True, True, True, False),
        "remos": (True, True, False, True)}
    assert list(METHODS) == list(expected)
    for name, (has_masks, from_teacher, reinitialise, removes_ratio) in expected.items():
        method = get_method(name)
        assert (method.masks is not None, method.from_teacher, method.reinitialise, method.removes_ratio) == (
            has_masks, from_teacher, reinitialise, removes_ratio)
        assert method.description
    with pytest.raises(InputError, match=r"^--method 'distill': expected one of finetune, magprune, scratch, reinit, "
                                         r"remos$"):
        get_method("distill")


def test_a_method_added_to_the_registry_alone_builds_its_student(monkeypatch):
    def first_input_masks(teacher, layer_names, options):   # removes every weight from input channel 0
        masks = {}
        for name, kernel in layer_kernels(teacher, layer_names).items():
            masks[name] = np.ones(kernel.shape, bool)
            masks[name][..., 0, :] = False
        return masks

    monkeypatch.setitem(METHODS, "drop_first_input", StudentMethod(
        "drop_first_input", "remove each layer's weights from its first input channel", masks=first_input_masks))
    teacher = teacher_model()
    prepared = prepare_student("drop_first_input", teacher, 3, slice_mode="zero")
    assert list(prepared.masks) == ["conv_a", "conv_b"] and len(prepared.callbacks) == 1
    prepared.callbacks[0].set_model(prepared.model)
    prepared.callbacks[0].on_train_begin()
    for name in ("conv_a", "conv_b"):
        kernel, original = prepared.model.get_layer(name).kernel.numpy(), teacher.get_layer(name).kernel.numpy()
        assert not kernel[..., 0, :].any()                                   # removed (zeroed)
        np.testing.assert_array_equal(kernel[..., 1:, :], original[..., 1:, :])   # the rest is the teacher's


def test_teacher_from_a_keras_file_and_bad_files(tmp_path):
    teacher = teacher_model()
    teacher.save(tmp_path / "t.keras")
    loaded = load_teacher(str(tmp_path / "t.keras"))
    np.testing.assert_allclose(loaded.predict(np.ones((1, 8, 8, 1)), verbose=0),
                               teacher.predict(np.ones((1, 8, 8, 1)), verbose=0), rtol=1e-6)
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match=r"--teacher .*bad\.keras: does not load as a Keras model"):
        load_teacher(str(tmp_path / "bad.keras"))


def test_teacher_from_a_keras_application_with_weights_on_disk(tmp_path):
    keras.utils.set_random_seed(0)
    network = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=4,
                                             classifier_activation=None)
    network.save_weights(tmp_path / "m.weights.h5")
    teacher = load_teacher(f"mobilenet_v2:{tmp_path}/m.weights.h5", (32, 32, 3), 4)
    images = np.random.default_rng(0).random((2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(teacher.predict(images, verbose=0), network.predict(images, verbose=0), rtol=1e-5)
    with pytest.raises(InputError, match=r"weights file .*absent\.h5 not found"):
        load_teacher(f"mobilenet_v2:{tmp_path}/absent.h5", (32, 32, 3), 4)
    with pytest.raises(InputError, match=r"does not fit MobileNetV2 for \(32, 32, 3\) inputs and 7 classes"):
        load_teacher(f"mobilenet_v2:{tmp_path}/m.weights.h5", (32, 32, 3), 7)


def test_digit_task_is_disjoint_balanced_and_shifted():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (200, 6, 6, 1)).astype(np.uint8)
    x[:, 0, 0, 0] = np.arange(200) % 256  # a fingerprint per image
    y = np.arange(200) % 4
    data = ImageData("toy", x[:160], y[:160], x[160:], y[160:], num_classes=4)
    task = digit_transfer_task(data, labels_per_class=5, shift="invert", seed=0)
    assert np.bincount(task.y_student).tolist() == [5, 5, 5, 5]
    assert len(task.x_teacher) == 80
    teacher_ids = set(task.x_teacher[:, 0, 0, 0].tolist())
    student_ids = set((255 - task.x_student[:, 0, 0, 0]).tolist())  # inverted back
    assert not teacher_ids & student_ids
    np.testing.assert_array_equal(task.x_test, 255 - x[160:])
    np.testing.assert_array_equal(apply_shift(np.array([0.25], np.float32), "invert"), [0.75])
    with pytest.raises(InputError, match="--shift 'rotate'"):
        apply_shift(x, "rotate")
