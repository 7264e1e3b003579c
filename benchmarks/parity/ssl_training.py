"""kerastl's FlexMatch against USB's (`semilearn` 0.3.2): speed of the training step and training end to end.

Both parts run both sides in ONE process on the same network (kerastl's, with its weights
copied into the PyTorch twin of benchmarks/parity/ssl.py) and the same arrays, with the same
number of threads for TensorFlow and PyTorch (`--threads`, recorded).

1. Speed (`--parts speed`): kerastl's whole FlexMatch train step as `apps.flexmatch` runs it
   (one compiled `SemiSupervisedModel.train_step`: forward, CPL, losses, SGD, EMA with
   warm-up) against USB's (its algorithm's `train_step`, then its `ParamUpdateHook`: backward,
   SGD, cosine schedule, and its `EMAHook`), on one pre-augmented batch of kerastl's mnist5k
   stream: the small CNN at the cpu preset's 32 + 224 + 224 (28x28x1, width 16) and WRN-28-2
   at 64 + 448 + 448 (the digits padded to 32x32, 3 equal channels). kerastl also runs in
   `mixed_bfloat16` (`--mixed-precision bf16`). After warm-up steps the sides alternate in
   rounds (kerastl float32, USB, kerastl bf16, each `--steps-per-round` steps), so machine
   load hits all alike; images/s come from the median step time of each side. Each side's
   share of the CPU's peak FLOP/s is 3 x (the network's forward FLOPs per image, counted
   analytically over conv and dense layers) x images/s / peak; `peak_flops` states the peak
   assumed and how it was derived.
2. End to end (`--parts e2e`): FlexMatch on mnist5k with the cpu preset's settings
   (`apps.flexmatch --preset cpu`: 1,000 iterations, B 32, uratio 7, SGD 0.03 Nesterov,
   weight decay 5e-4, EMA 0.999, small CNN width 16, BN momentum 0.9, evaluation every 100
   iterations), one label split per seed (kerastl's, `ImageSource.load`), both sides trained
   in lockstep from the same initial weights on the SAME augmented batches (kerastl's stream
   makes the weak and strong views; USB trains on those arrays): what differs is the
   algorithm, the network's framework and the optimizer. Evaluated at every evaluation point:
   kerastl's EMA network as the app (EMA warm-up on, its `ema_warmup` default for short
   presets), kerastl with the reference's EMA (a second average of the same run's weights,
   decay 0.999 from step 1, `ema_warmup=False`), kerastl's online network; USB's EMA model
   (fixed 0.999, what USB evaluates) and USB's online model. Test error final and best per
   seed, mean and sample std over the seeds (benchmarks/stats.py), and the training images/s
   of each side (step time only, evaluation excluded).

Results: benchmarks/results/parity_ssl_training.{json,md}. Each invocation merges into the
existing file the parts and seeds it does not make, when they were made by today's code
(benchmarks/provenance.py); the file is written after the speed part and after every seed.

Usage (parity tox environment; nice it, it is long):
  python benchmarks/parity/ssl_training.py --parts speed
  python benchmarks/parity/ssl_training.py --parts e2e --seeds 0 1 2 --num-labels 40
  python benchmarks/parity/ssl_training.py --parts speed --networks small_cnn --rounds 2 --no-write
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# As benchmarks/parity/ssl.py: this folder first on sys.path would let ssl.py shadow the
# standard library's `ssl`.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == HERE:
    sys.path[0] = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import stats  # noqa: E402  (benchmarks/stats.py)
from parity import common  # noqa: E402
from parity import ssl as ssl_parity  # noqa: E402

FAMILY = "ssl_training"
NUM_CLASSES = 10
# apps.flexmatch's cpu preset (PRESETS["cpu"]; uratio None = FlexMatch's 7).
CPU_PRESET = {"iterations": 1000, "eval_every": 100, "batch_size": 32, "uratio": 7, "lr": 0.03,
              "weight_decay": 5e-4, "ema_decay": 0.999, "bn_momentum": 0.9, "net": "small_cnn", "width": 16,
              "tau": 0.95}
# network -> (labeled batch, uratio, image shape): the cpu preset's batch, TorchSSL's for WRN-28-2
SPEED_SETUPS = {"small_cnn": (32, 7, (28, 28, 1)), "wrn_28_2": (64, 7, (32, 32, 3))}
# Peak FLOP/s per core and cycle this CPU's instructions allow (see `peak_flops`).
# float32 FLOP per cycle: lanes x 2 (a fused multiply-add) x 2 FMA units
FP32_FLOPS_PER_CYCLE = {"avx512": 16 * 2 * 2, "avx2": 8 * 2 * 2}
AMX_BF16_FLOPS_PER_CYCLE = 1024  # AMX TMUL: 16x32 bf16 by 32x16 per 16 cycles = 512 multiply-adds per cycle
AVX512_BF16_FLOPS_PER_CYCLE = 128  # VDPBF16PS: 16 lanes x 2 bf16 pairs x 2 (multiply-add) x 2 FMA units


# ---------------------------------------------------------------- machine


def set_threads(threads: int) -> dict:
    """The same number of compute threads for both frameworks: TensorFlow's intra-op pool and
    PyTorch's (`torch.set_num_threads`); one inter-op thread each, so neither runs
    independent ops side by side beyond `threads`. Call before either framework computes."""
    import tensorflow as tf
    import torch

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (a second call in one process, e.g. the tests)
        pass
    return {"tensorflow_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "tensorflow_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
            "torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
            "cores": os.cpu_count()}


def cpu_description() -> dict:
    """Model, flags relevant to the peak, and the TSC frequency (MHz, from BogoMIPS / 2 when
    the kernel gives no `cpu MHz`)."""
    info = {"model": None, "cpu_mhz": None, "bogomips": None, "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = value
                elif key == "cpu MHz" and info["cpu_mhz"] is None:
                    info["cpu_mhz"] = float(value)
                elif key == "bogomips" and info["bogomips"] is None:
                    info["bogomips"] = float(value)
                elif key == "flags" and not info["flags"]:
                    info["flags"] = sorted(flag for flag in value.split()
                                           if flag.startswith(("avx512f", "avx512_bf16", "amx", "fma", "avx2")))
    except OSError:
        pass
    return info


def peak_flops(threads: int) -> dict:
    """The peak FLOP/s assumed for `threads` cores, and how it was derived."""
    cpu = cpu_description()
    mhz = cpu["cpu_mhz"] or (cpu["bogomips"] / 2 if cpu["bogomips"] else None)
    if mhz is None:
        return {"cpu": cpu, "float32": None, "bf16": None, "derivation": "no clock frequency in /proc/cpuinfo"}
    hz = mhz * 1e6
    vector = "avx512" if "avx512f" in cpu["flags"] else "avx2"
    fp32_per_cycle = FP32_FLOPS_PER_CYCLE[vector]
    if "amx_bf16" in cpu["flags"]:
        bf16_per_cycle, bf16_how = AMX_BF16_FLOPS_PER_CYCLE, "AMX (TMUL: 512 bf16 multiply-adds per cycle)"
    elif "avx512_bf16" in cpu["flags"]:
        bf16_per_cycle, bf16_how = AVX512_BF16_FLOPS_PER_CYCLE, "AVX512-BF16 (VDPBF16PS: 2 bf16 pairs per float32 lane)"
    else:
        bf16_per_cycle, bf16_how = None, None
    lanes = {"avx512": "AVX-512: 16 lanes", "avx2": "AVX2: 8 lanes"}[vector]
    return {"cpu": cpu, "clock_ghz": hz / 1e9, "cores": threads, "float32": threads * hz * fp32_per_cycle,
            "bf16": threads * hz * bf16_per_cycle if bf16_per_cycle else None,
            "derivation": (
                f"{threads} cores x {hz / 1e9:.2f} GHz (the kernel's clock: 'cpu MHz', or BogoMIPS / 2, the TSC "
                f"rate) x {fp32_per_cycle} float32 FLOP per cycle ({lanes} x 2 for a fused multiply-add x 2 FMA "
                "units per core)"
                + (f"; bf16: x {bf16_per_cycle} FLOP per cycle with {bf16_how}" if bf16_per_cycle else
                   "; bf16: no native instructions (emulated), no peak")
                + ". Uncertain: the hypervisor hides the exact model, so the number of FMA units (1 or 2) and the "
                  "clock under AVX-512 / AMX load (turbo above, licence-based down-clocking below the TSC rate) "
                  "are assumptions; the cores are virtual and may share physical cores with other guests. Read the "
                  "shares as +- a factor of 2.")}


def forward_flops(network) -> int:
    """FLOPs of one image's forward pass over the network's conv and dense layers (a
    multiply-add counts 2); BN, activations, pooling and the input normalisation are left out
    (under 2 % for these networks)."""
    import keras

    total = 0
    for layer in network.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, height, width, out_channels = layer.output.shape
            kernel_h, kernel_w, in_channels, _ = layer.kernel.shape
            total += 2 * height * width * kernel_h * kernel_w * in_channels * out_channels // layer.groups
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * int(np.prod(layer.kernel.shape))
    return int(total)


# ---------------------------------------------------------------- the two sides


def kerastl_flexmatch(network, num_unlabeled: int, iterations: int, seed: int = 0, input_scale: float = 1.0,
                      p_target=None, settings=None):
    """`SemiSupervisedModel` on `network` with FlexMatch, built and compiled as `apps.flexmatch`
    does for a non-paper preset (EMA warm-up on), its train function made."""
    from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer

    settings = settings or CPU_PRESET
    algorithm = build_algorithm("flexmatch", num_unlabeled, NUM_CLASSES, iterations, warmup=True, seed=seed,
                                input_scale=input_scale, p_target=p_target)
    model = SemiSupervisedModel(network, algorithm, ema_decay=settings["ema_decay"], ema_warmup=True)
    model.compile(optimizer=torchssl_optimizer(settings["lr"], iterations, settings["weight_decay"]))
    model.build((None, *network.input_shape[1:]))
    model.make_train_function()
    return model


def kerastl_network(name: str, shape, mean, std, seed: int = 0, policy: str = "float32", settings=None):
    """kerastl's network as `apps.flexmatch` builds it (input normalisation first), under the
    Keras dtype policy `policy`."""
    import keras

    from apps.flexmatch import with_input_normalization
    from kerastl.nets import build_network

    settings = settings or CPU_PRESET
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        return with_input_normalization(
            build_network(name, shape, NUM_CLASSES, settings["bn_momentum"], settings["width"]), mean, std)
    finally:
        keras.mixed_precision.set_global_policy(previous)


def torch_twin(network, name: str, mean, std):
    """`(make_net, names)` for USB: a PyTorch module computing what `network` computes (the
    small CNN twin or USB's WRN-28-2, benchmarks/parity/ssl.py) behind the same input
    normalisation, and the Keras layer name -> module path map for copying the weights."""
    import torch
    from torch import nn

    class InputNormalized(nn.Module):
        """`net((x - mean) / std)` per channel, USB's `{"logits", "feat"}` interface kept."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

        def forward(self, x, **kwargs):
            return self.net((x - self.mean) / self.std, **kwargs)

    if name == "small_cnn":
        names = {layer.name: f"net.{layer.name}" for layer in network.layers if layer.weights}
        return (lambda: InputNormalized(ssl_parity.small_cnn_twin(network))), names
    names = {layer: f"net.{path}" for layer, path in ssl_parity.wrn_names(network).items()}
    return (lambda: InputNormalized(ssl_parity.usb_wrn(network, NUM_CLASSES))), names


class UsbFlexMatch(ssl_parity.UsbSide):
    """USB's FlexMatch on the twin of a kerastl network (weights copied, the EMA shadow from
    them), driven one step at a time without the step-parity harness's recording, so that
    its time is USB's own: `train_step`, then the `ParamUpdateHook` and `EMAHook` its trainer
    calls after every step."""

    def __init__(self, network, name: str, mean, std, num_unlabeled: int, iterations: int, labeled_batch: int,
                 uratio: int, seed: int = 0, settings=None):
        settings = settings or CPU_PRESET
        setting = ssl_parity.Setting(algorithm="flexmatch", network=name, steps=iterations, batch_size=labeled_batch,
                                     uratio=uratio, lr=settings["lr"], weight_decay=settings["weight_decay"],
                                     ema_decay=settings["ema_decay"], tau=settings["tau"],
                                     num_unlabeled=num_unlabeled, seed=seed)
        make_net, names = torch_twin(network, name, mean, std)
        super().__init__(setting, network, make_net, names)
        self.alg.model._forward_hooks.clear()  # the harness's logits recorder
        self.alg.model.train()

    def _wrap_hooks(self):
        pass  # no recording of masks and pseudo-labels

    def step(self, tensors: dict) -> dict:
        """One training step on `tensors` (`usb_tensors`); returns USB's log dict."""
        self.alg.out_dict, self.alg.log_dict = self.alg.train_step(**tensors)
        self.alg.call_hook("after_train_step", "ParamUpdateHook")
        self.alg.call_hook("after_train_step", "EMAHook")
        self.alg.it += 1
        return self.alg.log_dict


def numpy_batch(batch) -> dict:
    """kerastl's stream batch `((x_lb, y_lb), (idx, weak, strong))` as numpy arrays."""
    (x_lb, y_lb), (index, weak, strong) = batch
    return {"x_lb": np.asarray(x_lb), "y_lb": np.asarray(y_lb, np.int64), "idx_ulb": np.asarray(index, np.int64),
            "x_ulb_w": np.asarray(weak), "x_ulb_s": np.asarray(strong)}


def usb_tensors(arrays: dict) -> dict:
    """The batch as USB's loader gives it: NCHW float32 images, int64 labels and indices."""
    import torch

    return {key: torch.from_numpy(value.transpose(0, 3, 1, 2).copy() if value.ndim == 4 else value.copy())
            for key, value in arrays.items()}


def kerastl_step(model, batch) -> float:
    """One compiled train step; returns the step's loss (reading it waits for the step)."""
    logs = model.train_function(iter([batch]))
    return float(logs["loss"])


# ---------------------------------------------------------------- 1. speed


def speed_batch(name: str, seed: int = 0):
    """One batch of kerastl's mnist5k stream for `name`'s setup (`SPEED_SETUPS`), as tensors
    for kerastl and arrays; WRN-28-2's images padded to 32x32 with 3 equal channels."""
    import tensorflow as tf

    from kerastl.data import ImageSource

    labeled_batch, uratio, shape = SPEED_SETUPS[name]
    source = ImageSource.load("mnist5k", 40, seed)
    arrays = numpy_batch(next(iter(source.stream(("weak", "strong"), labeled_batch, uratio))))
    if shape[-1] == 3:
        for key in ("x_lb", "x_ulb_w", "x_ulb_s"):
            arrays[key] = np.repeat(np.pad(arrays[key], ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    tensors = ((tf.constant(arrays["x_lb"]), tf.constant(arrays["y_lb"])),
               (tf.constant(arrays["idx_ulb"]), tf.constant(arrays["x_ulb_w"]), tf.constant(arrays["x_ulb_s"])))
    channels = shape[-1]
    mean, std = (source.mean * channels, source.std * channels) if len(source.mean) == 1 else (source.mean, source.std)
    return tensors, arrays, source.num_unlabeled, mean, std


def measure_speed(name: str, rounds: int = 5, steps_per_round: int = 4, warmup: int = 3, bf16: bool = True,
                  threads: int | None = None) -> dict:
    """Images/s of kerastl's FlexMatch step (float32, and mixed_bfloat16 when `bf16`) and of
    USB's on network `name`, interleaved in `rounds`; the first step's losses of both sides
    (same weights, same batch) and each side's share of the peak FLOP/s."""
    labeled_batch, uratio, shape = SPEED_SETUPS[name]
    batch, arrays, num_unlabeled, mean, std = speed_batch(name)
    images = labeled_batch * (1 + 2 * uratio)
    networks = {"kerastl_float32": kerastl_network(name, shape, mean, std)}
    if bf16:
        networks["kerastl_bf16"] = kerastl_network(name, shape, mean, std, policy="mixed_bfloat16")
        networks["kerastl_bf16"].set_weights(networks["kerastl_float32"].get_weights())
    usb = UsbFlexMatch(networks["kerastl_float32"], name, mean, std, num_unlabeled, CPU_PRESET["iterations"],
                       labeled_batch, uratio)  # copies the weights before any step
    models = {side: kerastl_flexmatch(net, num_unlabeled, CPU_PRESET["iterations"]) for side, net in networks.items()}
    tensors = usb_tensors(arrays)
    steps = {side: (lambda model=model: kerastl_step(model, batch)) for side, model in models.items()}
    steps["usb"] = lambda: float(usb.step(tensors)["train/total_loss"])
    first_loss = {side: step() for side, step in steps.items()}
    for _ in range(warmup - 1):
        for step in steps.values():
            step()
    seconds = {side: [] for side in steps}
    for _ in range(rounds):  # interleaved: machine load hits every side alike
        for side, step in steps.items():
            for _ in range(steps_per_round):
                start = time.perf_counter()
                step()
                seconds[side].append(time.perf_counter() - start)
    flops = forward_flops(networks["kerastl_float32"])
    peak = peak_flops(threads or os.cpu_count())
    out = {"batch": f"{labeled_batch} labeled + {labeled_batch * uratio} weak + {labeled_batch * uratio} strong, "
                    + "x".join(map(str, shape)),
           "images_per_step": images, "forward_flops_per_image": flops,
           "timed_steps_per_side": rounds * steps_per_round,
           "peak_flops_assumed": {key: peak[key] for key in ("cores", "float32", "bf16") if key in peak},
           "first_step_loss": first_loss,
           "first_step_loss_relative_difference": abs(first_loss["kerastl_float32"] - first_loss["usb"])
           / abs(first_loss["usb"])}
    for side, times in seconds.items():
        median = float(np.median(times))
        rate = images / median
        peak_used = peak["bf16"] if side == "kerastl_bf16" else peak["float32"]
        out[side] = {"median_step_s": median, "images_per_s": rate, "step_s": times,
                     "peak_flops_share": None if not peak_used else 3 * flops * rate / peak_used}
        if side == "kerastl_bf16" and peak["float32"]:
            out[side]["float32_peak_share"] = 3 * flops * rate / peak["float32"]
    out["ratio_kerastl_over_usb"] = out["kerastl_float32"]["images_per_s"] / out["usb"]["images_per_s"]
    if bf16:
        out["ratio_kerastl_bf16_over_usb"] = out["kerastl_bf16"]["images_per_s"] / out["usb"]["images_per_s"]
        out["ratio_bf16_over_float32"] = out["kerastl_bf16"]["images_per_s"] / out["kerastl_float32"]["images_per_s"]
    return out


# ---------------------------------------------------------------- 2. end to end


class ReferenceEma:
    """A second EMA of the kerastl network's weights as USB keeps it: fixed decay from step 1
    (no warm-up), BN moving statistics copied; evaluated in a clone of the network."""

    def __init__(self, network, decay: float):
        import keras

        self.network = network
        self.decay = decay
        self.trainable = [v.trainable for v in network.weights]
        self.values = [v.numpy() for v in network.weights]
        self.clone = keras.models.clone_model(network)

    def update(self):
        for i, variable in enumerate(self.network.weights):
            value = variable.numpy()
            self.values[i] = self.decay * self.values[i] + (1 - self.decay) * value if self.trainable[i] else value

    def evaluated(self):
        self.clone.set_weights(self.values)
        return self.clone


def keras_error(network, x, y, batch_size: int = 256) -> float:
    """Test error (%) of a Keras network in inference mode."""
    predictions = [np.argmax(np.asarray(network(x[i:i + batch_size], training=False)), axis=-1)
                   for i in range(0, len(x), batch_size)]
    return float(100.0 * np.mean(np.concatenate(predictions) != y))


def torch_error(module, x, y, batch_size: int = 256) -> float:
    """Test error (%) of a USB model in eval mode (left in train mode afterwards)."""
    import torch

    module.eval()
    with torch.no_grad():
        predictions = [module(torch.from_numpy(x[i:i + batch_size].transpose(0, 3, 1, 2).copy()))["logits"]
                       .argmax(dim=-1).numpy() for i in range(0, len(x), batch_size)]
    module.train()
    return float(100.0 * np.mean(np.concatenate(predictions) != y))


EVALUATED = {"kerastl_ema": "kerastl, EMA with warm-up (the app's default)",
             "kerastl_ema_reference": "kerastl, EMA without warm-up (ema_warmup=False, as USB)",
             "kerastl_online": "kerastl, online network", "usb_ema": "USB, EMA model (what USB evaluates)",
             "usb_online": "USB, online model"}


def train_seed(seed: int, num_labels: int = 40, settings=None, log=print, progress=None) -> dict:
    """Both sides trained on mnist5k from the same weights on the same batches; test errors
    at every evaluation point, final / best per evaluated model, images/s per side.
    `progress(partial)` is called after every evaluation but the last with what is known so
    far (`complete` False)."""
    import keras

    from apps.flexmatch import evaluation_points
    from kerastl.data import ImageSource

    settings = settings or CPU_PRESET
    iterations = settings["iterations"]
    source = ImageSource.load("mnist5k", num_labels, seed)
    x_test, y_test = (np.concatenate(part) for part in zip(*[(np.asarray(x), np.asarray(y))
                                                               for x, y in source.test()]))
    network = kerastl_network(settings["net"], source.image_shape, source.mean, source.std, seed=seed,
                              settings=settings)
    counts = np.maximum(np.bincount(source.labeled_labels, minlength=NUM_CLASSES), 1)
    # The network's initial weights before the kerastl model touches them: USB's copy.
    usb = UsbFlexMatch(network, settings["net"], source.mean, source.std, source.num_unlabeled, iterations,
                       settings["batch_size"], settings["uratio"], seed=seed, settings=settings)
    model = kerastl_flexmatch(network, source.num_unlabeled, iterations, seed=seed, input_scale=source.input_scale,
                              p_target=counts / counts.sum(), settings=settings)
    reference_ema = ReferenceEma(network, settings["ema_decay"])
    points = set(evaluation_points(iterations, settings["eval_every"]))
    stream = iter(source.stream(model.algorithm.views, settings["batch_size"], settings["uratio"]))
    images = settings["batch_size"] * (1 + 2 * settings["uratio"])
    seconds = {"kerastl": 0.0, "usb": 0.0}
    history = {"iteration": [], **{name: [] for name in EVALUATED}}

    def rate(side):  # images/s of the steps timed so far
        return images * (step - 1) / seconds[side] if seconds[side] else 0.0
    first_loss = None
    for step in range(1, iterations + 1):
        batch = next(stream)
        tensors = usb_tensors(numpy_batch(batch))
        start = time.perf_counter()
        ours = kerastl_step(model, batch)
        middle = time.perf_counter()
        ref = float(usb.step(tensors)["train/total_loss"])
        if step > 1:  # the first step traces kerastl's tf.function: timed from the second on
            seconds["kerastl"] += middle - start
            seconds["usb"] += time.perf_counter() - middle
        first_loss = first_loss or {"kerastl": ours, "usb": ref}
        reference_ema.update()
        if step in points:
            errors = {"kerastl_ema": keras_error(model.ema_network, x_test, y_test),
                      "kerastl_ema_reference": keras_error(reference_ema.evaluated(), x_test, y_test),
                      "kerastl_online": keras_error(model.network, x_test, y_test),
                      "usb_ema": torch_error(usb.alg.ema_model, x_test, y_test),
                      "usb_online": torch_error(usb.alg.model, x_test, y_test)}
            history["iteration"].append(step)
            for name, error in errors.items():
                history[name].append(error)
            log(f"seed {seed} iteration {step}: " + ", ".join(f"{k} {v:.2f} %" for k, v in errors.items())
                + f"; kerastl {rate('kerastl'):.0f} images/s, USB {rate('usb'):.0f} images/s")
            run = {"seed": seed, "num_labels": num_labels, "num_unlabeled": source.num_unlabeled,
                   "test_images": len(y_test), "labeled_index": source.labeled_index.tolist(),
                   "first_step_loss": first_loss, "complete": step == iterations, "iterations_done": step,
                   "final": {name: history[name][-1] for name in EVALUATED},
                   "best": {name: min(history[name]) for name in EVALUATED},
                   "images_per_s": {side: rate(side) for side in seconds},
                   "step_seconds": dict(seconds), "history": {k: list(v) for k, v in history.items()}}
            if progress is not None and step < iterations:
                progress(run)
    keras.backend.clear_session()
    return run


def summarise(seeds: dict) -> dict:
    """Mean and sample std over the seeds of each evaluated model's final and best error, of
    the images/s of each side, and kerastl's (app default) final error against USB's EMA."""
    runs = [seeds[key] for key in sorted(seeds, key=int) if seeds[key].get("complete")]
    if not runs:
        return None
    out = {name: {kind: stats.spread([run[kind][name] for run in runs]) for kind in ("final", "best")}
           for name in EVALUATED}
    out["images_per_s"] = {side: stats.spread([run["images_per_s"][side] for run in runs])
                           for side in ("kerastl", "usb")}
    out["images_per_s_ratio"] = stats.spread([run["images_per_s"]["kerastl"] / run["images_per_s"]["usb"]
                                              for run in runs])
    out["seeds"] = [run["seed"] for run in runs]
    for ours, theirs in (("kerastl_ema", "usb_ema"), ("kerastl_ema_reference", "usb_ema"),
                         ("kerastl_online", "usb_online")):
        out[f"compare_final_{ours}_vs_{theirs}"] = stats.compare(
            EVALUATED[ours], [run["final"][ours] for run in runs], EVALUATED[theirs],
            [run["final"][theirs] for run in runs], higher_is_better=False)["statement"]
    return out


# ---------------------------------------------------------------- report


def markdown(results: dict) -> str:
    lines = [f"# FlexMatch end to end and speed: kerastl vs USB (semilearn {results['reference']['version']})", "",
             f"CPU: {results['peak_flops']['cpu']['model']}. Peak assumed: "
             f"{results['peak_flops']['derivation']}", ""]
    speed = results.get("speed")
    if speed:
        lines += ["## Speed of the whole FlexMatch step", "",
                  f"Command: `{speed['made_by']['command']}`; threads {speed['made_by'].get('threads')}. "
                  "Interleaved rounds, median step time per side; "
                  "kerastl's step includes CPL and the EMA (warm-up on, as apps.flexmatch), USB's is its "
                  "`train_step` + `ParamUpdateHook` + `EMAHook`. FLOP share: 3 x forward FLOPs x images/s / peak "
                  "(float32 peak for float32, the bf16 peak (AMX or AVX512-BF16) for bf16).", ""]
        rows = []
        for name in SPEED_SETUPS:
            entry = speed.get(name)
            if not entry:
                continue
            for side in ("kerastl_float32", "kerastl_bf16", "usb"):
                if side not in entry:
                    continue
                share = entry[side]["peak_flops_share"]
                ratio = {"kerastl_float32": entry["ratio_kerastl_over_usb"],
                         "kerastl_bf16": entry.get("ratio_kerastl_bf16_over_usb"), "usb": 1.0}[side]
                rows.append([name, entry["batch"], side, f"{entry[side]['median_step_s'] * 1000:.0f}",
                             f"{entry[side]['images_per_s']:.0f}", f"{ratio:.2f}x",
                             "—" if share is None else f"{100 * share:.2f} %"])
        lines += [common.markdown_table(["network", "batch", "side", "median step ms", "images/s", "vs USB",
                                         "share of peak FLOP/s"], rows), ""]
        rows = [[name, f"{speed[name]['forward_flops_per_image'] / 1e6:.2f} MFLOP",
                 *(f"{speed[name]['first_step_loss'][side]:.6f}" for side in ("kerastl_float32", "usb")),
                 f"{speed[name]['first_step_loss_relative_difference']:.1e}"] for name in SPEED_SETUPS if name in speed]
        lines += ["Same weights, same batch: the first step's total loss of each side.", "",
                  common.markdown_table(["network", "forward FLOPs / image", "kerastl loss", "USB loss",
                                         "relative difference"], rows), ""]
    for key, entry in results.get("end_to_end", {}).items():
        lines += [f"## End to end: FlexMatch on mnist5k, {entry['num_labels']} labels", "",
                  "Both sides from the same initial weights, trained in lockstep on the SAME augmented batches "
                  "(kerastl's stream makes the weak and strong views; USB trains on those arrays), so what is compared "
                  "is the algorithm, the network's framework and the optimizer, not the augmentation. Settings: "
                  + ", ".join(f"{k} {v}" for k, v in entry["settings"].items()) + ". Test error in %, "
                  f"{entry['test_images']} test images; best is over {entry['evaluations']} evaluations.", "",
                  "Commands: " + "; ".join(sorted({f"`{run['made_by']['command']}` (threads "
                                                   f"{run['made_by'].get('threads')})"
                                                   for run in entry["seeds"].values()})),
                  ""]
        summary = entry.get("summary")
        if summary:
            rows = [[label, stats.plus_minus(summary[name]["final"]["values"]),
                     stats.plus_minus(summary[name]["best"]["values"])] for name, label in EVALUATED.items()]
            lines += [f"Complete seeds: {', '.join(map(str, summary['seeds']))} (mean ± sample std over them).", "",
                      common.markdown_table(["evaluated model", "final error", "best error"], rows), "",
                      "Training images/s (step time from the second step on, evaluation excluded): kerastl "
                      f"{stats.plus_minus(summary['images_per_s']['kerastl']['values'], digits=0)}, USB "
                      f"{stats.plus_minus(summary['images_per_s']['usb']['values'], digits=0)}; kerastl / USB "
                      f"{stats.plus_minus(summary['images_per_s_ratio']['values'])}.", ""]
            lines += [f"- {summary[key]}" for key in summary if key.startswith("compare_")] + [""]
        rows = []
        for seed in sorted(entry["seeds"], key=int):
            run = entry["seeds"][seed]
            rows.append([seed, run["iterations_done"], *(f"{run['final'][name]:.2f} ({run['best'][name]:.2f})"
                                                         for name in EVALUATED),
                         f"{run['images_per_s']['kerastl']:.0f}", f"{run['images_per_s']['usb']:.0f}"])
        lines += ["Per seed: error at the last evaluation made (best so far in brackets).", "",
                  common.markdown_table(["seed", "iterations", *EVALUATED, "kerastl images/s", "USB images/s"], rows),
                  ""]
    if results.get("missing"):
        lines += ["## Not measured", ""] + [f"- {item}" for item in results["missing"]] + [""]
    return "\n".join(lines)


def load_previous(dependencies: list[str]) -> dict:
    """The results file on disk, keeping only the parts and seeds made by today's code."""
    path = os.path.join(common.RESULTS, f"parity_{FAMILY}.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        previous = json.load(f)

    def current(entry) -> bool:
        made_by = entry.get("made_by") or {}
        return bool(made_by.get("commit")) and not made_by.get("dirty") and \
            not common.provenance.changed_since(made_by["commit"], dependencies)

    kept = {}
    if previous.get("speed") and current(previous["speed"]):
        kept["speed"] = previous["speed"]
    for key, entry in previous.get("end_to_end", {}).items():
        seeds = {seed: run for seed, run in entry.get("seeds", {}).items() if current(run)}
        if seeds:
            kept.setdefault("end_to_end", {})[key] = {**entry, "seeds": seeds}
    return kept


def merged(on_disk: dict, ours: dict) -> dict:
    """The results file's parts with this invocation's (`ours`: its speed part and the seeds
    it ran) laid over them; e2e summaries recomputed over the complete seeds."""
    out = {key: value for key, value in on_disk.items() if key in ("speed", "end_to_end")}
    if "speed" in ours:  # networks timed by another invocation of today's code stay
        out["speed"] = {**out.get("speed", {}), **ours["speed"]}
    for key, entry in ours.get("end_to_end", {}).items():
        theirs = out.setdefault("end_to_end", {}).get(key)
        seeds = dict(theirs["seeds"]) if theirs and theirs.get("settings") == entry["settings"] else {}
        seeds.update(entry["seeds"])
        out["end_to_end"][key] = {**entry, "seeds": seeds}
    for entry in out.get("end_to_end", {}).values():
        entry["summary"] = summarise(entry["seeds"])
    return out


def missing_parts(results: dict) -> list[str]:
    out = [] if results.get("speed") else ["speed: not run"]
    for labels in (40, 250):
        entry = results.get("end_to_end", {}).get(f"labels_{labels}")
        if entry is None:
            out.append(f"end to end, {labels} labels: not run")
            continue
        done = {int(seed) for seed, run in entry["seeds"].items() if run.get("complete")}
        partial = {int(seed): run["iterations_done"] for seed, run in entry["seeds"].items() if not run.get("complete")}
        out += [f"end to end, {labels} labels, seed {seed}: stopped at iteration {at} of "
                f"{entry['settings']['iterations']} (not in the summary)" for seed, at in sorted(partial.items())]
        out += [f"end to end, {labels} labels, seed {seed}: not run" for seed in range(3)
                if seed not in done and seed not in partial]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", choices=("speed", "e2e"), default=["speed", "e2e"])
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="compute threads for each framework (default: the cores)")
    parser.add_argument("--networks", nargs="+", choices=tuple(SPEED_SETUPS), default=list(SPEED_SETUPS),
                        help="speed: networks to time")
    parser.add_argument("--rounds", type=int, default=5, help="speed: interleaved rounds")
    parser.add_argument("--steps-per-round", type=int, default=4, help="speed: timed steps per side and round")
    parser.add_argument("--warmup", type=int, default=3, help="speed: untimed steps per side first")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="e2e: seeds")
    parser.add_argument("--num-labels", type=int, default=40, help="e2e: labels")
    parser.add_argument("--iterations", type=int, default=CPU_PRESET["iterations"],
                        help="e2e: iterations (the cpu preset's 1,000 by default; fewer only for trials)")
    parser.add_argument("--eval-every", type=int, default=CPU_PRESET["eval_every"])
    parser.add_argument("--no-write", action="store_true", help="print, write no results file")
    args = parser.parse_args(argv)
    for flag in ("threads", "rounds", "steps_per_round", "warmup", "iterations", "eval_every", "num_labels"):
        if getattr(args, flag) <= 0:
            parser.exit(2, f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer\n")
    threads = set_threads(args.threads)
    from apps.flexmatch import evaluation_points

    record = common.start_record(__file__)
    made_by = {"command": record["command"], "commit": record["commit"],
               "dirty": bool(record["dirty_dependencies"]), "threads": threads}
    usb = ssl_parity.load_usb()
    header = {"reference": common.reference_info("semilearn"), "stubbed_at_load": usb["stubbed"],
              "peak_flops": peak_flops(os.cpu_count())}
    ours = {}  # the parts this invocation makes
    settings = {**CPU_PRESET, "iterations": args.iterations, "eval_every": args.eval_every}
    results = dict(header)

    def write():
        nonlocal results
        with common.provenance.locked(os.path.join(common.RESULTS, f"parity_{FAMILY}.json")):
            on_disk = {} if args.no_write else load_previous(record["dependencies"])
            results = {**header, **merged(on_disk, ours)}
            results["missing"] = missing_parts(results)
            if not args.no_write:
                paths = common.write_results(FAMILY, results, markdown(results), record)
                print("wrote", *paths, flush=True)

    if "speed" in args.parts:
        ours["speed"] = {"made_by": made_by}
        for name in args.networks:
            print(f"speed: {name}", flush=True)
            ours["speed"][name] = entry = measure_speed(name, args.rounds, args.steps_per_round, args.warmup,
                                                        threads=args.threads)
            print(f"  kerastl {entry['kerastl_float32']['images_per_s']:.0f} images/s, bf16 "
                  f"{entry['kerastl_bf16']['images_per_s']:.0f}, USB {entry['usb']['images_per_s']:.0f}: "
                  f"ratio {entry['ratio_kerastl_over_usb']:.2f}", flush=True)
        write()
    if "e2e" in args.parts:
        key = f"labels_{args.num_labels}"
        # Seeds of other settings do not pool: `merged` drops them from the file.
        entry = ours.setdefault("end_to_end", {}).setdefault(key, {
            "num_labels": args.num_labels, "settings": settings, "seeds": {},
            "evaluations": len(evaluation_points(settings["iterations"], settings["eval_every"]))})
        for seed in args.seeds:
            def progress(run, seed=seed):
                entry["seeds"][str(seed)] = {"made_by": made_by, **run}
                entry["test_images"] = run["test_images"]
                write()

            progress(train_seed(seed, args.num_labels, settings, log=lambda text: print(text, flush=True),
                                progress=progress))
    if args.no_write:
        print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
