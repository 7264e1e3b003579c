"""Conventions every app shares: options, presets, the run folder, checkpoints, errors.

An app is a thin program:

```python
from kerastl import app

PRESETS = {"smoke": {"epochs": 1}, "cpu": {"epochs": 20}, "paper": {"epochs": 200}}

def build_parser():
    parser = app.make_parser("apps.myapp", __doc__, PRESETS)
    app.add_preset_option(parser, "--epochs", type=int, help="training epochs")
    return parser

def run(args):
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    data = ...                # load and check every input first
    folder.create()
    ...                       # build; model.fit(..., callbacks=[folder.history_logger(), ...]); export
    folder.write_metrics({"accuracy": ...})

if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
```

Bad input raises `kerastl.InputError`; `main` prints it as one line on stderr
(`apps.myapp: error: ...`) and returns exit code 2, before anything on disk is changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from typing import Any, Callable

# Apps import this module before TensorFlow: keep TF's C++ start-up chatter off the console.
# "3", not "2": the cuFFT/cuDNN/cuBLAS "Unable to register factory" lines are logged at
# ERROR level while tensorflow is imported, and TF reads the level only once. A user's
# own setting wins (TF_CPP_MIN_LOG_LEVEL=0 brings everything back).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerastl.errors import InputError, require_writable  # noqa: E402  (apps raise app.InputError)

PRESET_NAMES = ("smoke", "cpu", "paper")
RUN_SUBFOLDERS = ("checkpoints", "tensorboard", "plots")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) and preset-aware defaults."""

    def __init__(self, *args, presets: dict[str, dict[str, Any]], **kwargs):
        super().__init__(*args, **kwargs)
        self.presets = presets
        self.preset_keys: set[str] = set()

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        values = self.presets[parsed.preset]
        for key in self.preset_keys:
            if getattr(parsed, key) is None:
                setattr(parsed, key, values.get(key))
        return parsed


def make_parser(prog: str, description: str | None, presets: dict[str, dict[str, Any]],
                default_preset: str = "cpu") -> argparse.ArgumentParser:
    """A parser with the shared options; add the app's own with `add_preset_option` or
    `parser.add_argument`.

    `presets` maps each of smoke / cpu / paper to option values (paper = the published
    hyperparameters). Options given on the command line win over the preset.
    """
    missing = [name for name in PRESET_NAMES if name not in presets]
    if missing:
        raise ValueError(f"{prog}: presets must define {', '.join(PRESET_NAMES)}; missing {missing}")
    parser = _Parser(prog=prog, description=description, presets=presets,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = parser.add_argument_group("shared options (every app)")
    shared.add_argument("--preset", choices=PRESET_NAMES, default=default_preset,
                        help="hyperparameter set: smoke = seconds, a check that everything runs; "
                             "cpu = a real run sized for a 2-core CPU; paper = the published "
                             f"settings (needs a GPU). Default: {default_preset}")
    shared.add_argument("--output", metavar="DIR", default=None,
                        help="run folder for metrics.json, checkpoints/, tensorboard/ and plots/ "
                             "(default: runs/<app>-<preset>)")
    shared.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its latest checkpoint "
                             "(weights, optimizer, method state and data position)")
    shared.add_argument("--overwrite", action="store_true",
                        help="allow replacing an existing run folder's results and an existing "
                             "export version")
    shared.add_argument("--export-dir", metavar="DIR", default="saved_models",
                        help="SavedModel export base; the model goes to DIR/<app>/<version>/ "
                             "(TF Serving layout). Default: saved_models")
    shared.add_argument("--version", type=int, default=None,
                        help="export version number (default: one above the highest present)")
    shared.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    shared.add_argument("--seed", type=int, default=0,
                        help="seed for splits, initialisation, shuffling and augmentation (default 0)")
    shared.add_argument("--data-dir", metavar="DIR", default=None,
                        help="where downloaded datasets live (tensorflow-datasets' data_dir)")
    return parser


def add_preset_option(parser: argparse.ArgumentParser, flag: str, help: str, **kwargs):
    """Adds an option whose default comes from the chosen preset; the help lists the values."""
    dest = kwargs.pop("dest", flag.lstrip("-").replace("-", "_"))
    values = ", ".join(f"{name} {parser.presets[name].get(dest)}" for name in PRESET_NAMES)
    parser.add_argument(flag, dest=dest, default=None, help=f"{help} (preset values: {values})", **kwargs)
    parser.preset_keys.add(dest)


def preset_group(parser: argparse.ArgumentParser, title: str):
    """An argument group (for --help) that `add_preset_option` can add preset options to."""
    group = parser.add_argument_group(title)
    group.presets, group.preset_keys = parser.presets, parser.preset_keys
    return group


