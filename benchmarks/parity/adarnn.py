"""AdaRNN against the reference code (jindongwang/transferlearning, `code/deep/adarnn`).

    python -m benchmarks.parity.adarnn --reference /path/to/transferlearning     # step parity + end to end
    python -m benchmarks.parity.adarnn --only step                              # about a minute
    python -m benchmarks.parity.adarnn --only end-to-end --seeds 0 1 2 --epochs 12 --pre-epoch 6 --no-auto

(`python -m` from the project root: run as a file, this folder's `ssl.py` would shadow the
standard library's.) `--only` keeps the other part of an existing results file.

Runs in the `parity` tox environment (PyTorch CPU beside kerastl); the reference checkout is
`--reference DIR` or `KERASTL_REF_TRANSFERLEARNING`, its files untouched: the harness stubs
`pretty_errors` (imported by `train_weather.py` only to colour tracebacks) and `visdom` (its
`utils` package imports a plotting helper the training never calls) and `torchvision` (its
activity-data loader, imported at load time, unused here), makes `.cuda()` a
no-op, and gives `train_weather.train_AdaRNN` its module-level `args`.

Step parity (one process, copied weights, the same batches), float32, relative error against
`common.float_tolerance`:
- the GRU stack's hidden sequences (every layer) and the forecast, kerastl's AdaRNN with the
  reference's bottleneck head against the reference's `AdaRNN` module;
- the distances per time step on those hidden sequences: MMD (linear), multi-kernel MMD,
  CORAL, cosine, pairwise (the reference's `TransferLoss` against `kerastl.timeseries.distances`);
- the gate weights of every layer (`process_gate_weight` against `TemporalGate`);
- the reference's adversarial distance (a new discriminator per call) against
  `adversarial_untrained` given the same discriminator weights: value and gradient;
- training with the reference's own `train_AdaRNN` loop for 3 epochs (pre-training 1 epoch,
  then boosting), MMD / CORAL / cosine: after every epoch the weights, the importance weights
  W (the gate's after pre-training, the boosting update after the third epoch) and the
  per-epoch distance matrix. The bottleneck's dropout is off on both sides (its random masks
  cannot be shared) and kerastl trains with `--adam torch` (default; `torch_adam_class`:
  PyTorch's epsilon placement, and variables with an all-zero gradient left alone as PyTorch
  skips parameters whose grad is None); `--adam keras` is the app's Keras Adam. The BN moving variance is
  reported apart: Keras updates it with the biased batch variance, PyTorch with the unbiased
  one (docs/parity.md), which changes evaluation-mode outputs only.

End to end: the reference's model and training loop (its `train_AdaRNN`, validation-selected
epoch as in its `main_transfer`) and kerastl's `apps.adarnn` on the same windows, segments and
batches (kerastl's loaders, split, min-max scaling and TDC with K = 2): pvlib stations, taylor
and a csv series; GRU (the reference's AdaRNN with dw = 0: it has no separate GRU) and AdaRNN
(reference: adversarial distance with an untrained discriminator per call, dw 0.5; kerastl:
the paper preset's model with its trained discriminator, and the cpu preset's `--lambda auto`);
RMSE and MAE on the original scale over every test window, seconds per training epoch.
Writes benchmarks/results/parity_adarnn.{json,md} with the reference's commit, after every
row; an interrupted end-to-end run started again with the same options keeps the rows made by
today's code with the same setup and reference (`end_to_end_made_by`; `--no-reuse`: runs all).
`--merge` lets several invocations fill one end-to-end table side by side, e.g. one lane per
core:

    python -m benchmarks.parity.adarnn --only end-to-end --merge --seeds 0 1 2 --series taylor ... &
    python -m benchmarks.parity.adarnn --only end-to-end --merge --seeds 0 1 2 --series greensboro csv ...
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from parity import common  # noqa: E402

if common.ROOT not in sys.path:  # today's kerastl and apps, not an installed copy
    sys.path.insert(0, common.ROOT)

NAME = "transferlearning"
REPOSITORY = "github.com/jindongwang/transferlearning"
SUBDIR = os.path.join("code", "deep", "adarnn")
#: kerastl distance -> the reference's TransferLoss name, for the step parity.
DISTANCES = {"mmd_linear": "mmd", "mmd_rbf": "mmd_rbf", "coral": "coral", "cosine": "cosine", "pairwise": "pairwise"}
TRAINED = {"mmd_linear": "mmd", "coral": "coral", "cosine": "cosine"}
# Small sizes: the step parity runs in seconds.
T, F, H, B, STEPS, EPOCHS = 8, 5, 16, 12, 3, 3
#: `--adam`: which Adam kerastl trains with in the parity runs (the app's own is Keras').
ADAM_CHOICES = ("torch", "keras")
ADAM_SETTINGS = {"torch": "PyTorch's update (eps 1e-8 on sqrt(v_hat), `--adam torch`)",
                 "keras": "Keras' (eps 1e-7 on sqrt(v), as apps.adarnn, `--adam keras`)"}


@functools.cache
def torch_adam_class():
    """Keras' Adam with PyTorch's update (`torch.optim.Adam`), for the parity runs.

    - eps is added to sqrt(v_hat), after the bias correction. Keras adds it to sqrt(v) and
      folds both bias corrections into the step size: PyTorch's update with eps /
      sqrt(1 - beta_2^t) in place of eps (32 x at step 1 for beta_2 0.999).
    - A variable whose gradient is exactly zero everywhere keeps its value and moments.
      PyTorch's Adam skips a parameter outside the loss graph (its grad is None after
      `zero_grad()`); TensorFlow gives such a variable zeros (through `tf.where`, as AdaRNN's
      gates during boosting), and Keras' Adam keeps moving it with its decaying momentum.

    - The learning rate and the betas enter in the variable's dtype straight from their Python
      floats. Keras keeps the learning rate in a float32 variable, and `ops.cast(0.999,
      "float64")` goes through float32: in a float64 run those rounded the bias corrections
      (6.6e-6 relative on every step, the whole difference left after one step).

    Same state and variables as Keras' Adam; only `update_step` differs.

    >>> optimizer = torch_adam_class()(1e-3, epsilon=1e-8)  # torch.optim.Adam(params, lr=1e-3)
    """
    import keras
    from keras import ops

    class TorchAdam(keras.optimizers.Adam):
        def __init__(self, learning_rate: float, **kwargs):
            super().__init__(learning_rate, **kwargs)
            self.exact_learning_rate = float(learning_rate)

        def update_step(self, gradient, variable, learning_rate):
            dtype = variable.dtype
            lr, beta_1, beta_2 = (ops.convert_to_tensor(value, dtype)
                                  for value in (self.exact_learning_rate, self.beta_1, self.beta_2))
            gradient = ops.cast(gradient, dtype)
            step = ops.cast(self.iterations + 1, dtype)
            m = self._momentums[self._get_variable_index(variable)]
            v = self._velocities[self._get_variable_index(variable)]
            in_graph = ops.any(ops.not_equal(gradient, 0))  # False: PyTorch's grad None
            new_m = ops.add(m, ops.multiply(ops.subtract(gradient, m), 1 - beta_1))
            new_v = ops.add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - beta_2))
            first = 1 - ops.power(beta_1, step)
            second = 1 - ops.power(beta_2, step)
            denominator = ops.add(ops.divide(ops.sqrt(new_v), ops.sqrt(second)), self.epsilon)
            new_variable = ops.subtract(variable, ops.divide(ops.multiply(new_m, lr / first), denominator))
            self.assign(m, ops.where(in_graph, new_m, m))
            self.assign(v, ops.where(in_graph, new_v, v))
            self.assign(variable, ops.where(in_graph, new_variable, variable))

    return TorchAdam


def make_adam(kind: str, learning_rate: float, **kwargs):
    """kerastl's optimizer for `--adam kind`: `torch` (PyTorch's update, eps 1e-8) or `keras`
    (Keras' Adam with its default eps 1e-7, what `apps.adarnn` uses)."""
    import keras

    if kind == "torch":
        return torch_adam_class()(learning_rate, **{"epsilon": 1e-8, **kwargs})
    if kind == "keras":
        return keras.optimizers.Adam(learning_rate, **kwargs)
    raise ValueError(f"--adam: expected one of {ADAM_CHOICES}, got {kind!r}")


@contextlib.contextmanager
def reference_modules(root: str):
    """The reference's `train_weather` module (and through it `base.AdaRNN`, `base.loss_transfer`,
    `base.loss.adv_loss`), importable and runnable on the CPU while the block runs."""
    folder = os.path.join(root, SUBDIR)
    names = ("train_weather", "base", "utils", "dataset")
    saved = {name: module for name, module in sys.modules.items() if name.split(".")[0] in names}
    for name in saved:
        del sys.modules[name]
    try:
        with common.on_path(folder), common.stub_modules(["pretty_errors", "visdom", "torchvision"]), common.no_cuda():
            import train_weather

            yield train_weather
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] in names]:
            del sys.modules[name]
        sys.modules.update(saved)


