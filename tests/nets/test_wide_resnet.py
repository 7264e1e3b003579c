"""Tests for `kerastl.nets.wide_resnet`: architecture against TorchSSL / USB WRN code.

Reference counts come from `torch_param_count`, a transcription of the PyTorch modules
(TorchSSL models/nets/wrn.py, wrn_var.py): it counts every nn.Parameter (BN weight/bias,
conv weights and optional biases, fc), not the BN running stats. The forward pass is checked
against `reference_forward`, a numpy transcription of TorchSSL's `BasicBlock.forward`
(PyTorch padding=1 on every side) in inference mode.
"""

import numpy as np
import pytest

import keras
from keras import layers

from kerastl.nets import wide_resnet, wrn_28_2, wrn_28_8, wrn_stl10


# ---------------------------------------------------------------- reference transcriptions

def torch_param_count(depth, widen_factor, num_classes, groups=3, conv_bias=False, in_channels=3):
    """(PyTorch parameter count, parameters of the BNs whose output TorchSSL discards)."""
    n = (depth - 4) // 6
    ch = [16] + [16 * widen_factor * 2 ** g for g in range(groups)]
    conv = lambda cin, cout, ks: ks * ks * cin * cout + (cout if conv_bias else 0)  # noqa: E731
    total, dead = conv(in_channels, ch[0], 3), 0
    for g in range(groups):
        for u in range(n):
            cin, cout = (ch[g] if u == 0 else ch[g + 1]), ch[g + 1]
            total += 2 * cin + conv(cin, cout, 3) + 2 * cout + conv(cout, cout, 3)  # bn1 conv1 bn2 conv2
            if cin != cout:
                total += conv(cin, cout, 1)  # convShortcut
                if g > 0:  # activate_before_residual=False: bn1/relu1 output unused
                    dead += 2 * cin
    total += 2 * ch[-1] + ch[-1] * num_classes + num_classes  # bn1, fc
    return total, dead


def np_conv(x, w, stride, pad):
    """NHWC conv, HWIO kernel, pad = (before, after) zeros on both spatial axes."""
    kh, kw = w.shape[:2]
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += patch @ w[i, j]
    return out


