"""AdaFed / FedAP: personalised federated learning by batch-norm similarity, and its baselines.

Every client keeps its own model. Each round, every client trains locally (plain SGD), then
receives its own aggregate: FedAP weighs the other clients by the similarity of their
batch-norm input statistics (W_ii = --self-weight) and keeps BN layers local; the baselines
(see --algorithm) average uniformly over the clients as the reference (--weighting samples:
by sample share) and differ in what they keep local. FedAP's statistics come from one shared
model (--statistics-model): fedavg, the first --pretrain-rounds rounds are FedAvg rounds (no
data leaves a client); pretrained, the reference's way: a model trained for --pretrain-epochs
on a pooled --pretrain-share of the clients' training data (which moves that share off the
clients), the clients then starting from the initial weights. FedProx adds
--mu / 2 * ||w - w_global|| (--prox-form norm, the reference's; squared: FedProx's paper)
from round 2 on, as the reference.

Engines: --engine local (every client in this process; main or federated environment) or
--engine tff (a TensorFlow Federated iterative process; federated environment only).

Data: --dataset watch (seglearn's smartwatch recordings, one client per subject: real non-IID
data), mnist5k (label-skewed over --clients by Dirichlet(--alpha)), pamap2 (Protocol/*.dat from
--data-dir: every subject's windows pooled and dealt over --clients by Dirichlet(--alpha), as
the reference), npz:PATH (arrays x, y, client), medmnist:PATH (a MedMNIST .npz such as
organsmnist.npz; its train / val / test parts pooled and dealt over --clients by
Dirichlet(--alpha), as in the reference) or imagefolder:DIR (one sub-folder of images per class,
as the COVID-19 radiography sets ship; resized to --image-size, --color gray or rgb; dealt by
Dirichlet). The Dirichlet split is the reference's paired one (--partition pairs) unless
--partition dirichlet. Each client's data is split 40 / 30 / 30 into train / test / validation.

Models (--model): sensor_cnn (the reference's PAMAP2 network, windows of 28 steps or more),
lenet5_bn (the reference's MedMNIST network), alexnet_bn (the reference's COVID-19 network;
images under 63 pixels get a 3x3 stride-1 first convolution; --model-width scales it) or auto
(sensor_cnn for windows, alexnet_bn for images of 63 pixels and more, lenet5_bn below). --init
pytorch starts from PyTorch's default initialisation of these layers (the reference's start),
keras from Keras's.

Checkpoints and TensorBoard: after every round each algorithm's state goes to
<output>/checkpoints/<algorithm>.npz (every client's weights, FedAP's W, the round, the history
and the best-validation round's weights; SGD carries no optimizer state and round r's data order
is seeded by r), and its scalars to <output>/tensorboard/<algorithm>/ (validation_accuracy,
test_accuracy and train_loss: mean and client_NN per round). --resume continues an interrupted
run from the last finished round, or extends a finished one to a larger --rounds; the other
options must be the ones the run was started with.

A client whose data pipeline or local training raises a TensorFlow or I/O error is dropped
from that round with a warning naming it and the error (both engines); metrics.json counts
these (failed_client_rounds; per round in history.failed_clients) and TensorBoard has
failed_clients per round. Any other error stops the run.

Writes <output>/metrics.json: for each algorithm run, client_accuracy (per client test
accuracy) and mean_accuracy at the round with the best mean validation accuracy (the paper's
figure), best_round, failed_client_rounds and the per-round history; weight_matrix (FedAP). The first algorithm's
figures are also at the top level. plots/similarity.png (FedAP's W as a heatmap),
plots/client_accuracy.png (per-client accuracy bars per algorithm). Exports every client's
model of the first algorithm to <export-dir>/adafed/client_<k>/<version>/ (TF Serving layout;
input `x`, outputs probabilities, classes).

Examples:
  python -m apps.adafed --dataset watch --algorithm fedap,fedavg,fedbn,base
  python -m apps.adafed --dataset mnist5k --clients 20 --alpha 0.1 --rounds 50
  python -m apps.adafed --dataset medmnist:organsmnist.npz --clients 20 --alpha 0.1 --model lenet5_bn
  python -m apps.adafed --dataset imagefolder:COVID-19_Radiography_Dataset --clients 20 --model alexnet_bn
  python -m apps.adafed --dataset watch --output runs/w --resume         # continue an interrupted run
  .tox/federated/bin/python -m apps.adafed --engine tff --dataset watch     # federated environment
"""

from __future__ import annotations

import os

from kerastl import app
from kerastl.federated.algorithms import ALGORITHMS, get_algorithm