def build_pair(train_weather, distance: str, seed: int, hidden=H, length=T, features=F, width=H, dw=0.5):
    """kerastl's AdaRNN with the reference's head and the reference's AdaRNN, same weights."""
    import keras
    import torch

    from kerastl.timeseries import AdaRNN

    keras.utils.set_random_seed(seed)
    torch.manual_seed(seed)
    ours = AdaRNN(len_seq=length, num_features=features, num_domains=2, hidden_sizes=[hidden, hidden],
                  distance=distance, tdm_lambda=dw, bottleneck_width=width, head_dropout=0.0, matching_scale="none")
    ours.build((None, length, features))
    reference = train_weather.AdaRNN(use_bottleneck=True, bottleneck_width=width, n_input=features,
                                     n_hiddens=[hidden, hidden], n_output=1, dropout=0.0, len_seq=length,
                                     model_type="AdaRNN", trans_loss=DISTANCES.get(distance, distance))
    reference.bottleneck[4].p = 0.0  # dropout masks cannot be shared: off on both sides
    copy_weights(ours, reference)
    return ours, reference


def layer_pairs(ours, reference):
    """(Keras layer, torch module, GRU layer index) for every weight of the model."""
    blocks = ours.head.blocks
    pairs = [(layer, reference.features[i], 0) for i, layer in enumerate(ours.encoder_layers)]
    pairs += [(blocks[0], reference.bottleneck[0], 0), (blocks[1], reference.bottleneck[1], 0),
              (blocks[2], reference.bottleneck[2], 0), (ours.head.output_dense, reference.fc, 0)]
    for i, gate in enumerate(ours.gates):
        pairs += [(gate.dense, reference.gate[i], 0), (gate.norm, reference.bn_lst[i], 0)]
    return pairs


