"""What every parity harness shares: loading a reference, copying weights, comparing steps,
writing results.

A harness runs kerastl (Keras 3 / TensorFlow) and a reference (PyTorch) in ONE process of
the `parity` tox environment, builds the same network on both sides, copies the weights,
feeds the same arrays and compares what each step produces. This module gives it:

- the reference: `reference_dir` (a checkout given by option or `KERASTL_REF_<NAME>`),
  `reference_info` (repository + commit, or package + version), `on_path` (import from a
  checkout), and run-time shims that leave the reference's files untouched: `stub_modules`
  (packages imported at load time only), `no_cuda` (`.cuda()` on a CPU machine), `patched`
  (any attribute: a hard-coded path, a function);
- weights: `copy_keras_to_torch` / `copy_torch_to_keras` for whole models (layers paired by
  name) and `weight_errors` (per layer, after training), built on `tensor_pairs`, which knows
  Dense/Linear, ConvND (kernel HWIO <-> OIHW), BatchNormalization/BatchNormNd,
  LayerNormalization/LayerNorm, Embedding and GRU (Keras gates z, r, h <-> PyTorch r, z, n);
- comparisons: `StepComparison` collects one row per (step, quantity) with the tolerances of
  docs/parity.md (exact for integers and masks; relative 1e-5 at step 1 rising log-linearly
  to 1e-4 at step 50), and summarises them per quantity;
- results: `start_record` / `write_results` write `benchmarks/results/parity_<family>.{json,md}`
  with the provenance of the run (benchmarks/provenance.py) and the reference's identity.

Example:
>>> with stub_modules(["wandb", "torchvision"]) as stubs:          # doctest: +SKIP
...     import semilearn.algorithms.flexmatch
>>> copy_keras_to_torch(keras_model, torch_module)                  # doctest: +SKIP
>>> comparison = StepComparison("fixmatch/small_cnn")
>>> comparison.close(1, "sup_loss", 2.3025851, 2.3025853)["ok"]
True
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import numpy as np

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCHMARKS)
RESULTS = os.path.join(BENCHMARKS, "results")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

import provenance  # noqa: E402  (benchmarks/provenance.py)

# Tolerances of docs/parity.md.
FIRST_STEP_TOLERANCE = 1e-5
LAST_STEP_TOLERANCE = 1e-4
LAST_STEP = 50


# ---------------------------------------------------------------- the reference


def reference_dir(name: str, given: str | None = None, option: str = "--reference") -> str:
    """The checkout of reference `name`: `given` (the harness's option), else the environment
    variable `KERASTL_REF_<NAME>` (upper case, "-" as "_"). Exits with code 2 and one line
    naming both when neither points at a folder."""
    variable = "KERASTL_REF_" + name.upper().replace("-", "_")
    path = given or os.environ.get(variable)
    if not path or not os.path.isdir(path):
        shown = f"{option} {path}: not a folder" if path else f"{option} is not given and {variable} is not set"
        print(f"{shown}; expected a checkout of {name} (see docs/parity.md)", file=sys.stderr)
        raise SystemExit(2)
    return os.path.abspath(path)


def reference_info(source: str, repository: str | None = None) -> dict:
    """Identity of a reference: for a folder, `{"repository", "path", "commit", "modified"}`
    (`git -C DIR rev-parse HEAD`; `modified` lists files that differ from that commit, which
    a snapshot lacking its large files shows as deleted); for a package name,
    `{"package", "version"}`."""
    if os.path.isdir(source):
        def git(*args):
            return subprocess.run(["git", "-C", source, *args], capture_output=True, text=True)
        commit = git("rev-parse", "HEAD")
        status = git("status", "--porcelain")
        return {"repository": repository, "path": os.path.abspath(source),
                "commit": commit.stdout.strip() if commit.returncode == 0 else None,
                "modified": [line[3:] for line in status.stdout.splitlines()] if status.returncode == 0 else None}
    try:
        version = importlib.metadata.version(source)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"package": source, "version": version}


@contextlib.contextmanager
def on_path(folder: str):
    """`folder` first on `sys.path` while the block runs (to import a checkout's modules)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


class StubUsed(RuntimeError):
    """A stubbed package was used beyond being imported: the stub is not enough."""


class _StubType(type):
    """Placeholder classes: any attribute is another placeholder (so `transforms.Compose`,
    `InterpolationMode.BILINEAR` or a base class work at import time); creating an instance
    raises `StubUsed`, naming what was used."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        child = _StubType(name, (), {"__module__": cls.__module__, "_stub_name": f"{cls._stub_name}.{name}"})
        setattr(cls, name, child)
        return child

    def __call__(cls, *args, **kwargs):
        raise StubUsed(f"{cls._stub_name} is a parity-harness stub (imported at load time only), "
                       "but the code under test called it")


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        value = _StubType(name, (), {"__module__": self.__name__, "_stub_name": f"{self.__name__}.{name}"})
        setattr(self, name, value)
        return value


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = set(roots)
        self.created = []

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        self.created.append(spec.name)
        return module

    def exec_module(self, module):
        pass


@contextlib.contextmanager
def stub_modules(names, only_missing: bool = True):
    """Makes the packages `names` (and all their submodules) importable as stubs while the
    block runs: importing them and reading attributes works, calling anything from them
    raises `StubUsed`. For references that import heavy packages at load time for parts a
    parity run never reaches (USB's datasets, nets and loggers). With `only_missing`, an
    installed package is left alone. Yields the list of stub modules created (for the record);
    modules imported during the block stay imported afterwards, the finder does not.
    """
    roots = [n for n in names if not (only_missing and importlib.util.find_spec(n) is not None)]
    finder = _StubFinder(roots)
    sys.meta_path.insert(0, finder)
    try:
        yield finder.created
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def patched(target, name: str, value):
    """`target.name = value` while the block runs (a reference's hard-coded path, a function
    it calls); restored afterwards."""
    missing = object()
    old = getattr(target, name, missing)
    setattr(target, name, value)
    try:
        yield value
    finally:
        if old is missing:
            delattr(target, name)
        else:
            setattr(target, name, old)


@contextlib.contextmanager
def no_cuda():
    """`.cuda()` of tensors and modules returns them unchanged (on the CPU) while the block runs,
    and `torch.cuda.is_available()` is False: for references that move everything to a GPU."""
    import torch

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
        stack.enter_context(patched(torch.nn.Module, "cuda", lambda self, *a, **k: self))
        stack.enter_context(patched(torch.cuda, "is_available", lambda: False))
        yield


@contextlib.contextmanager
def keras_float64():
    """Keras layers built while the block runs compute in float64 (`keras.config` dtype
    policy). With a float64 PyTorch twin (`module.double()`), a step's rounding differences
    fall to ~1e-12 and what still differs is the method: float32 reductions over a BN layer's
    batch x height x width (TensorFlow accumulates them with ~1e-4 relative error at 10^5
    values; oneDNN's convolution weight gradient is worse on some CPUs) otherwise dominate a
    1e-5 comparison (docs/parity.md)."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float64")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


# ---------------------------------------------------------------- weights


def torch_bn_momentum(keras_momentum: float) -> float:
    """PyTorch's BN momentum for Keras' (Keras keeps `m` of the old statistic, PyTorch `1 - m`)."""
    return 1.0 - keras_momentum


def _conv_to_torch(kernel):
    # Keras (k1, ..., kn, in, out) -> PyTorch (out, in, k1, ..., kn)
    n = kernel.ndim
    return np.transpose(kernel, (n - 1, n - 2, *range(n - 2)))


def _conv_to_keras(weight):
    n = weight.ndim
    return np.transpose(weight, (*range(2, n), 1, 0))


def _gru_to_torch(matrix, units):
    # Keras packs the gates z, r, h along the last axis; PyTorch packs r, z, n along the first.
    z, r, h = (matrix[..., i * units:(i + 1) * units] for i in range(3))
    return np.concatenate([r, z, h], axis=-1).T if matrix.ndim == 2 else np.concatenate([r, z, h])


def _gru_to_keras(tensor, units):
    r, z, h = (tensor[i * units:(i + 1) * units] for i in range(3))
    return np.concatenate([z, r, h], axis=0).T if tensor.ndim == 2 else np.concatenate([z, r, h])


def _check(condition, layer, message):
    if not condition:
        raise ValueError(f"layer {layer.name!r}: {message}")


def tensor_pairs(layer, module, index: int = 0):
    """`[(keras_variable, torch_tensor, to_torch, to_keras)]` for one Keras layer and the
    PyTorch module holding the same weights (`index`: the layer of a multi-layer torch GRU).
    `to_torch(keras_array) -> torch layout` and `to_keras(torch_array) -> keras layout`.
    Raises ValueError when the two are not the same computation (epsilon, bias, GRU
    variant), so a copy never silently pairs different layers."""
    import keras
    import torch

    same = (lambda a: a, lambda a: a)
    if isinstance(layer, keras.layers.Dense):
        _check(isinstance(module, torch.nn.Linear), layer, f"Dense pairs with nn.Linear, got {type(module).__name__}")
        _check(layer.use_bias == (module.bias is not None), layer, "bias on one side only")
        pairs = [(layer.kernel, module.weight, np.transpose, np.transpose)]
        return pairs + ([(layer.bias, module.bias, *same)] if layer.use_bias else [])
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)) \
            and not isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.SeparableConv2D)):
        _check(isinstance(module, torch.nn.modules.conv._ConvNd), layer, f"got {type(module).__name__}")
        _check(module.groups == layer.groups, layer, f"groups {layer.groups} vs {module.groups}")
        _check(layer.use_bias == (module.bias is not None), layer, "bias on one side only")
        pairs = [(layer.kernel, module.weight, _conv_to_torch, _conv_to_keras)]
        return pairs + ([(layer.bias, module.bias, *same)] if layer.use_bias else [])
    if isinstance(layer, keras.layers.BatchNormalization):
        _check(isinstance(module, torch.nn.modules.batchnorm._BatchNorm), layer, f"got {type(module).__name__}")
        _check(math.isclose(layer.epsilon, module.eps, rel_tol=1e-6), layer,
               f"epsilon {layer.epsilon} (Keras) vs eps {module.eps} (PyTorch)")
        pairs = [(layer.moving_mean, module.running_mean, *same), (layer.moving_variance, module.running_var, *same)]
        if layer.scale:
            pairs.append((layer.gamma, module.weight, *same))
        if layer.center:
            pairs.append((layer.beta, module.bias, *same))
        return pairs
    if isinstance(layer, keras.layers.LayerNormalization):
        _check(isinstance(module, torch.nn.LayerNorm), layer, f"got {type(module).__name__}")
        _check(math.isclose(layer.epsilon, module.eps, rel_tol=1e-6), layer,
               f"epsilon {layer.epsilon} (Keras) vs eps {module.eps} (PyTorch)")
        return [(layer.gamma, module.weight, *same), (layer.beta, module.bias, *same)]
    if isinstance(layer, keras.layers.Embedding):
        _check(isinstance(module, torch.nn.Embedding), layer, f"got {type(module).__name__}")
        return [(layer.embeddings, module.weight, *same)]
    if isinstance(layer, keras.layers.GRU):
        _check(isinstance(module, torch.nn.GRU), layer, f"got {type(module).__name__}")
        _check(layer.cell.reset_after and layer.cell.use_bias and module.bias and not module.bidirectional,
               layer, "only Keras reset_after=True with biases pairs with a unidirectional torch GRU with biases")
        _check(layer.cell.activation is keras.activations.tanh
               and layer.cell.recurrent_activation is keras.activations.sigmoid, layer,
               "Keras GRU must use tanh / sigmoid (PyTorch's)")
        units = layer.units
        cell = layer.cell
        to_torch = lambda a: _gru_to_torch(a, units)  # noqa: E731
        to_keras = lambda a: _gru_to_keras(a, units)  # noqa: E731
        # Keras bias (2, 3u): row 0 input bias, row 1 recurrent bias.
        return [(cell.kernel, getattr(module, f"weight_ih_l{index}"), to_torch, to_keras),
                (cell.recurrent_kernel, getattr(module, f"weight_hh_l{index}"), to_torch, to_keras),
                ((cell.bias, 0), getattr(module, f"bias_ih_l{index}"), to_torch, to_keras),
                ((cell.bias, 1), getattr(module, f"bias_hh_l{index}"), to_torch, to_keras)]
    raise ValueError(f"layer {layer.name!r}: no weight mapping for {type(layer).__name__}")