APP = "adafed"
PRESETS = {
    "smoke": {"rounds": 2, "local_epochs": 1, "batch_size": 32, "lr": 0.01, "clients": 4, "alpha": 0.1,
              "self_weight": 0.5, "mu": 1e-3, "pretrain_rounds": 1, "image_size": 32, "model_width": 0.125,
              "statistics_model": "fedavg", "pretrain_epochs": 2, "init": "keras"},
    # Sized for 2 CPU cores: fewer rounds with a larger step than the reference's 300 x 0.01.
    "cpu": {"rounds": 20, "local_epochs": 1, "batch_size": 32, "lr": 0.05, "clients": 20, "alpha": 0.1,
            "self_weight": 0.5, "mu": 1e-3, "pretrain_rounds": 1, "image_size": 64, "model_width": 0.25,
            "statistics_model": "fedavg", "pretrain_epochs": 20, "init": "keras"},
    # The reference's scripts: 300 rounds, 1 local epoch, batch 32, SGD 0.01, 20 clients, lambda
    # 0.3, mu 1e-3, W from a model pre-trained 150 epochs on a pooled 30 %, PyTorch's start
    # weights, 224-pixel radiographs into the full AlexNet-BN.
    "paper": {"rounds": 300, "local_epochs": 1, "batch_size": 32, "lr": 0.01, "clients": 20, "alpha": 0.1,
              "self_weight": 0.3, "mu": 1e-3, "pretrain_rounds": 1, "image_size": 224, "model_width": 1.0,
              "statistics_model": "pretrained", "pretrain_epochs": 150, "init": "pytorch"},
}
STATISTICS_MODELS = ("fedavg", "pretrained")
TFF_HINT = ("--engine tff needs tensorflow-federated 0.87.0, which needs TF 2.14 and Keras 2 (it rejects Keras 3 "
            "models), so it runs in the federated environment: `tox -e federated --notest`, then "
            "`.tox/federated/bin/python -m apps.adafed --engine tff ...` from the project folder")


def build_parser():
    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--engine", default="local", choices=("local", "tff"),
                        help="local: every client in this process; tff: a TensorFlow Federated process "
                             "(federated environment). Default: local")
    algorithms = "; ".join(f"{a.name} ({a.description})" for a in ALGORITHMS.values())
    parser.add_argument("--algorithm", default="fedap",
                        help=f"one or more, comma-separated, or all: {algorithms}. Default: fedap")
    parser.add_argument("--dataset", default="watch",
                        help="watch, mnist5k, pamap2, npz:PATH, medmnist:PATH or imagefolder:DIR. Default: watch")
    app.add_preset_option(parser, "--clients", type=int,
                          help="clients of a Dirichlet label split (mnist5k, medmnist, imagefolder)")
    app.add_preset_option(parser, "--alpha", type=float,
                          help="Dirichlet concentration of the label split (mnist5k, medmnist, imagefolder)")
    parser.add_argument("--partition", default="pairs", choices=("dirichlet", "pairs"),
                        help="label split of mnist5k, pamap2, medmnist and imagefolder: pairs (the reference's: "
                             "Dirichlet within pairs of clients; feasible for --alpha 0.01) or dirichlet (plain, "
                             "per class over all clients). Default: pairs")
    app.add_preset_option(parser, "--rounds", type=int, help="communication rounds")
    app.add_preset_option(parser, "--local-epochs", type=int, help="local epochs per round")
    app.add_preset_option(parser, "--batch-size", type=int, help="local batch size")
    app.add_preset_option(parser, "--lr", type=float, help="local SGD learning rate")
    app.add_preset_option(parser, "--self-weight", type=float, help="FedAP's lambda: the weight of a client's own model")
    parser.add_argument("--weighting", default="uniform", choices=("uniform", "samples"),
                        help="FedAvg-family aggregation: uniform 1/N (the reference's) or by the clients' sample "
                             "shares. Default: uniform")
    app.add_preset_option(parser, "--mu", type=float, help="FedProx's proximal weight")
    parser.add_argument("--prox-form", default="norm", choices=("norm", "squared"),
                        help="FedProx's term: mu/2 ||w - w_global|| (norm, the reference's) or its square "
                             "(FedProx's paper). Default: norm")
    app.add_preset_option(parser, "--statistics-model", choices=STATISTICS_MODELS,
                          help="FedAP: the model the BN statistics for W are taken on: fedavg (the shared model "
                               "after --pretrain-rounds FedAvg rounds) or pretrained (the reference's: trained on a "
                               "pooled --pretrain-share of the clients' training data)")
    app.add_preset_option(parser, "--pretrain-rounds", type=int,
                          help="FedAP with --statistics-model fedavg: FedAvg rounds before the BN statistics and W "
                               "are taken")
    app.add_preset_option(parser, "--pretrain-epochs", type=int,
                          help="FedAP with --statistics-model pretrained: epochs of the pre-training")
    parser.add_argument("--pretrain-share", type=float, default=0.3,
                        help="FedAP with --statistics-model pretrained: share of every class of the pooled training "
                             "data it trains on. Default: 0.3 (the reference's)")
    parser.add_argument("--local-layers", type=int, default=1, help="FedPer: last weighted layers kept local")
    parser.add_argument("--tff-workers", metavar="HOST:PORT,...", default=None,
                        help="--engine tff: run the rounds on TFF worker services (worker_binary --port=P on each "
                             "host; see docs/apps/adafed.md, 'Several hosts') instead of a local worker")
    parser.add_argument("--model", default="auto",
                        help="client network: sensor_cnn, sensor_cnn_bn, lenet5_bn, alexnet_bn, or auto (by the input shape, see "
                             "above). Default: auto")
    app.add_preset_option(parser, "--init", choices=("keras", "pytorch"),
                          help="start weights: Keras's defaults or PyTorch's (the reference's)")
    app.add_preset_option(parser, "--model-width", type=float,
                          help="alexnet_bn: multiplier of every layer's filters and units (1 = the reference's)")
    app.add_preset_option(parser, "--image-size", type=int,
                          help="imagefolder: images are resized to this many pixels a side")
    parser.add_argument("--color", default="rgb", choices=("gray", "rgb"),
                        help="imagefolder: decode images as gray (1 channel) or rgb (3, as the reference's AlexNet "
                             "takes). Default: rgb")
    parser.add_argument("--window", type=int, default=None,
                        help="sensor window length (watch: 100 = 2 s; pamap2: 200 = 2 s); stride is half of it")
    return parser


