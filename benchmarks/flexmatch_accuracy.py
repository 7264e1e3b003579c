"""The shape of FlexMatch's Table 1 on real MNIST digits (mnist5k), with the cpu preset.

For every algorithm x label count x seed, runs `apps.flexmatch` and collects the test error
(final, best, median of the last 20 evaluations) and the test-accuracy curve. Writes
benchmarks/results/flexmatch_accuracy.json (every run) and .md (mean +- std per cell), and
checks the expected shape: Flex-* beat their fixed-threshold versions at 40 labels, and
FlexMatch reaches FixMatch's final accuracy in at most a third of the iterations.

A run under --runs is reused (or an interrupted one resumed) only when its provenance.json
shows the same command and today's code for the paths this script depends on (--no-reuse:
never), so the script can be stopped and started again. The results file is the store that
outlives `runs/`: every run in it records the commit and app options that made it, and an
invocation keeps the file's runs it does not make itself when they were made with the same
options by today's code (the app and everything it imports unchanged since their commit),
so parts run on different days or machines, or side by side, add up to one table. Other app
options (--extra) are another experiment: they need their own --output.

Cells are mean +- sample std over seeds; "Flex-X beats X" is stated only when it is better
on every seed or by a paired t-test at p < 0.05; FreeMatch and SoftMatch are compared with
FlexMatch the same way. The algorithms are the registry's
(`kerastl.ssl.algorithms.algorithm_names()`: 14 today), the supervised baseline first. A full
grid (14 algorithms x 2 label counts x 3 seeds) takes hours on 2 CPU cores; use --algorithms /
--labels / --seeds for a part. Each algorithm runs with the app's default uratio for it (the
registry's: 1 for Pseudo-Label, Pi-Model, Mean Teacher, VAT, MixMatch and ReMixMatch, 7 for
the others).

Usage:
  python benchmarks/flexmatch_accuracy.py
  python benchmarks/flexmatch_accuracy.py --algorithms flexmatch fixmatch --labels 40 --seeds 0
  python benchmarks/flexmatch_accuracy.py --report-only     # tables from the finished runs
  python benchmarks/flexmatch_accuracy.py --algorithms flexmatch --labels 40 \
      --output benchmarks/results/flexmatch_bf16.json --extra --mixed-precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import provenance
import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(1, ROOT)  # this tree's kerastl, as the app runs it

from kerastl.ssl.algorithms import algorithm_names  # noqa: E402

DEPENDS_ON = ("apps.flexmatch",)  # run in a subprocess: invisible to provenance's import scan
DEPENDENCIES = provenance.dependency_paths(__file__)
# What one run's numbers depend on: the app it starts (this script only collects them).
RUN_DEPENDENCIES = provenance.dependency_paths(os.path.join(ROOT, "apps", "flexmatch.py"))
RESULTS = os.path.join(HERE, "results", "flexmatch_accuracy.json")
# Every registered algorithm, the supervised baseline first.
ALGORITHMS = tuple(sorted(algorithm_names(), key=lambda name: name != "supervised"))
# Compared by final error, without an expected verdict: the successors against FlexMatch.
SUCCESSORS = (("flexmatch", "freematch"), ("flexmatch", "softmatch"))


def run_argv(algorithm, labels, seed, extra):
    return ["--dataset", "mnist5k", "--preset", "cpu", "--algorithm", algorithm, "--num-labels", str(labels),
            "--seed", str(seed), "--no-export", *extra]


def run_one(algorithm, labels, seed, runs, extra, report_only=False, reuse=True):
    """The app's metrics of one run, with the `made_by` of its provenance (and its options)."""
    folder = os.path.join(runs, f"{algorithm}-{labels}-{seed}")
    argv = run_argv(algorithm, labels, seed, extra)
    finished = lambda metrics: "test_error_final" in metrics  # noqa: E731
    if report_only:
        metrics = provenance.finished_run(folder, "apps.flexmatch", argv, DEPENDENCIES, finished)
    else:
        metrics = provenance.app_run(folder, "apps.flexmatch", argv, DEPENDENCIES, reuse, finished, resumable=True)
    if metrics is not None:
        metrics["made_by"] = {**provenance.made_by(provenance.read(folder)), "argv": argv}
    return metrics


