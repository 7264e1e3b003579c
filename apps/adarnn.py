"""AdaRNN: forecasting a time series whose distribution drifts (Du et al., CIKM 2021).

Temporal distribution characterization (TDC) splits the training period into K segments
that differ as much as possible; temporal distribution matching (TDM) trains a GRU
forecaster on all segments while matching their hidden states, time step by time step,
with importance weights learned by gates (pre-training) and boosting. Baselines under the
same loop: gru, mmd_rnn, dann_rnn, transformer; adatransformer applies TDC + TDM to a
Transformer encoder. The persistence forecast (next = last) is always reported.

Data: --dataset pvlib (hourly typical-year weather of a station shipped with pvlib:
sand_point, greensboro, miami; target temp_air; train Jan-Aug, validate Sep, test Oct-Dec;
offline), taylor (half-hourly England & Wales electricity demand from pmdarima; train 8
weeks, validate 1, test 3; offline), airquality (the UCI Beijing PRSA files in --data-dir;
the paper's stations, features and dates), or csv:PATH with --time-col, --target and
--features. Scaling (min-max to [0, 1]) is fitted on the training period only.

Writes <output>/metrics.json: rmse, mae (test period, original units) and rmse_scaled,
mae_scaled (on the [0, 1] training scale) — true global values over all test windows, not
the reference's average of per-batch RMSEs; valid_rmse(_scaled); persistence (the same four
for next = last); segments (TDC boundaries as rows and dates, the distance, the score);
distance (TDM's); importance_weights (W [layer, time step]); split (the periods' rows and
dates); history (per epoch: loss, mse, transfer, val_loss, W). plots/segmentation.png,
plots/forecast.png, plots/importance_weights.png; tensorboard/; checkpoints/ (resume with
--resume). Exports the forecaster to <export-dir>/adarnn/<version>/: input `window` float32
[batch, len_seq, features] on the original scale (features in the order of metadata
"features"), output `forecast` float32 [batch], the target --horizon steps after the window,
original scale.

Classification (--task classification; the paper's UCI HAR table): windows of activity
recordings are classified; the cross-time split (--test-split time) takes, per subject or
recording and in time order, the first --train-fraction - --valid-fraction of its windows for
training, the next --valid-fraction for validation and the rest for testing (windows that
overlap across a boundary are dropped); TDC splits the training windows, ordered by their
relative time in their recording, into K segments; the models get a softmax head and a
cross-entropy loss; --model gbt adds the LightGBM-style baseline (gradient-boosted trees on
per-window statistics). Data: --dataset watch (default; seglearn's smartwatch recordings, 7
shoulder exercises, cut into --window samples every --stride; offline) or uci-har:DIR (the
UCI HAR Dataset folder: train/ and test/ with Inertial Signals/*.txt, y_*.txt,
subject_*.txt; --test-split original keeps its own train/test files). Channels are scaled
with --scaling fitted on the training windows. metrics.json: acc, precision, recall, f1
(macro over classes), auc (one-vs-rest, macro) on the test windows; per_class, confusion_matrix,
valid (the same five on validation), split, segments, history. plots/confusion_matrix.png,
plots/importance_weights.png. Export: input `window` float32 [batch, length, channels] on the
original scale, outputs `probabilities` [batch, classes] and `classes` int64 (not for gbt).

Examples:
  python -m apps.adarnn --dataset pvlib --station greensboro --preset cpu
  python -m apps.adarnn --dataset taylor --model gru --preset cpu
  python -m apps.adarnn --dataset airquality --data-dir ~/data/PRSA --station Dongsi --preset paper
  python -m apps.adarnn --dataset csv:load.csv --time-col date --target load --features load,temp
  python -m apps.adarnn --task classification --dataset watch --preset cpu
  python -m apps.adarnn --task classification --dataset "uci-har:UCI HAR Dataset" --model gbt
"""

from __future__ import annotations

import os

from kerastl import app

