"""Where a benchmark's numbers come from, and whether a finished run may be reused.

A provenance record says which code made a result and where: the git commit, whether the
tree was dirty (and which paths), the paths the benchmark depends on, the versions of
TensorFlow / Keras / TFF / numpy / Python, the command line, the UTC date, the machine (CPU
model, cores, memory, GPUs) and the wall time. Every benchmark writes one as the top-level
"provenance" of its results JSON and one as `provenance.json` beside each run's metrics.

A benchmark's dependencies are derived, not listed by hand: the script itself plus every
module of this repository it imports, followed transitively through `kerastl/`, `apps/`
and `benchmarks/` (imports inside functions count too). Apps a script starts in a
subprocess (`python -m apps.x`) are invisible to an import scan: the script names them in
a module-level `DEPENDS_ON = ("apps.x",)`. This module itself is left out: it records, it
computes no number.

A finished run is reused only when its record exists, was made from committed dependency
files, and `git diff <its commit> -- <dependencies>` is empty with those paths clean now.

Example:
>>> paths = dependency_paths("benchmarks/adafed_benchmark.py")      # doctest: +SKIP
>>> record = start(paths)                                           # doctest: +SKIP
>>> ...  # run
>>> finish(record)["wall_seconds"]                                  # doctest: +SKIP
812.4
>>> reusable(read("runs/bench-adafed/watch-0"), paths)              # doctest: +SKIP
(False, 'changed since 1a2b3c4d5e: kerastl/federated/fedap.py')
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FILENAME = "provenance.json"
PACKAGES = ("tensorflow", "keras", "tensorflow-federated", "numpy")
# Top-level packages of this repository an import can name.
LOCAL_ROOTS = ("kerastl", "apps")
_SELF = os.path.relpath(os.path.abspath(__file__), ROOT)


def git(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=check)


# ---------------------------------------------------------------- dependencies


def _module_file(name: str, script_dir: str) -> str | None:
    """Repository-relative file of module `name` (a package's `__init__.py`), or None when
    it is not this repository's (a sibling of the script counts: benchmarks import each other)."""
    parts = name.split(".")
    bases = [ROOT] if parts[0] in LOCAL_ROOTS else [script_dir] if len(parts) == 1 else []
    for base in bases:
        for candidate in (os.path.join(base, *parts) + ".py", os.path.join(base, *parts, "__init__.py")):
            if os.path.isfile(candidate):
                return os.path.relpath(candidate, ROOT)
    return None


def _imported_modules(path: str) -> tuple[set[str], tuple[str, ...]]:
    """Module names a file imports anywhere (functions included), and its DEPENDS_ON."""
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read(), path)
    package = os.path.dirname(path).replace(os.sep, ".")  # where relative imports start
    names, declared = set(), ()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*parent, *([base] if base else [])])
            names.add(base)
            # `from pkg import sub` may name a submodule.
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEPENDS_ON" for t in node.targets):
            declared = tuple(ast.literal_eval(node.value))
    return names, declared


def dependency_paths(script: str, modules: tuple[str, ...] = ()) -> list[str]:
    """The repository files a benchmark script's numbers depend on (sorted, relative to the
    repository root): the script, the local modules it imports (transitively, with the
    `__init__.py` of every package on the way), those named in its `DEPENDS_ON` and in
    `modules` (what one of its runs starts)."""
    script = os.path.relpath(os.path.abspath(os.path.join(ROOT, script) if not os.path.isabs(script) else script),
                             ROOT)
    script_dir = os.path.join(ROOT, os.path.dirname(script))
    found, todo, extra = set(), [script], tuple(modules)
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        names, declared = _imported_modules(path)
        for name in [*names, *declared, *(extra if path == script else ())]:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__
                module = _module_file(".".join(parts[:i]), script_dir)
                if module and module not in found:
                    todo.append(module)
    return sorted(found - {_SELF})


# ---------------------------------------------------------------- the record


def _dirty(paths: list[str] | None = None) -> list[str]:
    """Paths with uncommitted changes or untracked files (all, or among `paths`)."""
    out = git("status", "--porcelain", "--untracked-files=all", *(["--", *paths] if paths else [])).stdout
    return sorted(line[3:].split(" -> ")[-1] for line in out.splitlines() if line.strip())


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# CPU features that change TensorFlow's CPU speed by up to 2-3x on the same model name (oneDNN's
# convolutions and matmuls use the widest of them).
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def machine() -> dict:
    """CPU model, its vector extensions (`VECTOR_FLAGS`), cores, memory and GPUs of this machine."""
    info = {"cores": os.cpu_count(), "platform": platform.platform(), "cpu_model": platform.processor() or None,
            "cpu_vector_flags": None, "memory_gb": None, "gpus": []}
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read().splitlines()
        info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
                                 info["cpu_model"])
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
        info["cpu_vector_flags"] = [flag for flag in VECTOR_FLAGS if flag in flags]
        with open("/proc/meminfo") as f:
            kilobytes = next(int(line.split()[1]) for line in f if line.startswith("MemTotal"))
            info["memory_gb"] = round(kilobytes / 2**20, 2)
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        info["gpus"] = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return info


