"""The shared test of a kerastl Keras object: build, call, serialise, reload, call again.

`run_layer_test` is for layers and models, `run_object_test` for the other serialisable
objects (losses, learning-rate schedules, optimizers, callbacks). Each asserts what every
registered class promises (docs: "Every custom layer and model is a Keras object"):

- the object is built from its constructor arguments and called on example inputs;
- `get_config` -> JSON -> `from_config` gives an object of the same class and config that,
  given the same weights, computes the same outputs;
- inside a small model (a layer) or on its own (a model), a `.keras` save / load round trip
  keeps the class, the config, every variable (trainable or state) and the outputs;
- the number of trainable weights is the expected one, before and after reloading;
- one `model.fit` step gives a finite loss and finite weights, and changes them.

Weights are shifted by small random amounts before anything is compared, so zero-initialised
parts (an adapter's up-projection, a discriminator's last layer) are exercised too.

Example:
>>> run_layer_test(Adapter, {"bottleneck_dim": 4}, (np.ones((2, 3, 8), "float32"),), tmp_path,
...                trainable_weights=4)                                             # doctest: +SKIP
"""

from __future__ import annotations

import json
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf


def run_layer_test(cls, init_kwargs: dict | Callable[[], dict], inputs: tuple, tmp_path, *,
                   call_kwargs: dict | None = None, trainable_weights: int | None = None,
                   train: bool = True, fit_data: Any = None, compile_kwargs: dict | None = None,
                   host: Callable | None = None, after_reload: Callable | None = None,
                   atol: float = 1e-6, seed: int = 0):
    """Runs the shared checks on `cls(**init_kwargs)` called as `obj(*inputs, **call_kwargs)`.

    Args:
        cls: the class under test.
        init_kwargs: constructor arguments, or a function returning them (for arguments that
            are themselves Keras objects, built fresh for every object).
        inputs: positional call arguments (arrays, or structures of arrays).
        tmp_path: where the `.keras` file goes.
        call_kwargs: keyword call arguments.
        trainable_weights: the expected number of trainable weights (None: not checked).
        train: run one `fit` step (False for objects with nothing to train).
        fit_data: a model's training data for one `fit` step (a `tf.data.Dataset` or an
            `(x, y)` tuple); a layer trains inside a small model on a function of its
            outputs plus its own losses.
        compile_kwargs: a model's `compile` arguments (default: SGD).
        host: for an object that only runs inside a model (an SSL algorithm): a function
            `obj -> (model, find)` where `find(model)` is the object inside `model`; the model
            is what gets called, trained, saved and reloaded.
        after_reload: `after_reload(original, reloaded)` for checks of the class's own (e.g.
            layers shared between sub-models stay shared).
    """
    keras.utils.set_random_seed(seed)
    call_kwargs = call_kwargs or {}
    make = lambda: cls(**(init_kwargs() if callable(init_kwargs) else dict(init_kwargs)))
    obj = make()
    find = lambda subject: subject
    subject = obj
    if host is not None:
        subject, find = host(obj)
    call = lambda layer: layer(*inputs, **call_kwargs)
    call(subject)
    if trainable_weights is not None:
        assert len(find(subject).trainable_weights) == trainable_weights, [
            w.path for w in find(subject).trainable_weights]
    _shift_weights(subject, np.random.default_rng(seed))

    # get_config -> JSON -> from_config, then the same outputs from the same weights.
    config = subject.get_config()
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(subject)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(subject) and type(find(revived)) is cls
    assert _plain(revived.get_config()) == _plain(config)
    call(revived)
    revived.set_weights(subject.get_weights())
    assert_same(call(revived), call(subject), atol)

    if train:
        _train_one_step(subject, inputs, call_kwargs, fit_data, compile_kwargs)

    # The .keras round trip: a model is saved as it is, a layer inside a small model.
    is_model = isinstance(subject, keras.Model)
    saved = subject if is_model else _wrap(subject, inputs, call_kwargs)
    path = str(tmp_path / f"{cls.__name__}.keras")
    saved.save(path)
    loaded = keras.saving.load_model(path)
    reloaded = loaded if is_model else loaded.get_layer(subject.name)
    assert type(reloaded) is type(subject) and type(find(reloaded)) is cls
    assert _plain(reloaded.get_config()) == _plain(subject.get_config())
    assert_same_weights(reloaded, subject)
    assert len(find(reloaded).trainable_weights) == len(find(subject).trainable_weights)
    assert_same(call(reloaded), call(subject), atol)
    if after_reload is not None:
        after_reload(subject, reloaded)
    return subject, reloaded


