"""The shape of AMSL's results table on real smartwatch data (seglearn's watch recordings).

For several normal / abnormal splits of the 7 exercises x 3 seeds, trains AMSL, its
ablations and the baselines on the normal training windows (the settings of an apps.amsl
preset, `--preset`, with overrides) and reports mPre, mRec, mF1 (the AMSL paper's: the
harmonic mean of mPre and mRec), the mean per-class F1, Acc (threshold: 98th percentile of
training scores) and AUROC, as mean +- std over seeds per split and over all runs. Also the fit time and the scoring
throughput (windows/s, test windows) of each method relative to the conv autoencoder,
measured in the same process one after the other (the machine is shared: ratios, not
absolute times, are the comparable numbers).

Methods: amsl (global + local memories, fused, six views, the reference code's loss weights),
amsl_no_ssl (original view only, no view classifier), amsl_no_memory, amsl_global_only,
amsl_local_only, amsl_first_port_losses (the first port's loss choices: cross-entropy averaged
over views, entropy summed over slots, linear decoder output), every baseline registered in
kerastl.anomaly.baselines.BASELINES, and PyOD's detectors on flattened windows
(pyod_iforest, pyod_lof, pyod_ecod, pyod_autoencoder: PyOD's defaults, seeded; they need the
`pyod` package, installed in the parity environment: run the script with its python).

Results go to benchmarks/results/amsl_benchmark.json (every run, written after each one;
finished runs are reused when the script is started again with the same settings, only when
its provenance shows today's code; --no-reuse: never; --merge adds the runs of other results
files of this script under the same rule, so splits can run in separate processes) and
amsl_benchmark.md (the tables).
Cells are mean ± sample std over seeds; AMSL against each other method (mF1, paired over
split x seed; per split, mF1 and AUROC paired over its seeds) is "better" only on every pair
or by a paired t-test at p < 0.05.

Usage:
  nice -n 10 .tox/parity/bin/python benchmarks/amsl_benchmark.py               # cpu preset, PyOD too
  nice -n 10 python benchmarks/amsl_benchmark.py --preset cpu --methods amsl conv_ae ocsvm
  python benchmarks/amsl_benchmark.py --preset paper --epochs 20 --splits IR,ER,TRAP,ROW --seeds 0 --methods amsl
  python benchmarks/amsl_benchmark.py --splits IR,ER,TRAP,ROW --seeds 0 --methods amsl conv_ae
  python benchmarks/amsl_benchmark.py --report-only
  python benchmarks/amsl_benchmark.py --splits IR,ER,TRAP,ROW --output runs/bench-amsl/split2   # in parallel,
  python benchmarks/amsl_benchmark.py --splits ABD,FEL,IR,ER --output runs/bench-amsl/split3   # then:
  python benchmarks/amsl_benchmark.py --splits IR,ER,TRAP,ROW ABD,FEL,IR,ER --merge runs/bench-amsl/split2.json \
      runs/bench-amsl/split3.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import provenance  # noqa: E402
import stats  # noqa: E402
from apps.amsl import PRESETS  # noqa: E402
from kerastl.anomaly.baselines import BASELINES  # noqa: E402

# Normal exercises per split (the rest are abnormal): an easy, a medium and a hard split on
# this data (the abnormal exercises of the last one move less than the normal ones).
SPLITS = ("PEN,TRAP,ROW", "IR,ER,TRAP,ROW", "ABD,FEL,IR,ER")
AMSL_VARIANTS = {
    "amsl": {},
    "amsl_no_ssl": {"transformations": ()},
    "amsl_no_memory": {"memory": "none"},
    "amsl_global_only": {"memory": "global"},
    "amsl_local_only": {"memory": "local"},
    "amsl_first_port_losses": {"ssl_reduction": "mean", "entropy_reduction": "sum", "decoder_activation": "linear"},
}
# PyOD's detectors (class in pyod.models.<module>), with their defaults; seeded where they draw.
PYOD = {"pyod_iforest": ("iforest", "IForest", {"random_state": True}),
        "pyod_lof": ("lof", "LOF", {}),
        "pyod_ecod": ("ecod", "ECOD", {}),
        "pyod_autoencoder": ("auto_encoder", "AutoEncoder", {"random_state": True, "verbose": 0})}
METHODS = (*AMSL_VARIANTS, *BASELINES, *PYOD)
COLUMNS = (("mpre", "mPre"), ("mrec", "mRec"), ("mf1", "mF1"), ("macro_f1", "mean F1"), ("accuracy", "Acc"),
           ("auroc", "AUROC"))
SETTING_KEYS = ("window", "stride", "epochs", "batch_size", "memory_slots", "filters", "lr", "lstm_units")
# apps.amsl's presets, and "small": the first port's cpu preset (conv widths 8 / 16, 50 slots, 8 epochs,
# batch 32), which cut AMSL's capacity; kept to measure what the capacity buys.
SETTINGS = {**PRESETS, "small": {"window": 64, "stride": 64, "epochs": 8, "batch_size": 32, "memory_slots": 50,
                                 "filters": "8,16", "lr": 1e-3, "lstm_units": 32}}
DEPENDENCIES = provenance.dependency_paths(__file__)


class PyODDetector:
    """A PyOD detector on flattened windows, with the same threshold rule as kerastl's detectors
    (the `percentile`-th percentile of its training scores)."""

    def __init__(self, module, cls, options, seed, percentile=98.0):
        import importlib

        try:
            detector_class = getattr(importlib.import_module(f"pyod.models.{module}"), cls)
        except ImportError as error:
            raise SystemExit(f"--methods: PyOD's {cls} needs the pyod package ({error}); run this script with "
                             ".tox/parity/bin/python, which has it (tox.ini [testenv:parity])")
        self.model = detector_class(**{k: (seed if v is True else v) for k, v in options.items()})
        self.percentile = percentile

    def fit(self, x):
        start = time.perf_counter()
        self.model.fit(x.reshape(len(x), -1))
        self.fit_seconds_ = time.perf_counter() - start
        self.threshold_ = float(np.percentile(self.decision_function(x), self.percentile))
        return self

    def decision_function(self, x):
        return np.asarray(self.model.decision_function(x.reshape(len(x), -1)), np.float64)


def build(method, settings, seed):
    from kerastl.anomaly import AMSLDetector, build_baseline

    if method in PYOD:
        import torch

        torch.manual_seed(seed)
        return PyODDetector(*PYOD[method], seed)

    filters = [int(f) for f in settings["filters"].split(",")]
    common = dict(epochs=settings["epochs"], batch_size=settings["batch_size"], learning_rate=settings["lr"],
                  seed=seed)
    if method in AMSL_VARIANTS:
        return AMSLDetector(name=method, num_slots=settings["memory_slots"], filters=filters,
                            **common, **AMSL_VARIANTS[method])
    return build_baseline(method, filters=filters, units=settings["lstm_units"], **common)


def run_one(method, data, settings, seed):
    from kerastl.anomaly import detection_metrics
    from kerastl.anomaly.detector import throughput

    detector = build(method, settings, seed)
    detector.fit(data.x_train)
    scores = detector.decision_function(data.x_test)
    return {**detection_metrics(scores, data.is_abnormal, detector.threshold_),
            "fit_seconds": detector.fit_seconds_,
            "windows_per_second": throughput(detector.decision_function, data.x_test)}


def mean_std(values):
    return stats.plus_minus(values, digits=3)


def comparisons(runs, methods, key="mf1", over="split x seed runs") -> dict:
    """AMSL's `key` (mF1) against every other method, paired over the (split, seed) runs both have."""
    by_pair = {(r["split"], r["seed"], r["method"]): r[key] for r in runs}
    result = {}
    for other in methods:
        pairs = sorted({(sp, se) for sp, se, m in by_pair if m == "amsl"} & {(sp, se) for sp, se, m in by_pair
                                                                            if m == other})
        if other != "amsl" and pairs:
            result[f"amsl vs {other}"] = stats.compare("amsl", [by_pair[(*p, "amsl")] for p in pairs], other,
                                                       [by_pair[(*p, other)] for p in pairs],
                                                       over=over)
    return result


