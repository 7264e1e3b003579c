"""Cross-lingual low-resource speech recognition with adapters: Adapter, SimAdapter,
MetaAdapter and SimAdapter+ (Hou et al. 2022), against training from scratch, head-only and
full fine-tuning.

A CTC Transformer encoder (log-mel filterbanks in, characters out) is pre-trained on the
rich-resource --sources (one CTC head per language; every step sums one batch of each
language), then each source gets adapters (bottleneck --source-adapter-dim; the reference's
128): --source-adapters after_pretraining (on the frozen backbone) or with_backbone (trained
with the backbone in pre-training). --adapter-training says how adapters and heads share the
work, as in the reference: two_stage (the heads first, then the adapters with the heads
frozen; the sources' heads come from pre-training) or joint (adapters and heads at once).
For the low-resource --target (adapters of --adapter-dim, the reference's 64), each --method
trains:
  scratch          a fresh model on the target alone (everything trained)
  head             a new target head on the frozen backbone
  full_ft          the backbone and a new head
  adapter          the target's own adapters and head on the frozen backbone (--adapter-training)
  simadapter       adapter, then SimAdapter fusion over the sources' adapters and the
                   target's own: only the fusion layers train (heads, adapters and backbone
                   frozen, as the reference); stability regulariser and guide loss
  metaadapter      first-order MAML of a shared adapter (with the sources' heads) over the
                   sources, then that adapter and a new head fine-tuned on the target
                   (--finetune-lr, the reference's 0.01)
  simadapter_plus  metaadapter, then SimAdapter fusion
  all              every method above
Each target stage keeps the weights of its epoch with the lowest dev loss and stops after
--patience epochs without improvement (the reference: 10). Each method is evaluated on the
target's test split: CER and WER (greedy CTC decoding, or --beam-width).

Data: --data commonvoice:DIR (Common Voice folders DIR/<lang>/clips/*.mp3 and train.tsv,
dev.tsv, test.tsv with path and sentence columns) or espeak:DIR (the same layout, e.g. built
by kerastl.data.espeak_corpus.build_espeak_corpus). Without --data, an espeak-ng corpus
(--source-utterances per source, --target-utterances for the target; words from Debian's
word lists, test words unseen in training) is built once in --cache-dir and reused; it needs
espeak-ng and the word-list packages (apt-get, as root).

The source model is the expensive part: it is cached in --cache-dir/simadapter-sources/<key>/
(key: the sources' training data and every option it depends on) and reused by later runs
and other targets and methods; an interrupted pre-training resumes after its last finished
stage (pre-training, source adapters).

Writes <output>/metrics.json: cer, wer, trained_share (the share of parameters the method
trains) of the exported method (the last of --method, in the order above), and under
"methods" the same per method with seconds, utterances_per_second (training throughput),
best_epoch and history (MetaAdapter's meta_adapter_distance: the meta-learned adapter's L2
distance from its initialisation); "sources" (the source languages), "sources_training" (the source stages' facts and
whether they came from the cache) and
"data" (utterances per language and split). plots/<method>_attention.png (SimAdapter
attention per encoder layer over the fused languages: where the target borrows from);
tensorboard/<target>-<stage>/; checkpoints/ (run.json, methods.json and one model folder per
finished method: --resume skips finished methods and restarts an unfinished one from the
start of its stage). Exports the target recogniser to <export-dir>/simadapter/<version>/:
input waveform (float32 [batch, samples], 16 kHz), outputs logits, logit_lengths and text.

Examples:
  python -m apps.simadapter --preset smoke
  python -m apps.simadapter --target ro --method all --preset cpu
  python -m apps.simadapter --data commonvoice:~/cv-corpus-5.1 --sources ru,it,pt,cy,eu --target cs \\
      --method simadapter_plus --preset paper
"""

from __future__ import annotations

import json
import os

from kerastl import app