APP = "adarnn"
TASKS = ("forecasting", "classification")
MODELS = ("adarnn", "gru", "mmd_rnn", "dann_rnn", "transformer", "adatransformer", "gbt")
PRESETS = {
    "smoke": {"epochs": 2, "pre_epoch": 1, "num_domains": 2, "len_seq": 24, "batch_size": 36, "lr": 2e-3,
              "hidden_size": 16, "num_layers": 2, "bottleneck": 0, "forecast": "change", "patience": 0,
              "distance": "adversarial", "tdm_lambda": 0.5, "matching_scale": "task", "head_dropout": 0.0,
              "steps_per_epoch": 5, "window": 32, "stride": 32, "gbt_rounds": 20},
    # cpu: 30 epochs at lr 2e-3 instead of 200 at 5e-4; no BatchNorm bottleneck and forecasting
    # the change (in short runs, BN's moving statistics lag the matched features and the
    # validation error jumps; matching hidden states of segments with different levels fights
    # forecasting the level); the matching term held on the task loss's scale and lambda and
    # the distance chosen on the validation period among AUTO_LAMBDAS (0 included): with the
    # reference's unscaled term an adversarial distance grew to 15-30 times the task loss and
    # made the forecasts worse than the GRU's.
    # Classification (watch): windows of 64 samples (1.3 s) every 16, so that the smallest TDC
    # segment still fills enough batches per epoch.
    "cpu": {"epochs": 30, "pre_epoch": 15, "num_domains": 3, "len_seq": 24, "batch_size": 36, "lr": 2e-3,
            "hidden_size": 64, "num_layers": 2, "bottleneck": 0, "forecast": "change", "patience": 0,
            "distance": "adversarial", "tdm_lambda": "auto", "matching_scale": "task", "head_dropout": 0.0,
            "steps_per_epoch": 0, "window": 64, "stride": 16, "gbt_rounds": 300},
    # The reference's model and training (train_weather.py): lr 5e-4, batch 36, 200 epochs,
    # early stop 40, GRU 64 x 2 layers without dropout, its bottleneck head (width 64, dropout
    # 0.5, its initialisation), len_seq 24, pre_epoch 40, dw 0.5 on the unscaled matching
    # term, 2 domains, forecasting the value itself. The distance is kerastl's trained
    # adversarial one (the reference's untrained one: --distance adversarial_untrained).
    # Classification: UCI HAR's windows (128 samples, half overlapping).
    "paper": {"epochs": 200, "pre_epoch": 40, "num_domains": 2, "len_seq": 24, "batch_size": 36, "lr": 5e-4,
              "hidden_size": 64, "num_layers": 2, "bottleneck": 64, "forecast": "value", "patience": 40,
              "distance": "adversarial", "tdm_lambda": 0.5, "matching_scale": "none", "head_dropout": 0.5,
              "steps_per_epoch": 0, "window": 128, "stride": 64, "gbt_rounds": 300},
}
#: The grid of `--lambda auto` (besides 0, which trains the model without matching); the
#: distances tried are --distance and coral (mmd_rnn / dann_rnn: their own).
AUTO_LAMBDAS = (0.1, 1.0)
AUTO_DISTANCES = ("coral",)
RESUME_KEYS = ("dataset", "station", "target", "features", "model", "distance", "num_domains", "split", "len_seq",
               "horizon", "batch_size", "hidden_size", "num_layers", "bottleneck", "forecast", "seed", "train_end",
               "valid_end", "epochs", "pre_epoch", "steps_per_epoch", "tdm_lambda", "matching_scale", "head_dropout",
               "tdc_max_rows")
CLASSIFICATION_RESUME_KEYS = ("task", "test_split", "train_fraction", "valid_fraction", "window", "stride", "scaling",
                              "tdc_distance")


