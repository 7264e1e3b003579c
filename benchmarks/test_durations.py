"""How long the test suite takes: each tox environment's wall time and its slowest tests.

Runs `tox -e ENV` for each environment one after another (tox.ini gives pytest
`--durations=25`), times it, and reads pytest's "slowest durations" table and final count
from the output. Writes benchmarks/results/test_durations.json with the provenance of the
run (the commit whose tests were timed, the machine, the versions); the whole log of each
environment goes beside it in runs/test-durations/<env>.log. `--from-log ENV=FILE` reads a log
of a run made elsewhere instead (its wall time is then pytest's own).

Usage:
  python benchmarks/test_durations.py                       # py311 and federated (tox's envlist)
  python benchmarks/test_durations.py --envs federated
  python benchmarks/test_durations.py --from-log py311=/tmp/py311.log
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import provenance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENVS = ("py311", "federated")
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(setup|call|teardown)\s+(\S.*?)\s*$")
SUMMARY = re.compile(r"^=*\s*((?:\d+ \w+(?:, )?)+) in (\d+(?:\.\d+)?)s\b")


def parse_pytest_output(text: str) -> dict:
    """The slowest-durations table and the final summary of a pytest run's output.

    Returns {"slowest": [{"seconds", "phase", "test"}, ...] (as pytest lists them, slowest
    first), "counts": {"passed": n, "failed": n, ...}, "pytest_seconds": s}; counts and
    seconds are None when the output has no final summary (an interrupted run).
    """
    slowest, counts, seconds, in_table = [], None, None, False
    for line in text.splitlines():
        if re.match(r"^=+ slowest (\d+ )?durations =+$", line.strip()):
            in_table = True
            continue
        match = DURATION.match(line)
        if in_table and match:
            slowest.append({"seconds": float(match.group(1)), "phase": match.group(2), "test": match.group(3)})
            continue
        if in_table and line.strip() and not line.strip().startswith("("):
            in_table = False  # the table ends at the next section
        summary = SUMMARY.match(line.strip())
        if summary:
            counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (\w+)", summary.group(1))}
            seconds = float(summary.group(2))
    return {"slowest": slowest, "counts": counts, "pytest_seconds": seconds}


def run_env(env: str, logs: str) -> dict:
    # The log is written as tox runs, so a long run can be watched (tail -f) and a stopped
    # one still shows how far it got.
    os.makedirs(logs, exist_ok=True)
    log = os.path.join(logs, f"{env}.log")
    started = time.perf_counter()
    with open(log, "w") as f:
        code = subprocess.run(["tox", "-e", env], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    with open(log) as f:
        parsed = parse_pytest_output(f.read())
    return {**parsed, "wall_seconds": round(wall, 1), "exit_code": code}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=list(ENVS), help="tox environments (default: py311 federated)")
    parser.add_argument("--from-log", nargs="+", default=[], metavar="ENV=FILE",
                        help="read these environments' pytest output instead of running them")
    parser.add_argument("--logs", default=os.path.join(ROOT, "runs", "test-durations"))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "test_durations.json"))
    args = parser.parse_args(argv)
    record = provenance.start(["tox.ini", "setup.cfg", os.path.relpath(os.path.abspath(__file__), ROOT)])
    envs = {}
    for spec in args.from_log:
        env, _, path = spec.partition("=")
        with open(path) as f:
            parsed = parse_pytest_output(f.read())
        envs[env] = {**parsed, "wall_seconds": parsed["pytest_seconds"], "exit_code": None, "log": path}
    for env in args.envs:
        if env not in envs:
            print(f"tox -e {env} ...", flush=True)
            envs[env] = run_env(env, args.logs)
    result = {"envs": envs, "total_wall_seconds": round(sum(e["wall_seconds"] or 0 for e in envs.values()), 1),
              "provenance": provenance.public(provenance.finish(record))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    for env, facts in envs.items():
        print(f"{env}: {facts['wall_seconds']} s, {facts['counts']}; slowest: "
              + ", ".join(f"{d['test']} {d['seconds']:.0f} s" for d in facts["slowest"][:5]))
    print(f"total {result['total_wall_seconds'] / 60:.1f} min; written {args.out}")
    return 0 if all(e["exit_code"] in (0, None) for e in envs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
