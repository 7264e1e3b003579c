"""AMSL end-to-end parity: the reference's Keras 2 code and kerastl on the same watch windows.

The reference (github.com/zhangyuxin621/AMSL, `train.py` and `transformation.py`; a checkout
given as `--reference DIR` or `KERASTL_REF_AMSL`, never copied here) runs in the federated
environment (TensorFlow 2.14 / Keras 2.14, `.tox/federated/bin/python` with
`TF_USE_LEGACY_KERAS=1`), started by this script as a subprocess of itself (`--side
reference`). kerastl runs in the process that starts the script (the main or the parity
environment: `.tox/py311/bin/python` or `.tox/parity/bin/python`). Each seed runs the two one
after the other, so their times are measured under the same load.

Data: kerastl's watch protocol (`load_anomaly_data("watch", --split, 125, 125, seed)`: normal
recordings 60 / 40 by recording, abnormal ones to test, per-channel min-max fitted on the
training windows); 125-step windows because the reference's permutation cuts 5 chunks of 25
steps. Both sides train on the same training windows and score the same test windows.

Reference side, run-time shims (its files stay untouched; `train.py` is loaded as a module, so
its `__main__` block does not run and this script drives the same steps):
- argparse `conflict_handler="resolve"` (all its options register `-e`); `sys.argv` carries
  the options (epochs, input size, batch, data and model paths in a temporary folder);
- `tf.ConfigProto` / `tf.Session` from `tf.compat.v1`; `keras.backend.tensorflow_backend`
  (only `set_session`, a no-op) and `keras.utils.np_utils` (Keras 2.14 keeps it under
  `keras.src`) provided; `pyimagesearch` (imported, never used) stubbed; its
  `CUDA_VISIBLE_DEVICES="1"` undone;
- input shape set for the data: the literal `Input(shape=(32, 12, f))` of the view
  classifier and the global memory (DSADS' 125 x 45 after padding and two poolings) gets the
  data's latent shape, and the zero padding / cropping `((3, 0), (3, 0))` (125 x 45 -> 128 x 48)
  the padding to multiples of 4 of this data (125 x 6 -> 128 x 8);
- `mse_compute` returns one MSE per window (mean over time, channels) instead of the batch
  mean (Keras 2.2.2 behaviour its evaluation relied on): the training loss is unchanged (its
  batch mean), the score is per window;
- views: its `transformation.py` functions (noise, negation, reversal, permutation, scaling,
  Savitzky-Golay smoothing called time warp) on each window, with its per-entry min-max
  (`regular_mm`) fitted on the training windows only (`--reference-scaling train`, default) or,
  as its preprocessing does, on training and test windows together (`together`: a leak);
- training as its `__main__` block: `model.fit([views, zeros], [zeros, zeros, one-hot view
  labels x 7])`, Adam, `--epochs`, batch `--batch-size`; its `validation_split=0.2` (a fifth
  of the training windows held out for a checkpoint it never reloads) is
  `--reference-validation-split` (default 0: both sides train on the same windows).

kerastl side: `AMSLDetector` with the paper's sizes (500 slots, conv 32 / 64, batch 16, Adam
1e-3), the reference's loss weights (the default), and the reference's six views
(`--kerastl-views reference`: smoothing where the reference smooths; `default`: kerastl's real
time warp).

Metrics (both sides): the threshold is the 98th percentile of the training windows' scores;
`kerastl.anomaly.report.detection_metrics` gives AUROC, mF1 as the reference's evaluate.py
computes it (the harmonic mean of macro precision and macro recall), the mean per-class F1
and accuracy. (evaluate.py flags `score >= threshold`, kerastl `score > threshold`: equal
unless a test score equals the threshold.) Results: benchmarks/results/parity_amsl.{json,md},
written after every seed, with the reference's commit and provenance.

Usage:
  nice -n 10 .tox/py311/bin/python benchmarks/parity/amsl.py --reference /work/refs/AMSL
  KERASTL_REF_AMSL=DIR python benchmarks/parity/amsl.py --seeds 0 --epochs 2 --no-write
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
BENCHMARKS = os.path.dirname(HERE)
ROOT = os.path.dirname(BENCHMARKS)
# This folder holds ssl.py (the SSL parity harness), which would shadow the standard library's ssl.
sys.path[:] = [path for path in sys.path if os.path.abspath(path or os.curdir) != HERE]
for path in (BENCHMARKS, ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from parity import common  # noqa: E402

REPOSITORY = "github.com/zhangyuxin621/AMSL"
FEDERATED_PYTHON = os.path.join(ROOT, ".tox", "federated", "bin", "python")
WINDOW = 125          # the reference's permutation cuts 5 chunks of 25 steps
VIEWS = 7
# The reference's views in kerastl's names ("time warp" in its code is Savitzky-Golay smoothing).
REFERENCE_VIEWS = ("noise", "negation", "reversal", "permutation", "scaling", "smoothing")


def padded(size: int) -> int:
    return -(-size // 4) * 4


# ---------------------------------------------------------------- reference side (Keras 2)


def reference_views(reference: str, x_train, x_test, seed: int, scaling: str):
    """Views [N, 7, time, channels, 1] of training and test windows made by the reference's
    transformation.py, min-max scaled per entry as its `regular_mm` does (fitted on the
    training windows, or on both sets together)."""
    import random

    from sklearn.preprocessing import MinMaxScaler

    module = _load(os.path.join(reference, "transformation.py"), "amsl_reference_transformation")
    steps, channels = x_train.shape[1:]
    module.a, module.dim_DA = steps, channels           # its globals: DSADS' 125 x 45
    random.seed(seed)
    np.random.seed(seed)
    functions = (module.noised, module.negated, module.opposite_time, module.permuted, module.scale,
                 module.time_warp)

    def raw_views(x):
        return [x.astype(np.float64)] + [np.stack([f(w.astype(np.float64).copy()) for w in x]) for f in functions]

    train, test = raw_views(x_train), raw_views(x_test)
    scaled_train, scaled_test = [], []
    for view_train, view_test in zip(train, test):
        flat_train, flat_test = view_train.reshape(len(view_train), -1), view_test.reshape(len(view_test), -1)
        fitted = np.concatenate([flat_train, flat_test]) if scaling == "together" else flat_train
        scaler = MinMaxScaler().fit(fitted)
        scaled_train.append(scaler.transform(flat_train).reshape(view_train.shape))
        scaled_test.append(scaler.transform(flat_test).reshape(view_test.shape))
    return (np.stack(scaled_train, axis=1)[..., None].astype(np.float32),
            np.stack(scaled_test, axis=1)[..., None].astype(np.float32))


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module      # AutoGraph looks functions' modules up there
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _module_entries(entries: dict):
    """`sys.modules` entries while the block runs (modules a Keras 2.2 era import names)."""
    saved = {name: sys.modules.get(name) for name in entries}
    sys.modules.update(entries)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def reference_model(reference: str, steps: int, channels: int, epochs: int, batch: int, workdir: str,
                    sizes: dict | None = None):
    """The reference's `conlstm_auto()` model from its train.py, loaded with the shims of the
    module docstring; `sizes` sets its size options (`filter_size1`, `global_mem_dim`, ...).
    Returns (model, the loaded train module)."""
    import argparse as argparse_module

    import keras
    import keras.backend as K
    import tensorflow as tf
    from keras.src.utils import np_utils

    tensorflow_backend = types.ModuleType("keras.backend.tensorflow_backend")
    tensorflow_backend.set_session = lambda session: None
    argv = ["train.py", "--epochs", str(epochs), "--transformation", str(VIEWS), "--input_dim_x", str(steps),
            "--input_dim_y", str(channels), "--batch", str(batch), "--data_path", workdir + os.sep,
            "--model_path", workdir + os.sep]
    for option, value in (sizes or {}).items():
        argv += [f"--{option}", str(value)]
    cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    with contextlib.ExitStack() as stack:
        stack.enter_context(common.stub_modules(["pyimagesearch"]))
        stack.enter_context(_module_entries({"keras.backend.tensorflow_backend": tensorflow_backend,
                                             "keras.utils.np_utils": np_utils}))
        original_init = argparse_module.ArgumentParser.__init__

        def resolving_init(self, *positional, **options):
            original_init(self, *positional, **{**options, "conflict_handler": "resolve"})

        stack.enter_context(common.patched(argparse_module.ArgumentParser, "__init__", resolving_init))
        stack.enter_context(common.patched(sys, "argv", argv))
        stack.enter_context(common.patched(tf, "ConfigProto", tf.compat.v1.ConfigProto))
        stack.enter_context(common.patched(tf, "Session", tf.compat.v1.Session))
        train = _load(os.path.join(reference, "train.py"), "amsl_reference_train")
    if cuda is None:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = cuda

    pad = ((padded(steps) - steps, 0), (padded(channels) - channels, 0))
    latent = (padded(steps) // 4, padded(channels) // 4)

    def input_for_data(shape=None, **kwargs):
        if shape is not None and tuple(shape[:2]) == (32, 12):        # DSADS' latent grid
            shape = (*latent, *shape[2:])
        return keras.layers.Input(shape=shape, **kwargs)

    def per_window_mse(tensors, index):
        return K.mean(K.square(tensors[0][:, index] - tensors[1]), axis=[1, 2, 3])

    train.Input = input_for_data
    train.ZeroPadding2D = lambda padding=None, **kwargs: keras.layers.ZeroPadding2D(padding=pad, **kwargs)
    train.Cropping2D = lambda cropping=None, **kwargs: keras.layers.Cropping2D(cropping=pad, **kwargs)
    train.mse_compute = per_window_mse
    return train.conlstm_auto(), train


def run_reference(args):
    """`--side reference`: trains the reference on `--data` and writes its scores to `--result`."""
    import random

    import keras
    import tensorflow as tf

    data = np.load(args.data)
    random.seed(args.seed)
    np.random.seed(args.seed)
    tf.keras.utils.set_random_seed(args.seed)
    views_train, views_test = reference_views(args.reference, data["x_train"], data["x_test"], args.seed,
                                              args.reference_scaling)
    steps, channels = data["x_train"].shape[1:]
    with tempfile.TemporaryDirectory() as workdir:
        model, _ = reference_model(args.reference, steps, channels, args.epochs, args.batch_size, workdir)
    n = len(views_train)
    zeros = np.zeros((n, 1), np.float32)
    labels = [tf.keras.utils.to_categorical(np.full(n, view), VIEWS) for view in range(VIEWS)]
    start = time.perf_counter()
    history = model.fit([views_train, zeros], [zeros, zeros, *labels], epochs=args.epochs,
                        batch_size=args.batch_size, validation_split=args.reference_validation_split, verbose=2)
    fit_seconds = time.perf_counter() - start

    def scores(views):
        outputs = model.predict([views, np.zeros((len(views), 1), np.float32)], batch_size=args.batch_size, verbose=0)
        return np.asarray(outputs[0], np.float64).reshape(len(views))   # the summed per-window MSE

    result = {"train_scores": scores(views_train).tolist(), "test_scores": scores(views_test).tolist(),
              "fit_seconds": fit_seconds, "final_loss": float(history.history["loss"][-1]),
              "versions": {"tensorflow": tf.__version__, "keras": keras.__version__}}
    with open(args.result, "w") as f:
        json.dump(result, f)


# The small network of the copied-weights comparison (the reference's layout at a test's size).
SMALL = {"steps": 16, "channels": 6, "batch": 4, "filter_size1": 4, "filter_size2": 8, "filter_size3": 16,
         "global_mem_dim": 10, "local_mem_dim": 10}


def dump_reference(args):
    """`--side dump`: builds the reference network at `SMALL` sizes (seeded), feeds it random
    views, and writes to `--result` (npz) its weights by part, the views, and its outputs: the
    per-view MSE of each window, the summed MSE and entropy outputs, the view-class
    probabilities, and `evaluate`'s loss terms."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(args.seed)
    sizes = {k: v for k, v in SMALL.items() if k not in ("steps", "channels", "batch")}
    with tempfile.TemporaryDirectory() as workdir:
        model, _ = reference_model(args.reference, SMALL["steps"], SMALL["channels"], 1, SMALL["batch"], workdir,
                                   sizes)
    rng = np.random.default_rng(args.seed)
    n = SMALL["batch"]
    views = rng.uniform(0.0, 1.0, (n, VIEWS, SMALL["steps"], SMALL["channels"], 1)).astype(np.float32)
    inputs = [views, np.zeros((n, 1), np.float32)]
    out = {"views": views[..., 0]}
    for name, layer in (("conv1", "T1"), ("conv2", "T3")):
        out[f"{name}_kernel"], out[f"{name}_bias"] = model.get_layer(layer).get_weights()
    for i, w in enumerate(model.get_layer("model_class").get_weights()):
        out[f"classifier_{i}"] = w
    out["global_memory"] = model.get_layer("global_memory").get_weights()[0]
    out["local_memories"] = np.stack([model.get_layer(f"memory_local_{r}").get_weights()[0]
                                      for r in range(1, VIEWS + 1)])
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    norm = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    gamma, beta, mean, variance = norm.get_weights()
    # The fusion's input is 0: its Dense gives its bias; BN in inference mode, then a sigmoid.
    out["fusion_logits"] = gamma * (dense.get_weights()[1] - mean) / np.sqrt(variance + norm.epsilon) + beta
    for r in range(1, VIEWS + 1):
        for j in range(1, 5):
            out[f"decoder{r}_{j}_kernel"], out[f"decoder{r}_{j}_bias"] = model.get_layer(f"transpose{r}_{j}").get_weights()
    per_view = keras.Model(model.inputs, [model.get_layer(f"mse{r}").output for r in range(1, VIEWS + 1)])
    out["mse_per_view"] = np.stack(per_view.predict(inputs, verbose=0), axis=1)          # [batch, views]
    predicted = model.predict(inputs, batch_size=n, verbose=0)
    out["mse_sum"], out["entropy_sum"] = predicted[0], predicted[1]
    out["probabilities"] = np.stack(predicted[2:], axis=1)                                 # [batch, views, 7]
    labels = [tf.keras.utils.to_categorical(np.full(n, r), VIEWS) for r in range(VIEWS)]
    zeros = np.zeros((n, 1), np.float32)
    out["evaluate"] = np.asarray(model.evaluate(inputs, [zeros, zeros, *labels], batch_size=n, verbose=0))
    np.savez(args.result, **out)