def build_parser():
    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--task", default="forecasting", choices=TASKS,
                        help="forecasting (default): forecast a series' target; classification: classify windows "
                             "of activity recordings (the paper's UCI HAR setting)")
    data = app.preset_group(parser, "data")
    data.add_argument("--dataset", default=None,
                      help="forecasting: pvlib (default), taylor, airquality (UCI PRSA files in --data-dir) or "
                           "csv:PATH; classification: watch (default; seglearn's smartwatch exercises, offline) or "
                           "uci-har:DIR (the UCI HAR Dataset folder)")
    data.add_argument("--station", default=None,
                      help="pvlib: sand_point, greensboro (default), miami; airquality: one of the 12 PRSA stations "
                           "(default Dongsi; the paper's are Dongsi, Tiantan, Nongzhanguan, Dingling)")
    data.add_argument("--time-col", default=None, help="csv: the column of time stamps (rows must be in time order)")
    data.add_argument("--target", default=None,
                      help="the column to forecast (default temp_air for pvlib, PM2.5 for airquality; required "
                           "for csv)")
    data.add_argument("--features", default=None,
                      help="comma-separated input columns, the target included (defaults: pvlib temp_air, temp_dew, "
                           "relative_humidity, wind_speed, ghi, dni, dhi; airquality PM2.5, PM10, SO2, NO2, CO, O3; "
                           "csv every numeric column)")
    data.add_argument("--max-gap", type=int, default=24,
                      help="fill runs of up to this many missing values per column by linear interpolation; a longer "
                           "run is an error (default 24)")
    data.add_argument("--train-end", default=None,
                      help="first date of the validation period, YYYY-MM-DD[ HH:MM] (default: the dataset's split; "
                           "csv: 70 %% of the rows)")
    data.add_argument("--valid-end", default=None,
                      help="first date of the test period (default: the dataset's split; csv: 80 %% of the rows)")
    app.add_preset_option(data, "--len-seq", type=int, help="window length: time steps the forecast sees")
    data.add_argument("--horizon", type=int, default=1,
                      help="forecast the target this many steps after the window's last step (default 1)")
    windows = app.preset_group(parser, "classification data (--task classification)")
    windows.add_argument("--test-split", default="time", choices=("time", "original"),
                         help="time (default): per subject / recording, in time order: training, then validation, "
                              "then test windows (cross-time); original: UCI HAR's own train/test files, "
                              "validation = the last --valid-fraction of each training subject")
    windows.add_argument("--train-fraction", type=float, default=0.7,
                         help="share of each subject's / recording's windows before its test part (training and "
                              "validation; default 0.7)")
    windows.add_argument("--valid-fraction", type=float, default=0.1,
                         help="share of each subject's / recording's windows, at the end of its training part, "
                              "that validates (default 0.1)")
    app.add_preset_option(windows, "--window", type=int,
                          help="watch: samples per window (UCI HAR's windows are its files' 128 samples)")
    app.add_preset_option(windows, "--stride", type=int, help="watch: samples from one window's start to the next")
    windows.add_argument("--scaling", default="standard", choices=("standard", "minmax"),
                         help="per-channel scaling fitted on the training windows: standard (zero mean, unit "
                              "variance; default: a GRU learned the watch exercises far faster than with minmax) or "
                              "minmax ([0, 1], the reference's forecasting setting)")
    method = app.preset_group(parser, "method")
    method.add_argument("--model", default="adarnn", choices=MODELS,
                        help="adarnn (GRU + TDC + TDM), gru (no matching), mmd_rnn / dann_rnn (MMD / adversarial "
                             "matching of the final hidden state), transformer, adatransformer (TDC + TDM on the "
                             "encoder's per-position outputs), gbt (classification only: gradient-boosted trees on "
                             "per-window statistics, the paper's LightGBM baseline). Default adarnn")
    from kerastl.timeseries.distances import DISTANCES, stateless_names

    described = "; ".join(f"{d.name}: {d.description}" for d in DISTANCES.values())
    app.add_preset_option(method, "--distance", choices=list(DISTANCES),
                          help=f"TDM's distance between segments' hidden states (mmd_rnn / dann_rnn fix their own): "
                               f"{described}")
    method.add_argument("--tdc-distance", default="coral", choices=stateless_names(),
                        help="the distance TDC maximises between segments of the raw features (default coral, as "
                             "the reference); any --distance without trainable or random parts")
    method.add_argument("--tdc-max-rows", type=int, default=0,
                        help="TDC computes its distances on every row of each candidate segment (default 0); a "
                             "positive number thins longer segments evenly to that many rows (for the kernel "
                             "distances mmd_rbf and pairwise on long series, which cost rows^2 memory)")
    app.add_preset_option(method, "--num-domains", type=int, help="K: segments of the training period (2..10)")
    method.add_argument("--split", default="tdc", choices=("tdc", "random", "reverse"),
                        help="how the K segments are chosen: tdc (most diverse), random (seeded), reverse (least "
                             "diverse). Default tdc")
    app.add_preset_option(method, "--pre-epoch", type=int,
                          help="epochs of gate-weighted pre-training before the boosting of the importance weights")
    app.add_preset_option(method, "--lambda", dest="tdm_lambda", type=_lambda_value,
                          help="weight of the matching loss, or auto: train with lambda 0 (no matching) and with "
                               f"lambda in {', '.join(map(str, AUTO_LAMBDAS))} for --distance and "
                               f"{', '.join(AUTO_DISTANCES)}, and keep the candidate with the lowest validation loss "
                               "(metrics.json: lambda_search)")
    app.add_preset_option(method, "--matching-scale", choices=("none", "task"),
                          help="none: the loss adds lambda x the matching term (the reference); task: the term is "
                               "scaled down to at most the step's task loss, min(1, task / term)")
    app.add_preset_option(method, "--hidden-size", type=int, help="GRU units per layer (transformer: model width)")
    app.add_preset_option(method, "--num-layers", type=int, help="GRU layers (transformer: encoder blocks)")
    app.add_preset_option(method, "--bottleneck", type=int,
                          help="width of the bottleneck head Dense-Dense-BN-ReLU-Dropout-Dense (0: a single Dense)")
    app.add_preset_option(method, "--forecast", choices=("value", "change"),
                          help="value: the head predicts the target (the reference); change: it predicts the change "
                               "from the window's last target value")
    method.add_argument("--dropout", type=float, default=0.0,
                        help="dropout of the GRU inputs (transformer: attention and feed-forward outputs) and, unless "
                             "--head-dropout is given, of the bottleneck head (default 0; the reference has none on "
                             "the GRU)")
    app.add_preset_option(method, "--head-dropout", type=float,
                          help="dropout of the bottleneck head's features (the reference's head: 0.5)")
    training = app.preset_group(parser, "training")
    app.add_preset_option(training, "--epochs", type=int, help="training epochs")
    app.add_preset_option(training, "--steps-per-epoch", type=int,
                          help="batches per epoch; 0 = as many as the smallest segment fills (the reference)")
    app.add_preset_option(training, "--batch-size", type=int, help="windows per segment per batch")
    app.add_preset_option(training, "--lr", type=float, help="Adam learning rate (gradients clipped by value at 3)")
    app.add_preset_option(training, "--gbt-rounds", type=int,
                          help="gbt: at most this many boosting rounds (the best on validation is kept)")
    app.add_preset_option(training, "--patience", type=int,
                          help="stop after this many epochs without a better validation loss (0: never); the best "
                               "validation epoch's weights are evaluated and exported either way")
    return parser