APP = "simadapter"
SPLITS = ("train", "dev", "test")
DATA_SCHEMES = ("commonvoice", "espeak")
PRESETS = {
    "smoke": {"num_layers": 1, "hidden_dim": 32, "num_heads": 2, "intermediate_dim": 64, "adapter_dim": 8,
              "source_adapter_dim": 16, "dropout": 0.0, "batch_size": 8, "pretrain_epochs": 2, "adapter_epochs": 1,
              "epochs": 2, "fusion_epochs": 1, "meta_epochs": 1, "lr": 1e-3, "fusion_lr": 1e-3, "inner_lr": 0.01,
              "meta_lr": 1e-4, "finetune_lr": 0.01, "guide_weight": 0.1, "source_utterances": 30,
              "target_utterances": 20},
    # Sized for 2 CPU cores: a small encoder; the source model trains once (cached), a target
    # method then takes a minute or two.
    "cpu": {"num_layers": 3, "hidden_dim": 96, "num_heads": 4, "intermediate_dim": 384, "adapter_dim": 32,
            "source_adapter_dim": 64, "dropout": 0.1, "batch_size": 32, "pretrain_epochs": 15, "adapter_epochs": 3,
            "epochs": 25, "fusion_epochs": 8, "meta_epochs": 1, "lr": 1e-3, "fusion_lr": 1e-3, "inner_lr": 0.01,
            "meta_lr": 1e-4, "finetune_lr": 0.01, "guide_weight": 0.1, "source_utterances": 1000,
            "target_utterances": 300},
    # The paper and its code: 12 layers, d 256, 4 heads, FFN 2048, adapters 128 (sources) and 64
    # (targets), dropout 0.1; fusion Adam 1e-3; MAML inner Adam 0.01, outer 1e-4; fine-tuning of
    # the meta-learned adapter Adam 0.01; guide weight 0.1 (its Noam schedule is replaced by Adam).
    "paper": {"num_layers": 12, "hidden_dim": 256, "num_heads": 4, "intermediate_dim": 2048, "adapter_dim": 64,
              "source_adapter_dim": 128, "dropout": 0.1, "batch_size": 32, "pretrain_epochs": 100,
              "adapter_epochs": 30, "epochs": 100, "fusion_epochs": 30, "meta_epochs": 30, "lr": 1e-3,
              "fusion_lr": 1e-3, "inner_lr": 0.01, "meta_lr": 1e-4, "finetune_lr": 0.01, "guide_weight": 0.1,
              "source_utterances": 4000, "target_utterances": 1000},
}
MODEL_OPTIONS = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim", "adapter_dim", "dropout")
POSITIVE_INTEGERS = ("num_layers", "hidden_dim", "num_heads", "intermediate_dim", "adapter_dim", "source_adapter_dim",
                     "batch_size", "pretrain_epochs", "adapter_epochs", "epochs", "fusion_epochs", "meta_epochs",
                     "source_utterances", "target_utterances")