def check_args(args) -> list[str]:
    algorithms = list(ALGORITHMS) if args.algorithm == "all" else [a.strip() for a in args.algorithm.split(",")]
    for name in algorithms:
        get_algorithm(name)
    for flag in ("rounds", "clients", "local_epochs", "batch_size"):
        if getattr(args, flag) < 1:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected at least 1")
    if not 0.0 <= args.self_weight <= 1.0:
        raise app.InputError(f"--self-weight {args.self_weight}: expected a weight in [0, 1]")
    if not 0.0 < args.pretrain_share <= 1.0:
        raise app.InputError(f"--pretrain-share {args.pretrain_share}: expected a share in (0, 1]")
    if args.pretrain_epochs < 1:
        raise app.InputError(f"--pretrain-epochs {args.pretrain_epochs}: expected at least 1")
    if args.pretrain_rounds < 0 or args.pretrain_rounds >= args.rounds:
        raise app.InputError(f"--pretrain-rounds {args.pretrain_rounds}: expected 0 .. --rounds - 1 "
                             f"({args.rounds - 1})")
    if args.alpha <= 0:
        raise app.InputError(f"--alpha {args.alpha}: expected a positive Dirichlet concentration")
    if args.window is not None and args.window < 2:
        raise app.InputError(f"--window {args.window}: expected at least 2 samples")
    if args.image_size < 1:
        raise app.InputError(f"--image-size {args.image_size}: expected at least 1 pixel")
    if args.model_width <= 0:
        raise app.InputError(f"--model-width {args.model_width}: expected a positive multiplier")
    if args.seed < 0:
        raise app.InputError(f"--seed {args.seed}: expected 0 or more")
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


# The options a checkpoint depends on: --resume must repeat them (--rounds may grow).
RESUME_OPTIONS = ("dataset", "engine", "clients", "alpha", "partition", "local_epochs", "batch_size", "lr",
                  "self_weight", "weighting", "mu", "prox_form", "statistics_model", "pretrain_rounds",
                  "pretrain_epochs", "pretrain_share", "local_layers", "window", "seed", "model", "model_width",
                  "init", "image_size", "color")


def checkpoint_path(folder, algorithm: str) -> str:
    return os.path.join(folder.checkpoints, f"{algorithm}.npz")


def check_resume(folder, args, algorithms):
    """--resume: same options as the run in --output, and no checkpoint past --rounds."""
    import numpy as np

    folder.check_resumable(resume_config(args, algorithms), f"apps.{APP}")
    for name in algorithms:
        path = checkpoint_path(folder, name)
        if os.path.exists(path):
            with np.load(path) as saved:
                done = int(saved["round"])
            if done > args.rounds:
                raise app.InputError(f"--rounds {args.rounds}: {path} is already at round {done}; resume with "
                                     f"--rounds {done} or more")


