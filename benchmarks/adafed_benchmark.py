"""The shape of AdaFed's PAMAP table on offline data: mean and per-client accuracy of Base,
FedAvg, FedBN, FedProx, FedPer and FedAP, plus the TFF process's time per round relative to
the local engine.

Accuracy (main or federated environment; local engine): for each setting x seed, one
`apps.adafed --algorithm all` run; settings: the smartwatch subjects as clients (`watch`),
mnist5k over 20 clients with Dirichlet alpha 0.1 and 0.01. A finished run (metrics.json and
provenance.json under --runs) is reused only when it was made by today's code (--no-reuse:
never). Writes benchmarks/results/adafed_benchmark.{json,md}: mean +- sample std over seeds,
the per-seed values, and FedAP against every other method ("beats" only when better on every
seed or by a paired t-test at p < 0.05).

Timing (federated environment only, `--only tff-time`): the same rounds through both engines
on the watch clients; writes benchmarks/results/adafed_tff_time.json.

Traffic (federated environment only, `--only bytes`): bytes one client receives and sends per
round of the TFF process (`kerastl.federated.tff_process.client_traffic`: the tensors of every
value the round moves between server and clients, from the process's types) with 10 and 50
clients and LeNet-5-BN on 28x28 images, for today's process (each client selects its own row)
and for the process of commit `BROADCAST_COMMIT` (every client received the whole stack of
personalised models), loaded from git; writes benchmarks/results/adafed_tff_bytes.{json,md}.

Usage:
  python benchmarks/adafed_benchmark.py                       # accuracy table (hours on 2 cores)
  python benchmarks/adafed_benchmark.py --settings watch --seeds 0
  .tox/federated/bin/python benchmarks/adafed_benchmark.py --only tff-time
  .tox/federated/bin/python benchmarks/adafed_benchmark.py --only bytes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types

import provenance
import stats

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEPENDS_ON = ("apps.adafed",)  # run in a subprocess: invisible to provenance's import scan
DEPENDENCIES = provenance.dependency_paths(__file__)
SETTINGS = {
    "watch": ["--dataset", "watch"],
    "mnist5k-a0.1": ["--dataset", "mnist5k", "--clients", "20", "--alpha", "0.1"],
    # A plain Dirichlet(0.01) cannot give 20 clients data: the reference's pairing scheme can.
    "mnist5k-a0.01": ["--dataset", "mnist5k", "--clients", "20", "--alpha", "0.01", "--partition", "pairs"],
}
# The last commit whose TFF process broadcast every client's model to every client.
BROADCAST_COMMIT = "8e51789051116b95af670351c6db12687fbca329"


def run_setting(setting, seed, runs, extra, reuse=True):
    argv = ["--preset", "cpu", "--algorithm", "all", "--seed", str(seed), "--no-export", *SETTINGS[setting], *extra]
    return provenance.app_run(os.path.join(runs, f"{setting}-{seed}"), "apps.adafed", argv, DEPENDENCIES, reuse)


def accuracy(args):
    record = provenance.start(DEPENDENCIES)
    rows = {}
    for setting in args.settings:
        for seed in args.seeds:
            rows[(setting, seed)] = run_setting(setting, seed, args.runs, args.extra, args.reuse)
    summary, lines = {}, ["| algorithm | " + " | ".join(args.settings) + " |", "|---|" + "---|" * len(args.settings)]
    algorithms = next(iter(rows.values()))["algorithms"]  # `--algorithm all`: every registered one
    for algorithm in algorithms:
        cells = []
        for setting in args.settings:
            means = [rows[(setting, s)]["results"][algorithm]["mean_accuracy"] for s in args.seeds]
            summary[f"{algorithm}/{setting}"] = stats.spread(means)
            cells.append(stats.plus_minus(means, 100, sign="+-"))
        lines.append(f"| {algorithm} | " + " | ".join(cells) + " |")
    per_client = {f"{setting}/{seed}": {a: m["results"][a]["client_accuracy"] for a in algorithms}
                  for (setting, seed), m in rows.items()}
    comparisons = {f"fedap vs {other} on {s}": stats.compare("FedAP", summary[f"fedap/{s}"]["values"], other,
                                                             summary[f"{other}/{s}"]["values"])
                   for s in args.settings for other in algorithms if other != "fedap"}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "adafed_benchmark.json"), "w") as f:
        json.dump({"summary": summary, "comparisons": comparisons, "per_client": per_client, "seeds": args.seeds,
                   "extra": args.extra, "provenance": provenance.public(provenance.finish(record))}, f, indent=2)
    text = ("mean client test accuracy % at the best-validation round (mean +- sample std over seeds "
            f"{args.seeds})\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {c['statement']}" for c in comparisons.values()))
    with open(os.path.join(HERE, "results", "adafed_benchmark.md"), "w") as f:
        f.write(text + "\n")
    print(text)


def tff_time(args):
    sys.path.insert(0, ROOT)
    import tensorflow_federated as tff  # noqa: F401  (fails outside the federated environment)

    from kerastl.data.clients import load_federated_data
    from kerastl.federated.models import model_for
    from kerastl.federated.simulation import FederatedSimulation, make_clients
    from kerastl.federated.tff_process import TFFSimulation

    record = provenance.start(DEPENDENCIES)
    data = load_federated_data("watch")
    clients = make_clients(data, 32, shuffle_seed=0)
    times = {}
    try:
        for name, engine in (("tff", TFFSimulation), ("local", FederatedSimulation)):
            simulation = engine(lambda: model_for(data.input_shape, data.num_classes), clients, "fedap", 0.05)
            simulation.run_round()  # the first round traces and compiles
            start = time.perf_counter()
            for _ in range(args.rounds):
                simulation.run_round()
            times[name] = (time.perf_counter() - start) / args.rounds
    finally:
        from kerastl.federated.remote import stop_tff_workers

        stop_tff_workers()
    result = {"seconds_per_round": times, "tff_over_local": times["tff"] / times["local"], "rounds": args.rounds,
              "clients": len(clients), "dataset": "watch", "algorithm": "fedap",
              "provenance": provenance.public(provenance.finish(record))}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "adafed_tff_time.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))


def committed_module(path: str, commit: str) -> types.ModuleType:
    """The Python module `path` as it was at `commit` (read from git, not the work tree)."""
    source = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    module = types.ModuleType(f"{path}@{commit[:7]}")
    exec(compile(source, f"{path}@{commit[:7]}", "exec"), module.__dict__)
    return module


def traffic(args):
    sys.path.insert(0, ROOT)
    import numpy as np
    import tensorflow as tf

    from kerastl.federated import tff_process
    from kerastl.federated.models import model_for

    record = provenance.start(DEPENDENCIES)
    build = lambda: model_for((28, 28, 1), 10, 0, "lenet5_bn")  # noqa: E731
    model_bytes = sum(w.nbytes for w in build().get_weights())
    images = tf.data.Dataset.from_tensor_slices((np.zeros((2, 28, 28, 1), np.float32), np.zeros(2, np.int64)))
    spec = tff_process.with_client_ids(images.batch(2), 0).element_spec
    processes = {"select (today)": tff_process,
                 f"broadcast ({BROADCAST_COMMIT[:7]})": committed_module("kerastl/federated/tff_process.py",
                                                                          BROADCAST_COMMIT)}
    rows, lines = [], ["| process | clients | received per client | sent per client | all clients, both ways |",
                       "|---|---|---|---|---|"]
    path = os.path.join(HERE, "results", "adafed_tff_bytes")
    try:
        for name, module in processes.items():
            for clients in args.clients:
                counted = tff_process.client_traffic(module.build_fedap_process(build, clients, spec, "fedap"))
                total = clients * (counted["received"] + counted["sent"])
                rows.append({"process": name, "clients": clients, "received_bytes": counted["received"],
                             "sent_bytes": counted["sent"], "round_bytes_all_clients": total})
                lines.append(f"| {name} | {clients} | {counted['received'] / 1e6:.3f} MB | "
                             f"{counted['sent'] / 1e6:.3f} MB | {total / 1e6:.2f} MB |")
                result = {"rows": rows, "model": "lenet5_bn", "model_bytes": model_bytes, "algorithm": "fedap",
                          "counted": "tensor bytes of the values a round of the process moves between the server "
                                     "and one client, from its types (client_traffic); not TFF's wire encoding",
                          "provenance": provenance.public(provenance.finish(dict(record)))}
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".json", "w") as f:
                    json.dump(result, f, indent=2)
                with open(path + ".md", "w") as f:
                    f.write(f"FedAP TFF process, LeNet-5-BN ({model_bytes} bytes of weights), bytes per round\n\n"
                            + "\n".join(lines) + "\n")
    finally:
        from kerastl.federated.remote import stop_tff_workers

        stop_tff_workers()
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("accuracy", "tff-time", "bytes"), default="accuracy")
    parser.add_argument("--clients", nargs="+", type=int, default=[10, 50], help="clients simulated (bytes)")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (tff-time)")
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs", "bench-adafed"))
    provenance.add_reuse_option(parser)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="further apps.adafed options, e.g. --extra --rounds 20 --lr 0.05")
    args = parser.parse_args()
    {"accuracy": accuracy, "tff-time": tff_time, "bytes": traffic}[args.only](args)


if __name__ == "__main__":
    main()