def _lambda_value(text: str):
    """--lambda: a number >= 0 or "auto"."""
    import argparse

    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or auto, got {text!r}") from None


def run_config(args) -> dict:
    """What a checkpoint must agree with to be resumed."""
    keys = RESUME_KEYS + (CLASSIFICATION_RESUME_KEYS if args.task == "classification" else ())
    return {key: getattr(args, key) for key in keys}


def check_args(args):
    if args.dataset is None:
        args.dataset = "pvlib" if args.task == "forecasting" else "watch"
    if args.model == "gbt" and args.task != "classification":
        raise app.InputError("--model gbt: a classifier; use it with --task classification")
    if args.model == "gbt" and args.resume:
        raise app.InputError("--resume: --model gbt trains in one pass and keeps no checkpoints; run it again")
    for flag in ("epochs", "len_seq", "horizon", "batch_size", "hidden_size", "num_layers", "max_gap", "window",
                 "stride", "gbt_rounds"):
        if getattr(args, flag) <= 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    for flag in ("pre_epoch", "bottleneck", "patience", "steps_per_epoch"):
        if getattr(args, flag) < 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected 0 or more")
    if not 2 <= args.num_domains <= 10:
        raise app.InputError(f"--num-domains {args.num_domains}: expected 2..10 (TDC picks among 10 even parts)")
    if (args.lr <= 0 or (args.tdm_lambda != "auto" and args.tdm_lambda < 0) or not 0 <= args.dropout < 1
            or not 0 <= args.head_dropout < 1):
        raise app.InputError(f"--lr {args.lr} / --lambda {args.tdm_lambda} / --dropout {args.dropout} / --head-dropout "
                             f"{args.head_dropout}: expected lr > 0, lambda >= 0 or auto, 0 <= dropouts < 1")
    if args.tdc_max_rows < 0:
        raise app.InputError(f"--tdc-max-rows {args.tdc_max_rows}: expected 0 (every row) or a positive number")
    if args.model in ("transformer", "adatransformer") and args.hidden_size % 4:
        raise app.InputError(f"--hidden-size {args.hidden_size}: the transformer's width must be a multiple of its "
                             "4 attention heads")
    if args.features is not None:
        args.features = [name.strip() for name in args.features.split(",") if name.strip()]
        if not args.features:
            raise app.InputError("--features: expected comma-separated column names")


