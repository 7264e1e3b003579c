"""Weight copying between Keras and PyTorch (benchmarks/parity/common.py): for every layer type
the harness maps, the same inputs give the same outputs (relative 1e-5) after copying
Keras -> PyTorch and after copying PyTorch -> Keras."""

import sys

import keras
import numpy as np
import pytest
import torch

from parity import common

TOLERANCE = 1e-5


class Holder(torch.nn.Module):
    """A torch module whose submodules carry the Keras layer names."""

    def __init__(self, **modules):
        super().__init__()
        for name, module in modules.items():
            self.add_module(name, module)


def randomise(module, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dtype.is_floating_point:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5 if "var" in _name(module, tensor)
                             else torch.randn(tensor.shape, generator=generator) * 0.5)


def _name(module, tensor):
    return next(name for name, t in [*module.named_parameters(), *module.named_buffers()] if t is tensor)


def both_directions(keras_model, holder, x, run_torch, names=None, training=False):
    """Copies Keras -> torch and compares; then randomises torch, copies torch -> Keras and compares."""
    copied = common.copy_keras_to_torch(keras_model, holder, names)
    assert copied > 0
    ours = keras.ops.convert_to_numpy(keras_model(x, training=training))
    with torch.no_grad():
        reference = run_torch(holder, x).numpy()
    assert common.relative_error(ours, reference) <= TOLERANCE

    randomise(holder, seed=3)
    common.copy_torch_to_keras(holder, keras_model, names)
    ours = keras.ops.convert_to_numpy(keras_model(x, training=training))
    with torch.no_grad():
        reference = run_torch(holder, x).numpy()
    assert common.relative_error(ours, reference) <= TOLERANCE
    # The copy really moved the weights (not two equal default initialisations).
    assert np.std(reference) > 1e-3


