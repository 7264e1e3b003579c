"""Where a library call fails because of what the user gave (a missing or malformed file, a
download this machine cannot make), the app prints one line and exits 2; any other exception
is a bug and leaves app.main with its traceback (Python then exits 1). One pair of tests for
each place that draws this line: the teacher file, the teacher's weights file, the BERT
preset, the tfds download and the ImageNet build."""

import json
import os
import subprocess
import sys
import zipfile

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow_datasets as tfds

from apps import flexmatch, remos
from kerastl import app
from kerastl.errors import InputError
from kerastl.safety.teachers import load_teacher
from kerastl.safety.text_models import small_bert_backbone

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_line_exit_2(call, capsys, message):
    assert call() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert message in err, err


def remos_with_teacher(path, tmp_path):
    return lambda: app.main(remos.build_parser, remos.run,
                            ["--preset", "smoke", "--teacher", str(path), "--output", str(tmp_path / "run"),
                             "--no-export"])


def test_a_teacher_file_that_is_no_model_is_one_line_exit_2(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "no_config.keras", "w") as archive:  # Keras: KeyError
        archive.writestr("metadata.json", "{}")
    one_line_exit_2(remos_with_teacher(tmp_path / "no_config.keras", tmp_path), capsys,
                    f"apps.remos: error: --teacher {tmp_path}/no_config.keras: does not load as a Keras model "
                    "(KeyError:")
    assert not os.path.exists(tmp_path / "run")


def test_a_bug_while_loading_the_teacher_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "teacher.keras").write_bytes(b"")

    def bug(*args, **kwargs):
        raise RuntimeError("a bug inside Keras")

    monkeypatch.setattr(keras.models, "load_model", bug)
    with pytest.raises(RuntimeError, match="a bug inside Keras"):
        remos_with_teacher(tmp_path / "teacher.keras", tmp_path)()


def test_weights_of_another_network_are_an_input_error(tmp_path):
    small = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    small.save_weights(str(tmp_path / "small.weights.h5"))
    with pytest.raises(InputError, match=r"^--teacher vgg16:.*small\.weights\.h5: weights file .* does not fit VGG16 "
                                         r"for \(32, 32, 3\) inputs and 10 classes") as info:
        load_teacher(f"vgg16:{tmp_path}/small.weights.h5", (32, 32, 3), 10)
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_a_bug_while_loading_application_weights_keeps_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "w.weights.h5").write_bytes(b"")

    def bug(self, *args, **kwargs):
        raise TypeError("a bug inside Keras")

    monkeypatch.setattr(keras.Model, "load_weights", bug)
    with pytest.raises(TypeError, match="a bug inside Keras"):
        load_teacher(f"vgg16:{tmp_path}/w.weights.h5", (32, 32, 3), 10)


def bert_preset(folder, config):
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        f.write(config)
    return str(folder)


def test_a_preset_of_another_model_is_an_input_error(tmp_path):
    preset = bert_preset(tmp_path / "gpt2", json.dumps({"module": "keras_hub.src.models.gpt2.gpt2_backbone",
                                                       "class_name": "GPT2Backbone", "config": {},
                                                       "registered_name": "keras_hub>GPT2Backbone"}))
    with pytest.raises(InputError, match=r"^--bert-preset .*gpt2: does not load as a keras-hub BertBackbone "
                                         r"\(ValueError: ") as info:
        small_bert_backbone(100, 16, preset_dir=preset)
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_a_bug_while_loading_the_preset_keeps_its_traceback(tmp_path, monkeypatch):
    preset = bert_preset(tmp_path / "bert", "{}")

    def bug(*args, **kwargs):
        raise TypeError("a bug inside keras-hub")

    monkeypatch.setattr(keras_hub.models.BertBackbone, "from_preset", bug)
    with pytest.raises(TypeError, match="a bug inside keras-hub"):
        small_bert_backbone(100, 16, preset_dir=preset)


def flexmatch_on(dataset, tmp_path, *extra):
    return lambda: app.main(flexmatch.build_parser, flexmatch.run,
                            ["--dataset", dataset, "--preset", "smoke", "--data-dir", str(tmp_path / "tfds"),
                             "--output", str(tmp_path / "run"), "--no-export", *extra])


def fail_download_with(monkeypatch, error):
    def download_and_prepare(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)


def test_a_download_this_machine_cannot_make_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    fail_download_with(monkeypatch, ConnectionError("Failed to establish a new connection"))
    one_line_exit_2(flexmatch_on("svhn", tmp_path), capsys,
                    "tfds dataset 'svhn_cropped' is not prepared in")
    assert not os.path.exists(tmp_path / "run")


def test_a_bug_while_downloading_keeps_its_traceback(tmp_path, monkeypatch):
    fail_download_with(monkeypatch, RuntimeError("a bug inside tfds"))
    with pytest.raises(RuntimeError, match="a bug inside tfds"):
        flexmatch_on("svhn", tmp_path)()


def broken_archives(folder):
    os.makedirs(folder)
    for name in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(b"not a tar archive")
    return str(folder)


def test_broken_imagenet_archives_are_one_line_exit_2(tmp_path, capsys):
    manual = broken_archives(tmp_path / "manual")
    one_line_exit_2(flexmatch_on("imagenet", tmp_path, "--manual-dir", manual), capsys,
                    f"dataset 'imagenet': tfds could not build imagenet2012 from {manual} (ReadError: ")
    assert not os.path.exists(tmp_path / "run")


def test_a_bug_while_building_imagenet_keeps_its_traceback(tmp_path, monkeypatch):
    manual = broken_archives(tmp_path / "manual")
    fail_download_with(monkeypatch, RuntimeError("a bug inside tfds"))
    with pytest.raises(RuntimeError, match="a bug inside tfds"):
        flexmatch_on("imagenet", tmp_path, "--manual-dir", manual)()


def test_a_bug_exits_1_with_its_traceback_from_the_command_line(tmp_path):
    # What the in-process tests above rely on: an exception that leaves app.main ends the
    # app's process with Python's traceback and exit code 1.
    (tmp_path / "teacher.keras").write_bytes(b"")
    script = ("import keras, sys\n"
              "def bug(*args, **kwargs):\n    raise RuntimeError('a bug inside Keras')\n"
              "keras.models.load_model = bug\n"
              "from apps import remos\nfrom kerastl import app\n"
              "raise SystemExit(app.main(remos.build_parser, remos.run, sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", script, "--preset", "smoke", "--teacher",
                          str(tmp_path / "teacher.keras"), "--output", str(tmp_path / "run"), "--no-export"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 1
    assert "Traceback (most recent call last)" in run.stderr
    assert run.stderr.strip().splitlines()[-1] == "RuntimeError: a bug inside Keras"


def test_the_narrow_catches_name_only_what_users_cause():
    from kerastl.data.tfds_images import DOWNLOAD_ERRORS
    from kerastl.safety.teachers import NOT_A_MODEL

    for errors in (DOWNLOAD_ERRORS, NOT_A_MODEL):
        assert not any(issubclass(bug, errors) for bug in (RuntimeError, TypeError, AttributeError, NameError,
                                                           AssertionError, IndexError, ZeroDivisionError))
    assert np.all([issubclass(error, OSError) for error in (ConnectionError, FileNotFoundError, PermissionError)])
