"""AMSL: unsupervised anomaly detection on multichannel sensor windows (self-supervised
views + adaptive global/local memories), with OCSVM, Kernel PCA, conv and LSTM autoencoder
baselines under one evaluation.

Some classes (activities, conditions, sleep stages) are normal (--normal-classes), the rest
abnormal. Normal recordings are split 60 % train / 40 % test by recording; every abnormal
recording goes to test. Every detector trains on the normal training windows only
(per-channel min-max scaling fitted on them) and flags a test window when its score exceeds
the --percentile-th percentile of the training scores.

Data (--dataset; default normal classes in brackets, the other classes are abnormal):
  watch        real smartwatch exercise recordings shipped in seglearn: 7 exercises PEN ABD
               FEL IR ER TRAP ROW, 10 subjects, 6 channels at 50 Hz [IR,ER,TRAP,ROW]
  dsads:DIR    DSADS's a01..a19/p1..p8/s01..s60.txt, 125 x 45 per file at 25 Hz [the
               paper's 14 activities; abnormal a05 a06 a12 a18 a19: stairs up and down,
               treadmill running, jumping, basketball]
  pamap2:DIR   PAMAP2's Protocol/subject10N.dat (54 columns at 100 Hz; the 27 acc/gyro/mag
               IMU channels, gaps interpolated, activity 0 dropped) [lying, sitting,
               standing, walking, cycling, nordic walking, vacuum cleaning, ironing;
               abnormal running, ascending stairs, descending stairs, rope jumping]
  wesad:DIR    WESAD's S*/S*.pkl (--wesad-device chest: ACC x3, ECG, EMG, EDA, Temp, Resp at
               700 Hz; wrist: ACC x3, BVP, EDA, TEMP), resampled to 32 Hz [baseline,
               amusement, meditation; abnormal stress]
  cap:DIR      CAP sleep recordings NAME.edf with NAME.txt stage annotations (or EDF+
               annotations), resampled to 64 Hz, the signals every night has [S1,S2,S3,S4;
               abnormal W (wake) and R (REM)]
  npz:PATH     arrays x = windows [N, time, channels], y = class labels, optional
               class_names [class 0]; --window / --stride do not apply
DIR may also come from --data-dir (--dataset pamap2 --data-dir DIR). The AMSL paper states
its DSADS split; for PAMAP2, WESAD and CAP these defaults are this program's choice (the
vigorous activities as DSADS's, stress vs non-stress, wake and REM vs NREM sleep).
PAMAP2, WESAD and CAP recordings are cut into stretches of one class; stretches shorter
than --window are left out. --channels picks signals by name, --sample-rate resamples.

Writes <output>/metrics.json: for AMSL at the top level and for every method under
"methods": accuracy, mpre, mrec (macro precision / recall over normal vs abnormal), mf1
(the AMSL paper's: harmonic mean of mpre and mrec), macro_f1 (mean of the two per-class
F1 scores), auroc, threshold, fit_seconds, windows_per_second (scoring throughput); also
"data" (split sizes, classes), "history" (AMSL's per-epoch losses) and "export";
plots/score_histograms.png (normal vs abnormal test scores per method) and
plots/roc_curves.png; tensorboard/; checkpoints/ (AMSL; resume with --resume). Exports the
AMSL scorer to <export-dir>/amsl/<version>/: input windows (float32 [batch, window,
channels], raw sensor units: the scaling is inside), outputs score (float32 [batch]) and
is_anomaly (bool [batch], score > the fitted threshold).

Presets and what they cost (AMSL on the watch data's default split, about 1,240 training
windows of 64 steps; 2 CPU cores shared with other work; benchmarks/results/amsl_capacity_*):
  cpu (the default)  the paper's capacity (500 slots, conv 32 / 64, batch 16) for 10 epochs:
                     roughly 5 to 7 minutes of training per run. A model cut to conv 8 / 16,
                     50 slots, batch 32, 8 epochs (the first port's cpu preset) trains in 1 to
                     1.5 minutes; docs/apps/amsl.md compares what each gives.
  paper              the paper's settings: 125-step windows, 100 epochs: over an hour here.
  smoke              seconds: a check that everything runs.

Examples:
  python -m apps.amsl --dataset watch --preset cpu
  python -m apps.amsl --dataset watch --normal-classes PEN,TRAP,ROW --baselines ocsvm,conv_ae
  python -m apps.amsl --dataset dsads:~/data/DSADS --preset paper
  python -m apps.amsl --dataset pamap2:~/data/PAMAP2_Dataset --preset paper
  python -m apps.amsl --dataset wesad:~/data/WESAD --wesad-device wrist --preset paper
  python -m apps.amsl --dataset cap:~/data/capslpdb --channels C4-A1,ROC-LOC,EMG1-EMG2 --preset paper
  python -m apps.amsl --dataset npz:windows.npz --normal-classes 0,1 --memory global
"""

