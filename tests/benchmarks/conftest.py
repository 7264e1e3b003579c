"""Benchmarks are scripts, not a package: their directory goes on the path here. A small
git repository in tmp_path stands in for this one where a test needs commits."""

import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
sys.path.insert(0, BENCHMARKS)


class Repo:
    """A throwaway git repository: `write(path, text)`, `commit(message)`, `git(*args)`."""

    def __init__(self, root):
        self.root = str(root)
        self.git("init", "-q", "-b", "main")

    def git(self, *args):
        return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                              cwd=self.root, capture_output=True, text=True, check=True).stdout.strip()

    def write(self, path, text):
        full = os.path.join(self.root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text)
        return full

    def commit(self, message="change"):
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository at tmp_path/repo that `provenance` takes for this one."""
    import provenance

    root = tmp_path / "repo"
    root.mkdir()
    monkeypatch.setattr(provenance, "ROOT", str(root))
    return Repo(root)