def prepare_data(args):
    """Loads, splits, scales and segments the series; every input check happens here."""
    from kerastl.data import series as ts
    from kerastl.timeseries import tdc

    series = ts.load_series(args.dataset, args.data_dir, args.station, args.time_col, args.target, args.features,
                            args.max_gap)
    split = ts.split_by_dates(series, args.train_end, args.valid_end)
    needed = args.len_seq * args.num_domains
    if split.train_end < needed:
        raise app.InputError(f"{series.source}: the training period has {split.train_end} time steps, fewer than "
                             f"--len-seq x --num-domains = {args.len_seq} x {args.num_domains} = {needed}")
    scaler = ts.MinMaxScaler.fit(series.values[:split.train_end])
    scaled = scaler.transform(series.values)
    train_time = series.time[:split.train_end] if series.time is not None else None
    segmentation = tdc.segment(scaled[:split.train_end], args.num_domains, args.split, args.tdc_distance,
                               time=train_time, seed=args.seed, max_samples=args.tdc_max_rows or None)
    segment_starts = [ts.window_starts(a, b, args.len_seq, args.horizon) for a, b in segmentation.segments]
    for k, ((a, b), starts) in enumerate(zip(segmentation.segments, segment_starts)):
        if len(starts) == 0:
            raise app.InputError(f"--num-domains {args.num_domains}: segment {k + 1} has {b - a} time steps, fewer "
                                 f"than --len-seq + --horizon = {args.len_seq + args.horizon}")
    periods = {}
    for name, start, end in (("valid", split.train_end, split.valid_end), ("test", split.valid_end, split.length)):
        starts = ts.window_starts(start, end, args.len_seq, args.horizon, history_from=0)
        if len(starts) == 0:
            raise app.InputError(f"{series.source}: the {name} period has no window to forecast (--len-seq "
                                 f"{args.len_seq}, --horizon {args.horizon})")
        periods[name] = (starts, *ts.windows(scaled, series.target_index, starts, args.len_seq, args.horizon))
    return series, split, scaler, scaled, segmentation, segment_starts, periods


def run(args):
    check_args(args)
    from kerastl.export import version_dir

    exports = not (args.no_export or args.model == "gbt")
    if exports:
        version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    data = prepare_data(args) if args.task == "forecasting" else prepare_windows(args)
    config = run_config(args)
    if args.resume:
        folder.check_resumable(config, f"apps.{APP}")
    folder.create()
    folder.save_config(config)
    if args.task == "forecasting":
        train_and_report(args, folder, *data)
    else:
        classify_and_report(args, folder, exports, *data)


def lambda_candidates(args) -> list[tuple[str, str, float]]:
    """`(model, distance, lambda)` to train: one, or for --lambda auto the grid (lambda 0 is
    the same family's model without matching: gru or transformer)."""
    from kerastl.timeseries.forecasters import FIXED_DISTANCE

    if args.tdm_lambda != "auto":
        return [(args.model, args.distance, args.tdm_lambda)]
    if args.model in ("gru", "transformer"):
        return [(args.model, args.distance, 0.0)]
    distances = [FIXED_DISTANCE.get(args.model, args.distance)]
    if args.model in ("adarnn", "adatransformer"):
        distances += [d for d in AUTO_DISTANCES if d not in distances]
    plain = "transformer" if args.model == "adatransformer" else "gru"
    return [(plain, distances[0], 0.0)] + [(args.model, d, lam) for d in distances for lam in AUTO_LAMBDAS]


def fit_candidates(args, folder, build, make_stream, steps: int, validation):
    """Trains `build(model, distance, lambda)` for every `lambda_candidates(args)` and keeps
    the one with the lowest validation loss (its best epoch). A search trains each candidate
    in <output>/candidates/<model>-<distance>-lambda<value>/ (lambda 0: <model>-lambda0/; own checkpoints, history,
    TensorBoard). Returns the model, its early-stopping callback, its history and the search
    record for metrics.json (None without a search)."""
    import keras

    candidates = lambda_candidates(args)
    if len(candidates) == 1:
        model = build(*candidates[0])
        best = fit_matching_model(args, folder, model, make_stream, steps, validation, args.resume)
        return model, best, folder.read_metrics().get("history", {}), None
    rows, chosen = [], None
    for name, distance, lam in candidates:
        label = f"{name}-{distance}-lambda{lam:g}" if lam else f"{name}-lambda0"
        path = os.path.join(folder.path, "candidates", label)
        resume = args.resume and os.path.isdir(os.path.join(path, "checkpoints"))
        sub = app.RunFolder(path, resume=resume, overwrite=True).create()
        keras.utils.set_random_seed(args.seed)  # the same start for every candidate (lambda 0 = the plain model)
        model = build(name, distance, lam)
        best = fit_matching_model(args, sub, model, make_stream, steps, validation, resume)
        row = {"model": name, "distance": distance if lam else None, "lambda": lam, "valid_loss": float(best.best),
               "best_epoch": int(best.best_epoch) + 1 if best.best_weights is not None else None,
               "folder": os.path.relpath(path, folder.path)}
        rows.append(row)
        if chosen is None or row["valid_loss"] < chosen[0]["valid_loss"]:
            chosen = (row, model, best, sub.read_metrics().get("history", {}))
        print(f"lambda search: {label}: validation loss {row['valid_loss']:.6g}")
    row, model, best, history = chosen
    search = {"grid": rows, "chosen": {key: row[key] for key in ("model", "distance", "lambda")},
              "criterion": "lowest validation loss of the candidate's best epoch (forecasting: MSE on the [0, 1] "
                           "training scale; classification: cross-entropy)"}
    return model, best, history, search