def build_parser():
    from kerastl.adapters.methods import METHODS

    parser = app.make_parser(f"apps.{APP}", __doc__, PRESETS)
    parser.add_argument("--data", metavar="SCHEME:DIR", default=None,
                        help="commonvoice:DIR or espeak:DIR (Common Voice layout). Default: an espeak-ng corpus "
                             "built once in --cache-dir")
    parser.add_argument("--sources", default="ru,it,pt,cy,eu",
                        help="comma-separated rich-resource source languages. Default: ru,it,pt,cy,eu")
    parser.add_argument("--target", default="ro", help="the low-resource target language. Default: ro")
    parser.add_argument("--method", default="simadapter",
                        help=f"comma-separated methods among {', '.join(METHODS)}, or all. Default: simadapter")
    parser.add_argument("--adapter-training", default="two_stage", choices=("two_stage", "joint"),
                        help="adapters and heads, as the reference: two_stage (the heads first, then the adapters "
                             "with the heads frozen; the paper's better choice) or joint (adapters and heads "
                             "trained at once). Applies to the adapter method and the sources' adapters. "
                             "Default: two_stage")
    parser.add_argument("--source-adapters", default="after_pretraining", choices=("after_pretraining", "with_backbone"),
                        help="when the sources' adapters train: after_pretraining (on the frozen backbone, "
                             "--adapter-epochs) or with_backbone (together with the backbone during pre-training). "
                             "Default: after_pretraining")
    parser.add_argument("--guide-decay-steps", type=int, default=0,
                        help="training steps over which the SimAdapter guide weight decays linearly to 0 "
                             "(0 = constant, the reference's example). Default: 0")
    parser.add_argument("--patience", type=int, default=10,
                        help="target stages: epochs without a lower dev loss before training stops; the best-dev "
                             "epoch's weights are kept (0 = never stop early). Default: 10 (the reference's)")
    parser.add_argument("--cache-dir", metavar="DIR", default=os.path.join("~", ".cache", "kerastl"),
                        help="where the built espeak corpus and the trained source models are kept and reused. "
                             "Default: ~/.cache/kerastl")
    parser.add_argument("--max-utterances", type=int, default=0,
                        help="use at most this many training utterances per language (0 = all). Default: 0")
    parser.add_argument("--beam-width", type=int, default=0,
                        help="CTC beam search width for the evaluation (0 = greedy decoding). Default: 0")
    parser.add_argument("--spec-augment", action="store_true", help="SpecAugment masks on the training features")
    group = app.preset_group(parser, "model and training (preset values unless given)")
    app.add_preset_option(group, "--num-layers", type=int, help="Transformer encoder layers")
    app.add_preset_option(group, "--hidden-dim", type=int, help="encoder width (d_model)")
    app.add_preset_option(group, "--num-heads", type=int, help="attention heads")
    app.add_preset_option(group, "--intermediate-dim", type=int, help="feed-forward width")
    app.add_preset_option(group, "--adapter-dim", type=int, help="adapter bottleneck width of the target (and of "
                          "MetaAdapter's shared adapter)")
    app.add_preset_option(group, "--source-adapter-dim", type=int, help="adapter bottleneck width of the sources")
    app.add_preset_option(group, "--dropout", type=float, help="encoder dropout")
    app.add_preset_option(group, "--batch-size", type=int, help="utterances per batch (per language in pre-training)")
    app.add_preset_option(group, "--pretrain-epochs", type=int, help="multilingual pre-training epochs")
    app.add_preset_option(group, "--adapter-epochs", type=int, help="two-stage source adapter epochs")
    app.add_preset_option(group, "--epochs", type=int, help="target training epochs of every method")
    app.add_preset_option(group, "--fusion-epochs", type=int, help="SimAdapter fusion epochs")
    app.add_preset_option(group, "--meta-epochs", type=int, help="MetaAdapter MAML passes over the sources")
    app.add_preset_option(group, "--lr", type=float, help="Adam learning rate (pre-training, adapters, heads)")
    app.add_preset_option(group, "--fusion-lr", type=float, help="Adam learning rate of the fusion layers")
    app.add_preset_option(group, "--inner-lr", type=float, help="MAML inner Adam learning rate")
    app.add_preset_option(group, "--meta-lr", type=float, help="MAML outer step size")
    app.add_preset_option(group, "--finetune-lr", type=float,
                          help="Adam learning rate of MetaAdapter's fine-tuning on the target")
    app.add_preset_option(group, "--guide-weight", type=float, help="SimAdapter fusion-guide loss weight")
    app.add_preset_option(group, "--source-utterances", type=int,
                          help="utterances per source language of the built espeak corpus (no --data)")
    app.add_preset_option(group, "--target-utterances", type=int,
                          help="utterances of the target language of the built espeak corpus (no --data)")
    return parser


def parse_languages(text: str, option: str) -> list[str]:
    import re

    languages = [item.strip() for item in text.split(",") if item.strip()]
    if not languages:
        raise app.InputError(f"{option} {text!r}: expected comma-separated language codes, e.g. ru,it")
    for lang in languages:
        if not re.fullmatch(r"[A-Za-z]{2,3}([-_][A-Za-z0-9]+)*", lang):
            raise app.InputError(f"{option} {text}: {lang!r} is not a language code (Common Voice folder names "
                                 "such as ro, cs, zh-CN)")
    if len(set(languages)) != len(languages):
        raise app.InputError(f"{option} {text}: a language is repeated")
    return languages