def copied_weights_comparison(dump: str) -> dict:
    """kerastl's AMSL with the reference network's weights (from `dump_reference`'s file) on
    the same views: relative errors of the per-window MSE of each view, the view-class
    probabilities, the memory-entropy, cross-entropy and reconstruction loss terms and the
    total loss against the reference's `evaluate`. The reference decodes views 6 and 7 from
    the memory reads of view 1 (its fusion reuses view 1's reads): their MSE is compared with
    kerastl's parts wired that way (`views_6_7_reference_wiring`) and, as kerastl wires them, reported."""
    import tensorflow as tf

    from kerastl.anomaly.model import AMSL

    ref = dict(np.load(dump))
    model = AMSL(transformations=REFERENCE_VIEWS, num_slots=SMALL["global_mem_dim"],
                 filters=(SMALL["filter_size1"], SMALL["filter_size2"]))
    model.build((None, SMALL["steps"], SMALL["channels"]))
    model.encoder.layers[1].set_weights([ref["conv1_kernel"], ref["conv1_bias"]])
    model.encoder.layers[3].set_weights([ref["conv2_kernel"], ref["conv2_bias"]])
    model.view_classifier.set_weights([ref[f"classifier_{i}"] for i in range(6)])
    model.global_memory.memory.assign(ref["global_memory"][None])
    model.local_memory.memory.assign(ref["local_memories"])
    model.fusion.logits.assign(ref["fusion_logits"].reshape(VIEWS, 2))
    for r in range(VIEWS):
        for j in range(4):
            model.decoders[r].layers[j].set_weights([ref[f"decoder{r + 1}_{j + 1}_kernel"],
                                                     ref[f"decoder{r + 1}_{j + 1}_bias"]])
    views = tf.constant(ref["views"])
    outputs = model.forward_views(views)
    terms = {k: float(v) for k, v in model.loss_terms(outputs).items()}
    mse = np.mean(np.square(outputs["views"].numpy() - outputs["reconstructions"].numpy()), axis=(2, 3))
    n = len(views)
    probabilities = tf.nn.softmax(outputs["view_logits"]).numpy().reshape(n, VIEWS, VIEWS)

    # Views 6 and 7 as the reference wires them: z_r with the fused reads of view 1's features.
    features = model.encoder(tf.reshape(views, [-1, SMALL["steps"], SMALL["channels"], 1]))
    per_view = tf.reshape(features, [n, VIEWS, *features.shape[1:]])
    local_first = model.local_memory(tf.repeat(per_view[:, :1], VIEWS, axis=1))   # memory 1 for view 1 only
    global_first = model.global_memory(per_view[:, :1])[:, 0]
    mix = model.fusion.weights_per_view.numpy()
    wired = []
    for r in (5, 6):
        fused = mix[r, 0] * local_first[:, 0] + mix[r, 1] * global_first
        recon = model.decoders[r](tf.concat([per_view[:, r], fused], axis=-1))[..., 0]
        wired.append(np.mean(np.square(views[:, r].numpy() - recon.numpy()), axis=(1, 2)))
    ce_sum = terms["view_loss"]
    reference_total, reference_mse, reference_entropy = (float(v) for v in ref["evaluate"][:3])
    reference_ce = float(np.sum(ref["evaluate"][3:10]))
    errors = {
        "mse_views_1_5": common.relative_error(mse[:, :5], ref["mse_per_view"][:, :5]),
        "mse_views_6_7_reference_wiring": common.relative_error(np.stack(wired, axis=1), ref["mse_per_view"][:, 5:]),
        "mse_views_6_7_kerastl_wiring": common.relative_error(mse[:, 5:], ref["mse_per_view"][:, 5:]),
        "view_probabilities": common.relative_error(probabilities, ref["probabilities"]),
        "memory_entropy_term": common.relative_error(terms["memory_loss"], 2e-4 * reference_entropy),
        "cross_entropy_term": common.relative_error(ce_sum, reference_ce),
    }
    # The total with kerastl's wiring of views 6, 7 replaced by the reference's (their MSE terms).
    rewired_total = terms["loss"] - float(np.sum(mse[:, 5:].mean(0))) + float(np.sum(np.mean(wired, axis=1)))
    errors["total_loss_reference_wiring"] = common.relative_error(rewired_total, reference_total)
    errors["reconstruction_term_views_1_5"] = common.relative_error(
        float(np.sum(mse[:, :5].mean(0))), reference_mse - float(np.sum(ref["mse_per_view"][:, 5:].mean(0))))
    return errors