def copy_weights(ours, reference) -> int:
    import torch

    count = 0
    with torch.no_grad():
        for layer, module, index in layer_pairs(ours, reference):
            for variable, tensor, to_torch, _ in common.tensor_pairs(layer, module, index):
                tensor.copy_(torch.from_numpy(np.ascontiguousarray(to_torch(common._read_keras(variable)))))
                count += 1
    return count


def weight_pairs(ours, reference) -> tuple[dict, dict]:
    """({name: (ours, ref)} of the trained weights, {name: (ours, ref)} of BN moving statistics)."""
    weights, moving = {}, {}
    for layer, module, index in layer_pairs(ours, reference):
        for variable, tensor, _, to_keras in common.tensor_pairs(layer, module, index):
            var = variable[0] if isinstance(variable, tuple) else variable
            name = f"{layer.name}/{var.name}" + (f"[{variable[1]}]" if isinstance(variable, tuple) else "")
            pair = (common._read_keras(variable), to_keras(tensor.detach().numpy()))
            (moving if "moving" in var.name else weights)[name] = pair
    return weights, moving


def batches(seed: int, steps: int, length=T, features=F, batch=B, dtype="float32"):
    """`steps` batches `([2, batch, length, features], [2, batch])` from two shifted segments."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        x = rng.normal(size=(2, batch, length, features)).astype(dtype)
        x[1] = 1.5 * x[1] + 0.7
        y = (x[:, :, -1, 0] * 0.5 + 0.1 * rng.normal(size=(2, batch))).astype(dtype)
        out.append((x, y))
    return out


@contextlib.contextmanager
def in_float64():
    """Both sides in float64 while the block runs: Keras' dtype policy and floatx, PyTorch's
    default dtype (the reference's weights are drawn in float64), and the reference's
    `.float()` casts of its GRU inputs left as they are."""
    import torch

    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with common.keras_float64(), common.patched(torch.Tensor, "float", lambda self: self):
            yield
    finally:
        torch.set_default_dtype(default_dtype)


def step_parity(root: str, seed: int = 0, adam: str = "torch") -> common.StepComparison:
    """Every step-parity comparison of the module docstring; rows named by quantity."""
    import tensorflow as tf
    import torch

    comparison = common.StepComparison("adarnn/step")
    x, y = batches(seed, 1)[0]
    flat = x.reshape(2 * B, T, F)
    with reference_modules(root) as train_weather:
        ours, reference = build_pair(train_weather, "mmd_linear", seed)
        reference.train()
        hidden_ours = [h.numpy() for h in ours.hidden_sequences(flat, training=True)]
        _, hidden_ref, _ = reference.gru_features(torch.from_numpy(flat))
        for layer, (a, b) in enumerate(zip(hidden_ours, hidden_ref)):
            comparison.close(1, f"gru_hidden_layer_{layer}", a, b.detach().numpy())
        comparison.close(1, "forecast", ours._outputs(flat, training=True).numpy(),
                         reference.forward_pre_train(torch.from_numpy(flat))[0].detach().numpy())
        # Distances per time step, every layer, on the reference's hidden states.
        from base.loss_transfer import TransferLoss
        from kerastl.timeseries import distances

        for name, reference_name in DISTANCES.items():
            ours_values, ref_values = [], []
            for h in hidden_ref:
                h = h.detach()
                source, target = h[:B], h[B:]
                ours_values.append(distances.get_distance(name)(np.transpose(source.numpy(), (1, 0, 2)),
                                                                np.transpose(target.numpy(), (1, 0, 2))).numpy())
                criterion = TransferLoss(loss_type=reference_name, input_dim=h.shape[2])
                ref_values.append([float(criterion.compute(source[:, t], target[:, t])) for t in range(T)])
            comparison.close(1, f"distance_{name}_per_time_step", np.array(ours_values), np.array(ref_values))
        # Gate weights (training mode: batch statistics in the gate's BN).
        for layer, h in enumerate(hidden_ref):
            h = h.detach()
            ours_gate = ours.gates[layer](h[:B].numpy(), h[B:].numpy(), training=True).numpy()
            comparison.close(1, f"gate_weights_layer_{layer}", ours_gate,
                             reference.process_gate_weight(h, layer).detach().numpy())
        adversarial_untrained(comparison, train_weather, hidden_ref[0].detach().numpy())
        for name in TRAINED:
            train_parity(comparison, train_weather, name, seed, adam=adam)
    return comparison


def adversarial_untrained(comparison, train_weather, hidden):
    """The reference's `adv` against `adversarial_untrained` with the discriminator it drew."""
    import tensorflow as tf
    import torch

    from base.loss import adv_loss
    from kerastl.timeseries.distances import UntrainedAdversarialDistance

    drawn = []
    forward = adv_loss.Discriminator.forward

    def recorded(self, x):  # the discriminator the reference drew for this call
        drawn.append(self)
        return forward(self, x)

    source = torch.tensor(hidden[:B, -1], requires_grad=True)
    target = torch.tensor(hidden[B:, -1])
    with common.patched(adv_loss.Discriminator, "forward", recorded):
        value = adv_loss.adv(source, target, input_dim=hidden.shape[-1], hidden_dim=32)
    value.backward()
    net = drawn[0]
    weights = (net.dis1.weight.detach().numpy().T, net.dis1.bias.detach().numpy(),
               net.dis2.weight.detach().numpy().T, net.dis2.bias.detach().numpy())
    ours_source = tf.Variable(hidden[:B, -1])
    with tf.GradientTape() as tape:
        ours = UntrainedAdversarialDistance(hidden_units=32)(ours_source, hidden[B:, -1], weights=weights)
    comparison.close(1, "adversarial_untrained_value", float(ours), float(value))
    comparison.close(1, "adversarial_untrained_feature_gradient", tape.gradient(ours, ours_source).numpy(),
                     source.grad.numpy())


def train_parity(comparison, train_weather, distance: str, seed: int, pre_epoch: int = 1, lr: float = 1e-3,
                 adam: str = "torch", dtype: str = "float32"):
    """`EPOCHS` epochs of `STEPS` batches through the reference's `train_AdaRNN` and kerastl's
    `fit` + `TDMCallback`; compared after every epoch. `dtype="float64"` feeds float64 batches
    (run it inside `in_float64()`)."""
    import torch

    from kerastl.timeseries import TDMCallback

    ours, reference = build_pair(train_weather, distance, seed)
    # Adam's epsilon: Keras adds it to sqrt(v) before the bias correction (in effect eps /
    # sqrt(1 - beta_2^t): 32 x PyTorch's at step 1). With the reference's head initialisation
    # (N(0, 0.005) twice) many gradients are ~1e-7, where that difference changes the step:
    # `adam="torch"` (the default here) gives kerastl PyTorch's update and both sides eps 1e-8.
    ours.compile(optimizer=make_adam(adam, lr, **({"epsilon": 1e-8} if adam == "keras" else {}), clipvalue=3.0))
    optimizer = torch.optim.Adam(reference.parameters(), lr=lr, eps=1e-8)
    args = argparse.Namespace(num_layers=2, len_seq=T, pre_epoch=pre_epoch, dw=0.5, len_win=0)
    callback = TDMCallback(pre_epoch)
    weight_mat = dist_mat = None
    for epoch in range(EPOCHS):
        data = batches(seed + 1 + epoch, STEPS, dtype=dtype)
        loaders = [[(torch.from_numpy(x[k]), torch.zeros(B), torch.from_numpy(y[k])) for x, y in data]
                   for k in range(2)]
        with common.patched(train_weather, "args", args), contextlib.redirect_stderr(open(os.devnull, "w")):
            reference.train()
            _, _, weight_mat, dist_mat = train_weather.train_AdaRNN(args, reference, optimizer, loaders, epoch,
                                                                   dist_mat, weight_mat)
        stream = (batch for batch in data)
        ours.fit(stream, steps_per_epoch=STEPS, initial_epoch=epoch, epochs=epoch + 1, verbose=0, shuffle=False,
                 callbacks=[callback])
        step = (epoch + 1) * STEPS
        weights, moving = weight_pairs(ours, reference)
        # The biases before a batch norm (the gates' Dense; both bottleneck Dense, linear up to
        # the BN) have a zero gradient in exact arithmetic (the BN removes a constant shift);
        # Adam turns the float noise of that zero into steps of up to lr, of either sign on
        # either side. Compared apart, without a tolerance.
        before_bn = {name: pair for name, pair in weights.items()
                     if name.endswith("/bias") and name.split("/")[0] in ("dense", "bottleneck_1", "bottleneck_2")}
        comparison.close_all(step, f"{distance}/weights_after_epoch",
                             {name: pair for name, pair in weights.items() if name not in before_bn})
        comparison.close_all(step, f"{distance}/biases_before_a_batch_norm (zero gradient)", before_bn,
                             tolerance=float("inf"))
        # Keras' biased batch variance in the moving average against PyTorch's unbiased one:
        # compared at the size that difference makes (n / (n - 1) per update), not at 1e-5.
        comparison.close_all(step, f"{distance}/bn_moving_statistics (biased vs unbiased variance)", moving,
                             tolerance=0.1)
        if epoch >= pre_epoch - 1:
            comparison.close(step, f"{distance}/importance_weights_W", ours.tdm_weights.numpy(),
                             weight_mat.detach().numpy())
        if dist_mat is not None:
            comparison.close(step, f"{distance}/distance_matrix_of_the_epoch", ours.distance_epoch.numpy(),
                             dist_mat.detach().numpy())


# ---------------------------------------------------------------- end to end

SERIES = {"greensboro": ["--dataset", "pvlib", "--station", "greensboro"],
          "miami": ["--dataset", "pvlib", "--station", "miami"],
          "taylor": ["--dataset", "taylor"],
          "csv": None}  # written at run time from sand_point (see csv_series)


def csv_series(folder: str) -> list[str]:
    """A csv series (the csv:PATH loader): pvlib's sand_point station written as a csv file."""
    from kerastl.data import series as ts

    import pandas as pd

    series = ts.load_series("pvlib", station="sand_point")
    frame = pd.DataFrame(series.values, columns=series.feature_names)
    frame.insert(0, "time", pd.to_datetime(series.time))
    path = os.path.join(folder, "sand_point.csv")
    frame.to_csv(path, index=False)
    # The csv loader's default split: the first 70 % of the rows train, 10 % validate, 20 % test.
    return ["--dataset", f"csv:{path}", "--time-col", "time", "--target", "temp_air"]


def kerastl_run(argv: list[str], folder: str, adam: str = "keras") -> dict:
    import keras

    from apps import adarnn
    from kerastl import app

    run = functools.partial(app.main, adarnn.build_parser, adarnn.run,
                            [*argv, "--output", folder, "--no-export", "--overwrite"])
    if adam == "keras":  # the app's own optimizer
        code = run()
    else:
        torch_adam_class()  # built on Keras' own Adam, before the name is replaced
        make = functools.partial(make_adam, adam)  # the app builds keras.optimizers.Adam(lr, clipvalue=3.0)
        with common.patched(keras.optimizers, "Adam", make):
            code = run()
    if code:
        raise RuntimeError(f"apps.adarnn {' '.join(argv)} exited with {code}")
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


def reference_run(root: str, argv: list[str], model: str, seed: int, epochs: int, pre_epoch: int, lr: float,
                  hidden: int = 64, dw: float = 0.5, steps: int = 0) -> dict:
    """The reference's model and `train_AdaRNN` on kerastl's windows, batches and scaling (the
    same `apps.adarnn` options parse the data); the epoch with the lowest validation MSE is
    evaluated, as `main_transfer` does."""
    import torch

    from apps import adarnn
    from kerastl.data import series as ts

    args = adarnn.build_parser().parse_args([*argv, "--seed", str(seed)])
    adarnn.check_args(args)
    series, split, scaler, scaled, segmentation, segment_starts, periods = adarnn.prepare_data(args)
    target, k = series.target_index, args.num_domains
    steps = steps or ts.steps_per_epoch(segment_starts, args.batch_size)
    stream = iter(ts.segment_batches(scaled, target, segment_starts, args.len_seq, args.batch_size, args.horizon,
                                     seed=seed))
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(1)  # beside TensorFlow's threads in this process; s / epoch is one thread's
    with reference_modules(root) as train_weather:
        net = train_weather.AdaRNN(use_bottleneck=True, bottleneck_width=64, n_input=len(series.feature_names),
                                   n_hiddens=[hidden, hidden], n_output=1, dropout=0.0, len_seq=args.len_seq,
                                   model_type="AdaRNN", trans_loss="adv")
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        loop_args = argparse.Namespace(num_layers=2, len_seq=args.len_seq, pre_epoch=pre_epoch,
                                       dw=0.0 if model == "gru" else dw, len_win=0)
        _, x_valid, y_valid = periods["valid"]
        _, x_test, y_test = periods["test"]

        def predict(x):
            net.eval()
            with torch.no_grad():
                return np.concatenate([net.predict(torch.from_numpy(x[i:i + 256])).numpy().reshape(-1)
                                       for i in range(0, len(x), 256)])

        best, seconds, weight_mat, dist_mat = (np.inf, None), [], None, None
        for epoch in range(epochs):
            data = [next(stream) for _ in range(steps)]
            loaders = [[(torch.from_numpy(np.asarray(x[i])), torch.zeros(len(y[i])), torch.from_numpy(np.asarray(y[i])))
                        for x, y in data] for i in range(k)]
            started = time.perf_counter()
            with common.patched(train_weather, "args", loop_args), contextlib.redirect_stderr(open(os.devnull, "w")):
                net.train()
                _, _, weight_mat, dist_mat = train_weather.train_AdaRNN(loop_args, net, optimizer, loaders, epoch,
                                                                        dist_mat, weight_mat)
            seconds.append(time.perf_counter() - started)
            valid = float(np.mean((predict(x_valid) - y_valid) ** 2))
            if valid < best[0]:
                best = (valid, {key: value.clone() for key, value in net.state_dict().items()}, epoch + 1)
        net.load_state_dict(best[1])
        forecast = predict(x_test)
    error = scaler.inverse(forecast, target) - scaler.inverse(y_test, target)
    return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
            "best_epoch": best[2], "epoch_seconds": seconds}