def check_args(args):
    """Checks every option; sets args.methods, args.source_list, args.data_roots (lang -> root)."""
    from kerastl.adapters.methods import METHODS

    args.methods = list(METHODS) if args.method == "all" else [m.strip() for m in args.method.split(",")]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or not args.methods:
        raise app.InputError(f"--method {args.method}: {(unknown[0] if unknown else '')!r} is unknown; expected "
                             f"{', '.join(METHODS)} (comma-separated) or all")
    for flag in POSITIVE_INTEGERS:
        if getattr(args, flag) < 1:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive integer")
    if args.hidden_dim % args.num_heads:
        raise app.InputError(f"--hidden-dim {args.hidden_dim}: expected a multiple of --num-heads {args.num_heads}")
    for flag in ("lr", "fusion_lr", "inner_lr", "meta_lr", "finetune_lr"):
        if not getattr(args, flag) > 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected a positive rate")
    if not 0 <= args.dropout < 1:
        raise app.InputError(f"--dropout {args.dropout}: expected a rate in [0, 1)")
    if args.guide_weight < 0:
        raise app.InputError(f"--guide-weight {args.guide_weight}: expected 0 or more")
    for flag in ("max_utterances", "beam_width", "guide_decay_steps", "patience"):
        if getattr(args, flag) < 0:
            raise app.InputError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: expected 0 or more")
    args.source_list = parse_languages(args.sources, "--sources")
    args.target = parse_languages(args.target, "--target")
    if len(args.target) != 1:
        raise app.InputError(f"--target {','.join(args.target)}: expected one language")
    args.target = args.target[0]
    if args.target in args.source_list:
        raise app.InputError(f"--target {args.target}: also among --sources {args.sources}; the target must be a "
                             "language the source model has not seen")
    args.cache_dir = os.path.expanduser(args.cache_dir)
    languages = [*args.source_list, args.target]
    if args.data is None:
        from kerastl.data.espeak_corpus import ESPEAK_LANGUAGES

        for option, langs in (("--sources", args.source_list), ("--target", [args.target])):
            outside = [lang for lang in langs if lang not in ESPEAK_LANGUAGES]
            if outside:
                raise app.InputError(f"{option} {','.join(langs)}: {outside[0]!r} is unknown to the espeak corpus "
                                     f"builder (languages: {', '.join(ESPEAK_LANGUAGES)}); give --data for others")
        args.data_roots = {lang: os.path.join(args.cache_dir, f"espeak-corpus-{size}-seed{args.seed}")
                           for lang, size in ((s, args.source_utterances) for s in args.source_list)}
        args.data_roots[args.target] = os.path.join(args.cache_dir,
                                                    f"espeak-corpus-{args.target_utterances}-seed{args.seed}")
        return
    scheme, _, folder = args.data.partition(":")
    if scheme not in DATA_SCHEMES or not folder:
        raise app.InputError(f"--data {args.data}: expected commonvoice:DIR or espeak:DIR")
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise app.InputError(f"--data {args.data}: {folder} is not a folder")
    missing = [lang for lang in languages if not os.path.isdir(os.path.join(folder, lang))]
    if missing:
        found = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        option = "--target" if args.target in missing else "--sources"
        raise app.InputError(f"{option}: no language folder {os.path.join(folder, missing[0])} in --data "
                             f"{args.data} (languages there: {', '.join(found) or 'none'})")
    args.data_roots = {lang: folder for lang in languages}


def run_config(args) -> dict:
    """What the run folder's checkpoints depend on (--resume must repeat it; methods may change)."""
    keys = ("data", "sources", "target", "adapter_training", "source_adapters", "guide_decay_steps", "patience",
            "max_utterances", "seed", "spec_augment",
            *(key for key in PRESETS["cpu"] if key not in ("source_utterances", "target_utterances")))
    return {key: getattr(args, key) for key in keys} | {"data_roots": args.data_roots}


