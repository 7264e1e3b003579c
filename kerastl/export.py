"""SavedModel export for TensorFlow Serving, in one place for every app.

Layout: `<export_dir>/<app>/<version>/` (TF Serving's model base path is
`<export_dir>/<app>`; it serves the highest numeric version). Each export has a
`serving_default` signature with named inputs and outputs, and
`assets.extra/kerastl.json` describing them.

Example:
>>> path = export_classifier(model, "saved_models", "flexmatch")      # doctest: +SKIP
>>> serving_predict(path, {"instances": images.tolist()})             # doctest: +SKIP
{'predictions': [{'probabilities': [...], 'classes': 3}, ...]}
"""

from __future__ import annotations

import datetime
import inspect
import json
import os
import shutil
from typing import Callable

import numpy as np
import tensorflow as tf

from kerastl.errors import InputError, require_writable

METADATA_FILE = os.path.join("assets.extra", "kerastl.json")


def version_dir(export_dir: str, app: str, version: int | None, overwrite: bool = False) -> tuple[str, int]:
    """Chooses `<export_dir>/<app>/<version>` and checks that it may be written.

    `version=None` takes the next free integer. An existing version is refused unless
    `overwrite` is True. Checked before training, so a run does not fail at its end.
    """
    base = os.path.join(export_dir, app)
    if version is None:
        existing = [int(d) for d in os.listdir(base) if d.isdigit()] if os.path.isdir(base) else []
        version = max(existing, default=0) + 1
    if version < 1:
        raise InputError(f"--version {version}: expected a positive integer (TF Serving's version folders)")
    path = os.path.join(base, str(version))
    if os.path.exists(path) and not overwrite:
        raise InputError(f"--version {version}: {path} already exists; pass --overwrite to replace it "
                         "or choose another --version")
    require_writable(base, "--export-dir", given=export_dir)
    return path, version


def export_model(
    model,
    path: str,
    inputs: dict[str, tf.TensorSpec],
    outputs: Callable[..., dict[str, tf.Tensor]],
    metadata: dict | None = None,
    overwrite: bool = False,
) -> str:
    """Writes a SavedModel whose `serving_default` maps named `inputs` to named `outputs`.

    Args:
        model: the Keras model (its variables are tracked into the SavedModel).
        path: the version folder, e.g. from `version_dir`.
        inputs: input name -> `tf.TensorSpec` (batch dimension None).
        outputs: called with the input tensors as keyword arguments, returns name -> tensor.
        metadata: extra JSON-able facts stored in `assets.extra/kerastl.json`.
        overwrite: replace an existing `path`; otherwise an existing path is an error.

    The SavedModel is written to a hidden sibling folder first and moved into place, so a
    failed export leaves any existing version untouched.
    """
    import keras

    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path} already exists; pass --overwrite to replace it")
    names = list(inputs)
    specs = [tf.TensorSpec(spec.shape, spec.dtype, name=name) for name, spec in inputs.items()]

    def serve(*tensors):
        result = outputs(**dict(zip(names, tensors)))
        return {key: tf.convert_to_tensor(value) for key, value in result.items()}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".staging-{os.path.basename(path)}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        # Keras 2 (the federated environment) has no `verbose` argument.
        quiet = {"verbose": False} if "verbose" in inspect.signature(archive.write_out).parameters else {}
        archive.write_out(staging, **quiet)
        facts = {
            "inputs": {s.name: {"shape": s.shape.as_list(), "dtype": s.dtype.name} for s in specs},
            "signature": "serving_default",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **(metadata or {}),
        }
        os.makedirs(os.path.join(staging, "assets.extra"), exist_ok=True)
        with open(os.path.join(staging, METADATA_FILE), "w") as f:
            json.dump(facts, f, indent=2, default=str)
        if os.path.exists(path):
            old = staging + "-old"
            os.replace(path, old)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def export_classifier(
    model,
    export_dir: str,
    app: str,
    version: int | None = None,
    overwrite: bool = False,
    from_logits: bool = True,
    input_name: str = "images",
    class_names: list[str] | None = None,
    metadata: dict | None = None,
) -> str:
    """Exports a classifier: input `images` (float32 in [0, 1], the model's input shape),
    outputs `probabilities` (float32 `[batch, C]`) and `classes` (int64 `[batch]`).

    Returns the version folder written, `<export_dir>/<app>/<version>`.

    Example:
    >>> export_classifier(model, "saved_models", "supervised", version=1)  # doctest: +SKIP
    'saved_models/supervised/1'
    """
    path, version = version_dir(export_dir, app, version, overwrite)
    spec = tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)

    def outputs(**inputs):
        scores = tf.cast(model(inputs[input_name], training=False), tf.float32)  # float16 under mixed precision
        probabilities = tf.nn.softmax(scores, axis=-1) if from_logits else scores
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    facts = {"app": app, "version": version, "task": "classification",
             "outputs": {"probabilities": "float32 [batch, classes]", "classes": "int64 [batch]"},
             "class_names": class_names, **(metadata or {})}
    return export_model(model, path, {input_name: spec}, outputs, facts, overwrite)


def serving_predict(path: str, body: dict | str) -> dict:
    """Answers a TF Serving REST predict body through an export's `serving_default`.

    Accepts the row format `{"instances": [...]}` (each instance a value when the signature
    has one input, else a dict of named inputs) and the columnar format
    `{"inputs": ...}`, and answers as TF Serving does: `{"predictions": [...]}` (one entry per
    instance: a dict of named outputs, or the bare value when there is one output) or
    `{"outputs": ...}`. Use it to check a request before sending it to a server.
    """
    if isinstance(body, str):
        body = json.loads(body)
    loaded = tf.saved_model.load(path)
    signature = loaded.signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        instances = body["instances"]
        if len(specs) == 1:
            name = next(iter(specs))
            rows = [row[name] if isinstance(row, dict) else row for row in instances]
            columns = {name: rows}
        else:
            columns = {name: [row[name] for row in instances] for name in specs}
    elif "inputs" in body:
        given = body["inputs"]
        columns = given if isinstance(given, dict) else {next(iter(specs)): given}
    else:
        raise InputError('REST body: expected a JSON object with "instances" or "inputs"')
    missing = [name for name in specs if name not in columns]
    if missing:
        raise InputError(f"REST body: no input named {missing[0]!r}; the signature takes {', '.join(specs)}")
    tensors = {name: tf.constant(np.asarray(columns[name]), dtype=spec.dtype) for name, spec in specs.items()}
    result = {key: value.numpy() for key, value in signature(**tensors).items()}
    if "inputs" in body:
        outputs = {key: value.tolist() for key, value in result.items()}
        return {"outputs": outputs if len(outputs) > 1 else next(iter(outputs.values()))}
    count = len(next(iter(result.values())))
    if len(result) == 1:
        return {"predictions": next(iter(result.values())).tolist()}
    return {"predictions": [{key: value[i].tolist() for key, value in result.items()} for i in range(count)]}
