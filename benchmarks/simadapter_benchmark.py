"""The shape of the SimAdapter paper's table on the offline espeak-ng corpus.

Sources ru, it, pt, cy, eu (rich: --source-utterances each) and targets ro, cs, ar, uk
(low-resource: --target-utterances each; test words never heard in training), synthesised
once by espeak-ng into --cache-dir. For every target and seed (--seeds, default 0,1,2),
`python -m apps.simadapter --method all` (cpu preset unless --preset) trains and evaluates
scratch, head, full_ft, adapter, simadapter, metaadapter and simadapter_plus on ONE source
model per seed (pre-trained once, cached, reused for every target); a second run per target
and seed (`--adapter-training joint --method adapter`) gives the reference's two-stage
(heads first, then adapters with the heads frozen) vs joint adapter comparison (its source
model, with the sources' adapters trained with their heads, is also trained once per seed).
Reported per target and on average: CER and WER (greedy CTC decoding; mean +- sample std
over the seeds), the trained-parameter share of every method per target, and the training
throughput (utterances/s) of adapter-only training relative to full fine-tuning, measured in
the same process one after the other (the machine is shared: the ratio, not absolute speed,
is the comparable number).

Each app run keeps its folder in runs/bench-simadapter/<target>-<variant>-<preset>-seed<seed>/ and is reused (or
resumed: finished methods are reused) when the script is started again, but only when its
provenance.json shows the same command and today's code (--no-reuse: never). The cached
source models are removed first when today's code did not make them (the espeak corpus is
kept: it is data). Results go to benchmarks/results/simadapter_benchmark.json (after every
run) and simadapter_benchmark.md.

--trained-shares measures the trained-parameter share of every method without the corpus:
the same stages (`kerastl.adapters.methods.run_methods`) run one epoch each on two random
batches, on models of --preset's size (sources' adapters --source-adapter-dim, the target's
--adapter-dim), with the given vocabulary size for every language; the shares depend on the
data only through the output layer's size. Results: simadapter_trained_shares.{json,md}.

Usage:
  nice -n 10 python benchmarks/simadapter_benchmark.py --trained-shares --preset paper
  python benchmarks/simadapter_benchmark.py --targets ro --preset smoke
  python benchmarks/simadapter_benchmark.py --report-only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import types

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import provenance  # noqa: E402
import stats  # noqa: E402
from apps import simadapter  # noqa: E402
from kerastl import app  # noqa: E402
from kerastl.adapters.methods import METHODS  # noqa: E402

RESULTS = os.path.join(HERE, "results")
DEPENDENCIES = provenance.dependency_paths(__file__)
VARIANTS = {"two_stage": ["--method", "all"], "joint": ["--adapter-training", "joint", "--method", "adapter"]}
PAPER_WER = {"ro": {"full_ft": 53.90, "adapter": 48.34, "simadapter": 47.37, "metaadapter": 44.59,
                    "simadapter_plus": 47.29},
             "cs": {"full_ft": 34.75, "adapter": 37.93, "simadapter": 35.86, "metaadapter": 37.13,
                    "simadapter_plus": 34.72},
             "ar": {"full_ft": 47.63, "adapter": 47.31, "simadapter": 47.23, "metaadapter": 46.82,
                    "simadapter_plus": 46.39},
             "uk": {"full_ft": 45.62, "adapter": 50.84, "simadapter": 48.73, "metaadapter": 49.36,
                    "simadapter_plus": 47.41}}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="ro,cs,ar,uk")
    parser.add_argument("--sources", default="ru,it,pt,cy,eu")
    parser.add_argument("--preset", default="cpu", choices=app.PRESET_NAMES)
    parser.add_argument("--cache-dir", default=os.path.join(ROOT, "runs", "bench-simadapter", "cache"))
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "bench-simadapter"))
    parser.add_argument("--variants", default=",".join(VARIANTS), help="two_stage and/or joint")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (each: its own corpus draw, source "
                                                          "model and target runs)")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--trained-shares", action="store_true",
                        help="only measure each method's trained-parameter share (random batches, no corpus)")
    parser.add_argument("--vocabulary-size", type=int, default=40,
                        help="--trained-shares: characters per language, blank included. Default: 40")
    parser.add_argument("--extra", default="", help="extra app options, e.g. '--epochs 10'")
    provenance.add_reuse_option(parser)
    return parser.parse_args()


def source_models_made_today(args) -> None:
    """Removes the cached source models unless today's code trained them (the app reuses
    whatever the cache holds), and records the code that fills the cache from now on."""
    cache = os.path.join(args.cache_dir, "simadapter-sources")
    if os.path.isdir(cache) and not provenance.may_reuse(cache, DEPENDENCIES, args.reuse):
        shutil.rmtree(cache)
    if not os.path.isdir(cache):
        os.makedirs(cache)
        provenance.write(cache, provenance.finish(provenance.start(DEPENDENCIES)))


def run_one(args, target, variant, seed) -> dict:
    folder = os.path.join(args.runs, f"{target}-{variant}-{args.preset}-seed{seed}")
    argv = ["--preset", args.preset, "--sources", args.sources, "--target", target, "--cache-dir",
            os.path.relpath(args.cache_dir, ROOT), "--no-export", "--seed", str(seed), *VARIANTS[variant],
            *args.extra.split()]
    print(f"=== {target} {variant} seed {seed}", flush=True)
    metrics = provenance.app_run(folder, "apps.simadapter", argv, DEPENDENCIES, args.reuse, resumable=True,
                                 main=lambda full: app.main(simadapter.build_parser, simadapter.run, full))

    def without_history(facts):
        return {k: v for k, v in facts.items() if k != "history"} if isinstance(facts, dict) else facts

    return {"methods": {m: without_history(facts) for m, facts in metrics["methods"].items()},
            "sources_training": {k: without_history(v) for k, v in metrics["sources_training"].items()},
            "data": metrics["data"], "seconds": provenance.read(folder)["wall_seconds"],
            "command": provenance.read(folder)["command"]}


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def runs_of(results, target, variant) -> list[dict]:
    """The method facts of every seed's run of (target, variant)."""
    prefix = f"{target}/{variant}/"
    return [run["methods"] for key, run in sorted(results.items()) if key.startswith(prefix)]