def _read_keras(variable):
    if isinstance(variable, tuple):  # (variable, row)
        return np.asarray(variable[0].numpy())[variable[1]]
    return np.asarray(variable.numpy())


def _write_keras(variable, value):
    if isinstance(variable, tuple):
        full = np.asarray(variable[0].numpy()).copy()
        full[variable[1]] = value
        variable[0].assign(full)
    else:
        variable.assign(value)


def layer_pairs(keras_model, torch_module, names: dict | None = None):
    """`[(keras_layer, torch_module, index)]` for every Keras layer that has weights.

    `names` maps a Keras layer name to the dotted path of its torch module (or to
    `(path, index)` for one layer of a multi-layer torch GRU); a layer not in `names` pairs
    with the module of the same name (a twin built with Keras' layer names). Nested Keras
    models are walked through."""
    import keras

    names = names or {}
    modules = dict(torch_module.named_modules())
    pairs = []

    def walk(model):
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
                continue
            if not layer.weights:
                continue
            target = names.get(layer.name, layer.name)
            path, index = target if isinstance(target, tuple) else (target, 0)
            if path not in modules:
                raise ValueError(f"layer {layer.name!r}: the torch module has no submodule {path!r}")
            pairs.append((layer, modules[path], index))

    walk(keras_model)
    return pairs


