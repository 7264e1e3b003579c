"""benchmarks/test_durations.py reads pytest's durations table and summary from a tox log."""

import json

import test_durations

# The tail of a `tox -e py311` log (pytest --durations=25, trimmed to 4 rows), as captured.
TOX_LOG = """\
py311: commands[0]> pytest --ignore=tests/federated --durations=25
============================= test session starts ==============================
collected 412 items

tests/apps/test_flexmatch.py ........F.                                  [  2%]
tests/benchmarks/test_provenance.py ........                             [100%]

============================= slowest 25 durations =============================
412.31s call     tests/apps/test_flexmatch.py::test_flexmatch_learns_more_than_supervised
98.02s setup    tests/apps/test_flexmatch_imagenet.py::finished_run
61.50s call     tests/apps/test_adafed.py::test_fedap_beats_fedavg_on_the_watch_subjects[local]
0.60s call     tests/benchmarks/test_provenance.py::test_every_benchmark_depends_on_its_app

(21 durations < 0.005s hidden.  Use -vv to show these durations.)
=========================== short test summary info ============================
FAILED tests/apps/test_flexmatch.py::test_resume - AssertionError: 0.91 != 0.92
============ 1 failed, 409 passed, 2 deselected in 1834.27s (0:30:34) ============
py311: exit 1 (1840.02 seconds) /work/main> pytest --ignore=tests/federated --durations=25 pid=4242
  py311: FAIL code 1 (1902.51=setup[62.49]+cmd[1840.02] seconds)
"""


def test_the_durations_table_and_the_summary_are_read():
    parsed = test_durations.parse_pytest_output(TOX_LOG)
    assert parsed["slowest"][:2] == [
        {"seconds": 412.31, "phase": "call", "test": "tests/apps/test_flexmatch.py::test_flexmatch_learns_more_than_"
                                                      "supervised"},
        {"seconds": 98.02, "phase": "setup", "test": "tests/apps/test_flexmatch_imagenet.py::finished_run"}]
    assert [d["test"].rsplit("::", 1)[1] for d in parsed["slowest"][2:]] == [
        "test_fedap_beats_fedavg_on_the_watch_subjects[local]", "test_every_benchmark_depends_on_its_app"]
    assert parsed["counts"] == {"failed": 1, "passed": 409, "deselected": 2}
    assert parsed["pytest_seconds"] == 1834.27


def test_quiet_output_and_an_interrupted_run():
    quiet = "....\n===== slowest 3 durations =====\n2.00s call     tests/a.py::test_b\n\n7 passed in 12.50s\n"
    assert test_durations.parse_pytest_output(quiet) == {
        "slowest": [{"seconds": 2.0, "phase": "call", "test": "tests/a.py::test_b"}],
        "counts": {"passed": 7}, "pytest_seconds": 12.5}
    assert test_durations.parse_pytest_output("tests/a.py ....\nKeyboardInterrupt\n") == {
        "slowest": [], "counts": None, "pytest_seconds": None}


def test_a_captured_log_is_recorded_with_provenance(tmp_path):
    log = tmp_path / "py311.log"
    log.write_text(TOX_LOG)
    out = tmp_path / "test_durations.json"
    assert test_durations.main(["--envs", "py311", "--from-log", f"py311={log}", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["envs"]["py311"]["wall_seconds"] == 1834.27 and result["total_wall_seconds"] == 1834.3
    assert len(result["envs"]["py311"]["slowest"]) == 4
    assert result["provenance"]["commit"] and result["provenance"]["wall_seconds"] is not None
