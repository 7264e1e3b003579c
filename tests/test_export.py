"""SavedModel export: signature, fresh-process loading, saved_model_cli, REST bodies, safety."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl import InputError
from kerastl.export import export_classifier, export_model, serving_predict, version_dir


@pytest.fixture(scope="module")
def classifier():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    # Non-trivial BN statistics, so the export must carry non-trainable state too.
    bn = model.layers[2]
    bn.moving_mean.assign(np.linspace(-0.5, 0.5, 4).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2.0, 4).astype("float32"))
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (5, 6, 6, 1)).astype("float32")


def test_classifier_export_in_fresh_process_matches_keras(classifier, images, tmp_path):
    path = export_classifier(classifier, str(tmp_path), "demo", class_names=["a", "b", "c"])
    assert path == os.path.join(str(tmp_path), "demo", "1")
    np.save(tmp_path / "images.npy", images)
    script = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        f"m = tf.saved_model.load({path!r})\n"
        "out = m.signatures['serving_default'](images=tf.constant(np.load(sys.argv[1])))\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path / "images.npy")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    served = json.loads(run.stdout.strip().splitlines()[-1])
    expected = tf.nn.softmax(classifier(images, training=False)).numpy()
    np.testing.assert_allclose(served["probabilities"], expected, rtol=1e-5, atol=1e-6)
    assert served["classes"] == expected.argmax(-1).tolist()
    np.testing.assert_allclose(np.sum(served["probabilities"], axis=1), 1.0, rtol=1e-5)


def test_saved_model_cli_shows_named_signature(classifier, tmp_path):
    path = export_classifier(classifier, str(tmp_path), "demo")
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    run = subprocess.run([cli, "show", "--all", "--dir", path], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text = run.stdout
    serving = text[text.index("signature_def['serving_default']"):]
    assert "inputs['images'] tensor_info" in serving
    assert "shape: (-1, 6, 6, 1)" in serving
    assert "outputs['probabilities'] tensor_info" in serving and "shape: (-1, 3)" in serving
    assert "outputs['classes'] tensor_info" in serving and "dtype: DT_INT64" in serving
    assert "tensorflow/serving/predict" in serving


def test_metadata_and_versions(classifier, tmp_path):
    first = export_classifier(classifier, str(tmp_path), "demo", class_names=["a", "b", "c"])
    second = export_classifier(classifier, str(tmp_path), "demo")
    assert os.path.basename(first) == "1" and os.path.basename(second) == "2"
    with open(os.path.join(first, "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["inputs"] == {"images": {"shape": [None, 6, 6, 1], "dtype": "float32"}}
    assert facts["class_names"] == ["a", "b", "c"] and facts["version"] == 1
    # Only the version folders are left: no staging folders next to them.
    assert sorted(os.listdir(tmp_path / "demo")) == ["1", "2"]


def test_existing_version_is_refused_and_left_untouched(classifier, tmp_path, snapshot):
    export_classifier(classifier, str(tmp_path), "demo", version=3)
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match=r"--version 3: .* already exists; pass --overwrite"):
        export_classifier(classifier, str(tmp_path), "demo", version=3)
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_version(classifier, images, tmp_path):
    path = export_classifier(classifier, str(tmp_path), "demo", version=1)
    other = keras.models.clone_model(classifier)  # fresh random weights
    export_classifier(other, str(tmp_path), "demo", version=1, overwrite=True)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(),
                               tf.nn.softmax(other(images, training=False)).numpy(), rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(tmp_path / "demo")) == ["1"]


def test_version_dir_checks(tmp_path):
    assert version_dir(str(tmp_path / "new"), "app", None) == (str(tmp_path / "new" / "app" / "1"), 1)
    os.makedirs(tmp_path / "x" / "app" / "7")
    os.makedirs(tmp_path / "x" / "app" / "notes")
    assert version_dir(str(tmp_path / "x"), "app", None)[1] == 8
    with pytest.raises(InputError, match="positive integer"):
        version_dir(str(tmp_path), "app", 0)


def test_serving_predict_row_and_columnar_bodies(classifier, images, tmp_path):
    path = export_classifier(classifier, str(tmp_path), "demo")
    expected = tf.nn.softmax(classifier(images, training=False)).numpy()
    rows = serving_predict(path, {"instances": images.tolist()})
    assert len(rows["predictions"]) == 5
    np.testing.assert_allclose([p["probabilities"] for p in rows["predictions"]], expected, rtol=1e-5, atol=1e-6)
    assert [p["classes"] for p in rows["predictions"]] == expected.argmax(-1).tolist()
    named = serving_predict(path, json.dumps({"instances": [{"images": im} for im in images.tolist()]}))
    assert named == rows
    columns = serving_predict(path, {"inputs": {"images": images.tolist()}})
    np.testing.assert_allclose(columns["outputs"]["probabilities"], expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match='"instances" or "inputs"'):
        serving_predict(path, {"rows": []})


def test_export_model_with_two_named_inputs_and_one_output(tmp_path):
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2, use_bias=False)(keras.layers.Concatenate()([a, b])))
    kernel = np.arange(12, dtype="float32").reshape(6, 2)
    model.layers[-1].kernel.assign(kernel)
    spec = tf.TensorSpec([None, 3], tf.float32)
    path = export_model(model, str(tmp_path / "m" / "1"), {"a": spec, "b": spec},
                        lambda a, b: {"score": model([a, b])})
    body = {"instances": [{"a": [1, 0, 0], "b": [0, 0, 1]}]}
    # [1,0,0,0,0,1] @ kernel = row 0 + row 5 = [0+10, 1+11]
    assert serving_predict(path, body) == {"predictions": [[10.0, 12.0]]}
