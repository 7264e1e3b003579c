"""The reference's client networks (kerastl.federated.models). Runs in BOTH environments
(Keras 3 in tox py311, Keras 2 in tox federated): the TFF process builds these models too."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.federated.models import AdaptiveAveragePooling2D, alexnet_bn, lenet5_bn, model_for, resolve_model
from kerastl.federated.statistics import bn_layers


def trainable_count(model) -> int:
    return int(sum(np.prod(v.shape) for v in model.trainable_weights))


def test_lenet5_bn_is_the_reference_network():
    model = lenet5_bn((28, 28, 1), num_classes=11)
    # The reference's lenet5v: unpadded 5x5 convolutions leave 4 x 4 x 16 = 256 features.
    assert tuple(model.get_layer("flatten").output.shape) == (None, 256)
    assert [layer.name for layer in bn_layers(model)] == ["conv1_bn", "conv2_bn"]   # none in the dense part
    # conv1 1*6*25+6, bn1 2*6, conv2 6*16*25+16, bn2 2*16, fc 256*120+120, 120*84+84, 84*11+11
    assert trainable_count(model) == 156 + 12 + 2416 + 32 + 30840 + 10164 + 935
    assert model.count_params() - trainable_count(model) == 2 * (6 + 16)             # BN running statistics
    bn = model.get_layer("conv1_bn")
    assert bn.momentum == pytest.approx(0.9) and bn.epsilon == pytest.approx(1e-5)  # PyTorch's 0.1 and 1e-5


def test_alexnet_bn_at_224_pixels_has_the_reference_parameters():
    model = alexnet_bn((224, 224, 3), num_classes=4)
    assert tuple(model.get_layer("pool5").output.shape) == (None, 6, 6, 256)         # the reference's 6 x 6
    assert tuple(model.get_layer("flatten").output.shape) == (None, 256 * 6 * 6)
    assert len(bn_layers(model)) == 7
    convolutions = (3 * 64 * 121 + 64) + (64 * 192 * 25 + 192) + (192 * 384 * 9 + 384) + (384 * 256 * 9 + 256) \
        + (256 * 256 * 9 + 256)
    dense = (9216 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 4 + 4)
    batch_norms = 2 * (64 + 192 + 384 + 256 + 256 + 4096 + 4096)
    assert trainable_count(model) == convolutions + dense + batch_norms
    conv1 = model.get_layer("conv1")
    assert conv1.kernel_size == (11, 11) and conv1.strides == (4, 4)


def test_small_alexnet_variant_width_and_limits():
    model = alexnet_bn((32, 32, 1), num_classes=3, width=0.125)
    conv1 = model.get_layer("conv1")
    assert conv1.kernel_size == (3, 3) and conv1.strides == (1, 1) and conv1.filters == 8
    assert model.get_layer("fc1").units == 512 and tuple(model.get_layer("pool5").output.shape) == (None, 3, 3, 32)
    assert tuple(model.get_layer("avgpool").output.shape) == (None, 6, 6, 32)
    assert tuple(model(np.zeros((2, 32, 32, 1), np.float32)).shape) == (2, 3)
    with pytest.raises(ValueError, match="at least 15 pixels"):
        alexnet_bn((14, 14, 1), num_classes=3)


def test_adaptive_average_pooling_by_hand():
    # separable input a_h * b_w: each output cell is (mean of a over its row bin) * (mean of b over its column bin)
    a, b = np.array([1.0, 2, 3, 4, 5]), np.array([0.0, 10])
    x = np.outer(a, b)[None, :, :, None].astype(np.float32)
    # rows 5 -> 3 bins: [0, 2), [1, 4), [3, 5) -> 1.5, 3, 4.5; columns 2 -> 3: [0, 1), [0, 2), [1, 2) -> 0, 5, 10
    y = AdaptiveAveragePooling2D((3, 3))(x).numpy()[0, :, :, 0]
    np.testing.assert_allclose(y, np.outer([1.5, 3.0, 4.5], [0.0, 5.0, 10.0]), rtol=1e-6)
    same = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(AdaptiveAveragePooling2D((6, 6))(same).numpy(), same, rtol=1e-6)   # identity


def test_models_round_trip_through_keras_files(tmp_path):
    model = alexnet_bn((20, 20, 3), num_classes=3, width=0.0625, seed=1)
    x = np.random.default_rng(1).uniform(size=(2, 20, 20, 3)).astype(np.float32)
    path = str(tmp_path / "alexnet.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path)
    assert isinstance(loaded.get_layer("avgpool"), AdaptiveAveragePooling2D)
    assert loaded.get_layer("avgpool").get_config()["output_size"] == [6, 6]
    np.testing.assert_allclose(loaded(x, training=False).numpy(), model(x, training=False).numpy(), rtol=1e-5,
                               atol=1e-6)


def test_model_choice_by_name_and_auto():
    assert resolve_model("auto", (100, 6)) == "sensor_cnn"
    assert resolve_model("auto", (28, 28, 1)) == "lenet5_bn"         # MedMNIST's size
    assert resolve_model("auto", (224, 224, 3)) == "alexnet_bn"      # the radiographs' size
    assert resolve_model("alexnet_bn", (28, 28, 1)) == "alexnet_bn"
    assert model_for((28, 28, 3), 5, name="lenet5_bn").name == "lenet5_bn"
    for name, shape, message in (("lenet5_bn", (100, 6), "takes images"), ("sensor_cnn", (28, 28, 1), "takes windows"),
                                 ("lenet5_bn", (12, 12, 1), "at least 16"), ("resnet", (28, 28, 1), "unknown model")):
        with pytest.raises(ValueError, match=message):
            resolve_model(name, shape)