def command_line(argv: list[str] | None = None) -> str:
    """The command as typed: `python benchmarks/x.py ARGS` (or `python -m apps.x ARGS`)."""
    argv = sys.argv if argv is None else argv
    program = os.path.relpath(argv[0], ROOT) if os.path.isabs(argv[0]) else argv[0]
    return shlex.join(["python", program, *argv[1:]])


def start(dependencies: list[str], command: str | None = None) -> dict:
    """A provenance record for work starting now on the current tree; `finish` completes it."""
    dirty = _dirty()
    return {
        "commit": git("rev-parse", "HEAD").stdout.strip(),
        "dirty": bool(dirty),
        "dirty_paths": dirty,
        "dependencies": list(dependencies),
        "dirty_dependencies": [p for p in dirty if p in set(dependencies)],
        "versions": {"python": platform.python_version(), **{p: _version(p) for p in PACKAGES}},
        "command": command or command_line(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "wall_seconds": None,
        "_started": time.time(),
    }


def finish(record: dict) -> dict:
    """Sets the wall time; a dependency edited or a commit made during the run makes the
    record dirty (its numbers then belong to no single tree)."""
    record["wall_seconds"] = round(time.time() - record.pop("_started", time.time()), 1)
    changed = _dirty(record["dependencies"]) if record["dependencies"] else []
    if git("rev-parse", "HEAD").stdout.strip() != record["commit"]:
        changed += git("diff", "--name-only", record["commit"], "HEAD", "--", *record["dependencies"]).stdout.split()
    record["dirty_dependencies"] = sorted(set(record["dirty_dependencies"]) | set(changed))
    return record


def public(record: dict) -> dict:
    """The record without its private start time (what files hold)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def write(folder: str, record: dict) -> str:
    path = os.path.join(folder, FILENAME)
    with open(path, "w") as f:
        json.dump(public(record), f, indent=2)
    return path


def read(location: str) -> dict | None:
    """The record of a run folder (its provenance.json) or of a results JSON (its
    "provenance"); None when there is none."""
    path = os.path.join(location, FILENAME) if os.path.isdir(location) else location
    if not os.path.exists(path):
        return None
    with open(path) as f:
        content = json.load(f)
    return content.get("provenance") if path.endswith(".json") and not path.endswith(FILENAME) else content


# ---------------------------------------------------------------- reuse


def changed_since(commit: str, paths: list[str], until: str | None = None) -> list[str]:
    """Paths among `paths` that differ between `commit` and `until` (a commit; None: the
    working tree, untracked files included). A commit git does not know: every path."""
    if git("cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        return list(paths)
    changed = git("diff", "--name-only", commit, *([until] if until else []), "--", *paths).stdout.split()
    if until is None:
        changed += _dirty(paths)
    return sorted(path for path in set(changed) if not _same_code(path, commit, until))


def _code(text: str | None) -> str | None:
    """A Python file's syntax tree without docstrings (comments are not in it): what the
    file computes. None when the text is missing or does not parse."""
    if text is None:
        return None
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _same_code(path: str, commit: str, until: str | None) -> bool:
    """Whether a Python file changed only in comments and docstrings between `commit` and
    `until` (None: the working tree), so a result made before the change still stands."""
    if not path.endswith(".py"):
        return False
    old = git("show", f"{commit}:{path}", check=False)
    if until is None:
        full = os.path.join(ROOT, path)
        new = open(full).read() if os.path.isfile(full) else None
    else:
        shown = git("show", f"{until}:{path}", check=False)
        new = shown.stdout if shown.returncode == 0 else None
    before = _code(old.stdout if old.returncode == 0 else None)
    return before is not None and before == _code(new)


def reusable(record: dict | None, dependencies: list[str], finished: bool = True) -> tuple[bool, str]:
    """Whether a run with provenance `record` was made by the code now in the tree, for the
    paths the benchmark depends on (today's and the ones the run recorded); and why not.
    `finished=False` accepts a run that started but did not finish (to resume it)."""
    if record is None:
        return False, "no provenance"
    if finished and record.get("wall_seconds") is None:
        return False, "did not finish"
    if record.get("dirty_dependencies"):
        return False, "made from uncommitted changes to " + ", ".join(record["dirty_dependencies"][:5])
    paths = sorted(set(dependencies) | set(record.get("dependencies", [])))
    changed = changed_since(record["commit"], paths)
    if changed:
        return False, f"changed since {record['commit'][:10]}: " + ", ".join(changed[:5]) + \
            (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    return True, f"same code as {record['commit'][:10]}"


def made_by(record: dict) -> dict:
    """What a results file keeps beside one of its entries: the commit and command that made
    it, and whether its dependencies were dirty then."""
    return {"command": record.get("command"), "commit": record.get("commit"),
            "dirty": bool(record.get("dirty_dependencies"))}


def current(entry_made_by: dict, dependencies: list[str]) -> bool:
    """Whether an entry was made by today's code: a clean run at a commit since which none of
    `dependencies` changed."""
    return bool(entry_made_by.get("commit")) and not entry_made_by.get("dirty") and \
        not changed_since(entry_made_by["commit"], dependencies)


@contextlib.contextmanager
def locked(path: str, wait: bool = True):
    """An exclusive lock on results file `path` for the block (a lock file in the temporary
    folder, so the tree stays clean): runs side by side that merge into one results file read
    and write it in turn. `wait=False`: BlockingIOError at once when another process holds it."""
    import fcntl
    import hashlib
    import tempfile

    name = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"kerastl-results-{name}.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_reuse_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse a finished run only when its provenance shows the same command and the same code "
                             "for the paths this benchmark depends on (default); --no-reuse re-runs everything")


def may_reuse(location: str, dependencies: list[str], allowed: bool, command: str | None = None,
              finished: bool = True) -> bool:
    """Whether the run in folder `location` (or the results JSON `location`) is reused: made by
    the same code and, when given, the same command. Prints why or why not."""
    if not allowed:
        return False
    record = read(location)
    ok, why = reusable(record, dependencies, finished)
    if ok and command is not None and record.get("command") != command:
        ok, why = False, f"made by another command ({record.get('command')})"
    print(f"{'reusing' if ok else 'not reusing'} {_shown(location)}: {why}", flush=True)
    return ok


def _shown(path: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), ROOT)
    return path if relative.startswith("..") else relative


def app_command(app: str, argv: list[str], folder: str) -> str:
    """The command a run's provenance records (and reuse compares)."""
    return shlex.join(["python", "-m", app, *argv, "--output", _shown(folder)])


def finished_run(folder: str, app: str, argv: list[str], dependencies: list[str], finished=lambda metrics: True,
                 reuse: bool = True) -> dict | None:
    """The metrics of the finished run of `python -m <app> <argv>` in `folder` when its
    provenance shows the same command and today's code; else None."""
    path = os.path.join(folder, "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    ok = finished(metrics) and may_reuse(folder, dependencies, reuse, app_command(app, argv, folder))
    return metrics if ok else None


def app_run(folder: str, app: str, argv: list[str], dependencies: list[str], reuse: bool = True,
            finished=lambda metrics: True, resumable: bool = False, main=None) -> dict:
    """The metrics of `python -m <app> <argv> --output <folder>`: reused when the folder holds
    a finished run (`finished(metrics)`) of the same command and code, else run (resumed with
    --resume when `resumable` and an interrupted run of the same command and code is there,
    else started over with --overwrite). `main(argv) -> exit code` runs the app in this
    process; by default it runs in a subprocess. Writes `provenance.json` beside metrics.json
    when the run starts and again when it ends."""
    metrics = finished_run(folder, app, argv, dependencies, finished, reuse)
    if metrics is not None:
        return metrics
    typed = app_command(app, argv, folder)
    resume = (resumable and os.path.isdir(os.path.join(folder, "checkpoints"))
              and may_reuse(folder, dependencies, reuse, typed, finished=False))
    record = start(dependencies, typed)
    record["resumed"] = resume
    os.makedirs(folder, exist_ok=True)
    write(folder, record)  # an interrupted run is resumed only by the same code
    full = [*argv, "--output", folder, "--resume" if resume else "--overwrite"]
    print(typed + (" --resume" if resume else ""), flush=True)
    if main is None:
        subprocess.run([sys.executable, "-m", app, *full], check=True, cwd=ROOT)
    elif main(full) != 0:
        raise SystemExit(f"{typed} failed")
    write(folder, finish(record))
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)
