"""Shared test helpers."""

import hashlib
import os

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