def end_to_end(root: str, seeds, series_names, epochs: int, pre_epoch: int, lr: float, workdir: str,
               on_row=lambda rows: None, steps: int = 0, auto: bool = True, adam: str = "torch",
               kept=()) -> list[dict]:
    """Rows {series, side, model, seed, rmse, mae, seconds_per_epoch}; the rows in `kept`
    (made by today's code with the same setup) are not run again."""
    rows = list(kept)
    done = {(row["series"], row["side"], row["model"], row["seed"]) for row in rows}
    if rows:
        on_row(rows)
    for seed in seeds:
        for name in series_names:
            data = SERIES[name] if SERIES[name] is not None else csv_series(workdir)
            budget = ["--epochs", str(epochs), "--pre-epoch", str(pre_epoch), "--lr", str(lr), "--num-domains", "2",
                      "--steps-per-epoch", str(steps)]
            paper = [*data, "--preset", "paper", *budget, "--patience", "0", "--seed", str(seed)]
            for model in ("gru", "adarnn"):
                if (name, "kerastl", model, seed) in done and (name, "reference", model, seed) in done:
                    continue
                reference = reference_run(root, [*data, "--preset", "paper", *budget], model, seed, epochs,
                                          pre_epoch, lr, steps=steps)
                rows.append({"series": name, "side": "reference", "model": model, "seed": seed,
                             "rmse": reference["rmse"], "mae": reference["mae"],
                             "seconds_per_epoch": float(np.median(reference["epoch_seconds"][1:] or
                                                                  reference["epoch_seconds"])),
                             "setting": "reference: paper model, dw 0.5 (gru: dw 0), adv untrained per call"})
                on_row(rows)
                ours = kerastl_run([*paper, "--model", model], os.path.join(workdir, f"{name}-{model}-{seed}"), adam)
                rows.append({"series": name, "side": "kerastl", "model": model, "seed": seed,
                             "rmse": ours["rmse"], "mae": ours["mae"],
                             "seconds_per_epoch": float(np.median(ours["history"]["epoch_seconds"][1:] or
                                                                  ours["history"]["epoch_seconds"])),
                             "setting": f"kerastl --preset paper (trained discriminator, lambda 0.5), --adam {adam}"})
                on_row(rows)
            if not auto or (name, "kerastl", "adarnn (cpu preset, --lambda auto)", seed) in done:
                continue
            auto = kerastl_run([*data, "--preset", "cpu", "--epochs", str(epochs), "--pre-epoch", str(pre_epoch),
                                "--num-domains", "2", "--steps-per-epoch", str(steps), "--seed", str(seed),
                                "--model", "adarnn"],
                               os.path.join(workdir, f"{name}-auto-{seed}"))
            rows.append({"series": name, "side": "kerastl", "model": "adarnn (cpu preset, --lambda auto)",
                         "seed": seed, "rmse": auto["rmse"], "mae": auto["mae"],
                         "seconds_per_epoch": float(np.median(auto["history"]["epoch_seconds"][1:] or
                                                              auto["history"]["epoch_seconds"])),
                         "setting": "kerastl --preset cpu: " + str(auto["lambda_search"]["chosen"])})
            on_row(rows)
    return rows