def reference_forward(model, x, depth, widen_factor, groups, first_stride, variant, keras_same_pad=False):
    """TorchSSL WideResNet(Var).forward in eval mode, with weights read from the Keras model.

    variant "torchssl": BasicBlock as in TorchSSL; "usb": `if not equalInOut: x = act(bn1(x))`;
    "fixmatch": the TF `residual()` (conv path always pre-activated, shortcut only in group 1).
    keras_same_pad=True pads strided 3x3 convs like Keras "same" (to show the test can tell).
    """
    W = {l.name: [np.asarray(v, np.float64) for v in l.get_weights()] for l in model.layers}
    eps, slope = 1e-3, 0.1

    def bn(name, h):
        gamma, beta, mean, var = W[name]
        return (h - mean) / np.sqrt(var + eps) * gamma + beta

    def act(h):
        return np.where(h > 0, h, slope * h)

    def conv(name, h, stride):
        w = W[name][0]
        k = w.shape[0]
        pad = (k // 2, k // 2)
        if keras_same_pad and k == 3 and stride == 2:
            out = -(-h.shape[1] // stride)
            total = max((out - 1) * stride + k - h.shape[1], 0)
            pad = (total // 2, total - total // 2)
        return np_conv(h, w, stride, pad)

    n = (depth - 4) // 6
    ch = [16] + [16 * widen_factor * 2 ** g for g in range(groups)]
    h = conv("stem_conv", np.asarray(x, np.float64), 1)
    for g in range(groups):
        for u in range(n):
            p = f"block{g + 1}_unit{u}"
            cin, cout = (ch[g] if u == 0 else ch[g + 1]), ch[g + 1]
            stride = (first_stride if g == 0 else 2) if u == 0 else 1
            equal = cin == cout
            abr = g == 0
            if variant == "torchssl":
                if not equal and abr:
                    h = act(bn(p + "_bn1", h))
                elif equal:
                    out = act(bn(p + "_bn1", h))
                conv_in, short_in = (out if equal else h), h
            elif variant == "usb":
                if not equal:
                    h = act(bn(p + "_bn1", h))
                else:
                    out = act(bn(p + "_bn1", h))
                conv_in, short_in = (out if equal else h), h
            else:  # fixmatch
                pre = act(bn(p + "_bn1", h))
                short_in = pre if abr else h
                conv_in = pre
            out = act(bn(p + "_bn2", conv(p + "_conv1", conv_in, stride)))
            out = conv(p + "_conv2", out, 1)
            h = (short_in if equal else conv(p + "_shortcut", short_in, stride)) + out
    h = act(bn("final_bn", h)).mean(axis=(1, 2))
    kernel, bias = W["logits"]
    return h @ kernel + bias


def randomize_bn(model, seed=0):
    """Non-trivial gamma/beta/moving stats so inference-mode BN is not the identity."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            c = layer.get_weights()[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c),
                               rng.normal(0, 0.1, c), rng.uniform(0.5, 2.0, c)])


def n_params(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def layers_of(model, cls):
    return [l for l in model.layers if isinstance(l, cls)]


def source(model, layer_name):
    """Name of the layer whose output feeds `layer_name`."""
    tensor = model.get_layer(layer_name).input
    return next(l.name for l in model.layers if l.output is tensor)


# ---------------------------------------------------------------- parameter counts

def test_reference_counts_from_torchssl_architecture():
    # WRN-28-2, 10 classes: the published 1,467,610 is the bias-free count; TorchSSL's own
    # convs have bias=True (+2,032). 192 = BN params of block2/3 unit0 bn1 (output unused).
    assert torch_param_count(28, 2, 10) == (1_467_610, 192)
    assert torch_param_count(28, 2, 10, conv_bias=True) == (1_469_642, 192)
    assert torch_param_count(28, 8, 100) == (23_401_012, 768)
    assert torch_param_count(28, 8, 100, conv_bias=True) == (23_409_092, 768)
    assert torch_param_count(28, 2, 10, groups=4) == (5_929_434, 448)
    assert torch_param_count(28, 2, 10, groups=4, conv_bias=True) == (5_933_770, 448)


@pytest.mark.parametrize("builder, kwargs, ref", [
    (wrn_28_2, {}, (28, 2, 10, 3)),
    (wrn_28_8, {}, (28, 8, 100, 3)),
    (wrn_stl10, {}, (28, 2, 10, 4)),
    (wrn_28_2, {"conv_bias": True}, (28, 2, 10, 3)),
])
@pytest.mark.parametrize("variant", ["torchssl", "usb", "fixmatch"])
def test_param_counts_match_reference(builder, kwargs, ref, variant):
    model = builder(block_variant=variant, **kwargs)
    expected, dead = torch_param_count(*ref, conv_bias=kwargs.get("conv_bias", False))
    trainable = n_params(model.trainable_weights)
    assert trainable == expected - (dead if variant == "torchssl" else 0)
    bns = layers_of(model, layers.BatchNormalization)
    bn_channels = sum(l.gamma.shape[0] for l in bns)
    assert n_params(model.non_trainable_weights) == 2 * bn_channels  # moving mean + variance
    assert {v.path.split("/")[-1] for v in model.non_trainable_weights} == {"moving_mean", "moving_variance"}


def test_param_counts_literal():
    m = wrn_28_2()
    assert (n_params(m.trainable_weights), n_params(m.non_trainable_weights)) == (1_467_418, 3_424)
    m = wrn_28_2(block_variant="usb")
    assert (n_params(m.trainable_weights), n_params(m.non_trainable_weights)) == (1_467_610, 3_616)
    m = wrn_stl10()
    assert (n_params(m.trainable_weights), n_params(m.non_trainable_weights)) == (5_928_986, 7_264)


# ---------------------------------------------------------------- shapes and strides

def test_wrn_28_2_shapes_and_strides():
    m = wrn_28_2()
    assert m.input_shape == (None, 32, 32, 3) and m.output_shape == (None, 10)
    assert m.get_layer("stem_conv").strides == (1, 1)
    assert m.get_layer("block1_unit0_conv1").strides == (1, 1)
    assert m.get_layer("block2_unit0_conv1").strides == (2, 2)
    spatial = {"stem_conv": 32, "block1_unit0_conv1": 32, "block1_unit3_add": 32,
               "block2_unit0_conv1": 16, "block2_unit3_add": 16, "block3_unit0_conv1": 8,
               "block3_unit3_add": 8, "final_act": 8}
    for name, size in spatial.items():
        assert m.get_layer(name).output.shape[1:3] == (size, size), name
    channels = {"stem_conv": 16, "block1_unit0_add": 32, "block2_unit0_add": 64, "block3_unit0_add": 128}
    for name, c in channels.items():
        assert m.get_layer(name).output.shape[-1] == c, name
    assert m.get_layer("features").output.shape == (None, 128)
    assert len([l for l in m.layers if l.name.startswith("block1_unit") and l.name.endswith("_add")]) == 4


def test_wrn_28_8_shapes():
    m = wrn_28_8()
    assert m.output_shape == (None, 100)
    assert m.get_layer("block1_unit0_add").output.shape == (None, 32, 32, 128)
    assert m.get_layer("features").output.shape == (None, 512)


def test_stl10_variant_shapes_and_first_stride():
    m = wrn_stl10()
    assert m.input_shape == (None, 96, 96, 3) and m.output_shape == (None, 10)
    assert m.get_layer("stem_conv").strides == (1, 1)
    assert m.get_layer("block1_unit0_conv1").strides == (2, 2)
    assert m.get_layer("block1_unit0_shortcut").strides == (2, 2)
    spatial = {"stem_conv": 96, "block1_unit0_conv1": 48, "block1_unit0_shortcut": 48,
               "block2_unit0_conv1": 24, "block3_unit0_conv1": 12, "block4_unit0_conv1": 6,
               "block4_unit3_add": 6, "final_act": 6}
    for name, size in spatial.items():
        assert m.get_layer(name).output.shape[1:3] == (size, size), name
    assert m.get_layer("block4_unit0_add").output.shape[-1] == 256
    assert m.get_layer("features").output.shape == (None, 256)
    # 4 groups of (28 - 4) / 6 = 4 units
    assert sorted({l.name.split("_")[0] for l in m.layers if l.name.startswith("block")}) == \
        ["block1", "block2", "block3", "block4"]
    assert not any(l.name.startswith("block1_unit4") for l in m.layers)


def test_actual_forward_shapes():
    keras.utils.set_random_seed(0)
    m = wide_resnet((96, 96, 3), 7, depth=10, widen_factor=1, first_stride=2, num_groups=4)
    x = np.random.default_rng(0).normal(size=(2, 96, 96, 3)).astype("float32")
    assert m.predict(x, verbose=0).shape == (2, 7)
    feats = keras.Model(m.input, m.get_layer("features").output)
    assert feats.predict(x, verbose=0).shape == (2, 128)


# ---------------------------------------------------------------- layer settings

def test_batchnorm_settings():
    m = wrn_28_2()
    bns = layers_of(m, layers.BatchNormalization)
    assert len(bns) == 4 * 3 * 2 - 2 + 1  # 2 per unit, minus TorchSSL's 2 unused, plus final
    assert all(l.momentum == 0.999 and l.epsilon == 1e-3 for l in bns)
    assert all(l.center and l.scale for l in bns)
    m = wide_resnet((16, 16, 3), 10, depth=10, widen_factor=2, bn_momentum=0.9)
    assert {l.momentum for l in layers_of(m, layers.BatchNormalization)} == {0.9}
    assert len(layers_of(wrn_28_2(block_variant="usb"), layers.BatchNormalization)) == 25


def test_activations_are_leaky_relu_0_1():
    m = wrn_28_2()
    acts = layers_of(m, layers.LeakyReLU)
    assert len(acts) == len(layers_of(m, layers.BatchNormalization))  # every BN is followed by one
    assert all(l.negative_slope == pytest.approx(0.1) for l in acts)
    assert not layers_of(m, layers.ReLU) and not layers_of(m, layers.Activation)
    m = wide_resnet((16, 16, 3), 10, depth=10, widen_factor=1, leaky_slope=0.2)
    assert all(l.negative_slope == pytest.approx(0.2) for l in layers_of(m, layers.LeakyReLU))


def test_conv_init_is_untruncated_kaiming_fan_out():
    keras.utils.set_random_seed(0)
    m = wrn_28_2()
    convs = layers_of(m, layers.Conv2D)
    assert len(convs) == 1 + 4 * 3 * 2 + 3  # stem, 2 per unit, 3 projections
    for conv in convs:
        kernel = np.asarray(conv.kernel)
        kh, kw, _, cout = kernel.shape
        expected = np.sqrt(2.0 / (kh * kw * cout))
        assert abs(kernel.std() / expected - 1) < 0.10, conv.name
        assert abs(kernel.mean()) < 0.2 * expected, conv.name
    big = np.asarray(m.get_layer("block3_unit1_conv2").kernel)
    # a truncated normal (keras "he_normal") never exceeds ~2.3 std; an untruncated one does
    assert np.abs(big).max() > 3.5 * big.std()


def test_dense_init_xavier_normal_zero_bias():
    keras.utils.set_random_seed(1)
    m = wrn_28_8()  # 512 x 100 kernel: enough samples
    dense = m.get_layer("logits")
    assert isinstance(dense, layers.Dense) and dense.activation is keras.activations.linear
    kernel = np.asarray(dense.kernel)
    assert kernel.shape == (512, 100)
    assert abs(kernel.std() / np.sqrt(2.0 / (512 + 100)) - 1) < 0.05
    assert np.abs(kernel).max() > 3.0 * kernel.std()  # untruncated
    np.testing.assert_array_equal(np.asarray(dense.bias), 0.0)


def test_convs_have_no_bias_unless_asked():
    m = wrn_28_2()
    assert all(not c.use_bias and c.bias is None for c in layers_of(m, layers.Conv2D))
    m = wide_resnet((16, 16, 3), 10, depth=10, widen_factor=2, conv_bias=True)
    convs = layers_of(m, layers.Conv2D)
    assert all(c.use_bias for c in convs)
    assert all(np.all(np.asarray(c.bias) == 0) for c in convs)


def test_variable_names_allow_weight_decay_filtering():
    m = wrn_28_2()
    decayed = [v for l in m.layers if isinstance(l, (layers.Conv2D, layers.Dense)) for v in [l.kernel]]
    others = [v for v in m.trainable_weights if all(v is not d for d in decayed)]
    # everything not a conv/dense kernel is a BN gamma/beta or the dense bias
    assert {v.path.split("/")[-1] for v in others} == {"gamma", "beta", "bias"}
    assert n_params(decayed) + n_params(others) == n_params(m.trainable_weights)
    paths = {v.path for v in m.weights}
    for p in ("stem_conv/kernel", "block1_unit0_conv1/kernel", "block1_unit0_bn1/gamma",
              "block1_unit0_shortcut/kernel", "block3_unit3_conv2/kernel", "final_bn/moving_variance",
              "logits/kernel", "logits/bias"):
        assert p in paths, p
    assert "block2_unit0_bn1/gamma" not in paths  # TorchSSL's unused BN is not built


def test_dropout_sits_between_the_convs():
    assert not layers_of(wrn_28_2(), layers.Dropout)
    m = wide_resnet((16, 16, 3), 10, depth=16, widen_factor=1, dropout=0.3)
    drops = layers_of(m, layers.Dropout)
    assert len(drops) == 2 * 3 and all(d.rate == 0.3 for d in drops)
    assert source(m, "block2_unit1_drop") == "block2_unit1_act2"
    assert source(m, "block2_unit1_conv2") == "block2_unit1_drop"


# ---------------------------------------------------------------- wiring and forward pass

@pytest.mark.parametrize("variant, expected", [
    # (conv1 path of group 1 unit 0, its shortcut, conv1 path of group 2 unit 0, its shortcut)
    ("torchssl", ("block1_unit0_act1", "block1_unit0_act1", "block1_unit3_add", "block1_unit3_add")),
    ("usb", ("block1_unit0_act1", "block1_unit0_act1", "block2_unit0_act1", "block2_unit0_act1")),
    ("fixmatch", ("block1_unit0_act1", "block1_unit0_act1", "block2_unit0_act1", "block1_unit3_add")),
])
def test_projection_unit_wiring(variant, expected):
    m = wrn_28_2(block_variant=variant)
    got = (source(m, "block1_unit0_conv1"), source(m, "block1_unit0_shortcut"),
           source(m, "block2_unit0_pad1"), source(m, "block2_unit0_shortcut"))
    assert got == expected
    assert source(m, "block2_unit0_conv1") == "block2_unit0_pad1"
    # identity units: pre-activated conv path, raw shortcut
    assert source(m, "block2_unit1_conv1") == "block2_unit1_act1"
    assert source(m, "block2_unit1_bn1") == "block2_unit0_add"
    assert {source(m, "block1_unit0_bn1"), source(m, "block1_unit0_shortcut")} <= {"stem_conv", "block1_unit0_act1"}


@pytest.mark.parametrize("variant", ["torchssl", "usb", "fixmatch"])
@pytest.mark.parametrize("groups, first_stride, size", [(3, 1, 8), (3, 1, 9), (4, 2, 16)])
def test_forward_matches_numpy_reference(variant, groups, first_stride, size):
    keras.utils.set_random_seed(2)
    m = wide_resnet((size, size, 3), 5, depth=10, widen_factor=2, first_stride=first_stride,
                    num_groups=groups, block_variant=variant)
    randomize_bn(m)
    x = np.random.default_rng(3).normal(size=(2, size, size, 3)).astype("float32")
    got = m.predict(x, verbose=0)
    ref = reference_forward(m, x, 10, 2, groups, first_stride, variant)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    if size % 2 == 0:  # Keras "same" padding on the strided convs would not match PyTorch
        same = reference_forward(m, x, 10, 2, groups, first_stride, variant, keras_same_pad=True)
        assert np.abs(same - ref).max() > 1e-3


def test_features_and_logits_are_consistent():
    keras.utils.set_random_seed(4)
    m = wide_resnet((8, 8, 3), 6, depth=10, widen_factor=2)
    randomize_bn(m)
    x = np.random.default_rng(5).normal(size=(3, 8, 8, 3)).astype("float32")
    sub = keras.Model(m.input, [m.get_layer("final_act").output, m.get_layer("features").output])
    act, feats = sub.predict(x, verbose=0)
    np.testing.assert_allclose(feats, act.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    kernel, bias = m.get_layer("logits").get_weights()
    np.testing.assert_allclose(m.predict(x, verbose=0), feats @ kernel + bias, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- training and serialization

def test_two_fit_steps_lower_the_loss():
    keras.utils.set_random_seed(6)
    m = wide_resnet((16, 16, 3), 10, depth=10, widen_factor=1, bn_momentum=0.9)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    m.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True), loss=loss_fn)
    before = float(loss_fn(y, m(x, training=True)))
    m.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    after = float(loss_fn(y, m(x, training=True)))
    assert np.isfinite(after) and after < before - 0.05


def _serialization_model():
    keras.utils.set_random_seed(8)
    m = wide_resnet((8, 8, 3), 4, depth=10, widen_factor=2, dropout=0.1, bn_momentum=0.9,
                    block_variant="torchssl", name="wrn_small")
    randomize_bn(m)
    return m, np.random.default_rng(9).normal(size=(2, 8, 8, 3)).astype("float32")


def test_get_config_and_clone_give_identical_outputs():
    m, x = _serialization_model()
    ref = m.predict(x, verbose=0)
    rebuilt = keras.Model.from_config(m.get_config())
    assert rebuilt.get_config() == m.get_config()
    rebuilt.set_weights(m.get_weights())
    np.testing.assert_array_equal(rebuilt.predict(x, verbose=0), ref)
    clone = keras.models.clone_model(m)
    assert [l.name for l in clone.layers] == [l.name for l in m.layers]
    clone.set_weights(m.get_weights())
    np.testing.assert_array_equal(clone.predict(x, verbose=0), ref)


def test_save_and_load_keras_file(tmp_path):
    m, x = _serialization_model()
    ref = m.predict(x, verbose=0)
    path = tmp_path / "wrn.keras"
    m.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.name == "wrn_small"
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), ref)
    assert all(isinstance(l, layers.BatchNormalization) and l.momentum == 0.9
               for l in loaded.layers if "bn" in l.name)


# ---------------------------------------------------------------- argument checks

@pytest.mark.parametrize("kwargs", [{"depth": 27}, {"depth": 4}, {"widen_factor": 0},
                                    {"block_variant": "pytorch"}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        wide_resnet((32, 32, 3), 10, **kwargs)


def test_preset_names_and_overrides():
    assert wrn_28_2().name == "wrn_28_2" and wrn_28_8().name == "wrn_28_8" and wrn_stl10().name == "wrn_stl10"
    m = wrn_stl10(first_stride=1, input_shape=(32, 32, 3), num_classes=3, name="x")
    assert m.name == "x" and m.output_shape == (None, 3)
    assert m.get_layer("block1_unit0_conv1").strides == (1, 1)
    assert m.get_layer("block4_unit0_add").output.shape[1:] == (4, 4, 256)
