"""A process started with SIGINT ignored (a background job of a non-interactive shell) still
starts children that SIGINT stops, once `let_workers_stop_on_sigint` ran: TFF stops its local
worker with SIGINT and waits for it, so an ignored SIGINT would hang a switch of context."""

import subprocess
import sys

PARENT = """
import signal, subprocess, sys
from kerastl.federated.remote import let_workers_stop_on_sigint
if sys.argv[1] == "fix":
    let_workers_stop_on_sigint()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
child.send_signal(signal.SIGINT)
try:
    print(child.wait(timeout=5))
except subprocess.TimeoutExpired:
    child.kill()
    print("ignored")
"""


def run_parent(mode):
    ignore_sigint = lambda: __import__("signal").signal(2, __import__("signal").SIG_IGN)  # noqa: E731
    run = subprocess.run([sys.executable, "-c", PARENT, mode], capture_output=True, text=True, timeout=120,
                         preexec_fn=ignore_sigint)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]


def test_children_ignore_sigint_when_the_parent_started_with_it_ignored():
    assert run_parent("plain") == "ignored"


def test_children_stop_on_sigint_after_let_workers_stop_on_sigint():
    assert run_parent("fix") in {"-2", "1"}  # killed by SIGINT, or Python's KeyboardInterrupt exit
