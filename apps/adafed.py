"""AdaFed / FedAP: personalised federated learning by batch-norm similarity, and its baselines.

Every client keeps its own model. Each round, every client trains locally (plain SGD), then
receives its own aggregate: FedAP weighs the other clients by the similarity of their
batch-norm input statistics (W_ii = --self-weight) and keeps BN layers local; the baselines
are base (no communication), fedavg, fedbn (BN local), fedprox (FedAvg + proximal term) and
fedper (last layer local). FedAP's statistics come from one shared model: the first
--pretrain-rounds rounds are FedAvg rounds (the pre-training; no data leaves a client).

Engines: --engine local (every client in this process; main or federated environment) or
--engine tff (a TensorFlow Federated iterative process; federated environment only).

Data: --dataset watch (seglearn's smartwatch recordings, one client per subject: real non-IID
data), mnist5k (label-skewed over --clients by Dirichlet(--alpha)), pamap2 (Protocol/*.dat from
--data-dir, one client per subject) or npz:PATH (arrays x, y, client). Each client's data is
split 40 / 30 / 30 into train / test / validation.

Writes <output>/metrics.json: for each algorithm run, client_accuracy (per client test
accuracy) and mean_accuracy at the round with the best mean validation accuracy (the paper's
figure), best_round and the per-round history; weight_matrix (FedAP). The first algorithm's
figures are also at the top level. plots/similarity.png (FedAP's W as a heatmap),
plots/client_accuracy.png (per-client accuracy bars per algorithm). Exports every client's
model of the first algorithm to <export-dir>/adafed/client_<k>/<version>/ (TF Serving layout;
input `x`, outputs probabilities, classes).

Examples:
  python -m apps.adafed --dataset watch --algorithm fedap,fedavg,fedbn,base
  python -m apps.adafed --dataset mnist5k --clients 20 --alpha 0.1 --rounds 50
  .tox/federated/bin/python -m apps.adafed --engine tff --dataset watch     # federated environment
"""

from __future__ import annotations

import os

from kerastl import app

APP = "adafed"
ALGORITHMS = ("fedap", "fedavg", "fedbn", "fedprox", "fedper", "base")
PRESETS = {
    "smoke": {"rounds": 2, "local_epochs": 1, "batch_size": 32, "lr": 0.01, "clients": 4, "alpha": 0.1,
              "self_weight": 0.5, "mu": 0.01, "pretrain_rounds": 1},
    # Sized for 2 CPU cores: fewer rounds with a larger step than the reference's 300 x 0.01.
    "cpu": {"rounds": 20, "local_epochs": 1, "batch_size": 32, "lr": 0.05, "clients": 20, "alpha": 0.1,
            "self_weight": 0.5, "mu": 0.01, "pretrain_rounds": 1},
    # The reference: 300 rounds, 1 local epoch, batch 32, SGD 0.01, 20 clients, lambda 0.5.
    "paper": {"rounds": 300, "local_epochs": 1, "batch_size": 32, "lr": 0.01, "clients": 20, "alpha": 0.1,
              "self_weight": 0.5, "mu": 0.01, "pretrain_rounds": 1},
}
TFF_HINT = ("--engine tff needs tensorflow-federated 0.87.0, which needs TF 2.14 and Keras 2 (it rejects Keras 3 "
            "models), so it runs in the federated environment: `tox -e federated --notest`, then "
            "`.tox/federated/bin/python -m apps.adafed --engine tff ...` from the project folder")


def build_parser():
    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--engine", default="local", choices=("local", "tff"),
                        help="local: every client in this process; tff: a TensorFlow Federated process "
                             "(federated environment). Default: local")
    parser.add_argument("--algorithm", default="fedap",
                        help=f"one or more of {', '.join(ALGORITHMS)} (comma-separated), or all. Default: fedap")
    parser.add_argument("--dataset", default="watch", help="watch, mnist5k, pamap2 or npz:PATH. Default: watch")
    app.add_preset_option(parser, "--clients", type=int, help="clients of a Dirichlet label split (mnist5k)")
    app.add_preset_option(parser, "--alpha", type=float, help="Dirichlet concentration of the label split (mnist5k)")
    parser.add_argument("--partition", default="dirichlet", choices=("dirichlet", "pairs"),
                        help="mnist5k label split: dirichlet (plain, per class over all clients) or pairs (the "
                             "reference's: Dirichlet within pairs of clients; feasible for --alpha 0.01). "
                             "Default: dirichlet")
    app.add_preset_option(parser, "--rounds", type=int, help="communication rounds")
    app.add_preset_option(parser, "--local-epochs", type=int, help="local epochs per round")
    app.add_preset_option(parser, "--batch-size", type=int, help="local batch size")
    app.add_preset_option(parser, "--lr", type=float, help="local SGD learning rate")
    app.add_preset_option(parser, "--self-weight", type=float, help="FedAP's lambda: the weight of a client's own model")
    app.add_preset_option(parser, "--mu", type=float, help="FedProx's proximal weight")
    app.add_preset_option(parser, "--pretrain-rounds", type=int,
                          help="FedAP: FedAvg rounds before the BN statistics and W are taken")
    parser.add_argument("--local-layers", type=int, default=1, help="FedPer: last weighted layers kept local")
    parser.add_argument("--tff-workers", metavar="HOST:PORT,...", default=None,
                        help="--engine tff: run the rounds on TFF worker services (worker_binary --port=P on each "
                             "host; see the README) instead of a local worker")
    parser.add_argument("--window", type=int, default=None,
                        help="sensor window length (watch: 100 = 2 s; pamap2: 200 = 2 s); stride is half of it")
    return parser