def comparisons_by_split(runs, methods, splits) -> dict:
    """Per split: AMSL's mF1 and AUROC against every other method, paired over its seeds."""
    return {split: {key: comparisons([r for r in runs if r["split"] == split], methods, key, over="seeds")
                    for key in ("mf1", "auroc")} for split in splits}


def report(runs, settings, splits, seeds, methods, elapsed, command):
    lines = ["# AMSL benchmark: seglearn smartwatch exercises (real data)", "",
             f"Settings (apps.amsl preset {settings['preset']}): {json.dumps(settings)}; threshold = 98th percentile of "
             "training scores; normal recordings split 60/40 by recording, abnormal recordings all in test. "
             f"Seeds {', '.join(map(str, seeds))}. Cells: mean ± std over seeds. Total run time "
             f"{elapsed / 60:.1f} min on 2 shared CPU cores.", "",
             f"Command: `{command}`", "",
             "mF1 = 2 mPre mRec / (mPre + mRec) (the AMSL paper's); mean F1 = the mean of the normal and "
             "abnormal F1 scores.", ""]

    def table(title, selected):
        rows = [f"### {title}", "", "| method | " + " | ".join(label for _, label in COLUMNS) + " | runs |",
                "|---|" + "---|" * (len(COLUMNS) + 1)]
        for method in methods:
            chosen = [r for r in selected if r["method"] == method]
            if chosen:
                rows.append(f"| {method} | " + " | ".join(mean_std([r[key] for r in chosen]) for key, _ in COLUMNS)
                            + f" | {len(chosen)} |")
        return rows + [""]

    by_split = comparisons_by_split(runs, methods, splits)
    for split in splits:
        lines += table(f"normal {split}", [r for r in runs if r["split"] == split])
        for key, label in (("mf1", "mF1"), ("auroc", "AUROC")):
            if by_split[split][key]:
                lines += [f"{label}, paired over this split's seeds: "
                          + "; ".join(c["statement"] for c in by_split[split][key].values()) + ".", ""]
    lines += table("all splits", runs)
    lines += ["### Cost relative to the conv autoencoder (same run, same split and seed)", "",
              "| method | fit time / conv_ae | scoring windows/s / conv_ae | fit s (mean) | windows/s (mean) |",
              "|---|---|---|---|---|"]
    reference = {(r["split"], r["seed"]): r for r in runs if r["method"] == "conv_ae"}
    for method in methods:
        chosen = [r for r in runs if r["method"] == method and (r["split"], r["seed"]) in reference]
        if chosen:
            fit_ratio = [r["fit_seconds"] / reference[(r["split"], r["seed"])]["fit_seconds"] for r in chosen]
            speed_ratio = [r["windows_per_second"] / reference[(r["split"], r["seed"])]["windows_per_second"]
                           for r in chosen]
            lines.append(f"| {method} | {mean_std(fit_ratio)} | {mean_std(speed_ratio)} | "
                         f"{np.mean([r['fit_seconds'] for r in chosen]):.1f} | "
                         f"{np.mean([r['windows_per_second'] for r in chosen]):.0f} |")
    lines += ["", "mF1, paired over split x seed: " + "; ".join(
        c["statement"] for c in comparisons(runs, methods).values()) + "."]
    return "\n".join(lines) + "\n"