def earlier_runs(previous: dict, extra: list[str], path: str = RESULTS) -> dict:
    """The runs of the results file `previous` made with this invocation's options by today's
    code, as rows `{(algorithm, labels, seed): metrics}`. A file written before its runs
    recorded their own origin stands for all of them: its provenance's commit, and the options
    its command gave (the same `run_argv` then as now)."""
    legacy = provenance.made_by(previous.get("provenance") or {})
    command = shlex.split(legacy.get("command") or "")
    legacy["argv_extra"] = command[command.index("--extra") + 1:] if "--extra" in command else []
    rows = {}
    for key, entry in (previous.get("runs") or {}).items():
        algorithm, labels, seed = key.split("/")
        expected = run_argv(algorithm, labels, seed, extra)
        made_by = entry.get("made_by") or {**legacy, "argv": run_argv(algorithm, labels, seed, legacy["argv_extra"])}
        if made_by.get("argv") == expected and provenance.current(made_by, RUN_DEPENDENCIES):
            rest = {k: v for k, v in entry.items() if k not in ("val_accuracy", "made_by")}
            rows[(algorithm, int(labels), int(seed))] = {
                **rest, "history": {"val_accuracy": entry["val_accuracy"]},
                "made_by": {k: v for k, v in made_by.items() if k != "argv_extra"}}
        else:
            print(f"not keeping {key} of {os.path.relpath(path, ROOT)}: other options or older code", flush=True)
    return rows


def iterations_to_reach(curve, target, eval_every):
    for i, accuracy in enumerate(curve):
        if accuracy >= target:
            return (i + 1) * eval_every
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--labels", nargs="+", type=int, default=[40, 250])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", default=None,
                        help="run folders (default runs/bench-flexmatch, or runs/bench-<name of --output>)")
    parser.add_argument("--report-only", action="store_true",
                        help="summarise the finished runs made by today's code only; start none (cells say how many "
                             "seeds they hold)")
    provenance.add_reuse_option(parser)
    parser.add_argument("--output", default=RESULTS,
                        help="results JSON (and .md beside it); give another one with --extra: other options are "
                             "another experiment (default %(default)s)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further apps.flexmatch options, e.g. --extra --iterations 500 (last on the line)")
    args = parser.parse_args()
    if args.extra and os.path.abspath(args.output) == RESULTS:
        parser.error(f"--extra makes another experiment than {os.path.relpath(RESULTS)}'s: give --output")
    if args.runs is None:
        name = os.path.splitext(os.path.basename(args.output))[0].replace("flexmatch_accuracy", "flexmatch")
        args.runs = os.path.join(ROOT, "runs", "bench-" + name.replace("_", "-"))

    record = provenance.start(DEPENDENCIES)
    rows = {}
    for labels in args.labels:
        for algorithm in args.algorithms:
            for seed in args.seeds:
                metrics = run_one(algorithm, labels, seed, args.runs, args.extra, args.report_only, args.reuse)
                if metrics is not None:
                    rows[(algorithm, labels, seed)] = metrics
    # The file is read and written under a lock: invocations side by side add up.
    with provenance.locked(args.output):
        previous = {}
        if os.path.exists(args.output):
            with open(args.output) as f:
                previous = json.load(f)
        rows = dict(sorted({**earlier_runs(previous, args.extra, args.output), **rows}.items()))  # values in seed order
        write_results(rows, args, args.output, record)