def build_corpus(args):
    """Builds (or finds) the cached espeak corpus when no --data is given."""
    from kerastl.data.espeak_corpus import build_espeak_corpus, check_espeak_requirements

    check_espeak_requirements([*args.source_list, args.target])
    by_root = {}
    for lang, root in args.data_roots.items():
        by_root.setdefault(root, []).append(lang)
    for root, languages in by_root.items():
        size = args.target_utterances if languages == [args.target] else args.source_utterances
        print(f"espeak corpus: {', '.join(languages)} ({size} utterances each) in {root}", flush=True)
        build_espeak_corpus(root, languages, size, seed=args.seed, progress=app.fit_verbosity() == 1)


def load_data(args) -> dict[str, dict[str, list]]:
    """{lang: {split: records}}; training splits capped by --max-utterances."""
    from kerastl.data.speech import load_split

    records = {lang: {split: load_split(root, lang, split) for split in SPLITS}
               for lang, root in args.data_roots.items()}
    if args.max_utterances:
        for lang in records:
            records[lang]["train"] = records[lang]["train"][:args.max_utterances]
    for lang in records:
        if len(records[lang]["train"]) < 2:
            raise app.InputError(f"{args.data_roots[lang]}/{lang}/train.tsv: {len(records[lang]['train'])} usable "
                                 "utterance(s), expected at least 2")
    return records


def run(args):
    check_args(args)
    from kerastl.export import version_dir

    export_path = None
    if not args.no_export:
        export_path, _ = version_dir(args.export_dir, APP, args.version, args.overwrite)
    folder = app.RunFolder(args.output, resume=args.resume, overwrite=args.overwrite)
    if args.resume:
        folder.check_resumable(run_config(args), f"apps.{APP}")
    if args.data is None:
        build_corpus(args)  # a cache outside the run folder; every option is checked by now
    records = load_data(args)
    folder.create()
    folder.save_config(run_config(args))
    train_and_report(args, folder, records, export_path)


def checkpointing(folder, args):
    """(finished method facts, restore(method), on_finished(method, model, facts)) for run_methods."""
    from kerastl.adapters.model import MultilingualASR

    path = os.path.join(folder.checkpoints, "methods.json")
    finished = {}
    if args.resume and os.path.exists(path):
        with open(path) as f:
            finished = json.load(f)

    def restore(method):
        return MultilingualASR.load(os.path.join(folder.checkpoints, method))

    def on_finished(method, model, facts):
        model.save(os.path.join(folder.checkpoints, method))
        finished[method] = facts
        with open(path + ".tmp", "w") as f:
            json.dump(finished, f, indent=1)
        os.replace(path + ".tmp", path)
        print(f"{args.target} {method}: CER {facts['cer']:.4f}, WER {facts['wer']:.4f}, trained share "
              f"{facts['trained_share']:.4f}, {facts['utterances_per_second']:.1f} utterances/s", flush=True)

    return dict(finished), restore, on_finished