from __future__ import annotations

import os

from kerastl import app

APP = "amsl"
PRESETS = {
    "smoke": {"window": 32, "stride": 32, "epochs": 1, "batch_size": 32, "memory_slots": 20, "filters": "4,8",
              "lr": 1e-3, "lstm_units": 8},
    # The default: the paper's capacity (500 slots, conv 32 / 64, batch 16) with fewer epochs and
    # 64-step windows. A smaller model (8 / 16, 50 slots, batch 32) lost most of AMSL's accuracy on
    # the watch data (docs/apps/amsl.md: what each setting costs and gives).
    "cpu": {"window": 64, "stride": 64, "epochs": 10, "batch_size": 16, "memory_slots": 500, "filters": "32,64",
            "lr": 1e-3, "lstm_units": 64},
    # The paper: 500 memory slots, conv 32 / 64, Adam, 100 epochs, batch 16, DSADS's 125-step windows.
    "paper": {"window": 125, "stride": 125, "epochs": 100, "batch_size": 16, "memory_slots": 500, "filters": "32,64",
              "lr": 1e-3, "lstm_units": 64},
}


def build_parser():
    from kerastl.anomaly.baselines import BASELINES
    from kerastl.anomaly.transforms import DEFAULT_TRANSFORMATIONS, TRANSFORMATIONS

    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--dataset", default="watch",
                        help="watch, dsads:DIR, pamap2:DIR, wesad:DIR, cap:DIR (or NAME with --data-dir DIR) or "
                             "npz:PATH; see Data above. Default: watch")
    parser.add_argument("--normal-classes", default=None,
                        help="comma-separated normal class names or indices; the other classes are abnormal. "
                             "Defaults: watch IR,ER,TRAP,ROW; dsads every activity but a05,a06,a12,a18,a19; pamap2 "
                             "every activity but running, ascending stairs, descending stairs, rope jumping; wesad "
                             "baseline,amusement,meditation (stress abnormal); cap S1,S2,S3,S4 (W and R abnormal); "
                             "npz 0")
    parser.add_argument("--channels", default=None,
                        help="pamap2, wesad, cap: comma-separated channel names to keep (pamap2: hand_acc_x .. "
                             "ankle_mag_z; wesad chest: ACC_x,ACC_y,ACC_z,ECG,EMG,EDA,Temp,Resp, wrist: "
                             "ACC_x,ACC_y,ACC_z,BVP,EDA,TEMP; cap: EDF signal labels). Default: all (cap: the "
                             "signals every night has)")
    parser.add_argument("--sample-rate", type=float, default=None,
                        help="pamap2, wesad, cap: resample every channel to this rate in Hz (anti-aliased). "
                             "Defaults: pamap2 100 (its own), wesad 32, cap 64")
    parser.add_argument("--wesad-device", default="chest", choices=("chest", "wrist"),
                        help="wesad: the chest (RespiBAN) or wrist (Empatica E4) signals. Default: chest")
    app.add_preset_option(parser, "--window", type=int, help="window length in time steps")
    app.add_preset_option(parser, "--stride", type=int, help="steps between window starts")
    app.add_preset_option(parser, "--memory-slots", type=int, help="slots of each AMSL memory")
    app.add_preset_option(parser, "--epochs", type=int, help="training epochs (AMSL and the autoencoders)")
    app.add_preset_option(parser, "--batch-size", type=int, help="training batch size")
    app.add_preset_option(parser, "--lr", type=float, help="Adam learning rate")
    app.add_preset_option(parser, "--filters", help="the conv encoder's two widths, e.g. 32,64 (AMSL and conv_ae)")
    app.add_preset_option(parser, "--lstm-units", type=int, help="LSTM autoencoder width")
    parser.add_argument("--percentile", type=float, default=98.0,
                        help="threshold = this percentile of the training windows' scores (default 98)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help="comma-separated baselines to run beside AMSL, or none. Default: all. "
                             + "; ".join(f"{name}: {baseline.description}" for name, baseline in BASELINES.items()))
    parser.add_argument("--memory", default="both", choices=("both", "global", "local", "none"),
                        help="AMSL's memories: global + local fused (the method), one kind only, or none "
                             "(ablations). Default: both")
    parser.add_argument("--transformations", default=",".join(DEFAULT_TRANSFORMATIONS),
                        help=f"self-supervised views besides the original, among {', '.join(TRANSFORMATIONS)} "
                             "(smoothing = the reference code's Savitzky-Golay 'time warp'); none = no "
                             "self-supervision. Default: the paper's six")
    parser.add_argument("--shrink-threshold", type=float, default=0.0,
                        help="MemAE hard shrinkage of the memory addressing (0 = off; MemAE uses 1-3 / slots)")
    parser.add_argument("--ssl-reduction", default="sum", choices=("sum", "mean"),
                        help="how the per-view self-supervised cross-entropies combine: sum over the views (the "
                             "reference code's train.py) or their mean (kerastl's first port). Default: sum")
    parser.add_argument("--entropy-reduction", default="mean", choices=("mean", "sum"),
                        help="memory addressing entropy: -w log w averaged over positions and slots, summed over "
                             "views (the reference code's) or each feature's entropy summed over slots, averaged "
                             "over positions and views (MemAE's; kerastl's first port). Default: mean")
    parser.add_argument("--decoder-activation", default="sigmoid", choices=("sigmoid", "linear"),
                        help="the decoders' output: sigmoid (the reference code's; views lie in [0, 1]) or linear. "
                             "Default: sigmoid")
    parser.add_argument("--scaling", default="minmax", choices=("minmax", "standard"),
                        help="per-channel scaling fitted on the training normal windows. Default: minmax")
    return parser