def fit_matching_model(args, folder, model, make_stream, steps: int, validation, resume: bool = False):
    """Trains a TDC + TDM model (or a baseline under the same loop) with `model.fit`: TDM phases,
    history in metrics.json, TensorBoard, checkpoints (continued when `resume`), and the best
    validation epoch's weights restored at the end. `make_stream(start_step)` gives the
    training batches. Returns the early-stopping callback (its best epoch)."""
    import keras

    from kerastl.checkpoint import TrainingCheckpoint
    from kerastl.timeseries import TDMCallback

    model.compile(optimizer=keras.optimizers.Adam(args.lr, clipvalue=3.0))
    checkpoint = TrainingCheckpoint(folder.checkpoints, model)
    step = checkpoint.restore() if resume else 0
    timer = _epoch_timer()

    def weights_log():
        return {"importance_weights": model.tdm_weights.numpy(), "epoch_seconds": timer.seconds}

    # Evaluate and export the best validation epoch's weights (patience 0: never stop early).
    best = keras.callbacks.EarlyStopping("val_loss", patience=args.patience or args.epochs, restore_best_weights=True)
    model.fit(make_stream(step), epochs=args.epochs, steps_per_epoch=steps, initial_epoch=step // steps,
              validation_data=validation, validation_batch_size=256, shuffle=False, verbose=app.fit_verbosity(),
              callbacks=[timer, TDMCallback(args.pre_epoch), folder.history_logger(weights_log),
                         keras.callbacks.TensorBoard(folder.tensorboard), best, checkpoint])
    return best