def copy_keras_to_torch(keras_model, torch_module, names: dict | None = None) -> int:
    """Copies every weight of `keras_model` into `torch_module` (layers paired by
    `layer_pairs`); returns the number of tensors copied."""
    import torch

    count = 0
    with torch.no_grad():
        for layer, module, index in layer_pairs(keras_model, torch_module, names):
            for variable, tensor, to_torch, _ in tensor_pairs(layer, module, index):
                value = np.ascontiguousarray(to_torch(_read_keras(variable)))
                if tuple(value.shape) != tuple(tensor.shape):
                    raise ValueError(f"layer {layer.name!r}: shape {value.shape} does not fit {tuple(tensor.shape)}")
                tensor.copy_(torch.from_numpy(value).to(tensor.dtype))
                count += 1
    return count


def copy_torch_to_keras(torch_module, keras_model, names: dict | None = None) -> int:
    """Copies `torch_module`'s weights into `keras_model` (the reverse of `copy_keras_to_torch`)."""
    count = 0
    for layer, module, index in layer_pairs(keras_model, torch_module, names):
        for variable, tensor, _, to_keras in tensor_pairs(layer, module, index):
            value = to_keras(tensor.detach().cpu().numpy())
            if tuple(value.shape) != tuple(_read_keras(variable).shape):
                raise ValueError(f"layer {layer.name!r}: shape {value.shape} does not fit the Keras variable")
            _write_keras(variable, value)
            count += 1
    return count