def current_rows(path: str, content: dict, record: dict) -> list[dict]:
    """The end-to-end rows of the results file at `path` when it was made by today's code
    against the same reference with the same setup (else none)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        earlier = json.load(f)
    made_by = earlier.get("end_to_end_made_by") or {}
    ok = common.provenance.current(made_by, record["dependencies"])
    why = f"made by {made_by.get('commit')}: " + ("today's code" if ok else "not today's code, or no record")
    if ok and earlier.get("reference", {}).get("commit") != content["reference"].get("commit"):
        ok, why = False, "another reference commit"
    if ok and earlier.get("end_to_end_setup") != content["end_to_end_setup"]:
        ok, why = False, "another setup"
    rows = (earlier.get("end_to_end") or {}).get("rows", []) if ok else []
    print(f"end to end: {len(rows)} current rows in {os.path.relpath(path)} ({why})", flush=True)
    return rows


def resumable_rows(path: str, content: dict, record: dict, args) -> list[dict]:
    """End-to-end rows of an interrupted run to keep: the current rows (`current_rows`) for the
    requested series and seeds, a model's reference and kerastl rows only as a pair."""
    rows = [row for row in current_rows(path, content, record)
            if row["series"] in args.series and row["seed"] in args.seeds]
    sides = {}
    for row in rows:
        sides.setdefault((row["series"], row["model"], row["seed"]), set()).add(row["side"])
    return [row for row in rows if row["model"] not in ("gru", "adarnn") or
            sides[(row["series"], row["model"], row["seed"])] == {"reference", "kerastl"}]


