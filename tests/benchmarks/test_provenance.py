"""benchmarks/provenance.py and benchmarks/stats.py: dependencies from imports, reuse only on
the same code, and seed statistics on hand-computed values."""

import json
import os

import pytest

import provenance
import stats


def small_project(repo):
    """kerastl with a used and an unused module, an app, and a benchmark that imports a
    sibling and runs the app in a subprocess."""
    repo.write("kerastl/__init__.py", "from kerastl.errors import InputError\n")
    repo.write("kerastl/errors.py", "class InputError(ValueError):\n    pass\n")
    repo.write("kerastl/data/__init__.py", "")
    repo.write("kerastl/data/loader.py", "from . import formats\n\ndef load():\n    from ..nets import cnn\n")
    repo.write("kerastl/data/formats.py", "import numpy\n")
    repo.write("kerastl/nets/__init__.py", "")
    repo.write("kerastl/nets/cnn.py", "")
    repo.write("kerastl/unused.py", "")
    repo.write("apps/__init__.py", "")
    repo.write("apps/demo.py", "from kerastl.data import loader\n")
    repo.write("benchmarks/helper.py", "import json\n")
    repo.write("benchmarks/bench.py", 'import helper\nimport provenance\nDEPENDS_ON = ("apps.demo",)\n')
    repo.write("README.md", "words\n")
    return repo.commit("project")


def test_dependencies_follow_imports_transitively(repo):
    small_project(repo)
    assert provenance.dependency_paths("benchmarks/bench.py") == [
        "apps/__init__.py", "apps/demo.py", "benchmarks/bench.py", "benchmarks/helper.py", "kerastl/__init__.py",
        "kerastl/data/__init__.py", "kerastl/data/formats.py", "kerastl/data/loader.py", "kerastl/errors.py",
        "kerastl/nets/__init__.py", "kerastl/nets/cnn.py"]


def test_every_benchmark_depends_on_its_app():
    for script, app in [("adafed_benchmark.py", "apps/adafed.py"), ("adarnn_benchmark.py", "apps/adarnn.py"),
                        ("adarnn_har_benchmark.py", "apps/adarnn.py"), ("amsl_benchmark.py", "apps/amsl.py"),
                        ("flexmatch_accuracy.py", "apps/flexmatch.py"), ("flexmatch_speed.py", "apps/flexmatch.py"),
                        ("remos_benchmark.py", "apps/remos.py"), ("simadapter_benchmark.py", "apps/simadapter.py")]:
        paths = provenance.dependency_paths(os.path.join(provenance.ROOT, "benchmarks", script))
        assert {f"benchmarks/{script}", app, "kerastl/__init__.py"} <= set(paths), script
        assert "benchmarks/provenance.py" not in paths


def test_record_says_which_code_and_where(repo):
    small_project(repo)
    repo.write("kerastl/nets/cnn.py", "x = 1\n")  # uncommitted
    record = provenance.finish(provenance.start(provenance.dependency_paths("benchmarks/bench.py"), "python x.py"))
    assert record["commit"] == repo.git("rev-parse", "HEAD")
    assert record["dirty"] and record["dirty_paths"] == ["kerastl/nets/cnn.py"]
    assert record["dirty_dependencies"] == ["kerastl/nets/cnn.py"]
    assert record["versions"]["python"].count(".") == 2 and record["versions"]["numpy"]
    assert record["machine"]["cores"] >= 1 and record["machine"]["memory_gb"] > 0
    with open("/proc/cpuinfo") as f:
        flags = set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())
    assert record["machine"]["cpu_vector_flags"] == [flag for flag in provenance.VECTOR_FLAGS if flag in flags]
    assert record["wall_seconds"] >= 0 and record["command"] == "python x.py" and record["date"].endswith("+00:00")


def test_reused_only_on_the_same_code(repo):
    small_project(repo)
    paths = provenance.dependency_paths("benchmarks/bench.py")
    record = provenance.finish(provenance.start(paths))
    assert provenance.reusable(record, paths)[0]
    repo.write("README.md", "other words\n")
    repo.commit("docs only")
    assert provenance.reusable(record, paths)[0], "a file outside the dependencies changed"
    repo.write("kerastl/data/formats.py", '"""Formats."""\nimport numpy  # the arrays\n')
    assert provenance.reusable(record, paths)[0], "only a docstring and a comment changed (uncommitted)"
    repo.commit("formats documented")
    assert provenance.reusable(record, paths)[0], "only a docstring and a comment changed (committed)"
    repo.write("kerastl/data/formats.py", "import numpy as np\n")
    ok, why = provenance.reusable(record, paths)
    assert not ok and "kerastl/data/formats.py" in why, "an uncommitted change to a dependency"
    repo.commit("formats")
    assert not provenance.reusable(record, paths)[0], "a committed change to a dependency"
    assert provenance.reusable(provenance.finish(provenance.start(paths)), paths)[0]
    assert provenance.reusable(None, paths) == (False, "no provenance")
    assert not provenance.reusable({**record, "wall_seconds": None}, paths)[0], "an unfinished run"
    dirty = provenance.finish(provenance.start(paths))
    dirty["dirty_dependencies"] = ["kerastl/nets/cnn.py"]
    assert not provenance.reusable(dirty, paths)[0], "made from uncommitted code"
    repo.write("kerastl/nets/new.py", "")
    assert not provenance.reusable(record, paths + ["kerastl/nets/new.py"])[0], "an untracked dependency"