def weight_errors(keras_model, torch_module, names: dict | None = None) -> dict:
    """`{"<layer>/<variable>": (ours, reference) in Keras layout}` for every paired tensor
    (a GRU's bias rows as "<layer>/bias[0]" and "[1]"),
    to compare the weights after training steps."""
    out = {}
    for layer, module, index in layer_pairs(keras_model, torch_module, names):
        for variable, tensor, _, to_keras in tensor_pairs(layer, module, index):
            key = f"{layer.name}/{variable[0].name}[{variable[1]}]" if isinstance(variable, tuple) \
                else f"{layer.name}/{variable.name}"
            out[key] = (_read_keras(variable), to_keras(tensor.detach().cpu().numpy()))
    return out


# ---------------------------------------------------------------- comparisons


def float_tolerance(step: int) -> float:
    """Relative tolerance for floats at `step` (1-based): 1e-5 at step 1, rising log-linearly
    to 1e-4 at step 50 and staying there (differences of float rounding compound over steps)."""
    progress = min(max(step - 1, 0), LAST_STEP - 1) / (LAST_STEP - 1)
    return FIRST_STEP_TOLERANCE * (LAST_STEP_TOLERANCE / FIRST_STEP_TOLERANCE) ** progress


def relative_error(ours, reference) -> float:
    """max |ours - reference| / max |reference| (a plain relative error for scalars; for a
    tensor, relative to its largest entry, so entries near zero do not dominate)."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if ours.shape != reference.shape:
        raise ValueError(f"shapes differ: {ours.shape} vs {reference.shape}")
    if ours.size == 0:
        return 0.0
    scale = float(np.max(np.abs(reference)))
    difference = float(np.max(np.abs(ours - reference)))
    if scale == 0.0:
        return 0.0 if difference == 0.0 else math.inf
    return difference / scale


class StepComparison:
    """Rows of one parity run: `exact(step, quantity, ours, ref)` for integers and masks (the
    row counts the differing entries), `close(step, quantity, ours, ref)` for floats (relative
    error against `float_tolerance(step)`). `rows` holds them; `summary()` reduces them per
    quantity: worst error, first failing step, number of failing steps."""

    def __init__(self, run: str):
        self.run = run
        self.rows = []

    def exact(self, step: int, quantity: str, ours, reference) -> dict:
        ours, reference = np.asarray(ours), np.asarray(reference)
        if ours.shape != reference.shape:
            raise ValueError(f"{quantity}: shapes differ: {ours.shape} vs {reference.shape}")
        differing = int(np.sum(ours != reference))
        row = {"run": self.run, "step": step, "quantity": quantity, "kind": "exact",
               "differing": differing, "size": int(ours.size), "ok": differing == 0}
        self.rows.append(row)
        return row

    def close(self, step: int, quantity: str, ours, reference, tolerance: float | None = None) -> dict:
        tolerance = float_tolerance(step) if tolerance is None else tolerance
        error = relative_error(ours, reference)
        row = {"run": self.run, "step": step, "quantity": quantity, "kind": "float",
               "relative_error": error, "tolerance": tolerance, "ok": bool(error <= tolerance)}
        self.rows.append(row)
        return row

    def close_all(self, step: int, quantity: str, pairs: dict, tolerance: float | None = None) -> dict:
        """One float row for a group of tensors (`{name: (ours, reference)}`, e.g. from
        `weight_errors`): the worst relative error over them, and which tensor it was."""
        errors = {name: relative_error(ours, ref) for name, (ours, ref) in pairs.items()}
        worst = max(errors, key=errors.get)
        tolerance = float_tolerance(step) if tolerance is None else tolerance
        row = {"run": self.run, "step": step, "quantity": quantity, "kind": "float",
               "relative_error": errors[worst], "worst_tensor": worst, "tensors": len(errors),
               "tolerance": tolerance, "ok": bool(errors[worst] <= tolerance)}
        self.rows.append(row)
        return row

    def summary(self) -> dict:
        """Per quantity: kind, steps compared, failing steps, the first failing step, the worst
        value (relative error; for exact rows the most differing entries) and its step."""
        out = {}
        for row in self.rows:
            entry = out.setdefault(row["quantity"], {"kind": row["kind"], "steps": 0, "failing_steps": 0,
                                                     "first_failing_step": None, "worst": 0.0, "worst_step": None})
            entry["steps"] += 1
            value = row["relative_error"] if row["kind"] == "float" else row["differing"]
            if entry["worst_step"] is None or value > entry["worst"]:
                entry["worst"], entry["worst_step"] = value, row["step"]
                if "worst_tensor" in row:
                    entry["worst_tensor"] = row["worst_tensor"]
            if not row["ok"]:
                entry["failing_steps"] += 1
                if entry["first_failing_step"] is None:
                    entry["first_failing_step"] = row["step"]
        for entry in out.values():
            entry["ok"] = entry["failing_steps"] == 0
        return out

    @property
    def ok(self) -> bool:
        return all(row["ok"] for row in self.rows)


# ---------------------------------------------------------------- results


def start_record(script: str) -> dict:
    """The provenance record of a parity run (benchmarks/provenance.py), with PyTorch's
    version beside TensorFlow's and Keras'."""
    record = provenance.start(provenance.dependency_paths(script))
    record["versions"]["torch"] = reference_info("torch")["version"]
    return record


def write_results(family: str, content: dict, markdown: str, record: dict) -> tuple[str, str]:
    """Writes `benchmarks/results/parity_<family>.json` (`content` plus the finished
    `provenance`) and `.md` (`markdown`); returns both paths. `record` stays open: calling
    this after every run keeps the results of finished runs if a long harness is stopped."""
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, f"parity_{family}")
    # A copy is finished, so a harness may write after every run and again at the end.
    payload = {**content, "provenance": provenance.public(provenance.finish(dict(record)))}
    with open(stem + ".json", "w") as f:
        json.dump(payload, f, indent=2, default=_jsonable)
        f.write("\n")
    with open(stem + ".md", "w") as f:
        f.write(markdown.rstrip() + "\n")
    return stem + ".json", stem + ".md"


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