# ---------------------------------------------------------------- kerastl side (Keras 3)


def run_kerastl(data, args, seed: int) -> dict:
    from kerastl.anomaly import AMSLDetector

    views = REFERENCE_VIEWS if args.kerastl_views == "reference" else None
    detector = AMSLDetector(epochs=args.epochs, batch_size=args.batch_size, learning_rate=1e-3, seed=seed,
                            num_slots=500, filters=(32, 64), **({"transformations": views} if views else {}))
    detector.fit(data.x_train)
    return {"train_scores": detector.train_scores_, "test_scores": detector.decision_function(data.x_test),
            "fit_seconds": detector.fit_seconds_}


def reference_subprocess(reference: str, side: str, workdir: str, python: str = FEDERATED_PYTHON,
                         options: tuple = ()) -> None:
    """Runs this script's `--side reference|dump` in the Keras 2 environment (`python`)."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2",
           "CUDA_VISIBLE_DEVICES": ""}
    command = [python, os.path.abspath(__file__), "--side", side, "--reference", reference, *map(str, options)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, cwd=workdir)
    if run.returncode != 0:
        raise RuntimeError(f"the reference side ({side}) failed (exit {run.returncode}):\n{run.stderr[-4000:]}")


def reference_scores(reference: str, x_train, x_test, seed: int, epochs: int, batch_size: int, workdir: str,
                     scaling: str = "train", validation_split: float = 0.0, python: str = FEDERATED_PYTHON) -> dict:
    """The reference trained on `x_train` in the Keras 2 environment: {"train_scores",
    "test_scores", "fit_seconds", "final_loss", "versions"}."""
    data_path, result_path = os.path.join(workdir, f"data-{seed}.npz"), os.path.join(workdir, f"ref-{seed}.json")
    np.savez(data_path, x_train=x_train, x_test=x_test)
    reference_subprocess(reference, "reference", workdir, python, (
        "--data", data_path, "--result", result_path, "--seed", seed, "--epochs", epochs, "--batch-size", batch_size,
        "--reference-scaling", scaling, "--reference-validation-split", validation_split))
    with open(result_path) as f:
        return json.load(f)


def copied_weights_parity(reference: str, workdir: str, seed: int = 0, python: str = FEDERATED_PYTHON) -> dict:
    """`copied_weights_comparison` on a network the reference builds in the Keras 2 environment."""
    dump = os.path.join(workdir, f"dump-{seed}.npz")
    reference_subprocess(reference, "dump", workdir, python, ("--result", dump, "--seed", seed))
    return copied_weights_comparison(dump)


def side_metrics(side: dict, is_abnormal, epochs: int) -> dict:
    from kerastl.anomaly.report import detection_metrics

    threshold = float(np.percentile(side["train_scores"], 98))
    test = np.asarray(side["test_scores"], np.float64)
    return {**detection_metrics(test, is_abnormal, threshold), "threshold": threshold,
            "fit_seconds": side["fit_seconds"], "seconds_per_epoch": side["fit_seconds"] / epochs,
            "distinct_test_scores": int(len(np.unique(test)))}


def report(runs: list, settings: dict, info: dict, copied: dict) -> str:
    import stats

    columns = (("auroc", "AUROC"), ("mf1", "mF1"), ("macro_f1", "mean F1"), ("accuracy", "Acc"),
               ("seconds_per_epoch", "s / epoch"))
    rows = []
    for side in ("reference", "kerastl"):
        for run in runs:
            rows.append([side, run["seed"], *(f"{run[side][key]:.3f}" if key != "seconds_per_epoch"
                                              else f"{run[side][key]:.1f}" for key, _ in columns)])
        if len(runs) > 1:
            rows.append([f"**{side}**", "mean ± std", *(stats.plus_minus([r[side][key] for r in runs], digits=3)
                                                       for key, _ in columns)])
    lines = ["# AMSL parity: the reference's Keras 2 code and kerastl on the same watch windows", "",
             f"Reference: {info['repository']} at `{info['commit']}` (TF / Keras {settings['reference_versions']}); "
             f"kerastl in TF / Keras {settings['kerastl_versions']}. Data: watch, normal {settings['split']}, "
             f"{settings['window']}-step windows, stride {settings['window']}, {settings['train_windows']} training "
             f"and {settings['test_windows']} test windows (seed 0's split; each seed splits anew). Both: "
             f"{settings['epochs']} epochs, batch {settings['batch_size']}, 500 slots, conv 32 / 64, Adam 1e-3; "
             f"threshold = 98th percentile of training scores. Reference views scaled on "
             f"{settings['reference_scaling']} windows, validation split {settings['reference_validation_split']}; "
             f"kerastl views: {settings['kerastl_views']}.", "",
             "mF1 = 2 mPre mRec / (mPre + mRec) (the reference's evaluate.py); mean F1 = mean of the normal and "
             "abnormal F1; s / epoch: training time per epoch, the two sides run one after the other per seed.", "",
             common.markdown_table(["side", "seed", *(label for _, label in columns)], rows), "",
             "## Copied weights", "",
             "The reference's network at a small size (16 x 6 windows, conv 4 / 8, 10 slots; seed 0) and kerastl's "
             "AMSL with its weights, on the same random views: relative error of each quantity (max |ours - ref| / "
             "max |ref|). The reference decodes views 6 and 7 from view 1's memory reads; kerastl's parts wired that "
             "way match it, kerastl's own wiring (each view its own reads) differs there by design.", "",
             common.markdown_table(["quantity", "relative error"], [[k, f"{v:.1e}"] for k, v in copied.items()]), "",
             f"Command: `{settings['command']}`"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default=None, help="AMSL checkout (else KERASTL_REF_AMSL)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of both sides (paper: 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of both sides (paper: 16)")
    parser.add_argument("--split", default="IR,ER,TRAP,ROW", help="normal exercises of the watch data")
    parser.add_argument("--reference-scaling", choices=("train", "together"), default="train",
                        help="fit the reference's per-entry min-max on training windows (default) or, as its "
                             "preprocessing does, on training and test windows together")
    parser.add_argument("--reference-validation-split", type=float, default=0.0,
                        help="the reference's validation_split (its train.py: 0.2); default 0, same windows")
    parser.add_argument("--kerastl-views", choices=("reference", "default"), default="reference",
                        help="kerastl's views: the reference's six (smoothing as its 'time warp') or kerastl's default")
    parser.add_argument("--reference-python", default=FEDERATED_PYTHON,
                        help="python of the Keras 2 environment (default: .tox/federated/bin/python)")
    parser.add_argument("--no-write", action="store_true", help="print, do not write benchmarks/results")
    parser.add_argument("--side", choices=("reference", "dump"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.reference = common.reference_dir("AMSL", args.reference)
    if args.side == "reference":
        return run_reference(args)
    if args.side == "dump":
        return dump_reference(args)

    import keras
    import tensorflow as tf

    from kerastl.anomaly.protocol import load_anomaly_data

    record = common.start_record(__file__)
    info = common.reference_info(args.reference, REPOSITORY)
    settings = {"split": args.split, "window": WINDOW, "epochs": args.epochs, "batch_size": args.batch_size,
                "reference_scaling": args.reference_scaling,
                "reference_validation_split": args.reference_validation_split,
                "kerastl_views": args.kerastl_views, "kerastl_versions": f"{tf.__version__} / {keras.__version__}",
                "command": "nice -n 10 " + record.get("command", "python benchmarks/parity/amsl.py")}
    runs = []
    with tempfile.TemporaryDirectory() as workdir:
        copied = copied_weights_parity(args.reference, workdir, python=args.reference_python)
        print("copied weights, relative errors: " + ", ".join(f"{k} {v:.1e}" for k, v in copied.items()), flush=True)
        for seed in args.seeds:
            data = load_anomaly_data("watch", args.split, WINDOW, WINDOW, seed)
            if not runs:
                settings.update(train_windows=len(data.x_train), test_windows=len(data.x_test))
            reference = reference_scores(args.reference, data.x_train, data.x_test, seed, args.epochs,
                                         args.batch_size, workdir, args.reference_scaling,
                                         args.reference_validation_split, args.reference_python)
            settings["reference_versions"] = " / ".join(reference["versions"].values())
            ours = run_kerastl(data, args, seed)
            runs.append({"seed": seed, "reference": side_metrics(reference, data.is_abnormal, args.epochs),
                         "kerastl": side_metrics(ours, data.is_abnormal, args.epochs),
                         "reference_final_loss": reference["final_loss"]})
            print(f"seed {seed}: reference AUROC {runs[-1]['reference']['auroc']:.3f} mF1 "
                  f"{runs[-1]['reference']['mf1']:.3f}; kerastl AUROC {runs[-1]['kerastl']['auroc']:.3f} mF1 "
                  f"{runs[-1]['kerastl']['mf1']:.3f}", flush=True)
            markdown = report(runs, settings, info, copied)
            if not args.no_write:
                common.write_results("amsl", {"reference": info, "settings": settings, "copied_weights": copied,
                                              "runs": runs}, markdown, record)
    print(markdown)
    return runs


if __name__ == "__main__":
    main()
