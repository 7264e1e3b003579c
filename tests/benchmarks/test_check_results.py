"""benchmarks/check_results.py: passes on a consistent tree, fails on each kind of doctoring,
and passes on this repository's committed results and docs."""

import json
import os
import subprocess
import sys

import pytest

import check_results
import provenance

ROW = ("| FedAP vs FedAvg, watch, 3 seeds: accuracy % | FedAP 87.51 ± 1.45, FedAvg 83.88 ± 1.10 ({statement}) | "
       "`bench.json: summary/*/mean, summary/*/std, comparison/statement` | `python benchmarks/bench.py` |")
STATEMENT = "FedAP beats FedAvg (better on every one of 3 seeds)"


def consistent_tree(repo):
    """A benchmark, the code it imports, its results file with provenance, and a docs row
    citing the file, all committed."""
    repo.write("kerastl/__init__.py", "")
    repo.write("kerastl/model.py", "WIDTH = 16\n")
    repo.write("benchmarks/bench.py", "from kerastl import model\n")
    repo.write("README.md", "# project\n\n| feature | status |\n|---|---|\n| FedAP | 12 tests |\n")
    repo.commit("code")
    record = provenance.finish(provenance.start(provenance.dependency_paths("benchmarks/bench.py")))
    results = {"summary": {"fedap": {"mean": 0.87514, "std": 0.01452, "values": [0.88, 0.87, 0.875]},
                           "fedavg": {"mean": 0.8388, "std": 0.011, "values": [0.84, 0.83, 0.85]}},
               "comparison": {"statement": STATEMENT}, "provenance": provenance.public(record)}
    write_results(repo, results)
    repo.write("docs/results.md", "# Results\n\n| what | result | source | command |\n|---|---|---|---|\n"
               + ROW.format(statement=STATEMENT) + "\n")
    repo.commit("results")
    return results


def write_results(repo, results, name="bench.json"):
    repo.write(f"benchmarks/results/{name}", json.dumps(results, indent=1))


def problems():
    return check_results.check()


def test_consistent_tree_passes(repo):
    consistent_tree(repo)
    repo.write("benchmarks/results/stale/old.json", json.dumps({"summary": {"x": 1.0}}))  # not checked
    repo.write("benchmarks/results/bench.md", "| a | b |\n")
    repo.write("README.md", "words\n")  # unrelated to the benchmark's code
    repo.commit("more")
    assert problems() == []


def test_a_number_changed_in_the_file_but_not_the_docs_fails(repo):
    results = consistent_tree(repo)
    results["summary"]["fedap"]["mean"] = 0.8761
    write_results(repo, results)
    assert problems() == ["docs/results.md:5: 87.51 has no results-file key behind it"]


def test_a_results_file_without_provenance_fails(repo):
    results = consistent_tree(repo)
    del results["provenance"]
    write_results(repo, results)
    assert len(problems()) == 1 and "benchmarks/results/bench.json: no provenance" in problems()[0]


def test_a_dependency_changed_after_the_results_commit_fails(repo):
    consistent_tree(repo)
    repo.write("kerastl/model.py", "WIDTH = 32\n")
    repo.commit("wider")
    (found,) = problems()
    assert found.startswith("benchmarks/results/bench.json: the code it depends on changed since")
    assert "kerastl/model.py" in found


def test_a_new_import_since_the_results_commit_fails(repo):
    consistent_tree(repo)
    repo.write("kerastl/extra.py", "")
    repo.write("benchmarks/bench.py", "from kerastl import model, extra\n")
    repo.commit("extra")
    (found,) = problems()
    assert "benchmarks/bench.py" in found and "kerastl/extra.py" in found


def test_unfinished_or_dirty_runs_fail(repo):
    results = consistent_tree(repo)
    write_results(repo, {**results, "provenance": {**results["provenance"], "wall_seconds": None,
                                                   "dirty_dependencies": ["kerastl/model.py"]}})
    assert sorted(problems()) == [
        "benchmarks/results/bench.json: its run did not finish (the provenance has no wall time)",
        "benchmarks/results/bench.json: made from uncommitted changes to kerastl/model.py"]