def check_args(args) -> list[str]:
    algorithms = list(ALGORITHMS) if args.algorithm == "all" else [a.strip() for a in args.algorithm.split(",")]
    for name in algorithms:
        if name not in ALGORITHMS:
            raise app.InputError(f"--algorithm {name!r}: expected one of {', '.join(ALGORITHMS)} or all")
    for flag in ("rounds", "clients", "local_epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected at least 1")
    if not 0.0 <= args.self_weight <= 1.0:
        raise app.InputError(f"--self-weight {args.self_weight}: expected a weight in [0, 1]")
    if args.pretrain_rounds < 0 or args.pretrain_rounds >= args.rounds:
        raise app.InputError(f"--pretrain-rounds {args.pretrain_rounds}: expected 0 .. --rounds - 1 "
                             f"({args.rounds - 1})")
    if args.alpha <= 0:
        raise app.InputError(f"--alpha {args.alpha}: expected a positive Dirichlet concentration")
    if args.window is not None and args.window < 2:
        raise app.InputError(f"--window {args.window}: expected at least 2 samples")
    if args.engine == "tff":
        import importlib.util

        if importlib.util.find_spec("tensorflow_federated") is None:
            raise app.InputError(TFF_HINT)
    elif args.tff_workers:
        raise app.InputError("--tff-workers: only with --engine tff")
    return algorithms


def check_clients(data):
    for client in data.clients:
        labels = set(client.y_train.tolist()) | set(client.y_val.tolist()) | set(client.y_test.tolist())
        outside = sorted(label for label in labels if not 0 <= label < data.num_classes)
        if outside:
            raise app.InputError(f"{data.name}: {client.name} has labels {outside} outside the model's classes "
                                 f"0..{data.num_classes - 1}")
        if len(client.y_train) == 0:
            raise app.InputError(f"{data.name}: {client.name} has no training data")


def run(args):
    algorithms = check_args(args)
    from kerastl.export import version_dir

    if not args.no_export:
        version_dir(os.path.join(args.export_dir, APP), "client_0", args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        raise app.InputError("--resume: apps.adafed runs are short and restart from round 1; run again with "
                             "--overwrite")

    from kerastl.data.clients import load_federated_data

    data = load_federated_data(args.dataset, args.clients, args.alpha, args.seed, args.data_dir, args.window,
                               args.partition)
    check_clients(data)
    folder.create()

    import numpy as np

    from kerastl.federated.models import model_for
    from kerastl.federated.report import plot_client_accuracy, plot_similarity
    from kerastl.federated.simulation import FederatedSimulation, make_clients

    engine = FederatedSimulation
    if args.engine == "tff":
        import atexit

        from kerastl.federated.remote import set_remote_execution_context, stop_tff_workers
        from kerastl.federated.tff_process import TFFSimulation

        engine = TFFSimulation
        atexit.register(stop_tff_workers)  # TFF's local worker would outlive us and hold our output open
        if args.tff_workers:
            set_remote_execution_context(args.tff_workers.split(","))
    clients = make_clients(data, args.batch_size, shuffle_seed=args.seed)
    results, simulations = {}, {}
    for name in algorithms:
        print(f"{name}: {len(clients)} clients, {args.rounds} rounds ({args.engine} engine)", flush=True)
        simulation = engine(lambda: model_for(data.input_shape, data.num_classes, args.seed), clients, name,
                            args.lr, args.local_epochs, args.self_weight, args.mu, args.local_layers,
                            args.pretrain_rounds)

        def progress(round_index, validation, test, name=name):
            print(f"  round {round_index}/{args.rounds}: mean validation accuracy {validation.mean():.4f}, "
                  f"mean test accuracy {test.mean():.4f}", flush=True)

        result = simulation.fit(args.rounds, progress=progress)
        if name == "fedap":
            result["weight_matrix"] = simulation.matrix.tolist()
        results[name], simulations[name] = result, simulation
        print(f"{name}: mean client accuracy {result['mean_accuracy']:.4f} at round {result['best_round']}",
              flush=True)

    first = algorithms[0]
    metrics = {"dataset": args.dataset, "engine": args.engine, "algorithms": algorithms, **data.summary(),
               "client_names": [c.name for c in data.clients], "algorithm": first,
               "client_accuracy": results[first]["client_accuracy"], "mean_accuracy": results[first]["mean_accuracy"],
               "best_round": results[first]["best_round"], "results": results}
    if "fedap" in results:
        plot_similarity(np.array(results["fedap"]["weight_matrix"]), [c.name for c in data.clients],
                        os.path.join(folder.plots, "similarity.png"))
    plot_client_accuracy({name: r["client_accuracy"] for name, r in results.items()},
                         [c.name for c in data.clients], os.path.join(folder.plots, "client_accuracy.png"))
    if not args.no_export:
        metrics["export"] = export_clients(simulations[first].best_weights, model_for(data.input_shape,
                                           data.num_classes, args.seed), data, args, first)
    folder.write_metrics(metrics)
    print(f"{first}: mean client accuracy {metrics['mean_accuracy']:.4f}; {folder.metrics_path}")


def export_clients(best_weights, model, data, args, algorithm) -> list[str]:
    """Every client's model at the best-validation round, one TF Serving model per client.
    (`model` is a fresh one: Keras 2 may have invalidated the engines' own models.)"""
    from kerastl.export import export_classifier

    paths = []
    for i in range(len(data.clients)):
        model.set_weights([w[i] for w in best_weights])
        paths.append(export_classifier(model, os.path.join(args.export_dir, APP), f"client_{i}",
                                       args.version, args.overwrite, input_name="x", class_names=data.class_names,
                                       metadata={"dataset": args.dataset, "algorithm": algorithm,
                                                 "client": data.clients[i].name}))
    return paths


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