def main(build_parser: Callable[[], argparse.ArgumentParser], run: Callable[[argparse.Namespace], Any],
         argv: list[str] | None = None) -> int:
    """Parses arguments and runs; bad input becomes one line on stderr and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = os.path.join("runs", f"{parser.prog.split('.')[-1]}-{args.preset}")
    try:
        run(args)
    except InputError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


def fit_verbosity() -> int:
    """Keras progress bars on a terminal; one line per epoch in logs and CI (no \\r floods)."""
    return 1 if sys.stdout.isatty() else 2


class RunFolder:
    """The run folder: `metrics.json`, `checkpoints/`, `tensorboard/`, `plots/`.

    A folder that already holds a run is refused unless `resume` (continue it) or
    `overwrite` (start over: the run's files are removed, nothing else in the folder is)
    is given. The constructor only checks; `create()` writes.
    """

    def __init__(self, path: str, resume: bool = False, overwrite: bool = False):
        self.path = path
        has_run = os.path.isdir(path) and any(
            os.path.exists(os.path.join(path, name)) for name in ("metrics.json", *RUN_SUBFOLDERS))
        if os.path.exists(path) and not os.path.isdir(path):
            raise InputError(f"--output {path}: is a file, expected a folder for the run")
        if resume and not os.path.isdir(self.checkpoints):
            raise InputError(f"--resume: {path} holds no checkpoints/ to resume from")
        if has_run and not (resume or overwrite):
            raise InputError(f"--output {path}: already holds a run; pass --resume to continue it, "
                             "--overwrite to start over, or choose another --output")
        require_writable(path, "--output")
        self._clear = has_run and overwrite and not resume

    def create(self) -> "RunFolder":
        """Creates the folder (clearing an earlier run's files on --overwrite).

        Call it once every input has been checked, so bad input leaves the disk untouched.
        """
        try:
            if self._clear:
                for name in RUN_SUBFOLDERS:
                    shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)
                if os.path.exists(self.metrics_path):
                    os.remove(self.metrics_path)
            for name in RUN_SUBFOLDERS:
                os.makedirs(os.path.join(self.path, name), exist_ok=True)
        except OSError as err:
            raise InputError(f"--output {self.path}: cannot create the run folder ({err.strerror})") from None
        self._clear = False
        return self

    checkpoints = property(lambda self: os.path.join(self.path, "checkpoints"))
    tensorboard = property(lambda self: os.path.join(self.path, "tensorboard"))
    plots = property(lambda self: os.path.join(self.path, "plots"))
    metrics_path = property(lambda self: os.path.join(self.path, "metrics.json"))

    def save_config(self, config: dict) -> None:
        """Records the options a checkpoint depends on (`checkpoints/run.json`)."""
        with open(os.path.join(self.checkpoints, "run.json"), "w") as f:
            json.dump(config, f, indent=2)

    def check_resumable(self, config: dict, prog: str) -> None:
        """For --resume: the checkpoint must come from `prog` run with the same `config`."""
        path = os.path.join(self.checkpoints, "run.json")
        if not os.path.exists(path):
            raise InputError(f"--resume: {self.checkpoints} has no run.json; it was not written by {prog}")
        with open(path) as f:
            saved = json.load(f)
        for key, value in config.items():
            if saved.get(key) != value:
                raise InputError(f"--resume: the checkpoint in {self.checkpoints} is from --{key.replace('_', '-')} "
                                 f"{saved.get(key)}, not {value}; resume with the same options or choose another "
                                 "--output")

    def write_metrics(self, metrics: dict) -> str:
        """Writes `metrics.json` atomically (a reader never sees half a file)."""
        staging = self.metrics_path + ".tmp"
        with open(staging, "w") as f:
            json.dump(metrics, f, indent=2, sort_keys=True, default=_jsonable)
        os.replace(staging, self.metrics_path)
        return self.metrics_path

    def history_logger(self, extra: Callable[[], dict] | None = None):
        """A Keras callback that appends each epoch's logs to `metrics.json`'s "history".

        `extra()` may add per-epoch values of its own (lists are fine, e.g. per-class
        state). The file is rewritten at every epoch end, so an interrupted run keeps its
        curves and a resumed run continues them (epochs already logged are replaced, not
        repeated).
        """
        import keras

        folder = self

        class HistoryLogger(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                metrics = folder.read_metrics()
                history = metrics.setdefault("history", {})
                values = {key: float(value) for key, value in (logs or {}).items()}
                values.update(extra() if extra else {})
                for key, value in values.items():
                    history[key] = history.get(key, [])[:epoch] + [_jsonable(value)]
                metrics["epochs_done"] = epoch + 1
                folder.write_metrics(metrics)

        return HistoryLogger()

    def read_metrics(self) -> dict:
        if not os.path.exists(self.metrics_path):
            return {}
        with open(self.metrics_path) as f:
            return json.load(f)


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (int, float, str, list, dict, type(None))):
        return value
    return str(value)