def train_and_report(args, folder, records, export_path):
    import keras

    from kerastl.adapters import methods, serving, source_cache
    from kerastl.adapters.model import MultilingualASR
    from kerastl.adapters.report import plot_fusion_attention
    from kerastl.data.vocabulary import CharVocabulary
    from kerastl.data.speech import speech_dataset

    keras.utils.set_random_seed(args.seed)
    verbose = app.fit_verbosity()
    sources, target = args.source_list, args.target
    vocabularies = {lang: CharVocabulary.from_texts(text for _, text in records[lang]["train"]) for lang in records}
    augment = bool(args.spec_augment)
    source_train = {lang: speech_dataset(records[lang]["train"], vocabularies[lang], args.batch_size, training=True,
                                         spec_augment=augment, seed=args.seed) for lang in sources}
    model_config = {key: getattr(args, key) for key in MODEL_OPTIONS}
    source_dims = {lang: args.source_adapter_dim for lang in sources}

    def tensorboard(stage):
        return [keras.callbacks.TensorBoard(os.path.join(folder.tensorboard, stage))]

    key = source_cache.fingerprint({
        "records": {lang: records[lang]["train"] for lang in sources}, "model": model_config,
        "vocabularies": {lang: vocabularies[lang].characters for lang in sources}, "adapter_dims": source_dims,
        **{k: getattr(args, k) for k in ("batch_size", "pretrain_epochs", "adapter_epochs", "lr", "adapter_training",
                                         "source_adapters", "seed", "spec_augment")}})
    cache = os.path.join(args.cache_dir, "simadapter-sources", key)
    print(f"source model on {', '.join(sources)}: {cache}", flush=True)
    source_model, source_facts = source_cache.train_sources(
        lambda: MultilingualASR({lang: vocabularies[lang].size for lang in sources}, adapter_dims=source_dims,
                                **model_config),
        source_train, source_cache.SourceSettings(args.pretrain_epochs, args.adapter_epochs, args.lr,
                                                  args.source_adapters, args.adapter_training, verbose),
        cache=cache, callbacks=tensorboard)
    del source_model  # every method loads its own copy from the cache

    def pretrained():
        model = MultilingualASR.load(os.path.join(cache, "model"))
        model.add_language(target, vocabularies[target].size)
        return model

    def fresh():
        return MultilingualASR({target: vocabularies[target].size}, **model_config)

    target_records = records[target]
    data = methods.TargetData(
        train=speech_dataset(target_records["train"], vocabularies[target], args.batch_size, training=True,
                             spec_augment=augment, seed=args.seed),
        test=speech_dataset(target_records["test"], vocabularies[target], args.batch_size),
        dev=speech_dataset(target_records["dev"], vocabularies[target], args.batch_size),
        vocabulary=vocabularies[target], test_references=[text for _, text in target_records["test"]],
        source_train=source_train)
    settings = methods.StageSettings(args.epochs, args.lr, args.fusion_epochs, args.fusion_lr, args.guide_weight,
                                     args.meta_epochs, args.inner_lr, args.meta_lr, verbose, args.guide_decay_steps,
                                     args.finetune_lr, args.adapter_training, args.patience)
    finished, restore, on_finished = checkpointing(folder, args)
    results = methods.run_methods(args.methods, pretrained, fresh, target, sources, data, settings, args.beam_width,
                                  callbacks=lambda stage: tensorboard(f"{target}-{stage}"), finished=finished,
                                  restore=restore, on_finished=on_finished)
    for method, facts in results.items():
        if "attention" in facts:
            plot_fusion_attention(facts["attention"], facts["attention_languages"],
                                  os.path.join(folder.plots, f"{method}_attention.png"),
                                  title=f"{target}: SimAdapter attention ({method})")
    main = [m for m in methods.METHODS if m in args.methods][-1]
    metrics = {key: results[main][key] for key in ("cer", "wer", "trained_share")}
    metrics.update(method=main, target=target, sources=sources, methods=results, preset=args.preset,
                   sources_training={k: v for k, v in source_facts.items()}, source_cache=cache,
                   data={lang: {split: len(records[lang][split]) for split in SPLITS} for lang in records})
    if export_path is not None:
        recognizer = restore(main).recognizer(target, methods.recognizer_mode(main))
        metrics["export"] = serving.export_recognizer(
            recognizer, vocabularies[target], export_path, overwrite=args.overwrite,
            metadata={"app": APP, "method": main, "sources": sources, "cer": metrics["cer"], "wer": metrics["wer"]})
    folder.write_metrics(metrics)
    print("  ".join(f"{m}: CER {f['cer']:.3f} WER {f['wer']:.3f}" for m, f in results.items()))
    print(f"metrics: {folder.metrics_path}")


if __name__ == "__main__":
    raise SystemExit(app.main(build_parser, run))