@pytest.mark.parametrize("row, message", [
    (ROW.format(statement=STATEMENT).replace("83.88", "83.90"), "83.90 has no results-file key behind it"),
    (ROW.format(statement=STATEMENT).replace("summary/*/std, ", ""), "1.45 has no results-file key behind it"),
    (ROW.format(statement=STATEMENT).replace("summary/*/mean", "summary/*/median"), "bench.json has no key "
                                                                                    "summary/*/median"),
    (ROW.format(statement="FedAP beats FedAvg by 3.6 points").replace(", comparison/statement", ""),
     "3.6 has no results-file key behind it"),
    (ROW.format(statement="FedAP beats FedAvg").replace(", comparison/statement", ""),
     "a claim that one method beats another needs its comparison statement"),
    (ROW.format(statement="FedAP and FedAvg within noise"), "the result cell does not say what the file says"),
    (ROW.format(statement=STATEMENT).replace("bench.json", "stale/bench.json"), "a result awaiting a re-run"),
    (ROW.format(statement=STATEMENT).replace("bench.json", "other.json"), "cites other.json, which is not in"),
    ("| what | 87.51 | | |", "87.51 has no results-file key behind it (the source names none)"),
])
def test_a_doctored_docs_row_fails(repo, row, message):
    consistent_tree(repo)
    repo.write("docs/results.md", f"| what | result | source | command |\n|---|---|---|---|\n{row}\n")
    found = problems()
    assert found and all(f.startswith("docs/results.md:3: ") for f in found), found
    assert any(message in f for f in found), found


AGGREGATE_ROW = "| FedAP, 3 seeds | {result} | `bench.json: {keys}` | `python benchmarks/bench.py` |"


@pytest.mark.parametrize("result, keys, message", [
    # values 0.88, 0.87, 0.875: mean 0.875, sample std 0.005 (population std 0.0041)
    ("87.50 ± 0.50", "mean(summary/fedap/values/*), std(summary/fedap/values/*)", None),
    ("87.42 ± 0.50", "mean(summary/fedap/values/*), std(summary/fedap/values/*)", "87.42 has no results-file key"),
    ("87.50 ± 0.41", "mean(summary/fedap/values/*), std(summary/fedap/values/*)", "0.41 has no results-file key"),
    ("88.00 ± 0", "mean(summary/fedap/values/0), std(summary/fedap/values/0)", "std(summary/fedap/values/0) needs two"),
    ("87.50", "mean(summary/fedap/nothing/*)", "bench.json has no key summary/fedap/nothing/*"),
])
def test_mean_and_sample_std_keys_average_what_a_file_keeps_per_seed(repo, result, keys, message):
    consistent_tree(repo)
    repo.write("docs/results.md", "| what | result | source | command |\n|---|---|---|---|\n"
               + AGGREGATE_ROW.format(result=result, keys=keys) + "\n")
    found = problems()
    if message is None:
        assert found == []
    else:
        assert found and any(message in f for f in found), found


def test_a_result_table_without_a_source_column_fails(repo):
    consistent_tree(repo)
    repo.write("README.md", "| what | result |\n|---|---|\n| speed | 3.2x |\n| memory | 1 GB |\n")
    assert problems() == ["README.md:1: a table with a result column needs a source column"]


def test_the_command_line_reports_and_exits_1(repo, capsys):
    results = consistent_tree(repo)
    assert check_results.main([]) == 0
    assert capsys.readouterr().out.startswith("ok: 1 results files with provenance and today's code, 1 result rows")
    del results["provenance"]
    write_results(repo, results)
    assert check_results.main([]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "1 problems (1 results files, 1 result rows checked)"


def test_the_committed_results_and_docs_pass():
    """Every number in README.md and docs/ traces to a results file made by today's code."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "check_results.py")], cwd=root,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
