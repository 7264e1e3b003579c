"""The shape of FlexMatch's Table 1 on real MNIST digits (mnist5k), with the cpu preset.

For every algorithm x label count x seed, runs `apps.flexmatch` and collects the test error
(final, best, median of the last 20 evaluations) and the test-accuracy curve. Writes
benchmarks/results/flexmatch_accuracy.json (every run) and .md (mean +- std per cell), and
checks the expected shape: Flex-* beat their fixed-threshold versions at 40 labels, and
FlexMatch reaches FixMatch's final accuracy in at most a third of the iterations.

Runs that already have a metrics.json under --runs are reused, so the script can be stopped
and started again. A full grid (12 algorithms x 2 label counts x 3 seeds) takes hours on 2 CPU
cores; use --algorithms / --labels / --seeds for a part (the tables then hold only that part).
Pi-Model, Mean Teacher, VAT, MixMatch and ReMixMatch run with TorchSSL's uratio 1, the others
with 7 (the app's per-algorithm default).

Usage:
  python benchmarks/flexmatch_accuracy.py
  python benchmarks/flexmatch_accuracy.py --algorithms flexmatch fixmatch --labels 40 --seeds 0
  python benchmarks/flexmatch_accuracy.py --report-only     # tables from the finished runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# TorchSSL's table order, then the Flex-* variants beside their fixed-threshold versions.
ALGORITHMS = ("supervised", "pimodel", "meanteacher", "vat", "mixmatch", "remixmatch", "pseudolabel",
              "flex_pseudolabel", "uda", "flex_uda", "fixmatch", "flexmatch")


def run_one(algorithm, labels, seed, runs, extra, report_only=False):
    folder = os.path.join(runs, f"{algorithm}-{labels}-{seed}")
    metrics_path = os.path.join(folder, "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = json.load(f)
        if "test_error_final" in metrics:
            return metrics
    if report_only:
        return None
    resume = ["--resume"] if os.path.isdir(os.path.join(folder, "checkpoints")) else []
    command = [sys.executable, "-m", "apps.flexmatch", "--dataset", "mnist5k", "--preset", "cpu",
               "--algorithm", algorithm, "--num-labels", str(labels), "--seed", str(seed),
               "--output", folder, "--no-export", *resume, *extra]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)
    with open(metrics_path) as f:
        return json.load(f)


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
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "bench-flexmatch"))
    parser.add_argument("--report-only", action="store_true",
                        help="summarise the finished runs only; start none (cells say how many seeds they hold)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further apps.flexmatch options, e.g. --extra --iterations 500")
    args = parser.parse_args()

    rows = {}
    for labels in args.labels:
        for algorithm in args.algorithms:
            for seed in args.seeds:
                metrics = run_one(algorithm, labels, seed, args.runs, args.extra, args.report_only)
                if metrics is not None:
                    rows[(algorithm, labels, seed)] = metrics

    table = {}
    for (algorithm, labels, seed), m in rows.items():
        table.setdefault((algorithm, labels), []).append(m)
    lines = ["| algorithm | " + " | ".join(f"{n} labels: final / best error %" for n in args.labels) + " |",
             "|---|" + "---|" * len(args.labels)]
    summary = {}
    for algorithm in args.algorithms:
        cells = []
        for labels in args.labels:
            runs = table.get((algorithm, labels), [])
            if not runs:
                cells.append("not run")
                continue
            final = np.array([m["test_error_final"] for m in runs])
            best = np.array([m["test_error_best"] for m in runs])
            summary[f"{algorithm}/{labels}"] = {"final_mean": final.mean(), "final_std": final.std(),
                                                "best_mean": best.mean(), "best_std": best.std(), "n": len(runs)}
            cells.append(f"{final.mean():.2f} +- {final.std():.2f} / {best.mean():.2f} +- {best.std():.2f}"
                         + ("" if len(runs) == len(args.seeds) else f" ({len(runs)} of {len(args.seeds)} seeds)"))
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")

    checks = {}
    for labels in args.labels:
        for plain, flex in (("pseudolabel", "flex_pseudolabel"), ("uda", "flex_uda"), ("fixmatch", "flexmatch")):
            a, b = summary.get(f"{plain}/{labels}"), summary.get(f"{flex}/{labels}")
            if a and b:
                checks[f"{flex} beats {plain} at {labels} labels"] = bool(b["final_mean"] < a["final_mean"])
    speedups = []
    for labels in args.labels:
        for seed in args.seeds:
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

    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "flexmatch_accuracy.json"), "w") as f:
        json.dump({"summary": summary, "checks": checks, "convergence": speedups,
                   "runs": {f"{a}/{n}/{s}": {**{k: v for k, v in m.items() if k != "history"},
                                             "val_accuracy": m["history"]["val_accuracy"]}
                            for (a, n, s), m in rows.items()}}, f, indent=2)
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in checks.items()) + "\n"
    with open(os.path.join(HERE, "results", "flexmatch_accuracy.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