def row_key(row: dict) -> tuple:
    return row["series"], row["side"], row["model"], row["seed"]


def merged_rows(on_disk: list[dict], ours: list[dict]) -> list[dict]:
    """`ours` (this invocation's rows) with the rows of `on_disk` it has no row for (another
    invocation's, run side by side with `--merge`), in a fixed order: series as in SERIES, then
    model, side (reference first) and seed, so the summary's order does not depend on which
    invocation finished first."""
    mine = {row_key(row) for row in ours}
    rows = [row for row in on_disk if row_key(row) not in mine] + list(ours)
    models = ("gru", "adarnn")
    return sorted(rows, key=lambda row: (list(SERIES).index(row["series"]),
                                         models.index(row["model"]) if row["model"] in models else len(models),
                                         row["side"] != "reference", row["seed"]))


def summarise(rows) -> list[dict]:
    groups = {}
    for row in rows:
        groups.setdefault((row["series"], row["side"], row["model"]), []).append(row)
    return [{"series": s, "side": side, "model": m, "seeds": [r["seed"] for r in g],
             **{f"{key}_mean": float(np.mean([r[key] for r in g])) for key in ("rmse", "mae", "seconds_per_epoch")},
             **{f"{key}_std": float(np.std([r[key] for r in g], ddof=1)) if len(g) > 1 else 0.0
                for key in ("rmse", "mae")}}
            for (s, side, m), g in groups.items()]


