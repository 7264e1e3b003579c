"""Tests for `kerastl.nets.resnet`: ResNet-50 against torchvision's (TorchSSL's ImageNet net).

The size is checked against torchvision's published count (25,557,032 parameters for
resnet50, BN running statistics not counted); the forward pass of a small ResNet against
`reference_forward`, a NumPy transcription of torchvision's `ResNet.forward` with
`Bottleneck` blocks (stride on the 3x3 conv, PyTorch zero padding, max pool padded with
-inf) in inference mode.
"""

import numpy as np
import pytest

import keras
from keras import layers

from kerastl.nets import build_network, resnet
from kerastl.nets.resnet import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def resnet50_model():
    keras.utils.set_random_seed(0)
    return build_network("resnet50", (224, 224, 3), 1000, bn_momentum=0.97)


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def test_resnet50_has_torchvisions_size_layout_and_bn_settings(resnet50_model):
    model = resnet50_model
    assert model.output_shape == (None, 1000)
    assert count(model.trainable_weights) == 25_557_032  # torchvision.models.resnet50().parameters()
    assert count(model.non_trainable_weights) == 53_120  # BN moving mean and variance
    bns = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert len(bns) == len(convs) == 53
    assert {(bn.momentum, bn.epsilon) for bn in bns} == {(0.97, 1e-5)}
    assert not any(conv.use_bias for conv in convs)
    for stage, (side, channels) in enumerate([(56, 256), (28, 512), (14, 1024), (7, 2048)], start=1):
        assert model.get_layer(f"stage{stage}_block0_out").output.shape == (None, side, side, channels)
        if stage > 1:  # "v1.5": the 3x3 conv strides, the first 1x1 does not
            assert model.get_layer(f"stage{stage}_block0_conv2").strides == (2, 2)
            assert model.get_layer(f"stage{stage}_block0_conv1").strides == (1, 1)
    assert model.get_layer("pool").output.shape == (None, 56, 56, 64)
    assert model.get_layer("features").output.shape == (None, 2048)


def test_resnet50_initialisation_follows_torchvision(resnet50_model):
    stem = np.asarray(resnet50_model.get_layer("stem_conv").kernel)
    np.testing.assert_allclose(stem.std(), np.sqrt(2 / (7 * 7 * 64)), rtol=0.05)  # Kaiming normal, fan-out
    bound = 1 / np.sqrt(2048)  # nn.Linear: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernel and bias
    for weight in resnet50_model.get_layer("logits").get_weights():
        assert np.abs(weight).max() <= bound and np.abs(weight).max() > 0.9 * bound
    gammas = [np.asarray(layer.gamma) for layer in resnet50_model.layers
              if isinstance(layer, layers.BatchNormalization)]
    assert all(np.all(g == 1) for g in gammas)


def test_resnet_default_bn_momentum_is_pytorchs_and_zero_init_residual_zeroes_bn3():
    tiny = resnet((32, 32, 3), 10, blocks=(1, 1), width=4, zero_init_residual=True)
    bns = [layer for layer in tiny.layers if isinstance(layer, layers.BatchNormalization)]
    assert {bn.momentum for bn in bns} == {0.9}  # PyTorch momentum 0.1
    for layer in bns:
        assert np.all(np.asarray(layer.gamma) == (0 if layer.name.endswith("_bn3") else 1)), layer.name


def test_the_network_normalises_01_images_with_imagenets_mean_and_std():
    tiny = resnet((8, 8, 3), 10, blocks=(1,), width=4)
    normalize = keras.Model(tiny.input, tiny.get_layer("normalize").output)
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    images = np.stack([np.broadcast_to(mean, (8, 8, 3)), np.broadcast_to(mean + std, (8, 8, 3))])
    out = np.asarray(normalize(images))
    np.testing.assert_allclose(out[0], 0.0, atol=1e-5)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-5)
    grey = build_network("resnet50", (32, 32, 1), 10)  # no ImageNet normalisation for 1-channel input
    assert "normalize" not in [layer.name for layer in grey.layers]


# ---------------------------------------------------------------- reference transcription

def np_conv(x, w, stride, pad):
    """NHWC conv, HWIO kernel, `pad` zeros on every side (PyTorch `padding=pad`)."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    ho, wo = (xp.shape[1] - kh) // stride + 1, (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] @ w[i, j]
    return out


def reference_forward(model, x, blocks):
    """torchvision ResNet.forward (Bottleneck, eval mode) with the Keras model's weights."""
    W = {layer.name: [np.asarray(v, np.float64) for v in layer.get_weights()] for layer in model.layers}
    relu = lambda v: np.maximum(v, 0)  # noqa: E731

    def bn(v, name):
        gamma, beta, mean, var = W[name]
        return (v - mean) / np.sqrt(var + 1e-5) * gamma + beta

    x = (x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    x = relu(bn(np_conv(x, W["stem_conv"][0], 2, 3), "stem_bn"))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-np.inf)  # MaxPool2d(3, 2, padding=1)
    ho = (xp.shape[1] - 3) // 2 + 1
    x = np.max([xp[:, i:i + 2 * (ho - 1) + 1:2, j:j + 2 * (ho - 1) + 1:2] for i in range(3) for j in range(3)], axis=0)
    for stage, count_ in enumerate(blocks, start=1):
        for block in range(count_):
            p = f"stage{stage}_block{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = relu(bn(np_conv(x, W[f"{p}_conv1"][0], 1, 0), f"{p}_bn1"))
            out = relu(bn(np_conv(out, W[f"{p}_conv2"][0], stride, 1), f"{p}_bn2"))
            out = bn(np_conv(out, W[f"{p}_conv3"][0], 1, 0), f"{p}_bn3")
            shortcut = bn(np_conv(x, W[f"{p}_shortcut_conv"][0], stride, 0), f"{p}_shortcut_bn") \
                if f"{p}_shortcut_conv" in W else x
            x = relu(out + shortcut)
    kernel, bias = W["logits"]
    return x.mean(axis=(1, 2)) @ kernel + bias


def randomise_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n),
                               rng.uniform(0.5, 2.0, n)])


def test_forward_pass_matches_torchvisions_bottleneck_resnet_and_survives_a_keras_file(tmp_path):
    # 24x24: the strided convs and the pool see even sizes (24, 12, 6), where Keras "same" would
    # pad only bottom/right and PyTorch pads every side.
    keras.utils.set_random_seed(1)
    blocks = (2, 1, 1)
    model = resnet((24, 24, 3), 7, blocks=blocks, width=4)
    rng = np.random.default_rng(0)
    randomise_bn(model, rng)
    x = rng.uniform(0, 1, (2, 24, 24, 3)).astype(np.float32)
    expected = reference_forward(model, x.astype(np.float64), blocks)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), expected, rtol=1e-4, atol=1e-4)
    assert model.get_layer("stage3_block0_out").output.shape == (None, 2, 2, 64)  # 24 -> 12 -> 6 -> 3 -> 2
    model.save(tmp_path / "resnet.keras")
    loaded = keras.models.load_model(tmp_path / "resnet.keras")
    np.testing.assert_allclose(np.asarray(loaded(x, training=False)), expected, rtol=1e-4, atol=1e-4)