def reusable_runs(path, settings, reuse) -> tuple[list, float]:
    """The runs saved in results file `path` and their run time, when they were made with
    `settings` by today's code (an interrupted invocation's file holds a started record: its
    runs are finished ones); else none."""
    if not os.path.exists(path):
        return [], 0.0
    with open(path) as f:
        saved = json.load(f)
    if saved.get("settings") != settings:
        print(f"not reusing {path}: made with other settings ({saved.get('settings')})", flush=True)
        return [], 0.0
    if not provenance.may_reuse(path, DEPENDENCIES, reuse, finished=False):
        return [], 0.0
    return saved.get("runs", []), saved.get("elapsed_seconds", 0.0)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--splits", nargs="+", default=list(SPLITS), help="normal exercises per split")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--preset", default="cpu", choices=tuple(SETTINGS),
                        help="apps.amsl preset whose settings are used, or small (the first port's cpu preset). "
                             "Default: cpu, the app's default")
    for key in SETTING_KEYS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=type(PRESETS["paper"][key]), default=None,
                            help=f"override the preset's {key}")
    parser.add_argument("--output", default=None,
                        help="results path without extension (.json and .md are written). Default: "
                             "benchmarks/results/amsl_benchmark (cpu preset) or amsl_benchmark_<preset>")
    parser.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                        help="other results files of this script (e.g. a split run by another process, --output "
                             "elsewhere) whose runs join the output's, under the same rule: same settings, today's code")
    parser.add_argument("--report-only", action="store_true", help="write the tables from the saved runs only")
    provenance.add_reuse_option(parser)
    args = parser.parse_args()
    record = provenance.start(DEPENDENCIES)

    settings = {"preset": args.preset, **{key: SETTINGS[args.preset][key] for key in SETTING_KEYS}}
    settings.update({key: getattr(args, key) for key in SETTING_KEYS if getattr(args, key) is not None})
    if args.output is None:
        suffix = "" if args.preset == "cpu" else f"_{args.preset}"
        args.output = os.path.join(HERE, "results", f"amsl_benchmark{suffix}")
    json_path = args.output + ".json"
    runs, elapsed = [], 0.0
    for path in (json_path, *args.merge):
        saved_runs, saved_seconds = reusable_runs(path, settings, args.reuse)
        known = {(r["split"], r["seed"], r["method"]) for r in runs}
        runs += [r for r in saved_runs if (r["split"], r["seed"], r["method"]) not in known]
        elapsed += saved_seconds
    done = {(r["split"], r["seed"], r["method"]) for r in runs}
    if not args.report_only:
        from kerastl.anomaly.protocol import load_anomaly_data

        for split in args.splits:
            for seed in args.seeds:
                todo = [m for m in args.methods if (split, seed, m) not in done]
                if not todo:
                    continue
                data = load_anomaly_data("watch", split, settings["window"], settings["stride"], seed)
                for method in todo:
                    start = time.perf_counter()
                    result = run_one(method, data, settings, seed)
                    elapsed += time.perf_counter() - start
                    runs.append({"split": split, "seed": seed, "method": method, **result})
                    print(f"{split} seed {seed} {method}: mF1 {result['mf1']:.3f} AUROC {result['auroc']:.3f} "
                          f"fit {result['fit_seconds']:.1f} s", flush=True)
                    with open(json_path + ".tmp", "w") as f:  # started, not finished: no wall time yet
                        json.dump({"settings": settings, "runs": runs, "elapsed_seconds": elapsed,
                                   "provenance": provenance.public(record)}, f, indent=1)
                    os.replace(json_path + ".tmp", json_path)
        with open(json_path, "w") as f:
            json.dump({"settings": settings, "runs": runs, "elapsed_seconds": elapsed,
                       "comparisons": comparisons(runs, args.methods),
                       "comparisons_by_split": comparisons_by_split(runs, args.methods, args.splits),
                       "provenance": provenance.public(provenance.finish(record))}, f, indent=1)
    selected = [r for r in runs if r["split"] in args.splits and r["seed"] in args.seeds and r["method"] in args.methods]
    text = report(selected, settings, args.splits, args.seeds, args.methods, elapsed,
                  "nice -n 10 " + provenance.command_line())
    with open(args.output + ".md", "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
