"""Shared test helpers."""

import hashlib
import os
import re

import pytest


def tree_snapshot(root):
    """{relative path: sha256 of content (or 'dir')} for everything under root."""
    snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            snapshot[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                snapshot[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return snapshot


@pytest.fixture
def snapshot():
    return tree_snapshot


@pytest.fixture
def refused(capsys):
    """`refused(call, prog, message, root)`: `call()` must return exit code 2 after printing
    exactly one stderr line `<prog>: error: ...` that matches `message`, and leave everything
    under `root` as it was (the disk is checked before anything is written)."""

    def check(call, prog, message, root):
        before = tree_snapshot(root)
        code = call()
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
        assert re.search(message, err), err
        assert tree_snapshot(root) == before

    return check