def markdown(content) -> str:
    lines = ["# AdaRNN parity (transferlearning `code/deep/adarnn`)", "",
             f"Reference: {content['reference'].get('repository')} at {content['reference'].get('commit')}.", ""]
    if content.get("step"):
        lines += ["## Step parity (copied weights, the same batches, float32)", "",
                  common.markdown_table(["quantity", "worst relative error", "at step", "tolerance met"],
                                        [[q, f"{s['worst']:.2e}", s["worst_step"], s["ok"]]
                                         for q, s in content["step"].items()]), ""]
    if content.get("end_to_end"):
        lines += ["## End to end (test period, original scale; mean ± std over seeds)", "",
                  content.get("end_to_end_setup", ""), "",
                  common.markdown_table(["series", "side", "model", "seeds", "RMSE", "MAE", "s / epoch"],
                                        [[r["series"], r["side"], r["model"], len(r["seeds"]),
                                          f"{r['rmse_mean']:.3f} ± {r['rmse_std']:.3f}",
                                          f"{r['mae_mean']:.3f} ± {r['mae_std']:.3f}",
                                          f"{r['seconds_per_epoch_mean']:.2f}"]
                                         for r in content["end_to_end"]["summary"]]), ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help="checkout of jindongwang/transferlearning "
                                                          "(default: $KERASTL_REF_TRANSFERLEARNING)")
    parser.add_argument("--only", choices=("step", "end-to-end"), default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--series", nargs="+", choices=tuple(SERIES), default=list(SERIES))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--pre-epoch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps-per-epoch", type=int, default=0,
                        help="batches per epoch on both sides (default 0: as many as the smallest segment fills)")
    parser.add_argument("--no-auto", action="store_true", help="skip kerastl's cpu-preset --lambda auto rows")
    parser.add_argument("--adam", choices=ADAM_CHOICES, default="torch",
                        help="kerastl's optimizer: torch (default: PyTorch's Adam update, eps 1e-8, as the "
                             "reference) or keras (Keras' Adam, eps 1e-7, as apps.adarnn)")
    parser.add_argument("--merge", action="store_true",
                        help="end to end: keep the current rows other invocations write to the results file, so "
                             "lanes run side by side (e.g. one per core, each with its own --series / --seeds) "
                             "fill one table; the file is read and written under a lock")
    common.provenance.add_reuse_option(parser)
    args = parser.parse_args()
    root = common.reference_dir(NAME, args.reference)
    record = common.start_record(__file__)
    content = {"reference": common.reference_info(root, REPOSITORY)}
    # A partial run (--only) keeps the other part of the results file it finds.
    previous = os.path.join(common.RESULTS, "parity_adarnn.json")
    if args.only and os.path.exists(previous):
        with open(previous) as f:
            earlier = json.load(f)
        keep = ("end_to_end", "end_to_end_setup", "end_to_end_command", "end_to_end_made_by") \
            if args.only == "step" else \
            ("step", "step_rows", "step_command")
        content.update({key: earlier[key] for key in keep if key in earlier})
    command = " ".join(["python", "-m", "benchmarks.parity.adarnn", *sys.argv[1:]])

    def write():
        return common.write_results("adarnn", content, markdown(content), record)

    if args.only in (None, "step"):
        comparison = step_parity(root, adam=args.adam)
        content["step"] = comparison.summary()
        content["step_rows"] = comparison.rows
        content["step_command"] = command
        write()
    if args.only in (None, "end-to-end"):
        content["end_to_end_command"] = command
        content["end_to_end_made_by"] = common.provenance.made_by(record)
        content["end_to_end_setup"] = (
            f"Both sides: kerastl's windows (len_seq 24), split, min-max scaling, TDC with K = 2 and batches "
            f"(36 per segment); {args.epochs} epochs, pre-training {args.pre_epoch}, lr {args.lr}, GRU 2 x 64, "
            f"bottleneck head 64 (dropout 0.5); {args.steps_per_epoch or 'all'} steps per epoch; the best validation "
            f"epoch evaluated; kerastl's Adam: {ADAM_SETTINGS[args.adam]}.")
        with tempfile.TemporaryDirectory() as workdir:
            def on_row(rows):
                with common.provenance.locked(previous) if args.merge else contextlib.nullcontext():
                    if args.merge:  # with the rows the other lanes wrote; they write in turn
                        rows = merged_rows(current_rows(previous, content, record), rows)
                    content["end_to_end"] = {"rows": rows, "summary": summarise(rows)}
                    return write()

            kept = resumable_rows(previous, content, record, args) if args.reuse else []
            ours = end_to_end(root, args.seeds, args.series, args.epochs, args.pre_epoch, args.lr, workdir, on_row,
                              args.steps_per_epoch, not args.no_auto, args.adam, kept)
            # The last write merges too: another lane may have written since this one's last row.
            paths = on_row(ours)
    else:
        paths = write()
    print(open(paths[1]).read())


if __name__ == "__main__":
    main()