def parse_list(text: str, option: str, allowed) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if items == ["none"]:
        return []
    unknown = [item for item in items if item not in allowed]
    if unknown:
        raise app.InputError(f"{option} {text}: {unknown[0]!r} is unknown; expected names among "
                             f"{', '.join(allowed)}, or none")
    return list(dict.fromkeys(items))


def check_args(args):
    from kerastl.anomaly.baselines import BASELINES
    from kerastl.anomaly.transforms import TRANSFORMATIONS

    for flag in ("window", "stride", "memory_slots", "epochs", "batch_size", "lstm_units"):
        if getattr(args, flag) <= 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    if not 0.0 < args.percentile < 100.0:
        raise app.InputError(f"--percentile {args.percentile}: expected a number strictly between 0 and 100")
    if not args.lr > 0:
        raise app.InputError(f"--lr {args.lr}: expected a positive learning rate")
    if args.sample_rate is not None and not args.sample_rate > 0:
        raise app.InputError(f"--sample-rate {args.sample_rate}: expected a positive rate in Hz")
    if args.shrink_threshold < 0 or args.shrink_threshold >= 1:
        raise app.InputError(f"--shrink-threshold {args.shrink_threshold}: expected a number in [0, 1)")
    try:
        args.filter_sizes = [int(f) for f in str(args.filters).split(",")]
    except ValueError:
        args.filter_sizes = []
    if len(args.filter_sizes) != 2 or min(args.filter_sizes) <= 0:
        raise app.InputError(f"--filters {args.filters}: expected two positive integers, e.g. 32,64")
    args.baseline_list = parse_list(args.baselines, "--baselines", tuple(BASELINES))
    args.transformation_list = parse_list(args.transformations, "--transformations", tuple(TRANSFORMATIONS))


def run_config(args) -> dict:
    """What a checkpoint must agree with to be resumed."""
    keys = ("dataset", "normal_classes", "window", "stride", "memory_slots", "epochs", "batch_size", "filters",
            "memory", "transformations", "seed", "scaling", "shrink_threshold", "channels", "sample_rate",
            "ssl_reduction", "entropy_reduction", "decoder_activation")
    if args.dataset.startswith("wesad"):
        keys += ("wesad_device",)
    return {key: getattr(args, key) for key in keys}