def _training_facts(model, best, steps: int) -> dict:
    return {"distance": model.distance_name if model.matching != "none" else None, "tdm_lambda": float(model.tdm_lambda),
            "matching_scale": model.matching_scale, "importance_weights": model.tdm_weights.numpy().tolist(),
            "gate_weights": model.gate_weights.numpy().tolist() if model.use_gate else None,
            "best_epoch": int(best.best_epoch) + 1 if best.best_weights is not None else None,
            "epochs_done": int(model.optimizer.iterations.numpy()) // steps, "steps_per_epoch": steps}


def model_builder(args, len_seq: int, num_features: int, **task):
    """`build(name, distance, tdm_lambda)`, the model `name` at the run's sizes, as
    `fit_candidates` calls it; `task`: `residual_index` (forecasting the change from that
    feature's last value) or `num_classes` (classification)."""
    from kerastl.timeseries import build_forecaster

    def build(name, distance, tdm_lambda):
        return build_forecaster(name, len_seq, num_features, args.num_domains, distance, tdm_lambda, args.hidden_size,
                                args.num_layers, args.bottleneck or None, args.dropout, head_dropout=args.head_dropout,
                                matching_scale=args.matching_scale, **task)

    return build


def train_and_report(args, folder, series, split, scaler, scaled, segmentation, segment_starts, periods):
    import keras
    import numpy as np

    from kerastl.data import series as ts
    from kerastl.timeseries import persistence_forecast, report

    keras.utils.set_random_seed(args.seed)
    target = series.target_index
    build = model_builder(args, args.len_seq, len(series.feature_names),
                          residual_index=target if args.forecast == "change" else None)
    steps = args.steps_per_epoch or ts.steps_per_epoch(segment_starts, args.batch_size)
    _, x_valid, y_valid = periods["valid"]
    model, best, history, search = fit_candidates(
        args, folder, build, lambda step: ts.segment_batches(scaled, target, segment_starts, args.len_seq,
                                                             args.batch_size, args.horizon, seed=args.seed,
                                                             start_step=step),
        steps, (x_valid, y_valid))

    def scores(truth, forecast):
        original_truth, original_forecast = scaler.inverse(truth, target), scaler.inverse(forecast, target)
        error, scaled_error = original_forecast - original_truth, forecast - truth
        return {"rmse": float(np.sqrt(np.mean(error ** 2))), "mae": float(np.mean(np.abs(error))),
                "rmse_scaled": float(np.sqrt(np.mean(scaled_error ** 2))),
                "mae_scaled": float(np.mean(np.abs(scaled_error)))}

    starts, x_test, y_test = periods["test"]
    forecast = model.predict(x_test, batch_size=256, verbose=0)
    test = scores(y_test, forecast)
    valid = scores(y_valid, model.predict(x_valid, batch_size=256, verbose=0))
    persistence = scores(y_test, persistence_forecast(x_test, target))
    metrics = {"dataset": args.dataset, "series": series.name, "model": args.model, "preset": args.preset,
               "target": series.target, "features": series.feature_names, **test,
               "valid_rmse": valid["rmse"], "valid_rmse_scaled": valid["rmse_scaled"], "persistence": persistence,
               "rmse_change_vs_persistence_percent": 100.0 * (test["rmse"] / persistence["rmse"] - 1.0),
               "test_windows": int(len(y_test)), "segments": segmentation.to_dict(), "split": split.to_dict(),
               **_training_facts(model, best, steps), "lambda_search": search, "scaler": scaler.to_dict(),
               "history": history,
               "metric_note": "rmse/mae: over every test window at once (not the reference's mean of per-batch "
                              "RMSEs); *_scaled: on the training period's min-max [0, 1] scale"}
    time = series.time
    label = f"{series.target} ({series.name})"
    report.plot_segmentation(time[:split.length] if time is not None else None, series.values[:, target],
                             segmentation.boundaries, split, os.path.join(folder.plots, "segmentation.png"),
                             f"{args.split} segmentation, K = {args.num_domains}, {args.tdc_distance}", label)
    target_rows = starts + args.len_seq - 1 + args.horizon
    report.plot_forecast(time[target_rows] if time is not None else target_rows, scaler.inverse(y_test, target),
                         scaler.inverse(forecast, target), os.path.join(folder.plots, "forecast.png"),
                         scaler.inverse(persistence_forecast(x_test, target), target),
                         f"{args.model}: test RMSE {test['rmse']:.4g} (persistence {persistence['rmse']:.4g})", label)
    report.plot_importance_weights(model.tdm_weights.numpy(), os.path.join(folder.plots, "importance_weights.png"),
                                   model.gate_weights.numpy() if model.use_gate else None,
                                   f"{args.model}, {model.distance_name} distance")
    if not args.no_export:
        metrics["export"] = export_forecaster(model, scaler, series, args)
    folder.write_metrics(metrics)
    print(f"{args.model} on {series.name}: test RMSE {test['rmse']:.4f} / MAE {test['mae']:.4f} "
          f"(scaled {test['rmse_scaled']:.4f} / {test['mae_scaled']:.4f}); persistence RMSE "
          f"{persistence['rmse']:.4f}; {folder.metrics_path}")


def prepare_windows(args):
    """Classification: loads, splits, scales and segments the windows; every input check happens here."""
    from kerastl.data import har
    from kerastl.data.sensors import ChannelScaler
    from kerastl.timeseries import tdc

    windows = har.load_windows(args.dataset, args.window, args.stride)
    split = har.time_split(windows, args.test_split, args.train_fraction, args.valid_fraction)
    scaler = ChannelScaler(args.scaling).fit(windows.x[split.train])
    scaled = scaler.transform(windows.x)
    segmentation, parts, starts = tdc.segment_windows(scaled[split.train], split.relative_time[split.train],
                                                      args.num_domains, args.split, args.tdc_distance, seed=args.seed,
                                                      max_samples=args.tdc_max_rows or None)
    return windows, split, scaler, scaled, segmentation, [split.train[p] for p in parts], starts


def classify_and_report(args, folder, exports, windows, split, scaler, scaled, segmentation, segments, starts):
    import keras
    import numpy as np

    from kerastl.data import har
    from kerastl.data import series as ts
    from kerastl.timeseries import report
    from kerastl.timeseries.classification import METRIC_KEYS, WindowStatisticsGBT, classification_scores

    keras.utils.set_random_seed(args.seed)
    classes, (length, channels) = windows.class_names, windows.x.shape[1:]
    x_valid, y_valid = scaled[split.valid], windows.y[split.valid]
    if args.model == "gbt":
        model = WindowStatisticsGBT(args.gbt_rounds, seed=args.seed).fit(
            scaled[split.train], windows.y[split.train], x_valid, y_valid, len(classes))
        predict = model.predict_proba
        facts = {"gbt_rounds": model.best_rounds, "history": {"valid_log_loss": model.valid_log_loss}}
    else:
        build = model_builder(args, length, channels, num_classes=len(classes))
        steps = args.steps_per_epoch or ts.steps_per_epoch(segments, args.batch_size)
        model, best, history, search = fit_candidates(args, folder, build, lambda step: har.window_batches(
            scaled, windows.y, segments, args.batch_size, seed=args.seed, start_step=step), steps, (x_valid, y_valid))

        def predict(x):
            return model.predict(x, batch_size=256, verbose=0)

        facts = {**_training_facts(model, best, steps), "lambda_search": search, "history": history}
    test = classification_scores(windows.y[split.test], predict(scaled[split.test]), classes)
    valid = classification_scores(y_valid, predict(x_valid), classes)
    metrics = {"task": "classification", "dataset": args.dataset, "model": args.model, "preset": args.preset,
               **{key: test[key] for key in METRIC_KEYS}, "per_class": test["per_class"],
               "confusion_matrix": test["confusion_matrix"], "valid": {key: valid[key] for key in METRIC_KEYS},
               "class_names": classes, "channels": windows.channel_names, "window_length": int(length),
               "test_windows": int(len(split.test)), "split": split.to_dict(windows),
               "segments": {**segmentation.to_dict(), "relative_time_starts": starts,
                            "class_counts": [np.bincount(windows.y[rows], minlength=len(classes)).tolist()
                                             for rows in segments]},
               "scaler": scaler.to_dict(), **facts,
               "metric_note": "acc: share of test windows classified right; precision, recall, f1: macro averages "
                              "of the per-class values (f1 = mean of per-class F1) over the classes in the truth or "
                              "the predictions; auc: one-vs-rest ROC AUC per class, averaged over the classes in "
                              "the test windows"}
    report.plot_confusion_matrix(test["confusion_matrix"], classes, os.path.join(folder.plots, "confusion_matrix.png"),
                                 f"{args.model} on {windows.name}: test accuracy {test['acc']:.3f}, macro F1 "
                                 f"{test['f1']:.3f}")
    if args.model != "gbt":
        report.plot_importance_weights(model.tdm_weights.numpy(), os.path.join(folder.plots, "importance_weights.png"),
                                       model.gate_weights.numpy() if model.use_gate else None,
                                       f"{args.model}, {model.distance_name} distance")
    metrics["export"] = export_window_classifier(model, scaler, windows, args) if exports else None
    folder.write_metrics(metrics)
    print(f"{args.model} on {windows.name}: test ACC {test['acc']:.4f}, P {test['precision']:.4f}, R "
          f"{test['recall']:.4f}, F1 {test['f1']:.4f}, AUC {test['auc']:.4f}; {folder.metrics_path}")


def _epoch_timer():
    import time

    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Wall-clock seconds of the last epoch's training steps (validation excluded)."""

        seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.seconds = time.perf_counter() - self._start

    return EpochTimer()


def export_forecaster(model, scaler, series, args) -> str:
    """SavedModel: `window` [batch, len_seq, features] (original scale) -> `forecast` [batch] (original scale)."""
    import tensorflow as tf

    from kerastl.export import export_model, version_dir

    path, version = version_dir(args.export_dir, APP, args.version, args.overwrite)
    minimum, scale = tf.constant(scaler.minimum), tf.constant(scaler.scale)
    target = series.target_index

    def outputs(window):
        forecast = model((window - minimum) / scale, training=False)
        return {"forecast": forecast * scale[target] + minimum[target]}

    spec = tf.TensorSpec([None, args.len_seq, len(series.feature_names)], tf.float32)
    facts = {"app": APP, "version": version, "task": "forecasting", "model": args.model, "dataset": args.dataset,
             "series": series.name, "features": series.feature_names, "target": series.target,
             "len_seq": args.len_seq, "horizon": args.horizon, "scaler": scaler.to_dict(),
             "outputs": {"forecast": f"float32 [batch]: {series.target}, {args.horizon} step(s) after the window, "
                                     "original scale"}}
    return export_model(model, path, {"window": spec}, outputs, facts, args.overwrite)


def export_window_classifier(model, scaler, windows, args) -> str:
    """SavedModel: `window` [batch, length, channels] (original scale) -> `probabilities`
    [batch, classes], `classes` int64 [batch]; the training scaling is part of the model."""
    import keras

    from kerastl.export import export_classifier

    length, channels = windows.x.shape[1:]
    scaled_model = keras.Sequential([keras.Input((length, channels)),
                                     keras.layers.Normalization(mean=scaler.offset, variance=scaler.scale ** 2),
                                     model])
    facts = {"model": args.model, "dataset": args.dataset, "channels": windows.channel_names,
             "window_length": int(length), "scaler": scaler.to_dict()}
    return export_classifier(scaled_model, args.export_dir, APP, args.version, args.overwrite, from_logits=False,
                             input_name="window", class_names=windows.class_names, metadata=facts)


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
