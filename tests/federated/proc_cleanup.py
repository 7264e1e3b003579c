"""Stop the helper processes that TensorFlow Federated leaves behind.

TFF 0.87's local C++ execution context starts
``tensorflow_federated/data/worker_binary --port=P`` with ``subprocess.Popen`` and hands it
the parent's stdout/stderr. Nothing stops it when Python exits, so the worker outlives its
parent and keeps those file descriptors open: a reader of the parent's output
(``python script.py | tail``, ``subprocess.run(..., capture_output=True)``, a CI runner)
never sees end-of-file and hangs.

This module is imported by ``conftest.py``, by the tests, and by the child scripts the tests
run (it needs psutil and kerastl's `stop_processes`, not TFF).
"""

from __future__ import annotations

import os
import signal

import psutil

from kerastl.federated.remote import stop_processes


def stop_descendants(pid: int | None = None, timeout: float = 3.0) -> list[int]:
    """Terminate every descendant of ``pid`` (default: this process); kill what survives.

    SIGTERM first, then SIGKILL for whatever has not exited after ``timeout`` seconds.
    Returns the pids that were found. Safe to call more than once.
    """
    try:
        procs = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return stop_processes(procs, timeout)


def stop_process_group(pgid: int, timeout: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL, the process group ``pgid``. Returns whether anything was in it.

    For a child started with ``start_new_session=True``: its workers stay in its process
    group even after the child itself has exited (they are then re-parented to init and are
    no longer descendants of the test process, so ``stop_descendants`` cannot see them).
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    members = [p for p in psutil.process_iter() if _pgid(p) == pgid]
    _, alive = psutil.wait_procs(members, timeout=timeout)
    if alive:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        psutil.wait_procs(alive, timeout=timeout)
    return True


def process_group_alive(pgid: int) -> bool:
    """Whether any process is still in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except (ProcessLookupError, PermissionError):
        return None
