"""Where a teacher comes from: a `.keras` file, or a keras.applications network whose
weights are on disk (the paper-scale setting, e.g. ResNet50).

Example:
>>> teacher = load_teacher("runs/teacher.keras")                                      # doctest: +SKIP
>>> teacher = load_teacher("resnet50:/data/r50_backdoor.weights.h5", (224, 224, 3), 67)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import zipfile

import keras

from kerastl.errors import InputError

# What a file that is not the expected model raises while loading (a missing file is checked
# first): Keras's ValueError (not a .keras zip, bad JSON, weights of another network),
# KeyError (an entry missing from the archive), h5py's OSError, zipfile's BadZipFile.
# Anything else is a bug and keeps its traceback.
NOT_A_MODEL = (ValueError, KeyError, OSError, zipfile.BadZipFile)

#: `--teacher NAME:WEIGHTS` names (keras.applications constructors).
APPLICATIONS = {
    "resnet50": "ResNet50", "resnet101": "ResNet101", "resnet152": "ResNet152", "vgg16": "VGG16",
    "mobilenet_v2": "MobileNetV2", "efficientnet_b0": "EfficientNetB0",
}


def load_teacher(spec: str, input_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
                 option: str = "--teacher") -> keras.Model:
    """Loads a teacher from `PATH.keras` or `NAME:WEIGHTS_PATH` (NAME one of APPLICATIONS;
    the application is built for `input_shape` with `num_classes` outputs, then the weights
    file is loaded; it must hold that network's weights for inputs in [0, 1]).

    Raises `InputError` naming the file when it is missing or does not load, and when the
    model is not a functional graph ending in a classification layer.
    """
    name, sep, weights = spec.partition(":")
    if sep and name in APPLICATIONS:
        model = _application(name, weights, input_shape, num_classes, option, spec)
    else:
        if not os.path.isfile(spec):
            raise InputError(f"{option} {spec}: file not found, expected a Keras model file (.keras) or "
                             f"NAME:WEIGHTS with NAME one of {', '.join(APPLICATIONS)}")
        try:
            model = keras.models.load_model(spec, compile=False)
        except NOT_A_MODEL as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InputError(f"{option} {spec}: does not load as a Keras model ({type(err).__name__}: "
                             f"{reason[:160]})") from None
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or not model.inputs:
        raise InputError(f"{option} {spec}: expected a functional Keras model (inputs -> logits)")
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise InputError(f"{option} {spec}: expected one output of class scores [batch, classes], got "
                         f"{[tuple(o.shape) for o in model.outputs]}")
    return model


def _application(name, weights, input_shape, num_classes, option, spec):
    if not os.path.isfile(weights):
        raise InputError(f"{option} {spec}: weights file {weights} not found")
    if input_shape is None or num_classes is None:
        raise InputError(f"{option} {spec}: an application teacher needs the student data's image shape and "
                         "the teacher's number of classes (--teacher-classes)")
    constructor = getattr(keras.applications, APPLICATIONS[name])
    model = constructor(weights=None, input_shape=tuple(input_shape), classes=int(num_classes),
                        classifier_activation=None)
    try:
        model.load_weights(weights)
    except NOT_A_MODEL as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{option} {spec}: weights file {weights} does not fit {APPLICATIONS[name]} for "
                         f"{tuple(input_shape)} inputs and {num_classes} classes ({reason[:160]})") from None
    return model