def run(args):
    check_args(args)
    from kerastl.export import version_dir

    export_path = None
    if not args.no_export:
        export_path, _ = version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)

    from kerastl.anomaly import AMSLDetector, build_baseline
    from kerastl.anomaly.protocol import load_anomaly_data

    data = load_anomaly_data(args.dataset, args.normal_classes, args.window, args.stride, args.seed,
                             args.data_dir, scaling=args.scaling, channels=args.channels,
                             sample_rate=args.sample_rate, wesad_device=args.wesad_device)
    args.normal_classes = ",".join(data.class_names[c] for c in data.normal_classes)
    config = run_config(args)
    if args.resume:
        folder.check_resumable(config, f"apps.{APP}")
    detector = AMSLDetector(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, seed=args.seed,
                            percentile=args.percentile, transformations=args.transformation_list,
                            num_slots=args.memory_slots, memory=args.memory, filters=args.filter_sizes,
                            shrink_threshold=args.shrink_threshold, ssl_reduction=args.ssl_reduction,
                            entropy_reduction=args.entropy_reduction, decoder_activation=args.decoder_activation)
    detector.prepare(data.x_train)  # checks the window count against the batch size
    baselines = {name: build_baseline(name, args.epochs, args.batch_size, args.lr, args.seed, args.percentile,
                                      args.filter_sizes, args.lstm_units) for name in args.baseline_list}
    for baseline in baselines.values():
        if hasattr(baseline, "prepare"):
            baseline.prepare(data.x_train)

    folder.create()
    folder.save_config(config)
    train_and_report(args, folder, data, detector, baselines, export_path)


def train_and_report(args, folder, data, detector, baselines: dict, export_path):
    """Trains AMSL and the `baselines` ({registered name: detector}) on the normal training
    windows; metrics, plots and the export of AMSL's scorer."""
    import keras

    from kerastl.anomaly.detector import KerasDetector, throughput
    from kerastl.anomaly.report import METRIC_KEYS, detection_metrics, plot_roc_curves, plot_score_histograms
    from kerastl.checkpoint import TrainingCheckpoint

    checkpoint = TrainingCheckpoint(folder.checkpoints, detector.model)
    step = checkpoint.restore() if args.resume else 0
    verbose = app.fit_verbosity()
    print(f"AMSL: {len(data.x_train)} normal training windows {data.x_train.shape[1:]}, normal classes "
          f"{args.normal_classes}", flush=True)
    detector.fit(data.x_train, callbacks=[folder.history_logger(), keras.callbacks.TensorBoard(folder.tensorboard),
                                          checkpoint], verbose=verbose, start_step=step)
    scores, thresholds, methods = {}, {}, {}
    for name, method in {"amsl": detector, **baselines}.items():
        if method is not detector:
            print(f"baseline {name}", flush=True)
            method.fit(data.x_train, **({"verbose": verbose} if isinstance(method, KerasDetector) else {}))
        scores[name] = method.decision_function(data.x_test)
        thresholds[name] = method.threshold_
        methods[name] = {**detection_metrics(scores[name], data.is_abnormal, method.threshold_),
                         "threshold": method.threshold_, "fit_seconds": round(method.fit_seconds_, 3),
                         "windows_per_second": round(throughput(method.decision_function, data.x_test), 1)}
    title = f"{data.name}: normal {args.normal_classes}"
    plot_score_histograms(scores, data.is_abnormal, thresholds, os.path.join(folder.plots, "score_histograms.png"), title)
    plot_roc_curves(scores, data.is_abnormal, os.path.join(folder.plots, "roc_curves.png"), title)
    metrics = folder.read_metrics()
    metrics.update({key: methods["amsl"][key] for key in (*METRIC_KEYS, "threshold")})
    metrics.update({"methods": methods, "data": data.summary(), "preset": args.preset, "percentile": args.percentile,
                    "scaling": data.scaler.to_dict(), "epochs_done": int(detector.model.optimizer.iterations.numpy())
                    // max(1, len(data.x_train) // args.batch_size)})
    if export_path is not None:
        metrics["export"] = detector.export_scorer(
            export_path, data.scaler.offset, data.scaler.scale, overwrite=args.overwrite,
            metadata={"app": APP, "dataset": data.name, "normal_classes": data.summary()["normal_classes"],
                      "channels": data.channel_names, "sample_rate": data.sample_rate})
    folder.write_metrics(metrics)
    print("  ".join(f"{name}: mF1 {m['mf1']:.3f} (mean per-class F1 {m['macro_f1']:.3f}) AUROC {m['auroc']:.3f}"
                    for name, m in methods.items()))
    print(f"metrics: {folder.metrics_path}")


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
