"""The reference's client networks (kerastl.federated.models). Runs in BOTH environments
(Keras 3 in tox py311, Keras 2 in tox federated): the TFF process builds these models too."""

import numpy as np
import pytest
import tensorflow as tf

from kerastl.federated.models import (AdaptiveAveragePooling2D, alexnet_bn, lenet5_bn, model_for,
                                     pytorch_initialisation, resolve_model, sensor_cnn)
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


def test_sensor_cnn_is_the_reference_pamap_network():
    model = sensor_cnn(200, 27, num_classes=10)
    # The reference's PamapModel: unpadded 1x9 convolutions, 32 * 44 features, no BN after fc1.
    assert tuple(model.get_layer("flatten").output.shape) == (None, 32 * 44)
    assert [layer.name for layer in bn_layers(model)] == ["conv1_bn", "conv2_bn"]
    # conv1 27*16*9+16, bn 2*16, conv2 16*32*9+32, bn 2*32, fc1 1408*64+64, fc2 64*10+10
    assert trainable_count(model) == 3904 + 32 + 4640 + 64 + 90176 + 650
    assert tuple(sensor_cnn(28, 3, 2).get_layer("flatten").output.shape) == (None, 32)   # the smallest window
    with pytest.raises(ValueError, match="at least 28 steps"):
        sensor_cnn(27, 3, 2)
    variant = model_for((12, 6), 3, name="sensor_cnn_bn")           # kerastl's variant: padded, BN after fc1
    assert [layer.name for layer in bn_layers(variant)] == ["conv1_bn", "conv2_bn", "fc1_bn"]
    assert tuple(variant.get_layer("flatten").output.shape) == (None, 3 * 32)


@pytest.mark.parametrize("name, shape", [("lenet5_bn", (28, 28, 1)), ("sensor_cnn", (200, 27))])
def test_pytorch_initialisation_draws_weights_and_biases_within_one_over_sqrt_fan_in(name, shape):
    model = model_for(shape, 10, seed=3, name=name, init="pytorch")
    keras_start = model_for(shape, 10, seed=3, name=name)
    layers_with_kernels = [layer for layer in model.layers if hasattr(layer, "kernel")]
    assert len(layers_with_kernels) == (5 if name == "lenet5_bn" else 4)
    for layer in layers_with_kernels:
        kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
        bound = 1 / np.sqrt(np.prod(kernel.shape[:-1]))
        for values in (kernel, bias):
            assert np.abs(values).max() <= bound
        # uniform on [-bound, bound]: standard deviation bound / sqrt(3)
        assert abs(kernel.std() - bound / np.sqrt(3)) < 0.1 * bound, layer.name
    for layer in bn_layers(model):
        np.testing.assert_array_equal(layer.gamma.numpy(), 1.0)
        np.testing.assert_array_equal(layer.beta.numpy(), 0.0)
    assert not np.allclose(model.get_layer("conv1").kernel.numpy(), keras_start.get_layer("conv1").kernel.numpy())
    again = pytorch_initialisation(model_for(shape, 10, seed=3, name=name), seed=3)
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)                                 # seeded
    with pytest.raises(ValueError, match="init 'xavier'"):
        model_for(shape, 10, name=name, init="xavier")


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
                                 ("lenet5_bn", (12, 12, 1), "at least 16"), ("resnet", (28, 28, 1), "unknown model"),
                                 ("sensor_cnn", (20, 6), "at least 28")):
        with pytest.raises(ValueError, match=message):
            resolve_model(name, shape)