def run_object_test(cls, init_kwargs: dict, probe: Callable[[Any], Any], tmp_path, *,
                    compiled_as: str | None = None, atol: float = 1e-6):
    """The shared checks for a serialisable object that is not a layer.

    `probe(obj)` returns what the object computes on fixed inputs (a loss value, a learning
    rate, the variables after an optimizer step, a model after a callback ran): the clone
    from `get_config` -> JSON -> `from_config` must compute the same. With `compiled_as`
    ("loss", "optimizer" or "learning_rate") the object also goes through a `.keras` file as
    part of a compiled model, and the object loaded back must compute the same.
    """
    obj = cls(**init_kwargs)
    expected = probe(obj)
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is cls and _plain(revived.get_config()) == _plain(obj.get_config())
    assert_same(probe(revived), expected, atol)
    if compiled_as is None:
        return
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    obj = cls(**init_kwargs)  # fresh: an optimizer serves the variables it was built with only
    compile_kwargs = {"loss": obj} if compiled_as == "loss" else {
        "optimizer": obj if compiled_as == "optimizer" else keras.optimizers.SGD(learning_rate=obj), "loss": "mse"}
    model.compile(**compile_kwargs)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")
    model.fit(x, x, epochs=1, verbose=0)
    path = str(tmp_path / f"{cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    if compiled_as == "loss":
        reloaded = loaded.loss
    elif compiled_as == "optimizer":
        reloaded = loaded.optimizer
    else:  # the schedule as the loaded optimizer holds it, and the rate it gives now
        reloaded = keras.saving.deserialize_keras_object(loaded.optimizer.get_config()["learning_rate"])
        np.testing.assert_allclose(float(loaded.optimizer.learning_rate),
                                   float(obj(loaded.optimizer.iterations)), rtol=1e-6)
    assert type(reloaded) is cls and _plain(reloaded.get_config()) == _plain(obj.get_config())
    if compiled_as == "optimizer":  # (an optimizer serves the variables it was built with only)
        assert_same([v.numpy() for v in loaded.optimizer.variables], [v.numpy() for v in model.optimizer.variables],
                    atol)
    else:
        assert_same(probe(reloaded), expected, atol)


def assert_same(actual, expected, atol: float = 1e-6):
    """Equal structures; floats within `atol` (relative 1e-5), everything else exactly equal."""
    actual, expected = _numpy(actual), _numpy(expected)
    assert tf.nest.map_structure(lambda _: 0, actual) == tf.nest.map_structure(lambda _: 0, expected)
    for a, b in zip(tf.nest.flatten(actual), tf.nest.flatten(expected)):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        if np.issubdtype(a.dtype, np.floating):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=atol)
        else:
            np.testing.assert_array_equal(a, b)


def assert_same_weights(actual, expected):
    """Every variable of `actual` equals the one at the same place in `expected`."""
    ours, theirs = _variables(actual), _variables(expected)
    assert [tuple(v.shape) for v in ours] == [tuple(v.shape) for v in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(a.numpy()), np.asarray(b.numpy()), err_msg=b.path)


def _variables(obj):
    seen, variables = set(), []
    for variable in obj.weights:
        if id(variable) not in seen:
            seen.add(id(variable))
            variables.append(variable)
    return variables


def _shift_weights(obj, rng):
    # Upwards only: a shifted variance stays positive.
    for variable in _variables(obj):
        if np.issubdtype(np.dtype(variable.dtype), np.floating):
            variable.assign(variable.numpy() + rng.uniform(0.0, 0.1, variable.shape).astype(variable.dtype))


def _numpy(value):
    return tf.nest.map_structure(lambda x: x.numpy() if hasattr(x, "numpy") else np.asarray(x), value)


def _plain(config):
    """A config as JSON would give it back (tuples as lists)."""
    return json.loads(json.dumps(config, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def _wrap(layer, inputs, call_kwargs):
    """A functional model around `layer`, with inputs shaped like the examples (any batch)."""
    symbolic = tf.nest.map_structure(_input_like, inputs)
    kwargs = tf.nest.map_structure(lambda x: _input_like(x) if isinstance(x, np.ndarray) else x, call_kwargs)
    outputs = layer(*symbolic, **kwargs)
    arrays = [x for x in tf.nest.flatten((symbolic, kwargs)) if isinstance(x, keras.KerasTensor)]
    return keras.Model(arrays, outputs)


def _input_like(example):
    array = np.asarray(example)
    dtype = "string" if array.dtype.kind in "USO" else array.dtype.name
    return keras.Input(array.shape[1:], dtype=dtype)


class _OneStep(keras.Model):
    """Trains a layer on `mean(y + y^2)` of its float outputs `y` plus the losses it adds (the
    linear term keeps a gradient where an output is 0, e.g. a distance at its floor)."""

    def __init__(self, layer, call_kwargs):
        super().__init__(name="one_step_trainer")
        self.layer = layer
        self.call_kwargs = call_kwargs

    def call(self, inputs, training=None):
        return self.layer(*inputs, training=training, **self.call_kwargs)

    def train_step(self, data):
        with tf.GradientTape() as tape:
            outputs = self(data, training=True)
            floats = [tf.reduce_mean(x + tf.square(x)) for x in tf.nest.flatten(outputs) if x.dtype.is_floating]
            loss = tf.add_n(floats + [tf.cast(x, tf.float32) for x in self.losses])
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        return {"loss": loss}


def _tuples(value):
    if isinstance(value, (list, tuple)):
        return tuple(_tuples(x) for x in value)
    if isinstance(value, dict):
        return {key: _tuples(x) for key, x in value.items()}
    return value


def _train_one_step(subject, inputs, call_kwargs, fit_data, compile_kwargs):
    before = [v.numpy().copy() for v in subject.trainable_variables]
    assert before, f"{type(subject).__name__} has no trainable weights: pass train=False"
    if isinstance(subject, keras.Model):
        subject.compile(**(compile_kwargs or {"optimizer": keras.optimizers.SGD(0.1)}))
        data = fit_data
        trainer = subject
    else:
        trainer = _OneStep(subject, call_kwargs)
        trainer.compile(optimizer=keras.optimizers.SGD(0.1))
        data = tf.data.Dataset.from_tensors(_tuples(tuple(inputs)))  # tf.data would stack a list
    if isinstance(data, tuple):
        history = trainer.fit(*data, epochs=1, verbose=0)
    else:
        history = trainer.fit(data, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"]).all(), history.history
    after = [v.numpy() for v in subject.trainable_variables]
    assert all(np.isfinite(value).all() for value in after)
    # Not every weight need move in one step (a bias before batch norm, an attention key's
    # bias get no gradient), but training must reach the weights.
    assert any(not np.array_equal(old, new) for old, new in zip(before, after)), "one fit step changed no weight"
