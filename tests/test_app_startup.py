"""App start-up: TensorFlow's C++ start-up logs stay off the console unless the user asks for them.

Without TF_CPP_MIN_LOG_LEVEL, importing TensorFlow here prints three `E external/local_xla/...
Unable to register cuFFT/cuDNN/cuBLAS factory` lines; a bad-input message must arrive alone.
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(ROOT, "apps", "*.py"))
              if not path.endswith("__init__.py"))

# One bad input per app that is refused after TensorFlow has been imported (a missing file,
# an out-of-range value), so the one-line check covers TF's start-up logs.
BAD_INPUTS = {
    "adafed": (lambda d: ["--dataset", f"npz:{d}/absent.npz"], "absent.npz: file not found"),
    "adarnn": (lambda d: ["--dataset", f"csv:{d}/absent.csv", "--target", "load"], "absent.csv: file not found"),
    "amsl": (lambda d: ["--dataset", f"npz:{d}/absent.npz"], "absent.npz: file not found"),
    "flexmatch": (lambda d: ["--dataset", f"npz:{d}/absent.npz"], "absent.npz: file not found"),
    "remos": (lambda d: ["--ratio", "2"], "--ratio 2.0: expected the share"),
    "simadapter": (lambda d: ["--data", f"espeak:{d}/absent"], "absent is not a folder"),
}


def run_app(name, args, tmp_path, **env_changes):
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(env_changes)
    args = args + ["--output", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")]
    return subprocess.run([sys.executable, "-m", f"apps.{name}", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)


def test_every_app_has_a_bad_input_case():
    assert sorted(BAD_INPUTS) == APPS


@pytest.mark.parametrize("name", APPS)
def test_bad_input_prints_exactly_one_line(name, tmp_path):
    make_args, message = BAD_INPUTS[name]
    run = run_app(name, make_args(str(tmp_path)), tmp_path)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"apps.{name}: error: ") and message in lines[0], run.stderr
    assert run.stdout == ""
    assert not os.path.exists(tmp_path / "run")


def test_a_users_own_log_level_is_kept(tmp_path):
    run = subprocess.run([sys.executable, "-c", "import os, kerastl.app; print(os.environ['TF_CPP_MIN_LOG_LEVEL'])"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "0"})
    assert run.stdout.strip() == "0", run.stderr
    # ... and the app then shows TensorFlow's own start-up lines before its error line.
    make_args, message = BAD_INPUTS["flexmatch"]
    run = run_app("flexmatch", make_args(str(tmp_path)), tmp_path, TF_CPP_MIN_LOG_LEVEL="0")
    lines = run.stderr.splitlines()
    assert run.returncode == 2 and message in lines[-1], run.stderr
    assert any("tensorflow" in line or "xla" in line for line in lines[:-1]), run.stderr