def inputs(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


@pytest.mark.parametrize("bias", [True, False])
def test_dense_linear_on_matrices_and_sequences(bias):
    x = inputs(4, 3, 6)
    model = keras.Sequential([keras.Input((3, 6)), keras.layers.Dense(5, use_bias=bias, name="fc")])
    holder = Holder(fc=torch.nn.Linear(6, 5, bias=bias))
    both_directions(model, holder, x, lambda h, a: h.fc(torch.from_numpy(a)))


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid")])
def test_conv2d_kernel_hwio_to_oihw(stride, padding):
    x = inputs(2, 9, 9, 3)
    model = keras.Sequential([keras.Input((9, 9, 3)),
                              keras.layers.Conv2D(4, 3, strides=stride, padding=padding, name="conv")])
    holder = Holder(conv=torch.nn.Conv2d(3, 4, 3, stride=stride, padding=1 if padding == "same" else 0))

    def run(h, a):  # NHWC in, NHWC out
        return h.conv(torch.from_numpy(a).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

    both_directions(model, holder, x, run)


def test_conv1d_kernel():
    x = inputs(2, 11, 3)
    model = keras.Sequential([keras.Input((11, 3)), keras.layers.Conv1D(5, 4, use_bias=False, name="conv")])
    holder = Holder(conv=torch.nn.Conv1d(3, 5, 4, bias=False))
    both_directions(model, holder, x, lambda h, a: h.conv(torch.from_numpy(a).permute(0, 2, 1)).permute(0, 2, 1))


def nchw(module):
    return lambda h, a: getattr(h, module)(torch.from_numpy(a).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


@pytest.mark.parametrize("training", [False, True])
def test_batch_norm_statistics_and_affine(training):
    x = inputs(6, 5, 5, 4) * 2 + 1
    model = keras.Sequential([keras.Input((5, 5, 4)), keras.layers.BatchNormalization(momentum=0.9, name="bn")])
    bn = torch.nn.BatchNorm2d(4, eps=1e-3, momentum=common.torch_bn_momentum(0.9))
    randomise(bn, seed=1)
    holder = Holder(bn=bn)
    common.copy_torch_to_keras(holder, model)  # Keras starts from non-trivial statistics too
    holder.train(training)
    both_directions(model, holder, x, nchw("bn"), training=training)


def test_batch_norm_moving_statistics_follow_momentum_conversion():
    """One training pass moves the means identically; PyTorch's running variance uses the
    unbiased batch variance where Keras uses the biased one (a known difference of n / (n - 1))."""
    x = inputs(6, 5, 5, 4) * 2 + 1
    layer = keras.layers.BatchNormalization(momentum=0.9, name="bn")
    model = keras.Sequential([keras.Input((5, 5, 4)), layer])
    holder = Holder(bn=torch.nn.BatchNorm2d(4, eps=1e-3, momentum=common.torch_bn_momentum(0.9)))
    common.copy_keras_to_torch(model, holder)
    old_variance = layer.moving_variance.numpy().copy()
    model(x, training=True)
    holder.train()
    nchw("bn")(holder, x)
    assert common.relative_error(layer.moving_mean.numpy(), holder.bn.running_mean.numpy()) <= TOLERANCE
    n = x.shape[0] * x.shape[1] * x.shape[2]
    biased = x.reshape(-1, 4).var(axis=0)
    expected_torch = 0.9 * old_variance + 0.1 * biased * n / (n - 1)
    assert common.relative_error(layer.moving_variance.numpy(), 0.9 * old_variance + 0.1 * biased) <= TOLERANCE
    assert common.relative_error(holder.bn.running_var.numpy(), expected_torch) <= TOLERANCE


def test_torch_batch_norm_keeps_pytorchs_moving_statistics():
    """`TorchBatchNormalization` (the switch kerastl's SSL parity sets): three training passes
    leave the same moving mean and variance as torch.nn.BatchNorm2d, and the same outputs."""
    from kerastl.nets.torch_batch_norm import TorchBatchNormalization

    model = keras.Sequential([keras.Input((5, 5, 4)), TorchBatchNormalization(momentum=0.9, name="bn")])
    holder = Holder(bn=torch.nn.BatchNorm2d(4, eps=1e-3, momentum=common.torch_bn_momentum(0.9)))
    randomise(holder.bn, seed=2)
    common.copy_torch_to_keras(holder, model)
    holder.train()
    for step in range(3):
        x = inputs(6, 5, 5, 4, seed=step) * 2 + 1
        ours = model(x, training=True).numpy()
        theirs = nchw("bn")(holder, x).detach().numpy()
        assert common.relative_error(ours, theirs) <= TOLERANCE
    layer = model.get_layer("bn")
    assert common.relative_error(layer.moving_mean.numpy(), holder.bn.running_mean.numpy()) <= TOLERANCE
    assert common.relative_error(layer.moving_variance.numpy(), holder.bn.running_var.numpy()) <= TOLERANCE


def test_batch_norm_epsilon_mismatch_is_refused():
    model = keras.Sequential([keras.Input((3, 3, 2)), keras.layers.BatchNormalization(name="bn")])
    with pytest.raises(ValueError, match="epsilon 0.001 .* eps 1e-05"):
        common.copy_keras_to_torch(model, Holder(bn=torch.nn.BatchNorm2d(2)))


def test_layer_norm():
    x = inputs(3, 4, 6)
    model = keras.Sequential([keras.Input((4, 6)), keras.layers.LayerNormalization(epsilon=1e-5, name="norm")])
    holder = Holder(norm=torch.nn.LayerNorm(6, eps=1e-5))
    randomise(holder, seed=2)
    common.copy_torch_to_keras(holder, model)
    both_directions(model, holder, x, lambda h, a: h.norm(torch.from_numpy(a)))


def test_embedding():
    tokens = np.random.default_rng(0).integers(0, 20, size=(3, 7))
    model = keras.Sequential([keras.Input((7,), dtype="int32"), keras.layers.Embedding(20, 5, name="embed")])
    holder = Holder(embed=torch.nn.Embedding(20, 5))
    both_directions(model, holder, tokens, lambda h, a: h.embed(torch.from_numpy(a)))


def test_gru_gate_order_on_a_two_layer_torch_gru():
    """Two stacked Keras GRUs (gates z, r, h; reset_after) against one torch GRU with
    num_layers=2 (gates r, z, n), paired by (path, layer index); whole sequences compared."""
    x = inputs(3, 6, 4)
    keras_inputs = keras.Input((6, 4))
    hidden = keras.layers.GRU(5, return_sequences=True, name="gru_a")(keras_inputs)
    outputs = keras.layers.GRU(5, return_sequences=True, name="gru_b")(hidden)
    model = keras.Model(keras_inputs, outputs)
    holder = Holder(gru=torch.nn.GRU(4, 5, num_layers=2, batch_first=True))
    names = {"gru_a": ("gru", 0), "gru_b": ("gru", 1)}
    both_directions(model, holder, x, lambda h, a: h.gru(torch.from_numpy(a))[0], names=names)


def test_gru_mapping_is_not_the_identity():
    """With the gates left in Keras order the outputs differ: the reorder matters."""
    units = 5
    packed = np.arange(3 * units)
    to_torch = common._gru_to_torch(packed, units)
    assert to_torch[:units].tolist() == list(range(units, 2 * units))  # r first
    assert common._gru_to_keras(to_torch, units).tolist() == packed.tolist()


def test_weight_errors_pairs_every_tensor_in_keras_layout():
    model = keras.Sequential([keras.Input((5, 5, 2)), keras.layers.Conv2D(3, 3, name="conv"),
                              keras.layers.BatchNormalization(name="bn")])
    holder = Holder(conv=torch.nn.Conv2d(2, 3, 3), bn=torch.nn.BatchNorm2d(3, eps=1e-3))
    common.copy_keras_to_torch(model, holder)
    errors = common.weight_errors(model, holder)
    assert len(errors) == 6
    assert all(common.relative_error(ours, ref) == 0.0 for ours, ref in errors.values())
    with torch.no_grad():
        holder.conv.weight[0, 0, 0, 0] += 1.0
    moved = {key for key, (ours, ref) in common.weight_errors(model, holder).items() if not np.array_equal(ours, ref)}
    assert moved == {"conv/kernel"}


def test_unknown_pairing_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="fc")])
    with pytest.raises(ValueError, match="no submodule 'fc'"):
        common.copy_keras_to_torch(model, Holder(other=torch.nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="Dense pairs with nn.Linear"):
        common.copy_keras_to_torch(model, Holder(fc=torch.nn.Conv1d(4, 2, 1)))


def test_tolerance_rises_from_1e5_to_1e4_at_step_50():
    assert common.float_tolerance(1) == pytest.approx(1e-5)
    assert common.float_tolerance(50) == pytest.approx(1e-4)
    assert common.float_tolerance(200) == pytest.approx(1e-4)
    assert 1e-5 < common.float_tolerance(25) < 1e-4


def test_step_comparison_rows_and_summary():
    comparison = common.StepComparison("demo")
    comparison.exact(1, "mask", [1, 0, 1], [1, 0, 1])
    comparison.exact(2, "mask", [1, 0, 1], [1, 1, 1])
    comparison.close(1, "loss", 1.0, 1.0 + 2e-6)
    summary = comparison.summary()
    assert summary["mask"] == {"kind": "exact", "steps": 2, "failing_steps": 1, "first_failing_step": 2,
                               "worst": 1, "worst_step": 2, "ok": False}
    row = comparison.close_all(3, "weights", {"a": (np.ones(2), np.ones(2)), "b": (np.ones(2), np.full(2, 2.0))})
    assert row["worst_tensor"] == "b" and row["relative_error"] == pytest.approx(0.5) and not row["ok"]
    assert summary["loss"]["ok"] and summary["loss"]["worst"] == pytest.approx(2e-6, rel=1e-3)
    assert not comparison.ok
    assert comparison.summary()["weights"]["worst_tensor"] == "b"


def test_stubbed_package_imports_but_refuses_use():
    with common.stub_modules(["kerastl_parity_absent_pkg"]) as created:
        import kerastl_parity_absent_pkg.transforms.functional as functional
        from kerastl_parity_absent_pkg.datasets import ImageFolder

        class Derived(ImageFolder):  # a reference may subclass a stubbed class at load time
            pass

        modes = {functional.InterpolationMode.NEAREST: "nearest"}
    assert "kerastl_parity_absent_pkg.transforms.functional" in created
    assert modes[functional.InterpolationMode.NEAREST] == "nearest"
    with pytest.raises(common.StubUsed, match="kerastl_parity_absent_pkg.transforms.functional.resize"):
        functional.resize()
    with pytest.raises(common.StubUsed):
        Derived()
    for name in [m for m in list(sys.modules) if m.startswith("kerastl_parity_absent_pkg")]:
        del sys.modules[name]


def test_no_cuda_keeps_tensors_on_the_cpu():
    with common.no_cuda():
        tensor = torch.ones(2).cuda()
        module = torch.nn.Linear(2, 2).cuda()
        assert not torch.cuda.is_available()
    assert tensor.device.type == "cpu" and next(module.parameters()).device.type == "cpu"
