"""benchmarks/flexmatch_accuracy.py keeps the runs of its results file that today's code made
with the same options, so parts run on different machines add up to one table."""

import threading
import time

import flexmatch_accuracy
import provenance


def entry(error, made_by=None):
    run = {"test_error_final": error, "test_error_best": error - 0.5, "iterations": 1000, "val_accuracy": [0.9, 0.95]}
    return {**run, "made_by": made_by} if made_by else run


def test_earlier_runs_are_kept_only_when_made_with_the_same_options_by_todays_code(repo, monkeypatch):
    repo.write("apps/flexmatch.py", "THRESHOLD = 0.95\n")
    older = repo.commit("app")
    repo.write("apps/flexmatch.py", "THRESHOLD = 0.9\n")
    today = repo.commit("app changed")
    monkeypatch.setattr(flexmatch_accuracy, "RUN_DEPENDENCIES", ["apps/flexmatch.py"])
    argv = flexmatch_accuracy.run_argv

    def made_by(commit, algorithm, seed, extra=(), dirty=False):
        return {"command": "python -m apps.flexmatch ...", "commit": commit, "dirty": dirty,
                "argv": argv(algorithm, 40, seed, list(extra))}

    previous = {
        # A file written before runs carried their origin: its provenance stands for them.
        "provenance": {"commit": today, "dirty_dependencies": [], "command": "python benchmarks/flexmatch_accuracy.py"},
        "runs": {
            "fixmatch/40/0": entry(3.0),
            "flexmatch/40/0": entry(2.0, made_by(today, "flexmatch", 0)),
            "flexmatch/40/1": entry(2.5, made_by(older, "flexmatch", 1)),                     # older app
            "flexmatch/40/2": entry(2.2, made_by(today, "flexmatch", 2, dirty=True)),          # uncommitted code
            "uda/40/0": entry(4.0, made_by(today, "uda", 0, extra=["--iterations", "500"])),  # other options
        }}
    rows = flexmatch_accuracy.earlier_runs(previous, [])
    assert sorted(rows) == [("fixmatch", 40, 0), ("flexmatch", 40, 0)]
    assert rows[("flexmatch", 40, 0)]["test_error_final"] == 2.0
    assert rows[("flexmatch", 40, 0)]["history"] == {"val_accuracy": [0.9, 0.95]}
    legacy = rows[("fixmatch", 40, 0)]["made_by"]
    assert legacy["commit"] == today and legacy["argv"] == argv("fixmatch", 40, 0, []) and not legacy["dirty"]
    # Asked for the runs with --iterations 500, only the uda run qualifies.
    assert sorted(flexmatch_accuracy.earlier_runs(previous, ["--iterations", "500"])) == [("uda", 40, 0)]


def test_locked_lets_one_holder_in_at_a_time(tmp_path):
    path, order = str(tmp_path / "results.json"), []

    def hold(name):
        with provenance.locked(path):
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert list(tmp_path.iterdir()) == []  # the lock file is not beside the results