def write_results(rows, requested, output, record):
    """The results file and its table at `output`: every run kept (this invocation's and the
    earlier ones still current), over the algorithms, label counts and seeds `requested`
    (argparse's namespace) and those of the kept runs."""
    algorithms = [a for a in ALGORITHMS if a in requested.algorithms or any(key[0] == a for key in rows)]
    label_counts = sorted(set(requested.labels) | {key[1] for key in rows})
    all_seeds = sorted(set(requested.seeds) | {key[2] for key in rows})
    table = {}
    for (algorithm, labels, seed), m in rows.items():
        table.setdefault((algorithm, labels), []).append(m)
    lines = ["| algorithm | " + " | ".join(f"{n} labels: final / best error %" for n in label_counts) + " |",
             "|---|" + "---|" * len(label_counts)]
    summary = {}
    for algorithm in algorithms:
        cells = []
        for labels in label_counts:
            runs = table.get((algorithm, labels), [])
            if not runs:
                cells.append("not run")
                continue
            final = [m["test_error_final"] for m in runs]
            best = [m["test_error_best"] for m in runs]
            summary[f"{algorithm}/{labels}"] = {"final": stats.spread(final), "best": stats.spread(best),
                                                "seeds": [s for s in all_seeds if (algorithm, labels, s) in rows]}
            cells.append(f"{stats.plus_minus(final, sign='+-')} / {stats.plus_minus(best, sign='+-')}"
                         + ("" if len(runs) == len(all_seeds) else f" ({len(runs)} of {len(all_seeds)} seeds)"))
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")

    checks, comparisons = {}, {}
    for labels in label_counts:
        for plain, flex in (("pseudolabel", "flex_pseudolabel"), ("uda", "flex_uda"), ("fixmatch", "flexmatch")):
            seeds = [s for s in all_seeds if (plain, labels, s) in rows and (flex, labels, s) in rows]
            if seeds:
                comparison = stats.compare(
                    flex, [rows[(flex, labels, s)]["test_error_final"] for s in seeds],
                    plain, [rows[(plain, labels, s)]["test_error_final"] for s in seeds], higher_is_better=False)
                comparisons[f"{flex} vs {plain} at {labels} labels"] = comparison
                checks[f"{flex} beats {plain} at {labels} labels"] = comparison["verdict"] == "beats"
        for base, successor in SUCCESSORS:
            seeds = [s for s in all_seeds if (base, labels, s) in rows and (successor, labels, s) in rows]
            if seeds:
                comparisons[f"{successor} vs {base} at {labels} labels"] = stats.compare(
                    successor, [rows[(successor, labels, s)]["test_error_final"] for s in seeds],
                    base, [rows[(base, labels, s)]["test_error_final"] for s in seeds], higher_is_better=False)
    speedups = []
    for labels in label_counts:
        for seed in all_seeds:
            fix, flex = rows.get(("fixmatch", labels, seed)), rows.get(("flexmatch", labels, seed))
            if fix and flex:
                eval_every = fix["iterations"] // len(fix["history"]["val_accuracy"])
                reach = iterations_to_reach(flex["history"]["val_accuracy"], fix["history"]["val_accuracy"][-1],
                                            eval_every)
                speedups.append({"labels": labels, "seed": seed, "fixmatch_iterations": fix["iterations"],
                                 "flexmatch_iterations_to_match": reach})
    if speedups:
        checks["flexmatch reaches fixmatch's final accuracy within 1/3 of the iterations"] = all(
            s["flexmatch_iterations_to_match"] is not None
            and s["flexmatch_iterations_to_match"] <= s["fixmatch_iterations"] / 3 for s in speedups)

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"summary": summary, "comparisons": comparisons, "checks": checks, "convergence": speedups,
                   "runs": {f"{a}/{n}/{s}": {**{k: v for k, v in m.items() if k != "history"},
                                             "val_accuracy": m["history"]["val_accuracy"]}
                            for (a, n, s), m in rows.items()},
                   "provenance": provenance.public(provenance.finish(record))}, f, indent=2)
    text = ("test error % final / best, mean +- sample std over seeds\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {c['statement']} at {key.rsplit(' at ', 1)[1]}" for key, c in comparisons.items())
            + "\n" + "\n".join(f"- {k}: {v}" for k, v in checks.items() if k.startswith("flexmatch reaches")) + "\n")
    with open(os.path.splitext(output)[0] + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
