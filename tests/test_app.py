"""Shared app conventions: presets, one-line errors, the run folder."""

import json
import os

import pytest

from kerastl import InputError, app

PRESETS = {"smoke": {"epochs": 1, "lr": 0.5}, "cpu": {"epochs": 20, "lr": 0.1}, "paper": {"epochs": 200, "lr": 0.03}}


def build_parser():
    parser = app.make_parser("apps.toy", "A toy app.", PRESETS)
    app.add_preset_option(parser, "--epochs", type=int, help="training epochs")
    app.add_preset_option(parser, "--lr", type=float, help="learning rate")
    return parser


def test_preset_values_fill_options_and_command_line_wins():
    args = build_parser().parse_args(["--preset", "paper"])
    assert (args.epochs, args.lr) == (200, 0.03)
    args = build_parser().parse_args(["--preset", "smoke", "--epochs", "7"])
    assert (args.epochs, args.lr) == (7, 0.5)
    args = build_parser().parse_args([])
    assert (args.preset, args.epochs, args.seed, args.export_dir) == ("cpu", 20, 0, "saved_models")


def test_help_lists_preset_values_and_shared_options(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--help"])
    assert stop.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "training epochs (preset values: smoke 1, cpu 20, paper 200)" in text
    for flag in ("--preset", "--output", "--resume", "--export-dir", "--version", "--overwrite", "--seed", "--data-dir"):
        assert flag in text


def test_bad_option_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["--preset", "huge"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("apps.toy: error: argument --preset: invalid choice: 'huge'")


def test_main_turns_input_error_into_one_line_and_exit_2(capsys, tmp_path):
    def run(args):
        raise InputError(f"{args.output}/x.npz: file not found, expected an .npz file")

    code = app.main(build_parser, run, ["--output", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert err == f"apps.toy: error: {tmp_path}/out/x.npz: file not found, expected an .npz file\n"


def test_main_default_output_names_app_and_preset():
    seen = {}
    assert app.main(build_parser, lambda args: seen.update(output=args.output), ["--preset", "smoke"]) == 0
    assert seen["output"] == os.path.join("runs", "toy-smoke")


def test_run_folder_layout_and_atomic_metrics(tmp_path):
    folder = app.RunFolder(str(tmp_path / "run"))
    assert not os.path.exists(folder.path)
    folder.create()
    assert sorted(os.listdir(folder.path)) == ["checkpoints", "plots", "tensorboard"]
    folder.write_metrics({"accuracy": 0.5, "curve": __import__("numpy").array([1, 2])})
    with open(folder.metrics_path) as f:
        assert json.load(f) == {"accuracy": 0.5, "curve": [1, 2]}
    assert folder.read_metrics()["accuracy"] == 0.5
    assert not os.path.exists(folder.metrics_path + ".tmp")


def test_existing_run_is_refused_without_resume_or_overwrite(tmp_path, snapshot):
    folder = app.RunFolder(str(tmp_path / "run")).create()
    folder.write_metrics({"accuracy": 0.9})
    (tmp_path / "run" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(InputError, match="already holds a run; pass --resume to continue it, --overwrite"):
        app.RunFolder(str(tmp_path / "run"))
    assert snapshot(tmp_path) == before
    app.RunFolder(str(tmp_path / "run"), resume=True).create()
    assert snapshot(tmp_path) == before
    app.RunFolder(str(tmp_path / "run"), overwrite=True).create()
    assert not os.path.exists(tmp_path / "run" / "metrics.json")
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"  # not ours: kept


def test_resume_without_checkpoints_and_unwritable_output(tmp_path):
    with pytest.raises(InputError, match="--resume: .* holds no checkpoints/"):
        app.RunFolder(str(tmp_path / "nothing"), resume=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file, expected a folder"):
        app.RunFolder(str(tmp_path / "file"))
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: use a path under a file instead
            target = str(tmp_path / "file" / "run")
        else:
            target = str(locked / "run")
        with pytest.raises(InputError, match="--output"):
            app.RunFolder(target)
    finally:
        locked.chmod(0o700)


def test_presets_must_be_complete():
    with pytest.raises(ValueError, match="paper"):
        app.make_parser("apps.toy", None, {"smoke": {}, "cpu": {}})
