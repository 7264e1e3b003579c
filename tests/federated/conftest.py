"""Fixtures for the federated environment (TF 2.14 / Keras 2 / TFF 0.87.0).

Why the cleanup below: TFF's local execution starts a ``worker_binary`` child process that
is never stopped, outlives Python and keeps the parent's stdout/stderr open, so
``tox -e federated | tail`` or a CI step reading pytest's output through a pipe would hang
after the tests finish. At the end of the session every descendant of the pytest process
is terminated (then killed). ``pytest_sessionfinish`` and ``atexit`` repeat it as a safety
net for runs whose fixture teardown did not happen (e.g. interrupted sessions); calling it
twice is harmless.
"""

from __future__ import annotations

import atexit

import pytest

from proc_cleanup import stop_descendants

_stopped: list[int] = []


@pytest.fixture(scope="session", autouse=True)
def _stop_tff_workers_at_session_end():
    yield
    # Only at the very end: stopping the worker mid-session would break TFF's cached
    # execution context for later tests.
    _stopped.extend(stop_descendants())


def pytest_sessionfinish(session, exitstatus):
    _stopped.extend(stop_descendants())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and _stopped:
        reporter.write_line(
            f"tests/federated: stopped {len(_stopped)} leftover child process(es) "
            f"(TFF worker_binary) at session end: pids {sorted(set(_stopped))}"
        )


atexit.register(stop_descendants)
