"""apps.simadapter end to end on a tiny tone corpus in Common Voice's layout: metrics, the
attention plot, checkpoints, the cached source model, resume, the served transcripts, bad input."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from apps import simadapter
from kerastl import app
from kerastl.data.audio import load_audio
from kerastl.adapters.model import MultilingualASR
from kerastl.data.vocabulary import CharVocabulary
from kerastl.data.speech import load_split, speech_dataset

ALPHABETS = {"aa": "abcd", "bb": "cdef", "tt": "abef"}
BASE = ["--preset", "smoke", "--sources", "aa,bb", "--target", "tt"]


def run_app(args):
    return app.main(simadapter.build_parser, simadapter.run, args)


def read_metrics(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tone_corpus):
    root = str(tmp_path_factory.mktemp("tones"))
    tone_corpus(root, ALPHABETS, sizes=(12, 3, 4))
    return root


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("simadapter")
    args = BASE + ["--data", f"commonvoice:{corpus}", "--method", "simadapter", "--output", str(base / "run"),
                   "--export-dir", str(base / "exports"), "--cache-dir", str(base / "cache")]
    assert run_app(args) == 0
    return base, args, read_metrics(base / "run")


def test_metrics_plot_tensorboard_and_checkpoints(finished_run):
    base, _, metrics = finished_run
    assert metrics["method"] == "simadapter" and set(metrics["methods"]) == {"adapter", "simadapter"}
    for key in ("cer", "wer", "trained_share"):
        assert metrics[key] == metrics["methods"]["simadapter"][key]
    for facts in metrics["methods"].values():
        assert facts["cer"] >= 0 and facts["wer"] >= 0 and facts["utterances_per_second"] > 0
        assert len(facts["history"]["loss"]) == 1 + (facts["stage"] == "adapter")  # smoke: 2 epochs, fusion 1
    shares = {m: facts["trained_share"] for m, facts in metrics["methods"].items()}
    assert 0 < shares["adapter"] < shares["simadapter"] < 0.5
    # two-stage adapter: the head's stage first; every target stage keeps its best dev epoch
    assert "head_loss" in metrics["methods"]["adapter"]["history"]
    assert all(1 <= facts["best_epoch"] <= 2 for facts in metrics["methods"].values())
    # the reference's bottlenecks (smoke: 16 for the sources, 8 for the target)
    restored_model = MultilingualASR.load(str(base / "run" / "checkpoints" / "simadapter"))
    assert {lang: stack[0].bottleneck_dim for lang, stack in restored_model.adapters.items()} == \
        {"aa": 16, "bb": 16, "tt": 8}
    attention = np.array(metrics["methods"]["simadapter"]["attention"])
    assert attention.shape == (1, 3) and attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert metrics["methods"]["simadapter"]["attention_languages"] == ["aa", "bb", "tt"]
    assert metrics["data"] == {lang: {"train": 12, "dev": 3, "test": 4} for lang in ALPHABETS}
    assert metrics["sources_training"]["reused"] == []
    assert set(metrics["sources_training"]) == {"pretrain", "source_adapters", "reused"}
    assert os.path.getsize(base / "run" / "plots" / "simadapter_attention.png") > 5_000
    logs = set(os.listdir(base / "run" / "tensorboard"))
    assert {"pretrain", "source_adapters", "tt-adapter", "tt-simadapter"} <= logs
    with open(base / "run" / "checkpoints" / "methods.json") as f:
        assert set(json.load(f)) == {"adapter", "simadapter"}
    restored = MultilingualASR.load(str(base / "run" / "checkpoints" / "simadapter"))
    assert restored.fusion_sources["tt"] == ["aa", "bb", "tt"]


def test_export_transcribes_waveforms_like_the_trained_recogniser(finished_run, corpus):
    base, _, metrics = finished_run
    assert metrics["export"] == str(base / "exports" / "simadapter" / "1")
    records = load_split(corpus, "tt", "test")
    vocabulary = CharVocabulary.from_texts(text for _, text in load_split(corpus, "tt", "train"))
    model = MultilingualASR.load(str(base / "run" / "checkpoints" / "simadapter"))
    recognizer = model.recognizer("tt", "simadapter")
    _, expected = recognizer.decode_dataset(speech_dataset(records, vocabulary, 8))
    serve = tf.saved_model.load(metrics["export"]).signatures["serving_default"]
    for (path, _), ids in zip(records, expected):
        served = serve(waveform=load_audio(path)[None])
        assert served["text"].numpy()[0].decode() == vocabulary.decode(ids)
        assert served["logits"].shape[-1] == vocabulary.size and served["logits"].shape[0] == 1
    with open(os.path.join(metrics["export"], "assets.extra", "kerastl.json")) as f:
        facts = json.load(f)
    assert facts["inputs"] == {"waveform": {"shape": [None, None], "dtype": "float32"}}
    assert facts["method"] == "simadapter" and facts["vocabulary"] == vocabulary.characters


def test_resume_keeps_finished_methods_and_reuses_the_source_model(finished_run):
    base, args, before = finished_run
    again = [a for a in args if a != "simadapter"]
    again[again.index("--method") + 1:again.index("--method") + 1] = ["head,simadapter"]
    assert run_app(again + ["--resume", "--no-export"]) == 0
    after = read_metrics(base / "run")
    assert set(after["methods"]) == {"head", "adapter", "simadapter"}
    for method in ("adapter", "simadapter"):
        assert after["methods"][method] == before["methods"][method]
    assert after["sources_training"]["reused"] == ["pretrain", "source_adapters"]
    assert after["methods"]["head"]["trained_share"] < after["methods"]["adapter"]["trained_share"]


def write_unusable_corpus(root):
    """tt's training TSV names clips that do not exist."""
    for lang in ALPHABETS:
        os.makedirs(os.path.join(root, lang, "clips"), exist_ok=True)
        for split in ("train", "dev", "test"):
            with open(os.path.join(root, lang, f"{split}.tsv"), "w") as f:
                f.write("path\tsentence\nmissing.wav\tab\n")
    return root


