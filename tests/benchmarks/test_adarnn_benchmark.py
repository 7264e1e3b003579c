"""adarnn_benchmark.py runs one invocation at a time: each rewrites the whole results file."""

import os
import subprocess
import sys

import pytest

import provenance
from conftest import BENCHMARKS


def test_locked_without_waiting_refuses_while_another_holder_has_it(tmp_path):
    path = str(tmp_path / "results.json")
    with provenance.locked(path):
        with pytest.raises(BlockingIOError):
            with provenance.locked(path, wait=False):
                pass
    with provenance.locked(path, wait=False):  # free again
        pass


def test_a_second_invocation_exits_2_with_one_line_and_leaves_the_results_file_alone():
    path = os.path.join(BENCHMARKS, "results", "adarnn_benchmark.json")
    before = open(path, "rb").read() if os.path.exists(path) else None
    with provenance.locked(path):  # as an invocation running beside it would
        done = subprocess.run([sys.executable, os.path.join(BENCHMARKS, "adarnn_benchmark.py"), "--only", "timing"],
                              capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.endswith("adarnn_benchmark.json: another adarnn_benchmark.py invocation is writing it; start this "
                         "one when it has finished (it reuses that one's finished runs)"), last
    assert (open(path, "rb").read() if os.path.exists(path) else None) == before
