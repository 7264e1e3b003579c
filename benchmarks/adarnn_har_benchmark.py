"""AdaRNN classification benchmark: the shape of the paper's UCI HAR table on offline real data.

The seglearn smartwatch recordings (7 shoulder exercises, 6 channels at 50 Hz, 140
recordings of 10 subjects) cut into windows of 64 samples every 16; cross-time split: per
recording, the first 60 % of its windows train, the next 10 % validate, the last 30 % test
(windows overlapping a boundary dropped). Test ACC, macro P / R / F1 and one-vs-rest macro AUC
of the gradient-boosted trees baseline (the paper's LightGBM), GRU, MMD-RNN, DANN-RNN and
AdaRNN over 3 seeds (mean +- std).

Every run is `python -m apps.adarnn --task classification --dataset watch --preset cpu`
(in this process, without export; --epochs / --pre-epoch shorten it if given). A finished run
in --runs is reused only when its provenance.json shows the same command and today's code
(--no-reuse: never), so an interrupted benchmark continues. ± is the sample std over seeds;
"A beats B" (ACC) only when A is better on every seed or by a paired t-test at p < 0.05.

    python benchmarks/adarnn_har_benchmark.py
    python benchmarks/adarnn_har_benchmark.py --seeds 0 --epochs 20 --pre-epoch 10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import provenance  # noqa: E402
import stats  # noqa: E402
from adarnn_benchmark import run_once  # noqa: E402

from kerastl.timeseries.classification import METRIC_KEYS  # noqa: E402

METHODS = ("gbt", "gru", "mmd_rnn", "dann_rnn", "adarnn")
LABELS = {"gbt": "GBT (LightGBM-style)", "gru": "GRU", "mmd_rnn": "MMD-RNN", "dann_rnn": "DANN-RNN",
          "adarnn": "AdaRNN"}
HEADERS = {"acc": "ACC", "precision": "P", "recall": "R", "f1": "F1", "auc": "AUC"}
# The paper's Table 2 (UCI HAR), in %: what the rows of this table correspond to.
PAPER = {"gbt": (84.11, 83.73, 83.63, 84.91, 90.23), "gru": (85.68, 85.62, 85.51, 85.46, 91.33),
         "mmd_rnn": (86.39, 86.80, 86.26, 86.38, 91.77), "dann_rnn": (85.88, 85.59, 85.62, 85.56, 91.41),
         "adarnn": (87.31, 87.19, 87.18, 87.17, 92.32)}
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEPENDENCIES = provenance.dependency_paths(__file__)


def table(args, results):
    rows = results.setdefault("table", {})
    for seed in args.seeds:  # seed-major: a partial run still covers every method
        for method in METHODS:
            started = time.perf_counter()
            metrics = run_once(args.runs, f"watch-{method}-s{seed}",
                               ["--task", "classification", "--dataset", "watch", "--model", method, "--seed",
                                str(seed), *args.budget], DEPENDENCIES, args.reuse, done_key="acc")
            cell = rows.setdefault(method, {"runs": {}})
            cell["runs"][str(seed)] = {**{key: metrics[key] for key in METRIC_KEYS},
                                       "wall_seconds": metrics.get("wall_seconds", time.perf_counter() - started),
                                       "best_epoch": metrics.get("best_epoch"), "gbt_rounds": metrics.get("gbt_rounds")}
            for key in METRIC_KEYS:
                cell[key] = stats.spread([run[key] for run in cell["runs"].values()])
            results["split"] = metrics["split"]
            save(results)
    seeds = [str(seed) for seed in args.seeds]
    accuracy = {method: [rows[method]["runs"][seed]["acc"] for seed in seeds] for method in METHODS}
    results["comparisons"] = {
        f"{a} vs {b}": stats.compare(LABELS[a], accuracy[a], LABELS[b], accuracy[b])
        for a, b in [("adarnn", "gru"), ("adarnn", "mmd_rnn"), ("adarnn", "dann_rnn"),
                     *[("gbt", rnn) for rnn in ("gru", "mmd_rnn", "dann_rnn", "adarnn")]]}


def save(results):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "adarnn_har_benchmark.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(RESULTS, "adarnn_har_benchmark.md"), "w") as f:
        f.write(markdown(results))


def percent(value) -> str:
    if len(value["values"]) == 1:
        return f"{100 * value['mean']:.2f}"
    return f"{100 * value['mean']:.2f} ± {100 * value['std']:.2f}"


def markdown(results) -> str:
    lines = [f"# AdaRNN classification benchmark (the paper's UCI HAR table, on the watch exercises)\n\n"
             f"{results['setup']}\n"]
    rows = results.get("table", {})
    if rows:
        lines += ["## Test metrics in %, mean ± std over seeds\n",
                  "| method | " + " | ".join(HEADERS.values()) + " | seeds | seconds per run |",
                  "|---|" + "---|" * (len(HEADERS) + 2)]
        for method in METHODS:
            cell = rows.get(method)
            if cell:
                seconds = np.mean([run["wall_seconds"] for run in cell["runs"].values()])
                lines.append(f"| {LABELS[method]} | " + " | ".join(percent(cell[key]) for key in METRIC_KEYS)
                             + f" | {len(cell['runs'])} | {seconds:.0f} |")
        lines += ["\nThe paper's UCI HAR figures (%, for the shape only: other data, other split):\n",
                  "| method | " + " | ".join(HEADERS.values()) + " |", "|---|" + "---|" * len(HEADERS)]
        for method in METHODS:
            lines.append(f"| {LABELS[method]} | " + " | ".join(f"{v:.2f}" for v in PAPER[method]) + " |")
        lines.append("| AdaRNN (cosine) | 88.44 | 88.71 | 88.59 | 88.63 | 93.19 |")
        lines += ["\nTest ACC: " + "; ".join(c["statement"] for c in results.get("comparisons", {}).values()) + "."]
    split = results.get("split")
    if split:
        lines.append(f"\nWindows: train {split['windows']['train']}, validation {split['windows']['valid']}, test "
                     f"{split['windows']['test']} (test per class: {split['class_counts']['test']}).")
    lines.append(f"\nTotal time: {results.get('total_minutes') or 0:.1f} min over: " + "; ".join(
        f"`{i['command']}` ({i['minutes'] or 0:.1f} min)" for i in results.get("invocations", [])) + "\n")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default 0 1 2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the cpu preset's 30)")
    parser.add_argument("--pre-epoch", type=int, default=None,
                        help="pre-training epochs (default: the cpu preset's 15)")
    parser.add_argument("--runs", default="runs/bench-adarnn-har", help="run folders (reused when finished)")
    provenance.add_reuse_option(parser)
    args = parser.parse_args()
    record = provenance.start(DEPENDENCIES)
    args.budget = [*(["--epochs", str(args.epochs)] if args.epochs else []),
                   *(["--pre-epoch", str(args.pre_epoch)] if args.pre_epoch else [])]
    started = time.perf_counter()
    path = os.path.join(RESULTS, "adarnn_har_benchmark.json")
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
        # Runs of an earlier invocation are kept only when today's code made them.
        if not provenance.may_reuse(path, DEPENDENCIES, args.reuse):
            results = {}
        results.pop("provenance", None)  # set again when this invocation ends
    results["setup"] = (
        "apps.adarnn --task classification --dataset watch --preset cpu: windows of 64 samples every 16, "
        "standardised channels, cross-time split per recording (60 % train / 10 % validation / 30 % test, in "
        "time order), TDC into K = 3 segments of the training windows ordered by relative time (CORAL), GRU 2 x 64, "
        "batch 36 per segment, lr 2e-3, adversarial TDM distance, lambda 0.1, "
        f"{args.epochs or 30} epochs ({args.pre_epoch or 15} of pre-training), the best validation epoch's weights "
        "evaluated; GBT: histogram gradient-boosted trees (31 leaves, lr 0.1) on per-window statistics, up to 300 "
        "rounds, the best on validation kept (no subsampling: the same trees for every seed). Seeds "
        f"{args.seeds}; 2 shared CPU cores.")
    command = " ".join(["python benchmarks/adarnn_har_benchmark.py", *sys.argv[1:]])
    results["command"] = command
    invocations = results.setdefault("invocations", [])
    invocations.append({"command": command, "minutes": None})
    table(args, results)
    invocations[-1]["minutes"] = (time.perf_counter() - started) / 60.0
    results["total_minutes"] = sum(i["minutes"] or 0.0 for i in invocations)
    results["provenance"] = provenance.public(provenance.finish(record))
    save(results)
    print(markdown(results))


if __name__ == "__main__":
    main()