BAD_INPUTS = {
    "unknown language": (lambda d, c: ["--sources", "ru,it", "--target", "xx"],
                         r"--target xx: 'xx' is unknown to the espeak corpus builder"),
    "language without a folder": (lambda d, c: ["--data", f"commonvoice:{c}", "--target", "zz"],
                                  r"--target: no language folder .*zz in --data commonvoice:.*\(languages there: "
                                  r"aa, bb, tt\)"),
    "target among sources": (lambda d, c: ["--data", f"commonvoice:{c}", "--target", "aa"],
                             r"--target aa: also among --sources aa,bb"),
    "wrong data scheme": (lambda d, c: ["--data", f"librispeech:{c}"],
                          r"--data librispeech:.*: expected commonvoice:DIR or espeak:DIR"),
    "missing data folder": (lambda d, c: ["--data", f"espeak:{d}/absent"], r"--data espeak:.*absent is not a folder"),
    "no usable data": (lambda d, c: ["--data", "commonvoice:" + write_unusable_corpus(f"{d}/broken")],
                       r"broken/aa/train.tsv: 0 of 1 rows usable, 1 skipped \(1 missing audio file\)"),
    "unknown method": (lambda d, c: ["--data", f"commonvoice:{c}", "--method", "adapter,lora"],
                       r"--method adapter,lora: 'lora' is unknown"),
    "bad width": (lambda d, c: ["--data", f"commonvoice:{c}", "--hidden-dim", "30", "--num-heads", "4"],
                  r"--hidden-dim 30: expected a multiple of --num-heads 4"),
    "negative patience": (lambda d, c: ["--data", f"commonvoice:{c}", "--patience", "-1"],
                          r"--patience -1: expected 0 or more"),
    "negative guide decay": (lambda d, c: ["--data", f"commonvoice:{c}", "--guide-decay-steps", "-5"],
                             r"--guide-decay-steps -5: expected 0 or more"),
    "zero fine-tuning rate": (lambda d, c: ["--data", f"commonvoice:{c}", "--finetune-lr", "0"],
                              r"--finetune-lr 0.0: expected a positive rate"),
    "not a language code": (lambda d, c: ["--sources", "ru,it/pt"], r"--sources ru,it/pt: 'it/pt' is not a language"),
    "espeak-ng missing": (lambda d, c: ["--espeak-missing"], r"espeak corpus: missing espeak-ng .*install with: "
                                                             r"apt-get install .*espeak-ng.* \(needs root\)"),
    "existing export version": (lambda d, c: ["--data", f"commonvoice:{c}", "--version", "1"],
                                r"--version 1: .*simadapter/1 already exists; pass --overwrite"),
    "existing run": (lambda d, c: ["--data", f"commonvoice:{c}", "--output", f"{d}/old_run"],
                     r"--output .*old_run: already holds a run"),
    "resume another target": (lambda d, c: ["--data", f"commonvoice:{c}", "--output", f"{d}/old_run", "--resume",
                                            "--sources", "aa", "--target", "bb"],
                              r"--resume: the checkpoint in .*old_run/checkpoints is from --sources aa,bb, not aa"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, corpus, tmp_path, refused, monkeypatch):
    os.makedirs(tmp_path / "exports" / "simadapter" / "1")
    (tmp_path / "exports" / "simadapter" / "1" / "saved_model.pb").write_text("an earlier export")
    os.makedirs(tmp_path / "old_run" / "checkpoints")
    (tmp_path / "old_run" / "metrics.json").write_text('{"cer": 0.5}')
    parsed = simadapter.build_parser().parse_args(BASE + ["--data", f"commonvoice:{corpus}"])
    simadapter.check_args(parsed)
    (tmp_path / "old_run" / "checkpoints" / "run.json").write_text(json.dumps(simadapter.run_config(parsed)))
    make_args, message = BAD_INPUTS[case]
    args = make_args(str(tmp_path), corpus)
    if args == ["--espeak-missing"]:
        import kerastl.data.espeak_corpus as espeak_corpus

        monkeypatch.setattr(espeak_corpus.shutil, "which", lambda name: None)
        args = ["--sources", "ru,it", "--target", "ro"]
    if "--output" not in args:
        args += ["--output", str(tmp_path / "new_run")]
    args += ["--export-dir", str(tmp_path / "exports"), "--cache-dir", str(tmp_path / "cache")]
    refused(lambda: run_app(BASE + args), "apps.simadapter", message, tmp_path)


def test_help_explains_every_option():
    help_text = " ".join(simadapter.build_parser().format_help().split())
    for option in ("--data", "commonvoice:DIR", "--sources", "--target", "--method", "simadapter_plus",
                   "--adapter-training", "heads first", "--source-adapters", "with_backbone", "--patience",
                   "--guide-decay-steps", "--finetune-lr", "--source-adapter-dim", "--cache-dir", "--beam-width", "--pretrain-epochs", "--fusion-epochs",
                   "--meta-epochs", "--inner-lr", "--meta-lr", "--guide-weight", "--preset", "--resume",
                   "waveform", "preset values: smoke 1, cpu 3, paper 12"):
        assert option in help_text, option