def per_seed(results, target, variant, method, key) -> list[float]:
    return [run[method][key] for run in runs_of(results, target, variant) if method in run]


def cell(values, scale=100.0) -> str:
    return stats.plus_minus(values, scale) if values else "-"


def comparisons(results, targets) -> dict:
    """CER of method pairs, paired over every (target, seed) run that holds both methods."""
    pairs = [("simadapter", "adapter"), ("metaadapter", "adapter"), ("simadapter_plus", "simadapter"),
             ("full_ft", "simadapter_plus")]
    runs = [run for t in targets for run in runs_of(results, t, "two_stage")
            if {m for pair in pairs for m in pair} <= set(run)]
    if len(runs) < 2:
        return {}
    cer = {m: [run[m]["cer"] for run in runs] for pair in pairs for m in pair}
    return {f"{a} vs {b}": stats.compare(a, cer[a], b, cer[b], higher_is_better=False, over="target-seed runs")
            for a, b in pairs}


def report(results, settings) -> str:
    targets = [t for t in settings["targets"] if runs_of(results, t, "two_stage")]
    methods = [m for m in METHODS if any(m in run for t in targets for run in runs_of(results, t, "two_stage"))]
    seeds = {t: len(runs_of(results, t, "two_stage")) for t in targets}
    lines = [f"# SimAdapter benchmark (espeak-ng corpus, preset {settings['preset']})", "",
             f"Sources {settings['sources']}; targets {', '.join(targets)}; seeds per target "
             f"{', '.join(f'{t} {n}' for t, n in seeds.items())} (mean ± sample std over the seeds). Command: "
             f"`{settings['command']}`", ""]

    def table(metric, label):
        lines.extend([f"## {label} % (greedy CTC decoding; lower is better)", "",
                      "| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)])
        for t in targets:
            lines.append(f"| {t} | " + " | ".join(cell(per_seed(results, t, "two_stage", m, metric))
                                                  for m in methods) + " |")
        averages = [mean([mean(per_seed(results, t, "two_stage", m, metric)) for t in targets]) for m in methods]
        lines.append("| average | " + " | ".join("-" if a is None else f"{a * 100:.2f}" for a in averages) + " |")
        lines.append("")

    table("wer", "WER")
    table("cer", "CER")
    paired = comparisons(results, targets)
    if paired:
        lines.extend(["CER, paired over the target-seed runs: " + "; ".join(c["statement"] for c in paired.values())
                      + ".", ""])
    lines.extend(["## Trained-parameter share % (of the recogniser used for the target: the output layer's size "
                  "follows the target's alphabet)", "",
                  "| target | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)])
    for t in targets:
        lines.append(f"| {t} | " + " | ".join(
            "-" if not (v := per_seed(results, t, "two_stage", m, "trained_share")) else f"{mean(v) * 100:.2f}"
            for m in methods) + " |")
    lines.append("")
    joint = [t for t in targets if runs_of(results, t, "joint")]
    if joint:
        lines.extend(["## Adapter: two-stage (heads first, then adapters with the heads frozen) vs joint training", "",
                      "| target | two-stage WER % | joint WER % | two-stage CER % | joint CER % |",
                      "|---|---|---|---|---|"])
        for t in joint:
            lines.append(f"| {t} | " + " | ".join(cell(per_seed(results, t, v, "adapter", metric))
                                                  for metric in ("wer", "cer") for v in ("two_stage", "joint")) + " |")
        lines.append("")
    speed = [t for t in targets if per_seed(results, t, "two_stage", "adapter", "utterances_per_second")
             and per_seed(results, t, "two_stage", "full_ft", "utterances_per_second")]
    if speed:
        lines.extend(["## Training throughput: adapter-only vs full fine-tuning (same process)", "",
                      "| target | adapter utt/s | full_ft utt/s | ratio |", "|---|---|---|---|"])
        ratios = []
        for t in speed:
            a = mean(per_seed(results, t, "two_stage", "adapter", "utterances_per_second"))
            f = mean(per_seed(results, t, "two_stage", "full_ft", "utterances_per_second"))
            ratios.append(a / f)
            lines.append(f"| {t} | {a:.1f} | {f:.1f} | {a / f:.2f} |")
        lines.append(f"| mean | | | {mean(ratios):.2f} |")
        lines.append("")
    minutes = sum(run["seconds"] for run in results.values()) / 60
    lines.extend([f"Wall time of these app runs: {minutes:.0f} min (corpus synthesis and both source models "
                  "included; a shared machine). Test phrases are 1-3 dictionary words never heard in training, so "
                  "one wrong letter fails a word: WER saturates near 100 % at these error rates and CER is the "
                  "informative column.", ""])
    lines.extend(["Paper (Common Voice, WER %): " + "; ".join(
        f"{t}: " + ", ".join(f"{m} {v}" for m, v in PAPER_WER[t].items()) for t in targets if t in PAPER_WER), ""])
    return "\n".join(lines)


def trained_shares(args) -> dict:
    """{method: trained share} of every method on --preset-sized models (see the docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kerastl.adapters.methods import StageSettings, TargetData, run_methods
    from kerastl.adapters.model import MultilingualASR

    preset = simadapter.PRESETS[args.preset]
    sources, target = args.sources.split(","), args.targets.split(",")[0]
    sizes = {key: preset[key] for key in simadapter.MODEL_OPTIONS}
    rng = np.random.default_rng(0)

    def batches(count=2, batch=4, frames=64):
        return tf.data.Dataset.from_tensor_slices({
            "features": rng.normal(size=(count * batch, frames, 80)).astype("float32"),
            "feature_lengths": np.full(count * batch, frames, "int32"),
            "labels": rng.integers(1, args.vocabulary_size, size=(count * batch, 5)).astype("int32"),
            "label_lengths": np.full(count * batch, 5, "int32")}).batch(batch)

    def model(languages, target_language=None):
        asr = MultilingualASR({lang: args.vocabulary_size for lang in languages}, **sizes,
                              adapter_dims={lang: preset["source_adapter_dim"] for lang in languages})
        if target_language:
            asr.add_language(target_language, args.vocabulary_size)
        return asr

    keras.utils.set_random_seed(0)
    data = TargetData(batches(), batches(1), None, dev=batches(1), source_train={lang: batches() for lang in sources})
    data.vocabulary = types.SimpleNamespace(decode=lambda ids: "".join(chr(97 + i % 26) for i in ids))
    settings = StageSettings(epochs=1, fusion_epochs=1, meta_epochs=1, verbose=0)
    results = run_methods(METHODS, lambda: model(sources, target), lambda: model([target]), target, sources, data,
                          settings)
    return {method: facts["trained_share"] for method, facts in results.items()}


def write_trained_shares(args) -> None:
    record = provenance.start(DEPENDENCIES)
    shares = trained_shares(args)
    preset = simadapter.PRESETS[args.preset]
    settings = {"preset": args.preset, "sources": args.sources, "target": args.targets.split(",")[0],
                "vocabulary_size": args.vocabulary_size,
                "model": {key: preset[key] for key in (*simadapter.MODEL_OPTIONS, "source_adapter_dim")},
                "command": f"nice -n 10 python benchmarks/simadapter_benchmark.py --trained-shares --preset "
                           f"{args.preset}"}
    stem = os.path.join(RESULTS, "simadapter_trained_shares")
    with open(stem + ".json", "w") as f:
        json.dump({"settings": settings, "trained_share": shares,
                   "provenance": provenance.public(provenance.finish(record))}, f, indent=1)
    model = settings["model"]
    text = "\n".join([
        f"# Trained-parameter share per method (preset {args.preset}, no training data)", "",
        f"Encoder {model['num_layers']} x {model['hidden_dim']} ({model['num_heads']} heads, FFN "
        f"{model['intermediate_dim']}), CTC heads of {args.vocabulary_size} characters, sources {args.sources} "
        f"(adapters {model['source_adapter_dim']}), target {settings['target']} (adapters {model['adapter_dim']}). "
        f"Share = parameters the method trains / parameters of the target's recogniser. Command: "
        f"`{settings['command']}`.", "",
        "| " + " | ".join(shares) + " |", "|" + "---|" * len(shares),
        "| " + " | ".join(f"{share * 100:.2f} %" for share in shares.values()) + " |", ""])
    with open(stem + ".md", "w") as f:
        f.write(text)
    print(text)


def main():
    args = parse_args()
    if args.trained_shares:
        write_trained_shares(args)
        return
    path = os.path.join(RESULTS, "simadapter_benchmark.json")
    settings = {"targets": args.targets.split(","), "sources": args.sources, "preset": args.preset,
                "extra": args.extra, "seeds": [int(seed) for seed in args.seeds.split(",")],
                "command": "nice -n 10 python benchmarks/simadapter_benchmark.py"
                           + (f" --preset {args.preset}" if args.preset != "cpu" else "")
                           + (f" --targets {args.targets}" if args.targets != "ro,cs,ar,uk" else "")
                           + (f" --seeds {args.seeds}" if args.seeds != "0,1,2" else "")
                           + (f" --extra '{args.extra}'" if args.extra else "")}
    record = provenance.start(DEPENDENCIES)
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        # Runs of an earlier invocation are kept only when today's code made them.
        if {k: saved.get("settings", {}).get(k) for k in ("sources", "preset", "extra", "seeds")} == \
                {k: settings[k] for k in ("sources", "preset", "extra", "seeds")} and \
                provenance.may_reuse(path, DEPENDENCIES, args.reuse):
            results = saved["results"]
    if not args.report_only:
        os.makedirs(RESULTS, exist_ok=True)
        source_models_made_today(args)
        for variant in args.variants.split(","):  # the main table first, the joint comparison after
            for seed in settings["seeds"]:
                for target in settings["targets"]:
                    results[f"{target}/{variant}/seed{seed}"] = run_one(args, target, variant, seed)
                    with open(path + ".tmp", "w") as f:  # no provenance until every run is done
                        json.dump({"settings": settings, "results": results}, f, indent=1)
                    os.replace(path + ".tmp", path)
                    with contextlib.suppress(Exception):
                        with open(os.path.join(RESULTS, "simadapter_benchmark.md"), "w") as f:
                            f.write(report(results, settings))
        with open(path, "w") as f:
            json.dump({"settings": settings, "results": results,
                       "comparisons": comparisons(results, settings["targets"]),
                       "provenance": provenance.public(provenance.finish(record))}, f, indent=1)
    text = report(results, settings)
    with open(os.path.join(RESULTS, "simadapter_benchmark.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
