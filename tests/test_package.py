"""The package itself: cheap import, no tensorflow-federated in the main environment."""

import json
import subprocess
import sys


def test_import_is_fast_and_pulls_no_tff():
    script = ("import time, sys, json; t = time.perf_counter(); import kerastl, kerastl.data, kerastl.app; "
              "t1 = time.perf_counter() - t; import kerastl.export, kerastl.data.pipeline, kerastl.nets, "
              "kerastl.augment, kerastl.checkpoint; print(json.dumps({'seconds': t1, "
              "'tff': 'tensorflow_federated' in sys.modules}))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    facts = json.loads(run.stdout.strip().splitlines()[-1])
    assert facts["seconds"] < 10
    assert facts["tff"] is False


def test_top_level_import_does_not_load_tensorflow():
    run = subprocess.run([sys.executable, "-c", "import sys, kerastl, kerastl.data, kerastl.app; "
                          "print('tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr[-2000:]