def test_app_run_reuses_reruns_and_resumes(repo):
    small_project(repo)
    paths = provenance.dependency_paths("benchmarks/bench.py")
    calls = []

    def fake_app(argv):  # writes metrics.json into --output, as the apps do
        calls.append(argv)
        folder = argv[argv.index("--output") + 1]
        with open(os.path.join(folder, "metrics.json"), "w") as f:
            json.dump({"acc": len(calls)}, f)
        return 0

    folder = os.path.join(repo.root, "runs", "a")
    run = lambda argv, **kw: provenance.app_run(folder, "apps.demo", argv, paths, main=fake_app, **kw)  # noqa: E731
    assert run(["--seed", "0"]) == {"acc": 1} and calls[-1][-1] == "--overwrite"
    assert provenance.read(folder)["command"] == "python -m apps.demo --seed 0 --output runs/a"
    assert run(["--seed", "0"]) == {"acc": 1}, "same command, same code: reused"
    assert run(["--seed", "1"]) == {"acc": 2}, "another command: re-run"
    assert run(["--seed", "1"], reuse=False) == {"acc": 3}, "--no-reuse"
    assert run(["--seed", "1"], finished=lambda m: "loss" in m) == {"acc": 4}, "not a finished run"
    repo.write("kerastl/nets/cnn.py", "y = 2\n")
    repo.commit("cnn")
    assert run(["--seed", "1"]) == {"acc": 5}, "the code changed: re-run"
    os.makedirs(os.path.join(folder, "checkpoints"))
    os.remove(os.path.join(folder, "metrics.json"))
    assert run(["--seed", "1"], resumable=True) == {"acc": 6} and calls[-1][-1] == "--resume"
    repo.write("kerastl/nets/cnn.py", "y = 3\n")
    repo.commit("cnn again")
    os.remove(os.path.join(folder, "metrics.json"))
    assert run(["--seed", "1"], resumable=True) == {"acc": 7} and calls[-1][-1] == "--overwrite", \
        "checkpoints of other code are not resumed"


def test_results_file_provenance_is_read(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"summary": {}, "provenance": {"commit": "abc"}}))
    assert provenance.read(str(path)) == {"commit": "abc"}
    (tmp_path / "run").mkdir()
    assert provenance.read(str(tmp_path / "run")) is None


def test_spread_is_the_sample_std():
    # values 1, 2, 4: mean 7/3, squared deviations 16/9 + 1/9 + 25/9 = 42/9, / (n - 1) = 7/3
    summary = stats.spread([1, 2, 4])
    assert summary["mean"] == pytest.approx(7 / 3) and summary["std"] == pytest.approx((7 / 3) ** 0.5)
    assert summary["values"] == [1.0, 2.0, 4.0] and stats.spread([5])["std"] is None
    assert stats.plus_minus([0.1, 0.2, 0.4], 100) == "23.33 ± 15.28" and stats.plus_minus([0.5], 100) == "50.00"


def test_beats_only_on_every_seed_or_a_paired_test():
    every = stats.compare("A", [0.9, 0.8, 0.7], "B", [0.85, 0.75, 0.65])
    assert every["verdict"] == "beats" and every["statement"] == "A beats B (better on every one of 3 seeds)"
    assert stats.compare("A", [1.0, 1.1], "B", [1.2, 1.3], higher_is_better=False)["verdict"] == "beats"
    # Differences 0.10, 0.11, 0.12, 0.13, -0.01: mean 0.09, sd sqrt(0.013 / 4) = 0.0570,
    # t = 0.09 / (0.0570 / sqrt 5) = 3.53, two-sided p with 4 degrees of freedom = 0.024 < 0.05.
    paired = stats.compare("A", [1.10, 1.11, 1.12, 1.13, 0.99], "B", [1.0, 1.0, 1.0, 1.0, 1.0])
    assert paired["verdict"] == "beats" and paired["p_value"] == pytest.approx(0.0242, abs=5e-4)
    assert "paired t-test p = 0.024 < 0.05" in paired["statement"]
    noise = stats.compare("A", [0.9, 0.7, 0.8], "B", [0.8, 0.8, 0.8])
    assert noise["verdict"] == "within noise" and "within noise" in noise["statement"] and noise["p_value"] > 0.05
    assert stats.compare("A", [0.1, 0.2], "B", [0.3, 0.4])["statement"] == "B beats A (better on every one of 2 seeds)"
    assert stats.compare("A", [0.5], "B", [0.4])["verdict"] == "one seed"
    with pytest.raises(ValueError):
        stats.compare("A", [1, 2], "B", [1])


def test_every_recorded_app_run_is_a_valid_command_and_depends_on_its_app():
    import importlib

    import app_runs

    for name, (module, argv, _) in app_runs.RUNS.items():
        application = importlib.import_module(module)
        application.build_parser().parse_args([*argv, "--no-export"])  # exits 2 on an unknown option
        paths = provenance.dependency_paths(app_runs.__file__, (module,))
        assert {"benchmarks/app_runs.py", module.replace(".", "/") + ".py", "kerastl/app.py"} <= set(paths), name