def resume_config(args, algorithms) -> dict:
    return {"algorithm": ",".join(algorithms), **{key: getattr(args, key) for key in RESUME_OPTIONS}}


def run(args):
    algorithms = check_args(args)
    from kerastl.export import version_dir

    if not args.no_export:
        version_dir(os.path.join(args.export_dir, APP), "client_0", args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        check_resume(folder, args, algorithms)

    from kerastl.data.clients import load_federated_data
    from kerastl.federated.models import model_for, resolve_model

    data = load_federated_data(args.dataset, args.clients, args.alpha, args.seed, args.data_dir, args.window,
                               args.partition, args.image_size, args.color)
    check_clients(data)
    try:
        model_name = resolve_model(args.model, data.input_shape)
    except ValueError as err:
        raise app.InputError(f"--model {args.model}: {err}") from None
    folder.create()
    if not args.resume:
        folder.save_config(resume_config(args, algorithms))

    import numpy as np

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

    def build_model():
        return model_for(data.input_shape, data.num_classes, args.seed, model_name, args.model_width, args.init)

    clients = make_clients(data, args.batch_size, shuffle_seed=args.seed)
    statistics_weights = None
    if args.statistics_model == "pretrained" and any(ALGORITHMS[name].needs_similarity for name in algorithms):
        from kerastl.federated.simulation import pretrain_statistics_model

        print(f"pre-training the statistics model: {args.pretrain_epochs} epochs on {args.pretrain_share:.0%} of "
              "the pooled training data", flush=True)
        statistics_weights = pretrain_statistics_model(build_model, data, args.pretrain_share, args.pretrain_epochs,
                                                       args.lr, args.batch_size, args.seed)
    results, simulations = {}, {}
    for name in algorithms:
        similarity = ALGORITHMS[name].needs_similarity and statistics_weights is not None
        simulation = engine(build_model, clients, name, args.lr, args.local_epochs, args.self_weight, args.mu,
                            args.local_layers, 0 if similarity else args.pretrain_rounds,
                            sample_weighted=args.weighting == "samples", prox_form=args.prox_form,
                            statistics_weights=statistics_weights if similarity else None)
        checkpoint = checkpoint_path(folder, name)
        if args.resume and os.path.exists(checkpoint):
            simulation.restore(checkpoint)
        todo = f"rounds {simulation.round + 1}..{args.rounds}" if simulation.round < args.rounds else "rounds done"
        print(f"{name}: {len(clients)} clients, {model_name}, {todo} ({args.engine} engine)", flush=True)

        def progress(round_index, validation, test, simulation=simulation):
            print(f"  round {round_index}/{args.rounds}: mean validation accuracy {validation.mean():.4f}, "
                  f"mean test accuracy {test.mean():.4f}, mean train loss "
                  f"{np.nanmean(simulation.train_loss):.4f}", flush=True)

        result = simulation.fit(args.rounds, progress=progress, checkpoint=checkpoint,
                                tensorboard=os.path.join(folder.tensorboard, name))
        if simulation.spec.needs_similarity:
            result["weight_matrix"] = simulation.matrix.tolist()
        results[name], simulations[name] = result, simulation
        print(f"{name}: mean client accuracy {result['mean_accuracy']:.4f} at round {result['best_round']}"
              + (f"; {result['failed_client_rounds']} client rounds dropped after an error"
                 if result["failed_client_rounds"] else ""), flush=True)

    first = algorithms[0]
    metrics = {"dataset": args.dataset, "engine": args.engine, "algorithms": algorithms, "model": model_name,
               **data.summary(), "client_names": [c.name for c in data.clients], "algorithm": first,
               "client_accuracy": results[first]["client_accuracy"], "mean_accuracy": results[first]["mean_accuracy"],
               "best_round": results[first]["best_round"], "results": results}
    with_similarity = [name for name in algorithms if ALGORITHMS[name].needs_similarity]
    if with_similarity:
        plot_similarity(np.array(results[with_similarity[0]]["weight_matrix"]), [c.name for c in data.clients],
                        os.path.join(folder.plots, "similarity.png"))
    plot_client_accuracy({name: r["client_accuracy"] for name, r in results.items()},
                         [c.name for c in data.clients], os.path.join(folder.plots, "client_accuracy.png"))
    if not args.no_export:
        metrics["export"] = export_clients(simulations[first].best_weights, build_model(), data, args, first)
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
