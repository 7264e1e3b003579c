"""Speech corpora: the Common Voice loader and its bad-input handling, the tf.data pipeline,
and the espeak-ng corpus builder (its word logic, caching and package messages; a stand-in
synthesiser replaces espeak-ng, which tests may not need)."""

import logging
import os
import shutil
import stat
import sys

import numpy as np
import pytest
import tensorflow as tf

from kerastl.data import audio
from kerastl.data.vocabulary import CharVocabulary
from kerastl.data import speech
from kerastl.errors import InputError

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures", "speech")
LOGGER = "kerastl.data.speech"


def write_wav(path, rate=16000, seconds=0.5, frequency=440.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).normal(scale=0.05, size=t.shape)
    samples = (0.4 * np.sin(2 * np.pi * frequency * t) + noise).astype(np.float32)
    tf.io.write_file(str(path), tf.audio.encode_wav(samples[:, None], rate))


def write_tsv(path, rows, header=("client_id", "path", "sentence", "up_votes")):
    lines = ["\t".join(header)] + ["\t".join(("someone", name, sentence, "2")) for name, sentence in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


GOOD = [("a.wav", "Bună ziua!"), ("b.wav", "ziua"), ("c.wav", "bună bună"), ("d.wav", "Ziua, ziua."),
        ("e.wav", "zi bună"), ("i.wav", "bun zi"), ("j.wav", "nu"), ("f22k.wav", "bun"), ("g44k.wav", "una"),
        ("h.mp3", "zi")]
GOOD_TEXTS = ["bună ziua", "ziua", "bună bună", "ziua ziua", "zi bună", "bun zi", "nu", "bun", "una", "zi"]


@pytest.fixture
def corpus(tmp_path):
    """A Common Voice folder for 'ro': 10 good rows (WAV at 16, 22.05 and 44.1 kHz, one MP3)
    and 9 bad ones, one or two per kind of problem."""
    clips = tmp_path / "ro" / "clips"
    clips.mkdir(parents=True)
    for i, (name, _) in enumerate(GOOD[:7]):
        write_wav(clips / name, seconds=0.3 + 0.1 * i, frequency=300 + 100 * i, seed=i)
    write_wav(clips / "f22k.wav", rate=22050, seconds=0.4)
    write_wav(clips / "g44k.wav", rate=44100, seconds=0.4)
    shutil.copy(os.path.join(FIXTURES, "tone_1khz_22050hz.mp3"), clips / "h.mp3")
    write_wav(clips / "no_text.wav")
    (clips / "garbage.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 3)
    write_wav(clips / "short.wav", seconds=0.01)
    write_wav(clips / "low_rate.wav", rate=4000)
    header_broken = bytearray(tf.audio.encode_wav(np.zeros((4000, 1), np.float32), 16000).numpy())
    header_broken[24:32] = bytes(8)  # sample rate and byte rate fields: 0
    (clips / "rate_zero.wav").write_bytes(bytes(header_broken))
    header_broken[28:32] = (32000).to_bytes(4, "little")  # byte rate no longer matches
    (clips / "rate_inconsistent.wav").write_bytes(bytes(header_broken))
    write_wav(clips / "strange.wav")
    (clips / "voice.ogg").write_bytes(b"OggS")
    bad = [("missing.wav", "ziua"), ("no_text.wav", " ?! "), ("garbage.wav", "ziua"), ("short.wav", "zi"),
           ("low_rate.wav", "zi"), ("rate_zero.wav", "zi"), ("rate_inconsistent.wav", "zi"),
           ("strange.wav", "ziua xyz"), ("voice.ogg", "zi")]
    write_tsv(tmp_path / "ro" / "train.tsv", GOOD + bad)
    return tmp_path


VOCABULARY = CharVocabulary.from_texts(["bună ziua"])
EXPECTED_PROBLEMS = {2 + len(GOOD) + i: reason for i, reason in enumerate([
    "missing audio file", "empty transcript", "unreadable audio", "too short", "bad sample rate",
    "bad sample rate", "unreadable audio", "characters outside the vocabulary", "unsupported audio type"])}
SUMMARY = ("10 of 19 rows usable, 9 skipped (2 unreadable audio; 2 bad sample rate; 1 missing audio file; "
           "1 empty transcript; 1 too short; 1 characters outside the vocabulary; 1 unsupported audio type)")


def test_scan_finds_each_bad_row_and_keeps_the_good_ones(corpus):
    scanned = speech.scan_split(str(corpus), "ro", "train", VOCABULARY)
    clips = os.path.join(str(corpus), "ro", "clips")
    assert scanned.records == [(os.path.join(clips, name), text) for (name, _), text in zip(GOOD, GOOD_TEXTS)]
    assert scanned.rows == 19
    found = {line: reason for line, _, reason in scanned.skipped}
    assert found.keys() == EXPECTED_PROBLEMS.keys()
    for line, reason in EXPECTED_PROBLEMS.items():
        assert found[line].startswith(reason), (line, found[line])
    assert found[19].endswith("xy")  # names the unknown characters
    assert "4000 Hz" in found[16] and ": 0 Hz" in found[17]
    assert found[18] == "unreadable audio: Bad bytes per second in WAV header: Expected 0 but got 32000 " \
                        "(sample_rate=0, bytes_per_sample=2)"
    assert scanned.summary() == os.path.join(str(corpus), "ro", "train.tsv") + ": " + SUMMARY


def test_load_split_warns_per_bad_file_and_continues(corpus, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = speech.load_split(str(corpus), "ro", "train", VOCABULARY, expected_rate=16000)
    assert len(records) == 10
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    per_file = [m for m in messages if m.endswith("; skipped")]
    assert len(per_file) == 9
    assert any("missing.wav: missing audio file" in m for m in per_file)
    resampled = [m for m in messages if m.endswith("resampled to 16000 Hz")]
    assert sorted(m.split(": ")[2].rsplit(os.sep, 1)[1] for m in resampled) == ["f22k.wav", "g44k.wav", "h.mp3"]
    assert "22050 Hz, expected 16000 Hz" in resampled[0]
    assert messages[-1].endswith(SUMMARY + ", 3 resampled from another rate")
    assert len(messages) == 9 + 3 + 1


def test_without_vocabulary_or_expected_rate_nothing_else_is_flagged(corpus, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        records = speech.load_split(str(corpus), "ro", "train")
    assert len(records) == 11 and records[-1][1] == "ziua xyz"
    assert len(caplog.records) == 8 + 1


def test_nothing_usable_is_one_input_error_without_warnings(corpus, caplog):
    write_tsv(corpus / "ro" / "dev.tsv", [("missing.wav", "ziua"), ("garbage.wav", "zi"), ("a.wav", "")])
    with caplog.at_level(logging.WARNING, logger=LOGGER), pytest.raises(InputError) as error:
        speech.load_split(str(corpus), "ro", "dev")
    message = str(error.value)
    assert "\n" not in message and message.startswith(os.path.join(str(corpus), "ro", "dev.tsv"))
    assert "0 of 3 rows usable" in message and "expected at least one usable row" in message
    assert "first: line 2: missing audio file" in message
    assert not caplog.records


def test_too_few_usable_rows_are_refused(corpus):
    write_tsv(corpus / "ro" / "dev.tsv", [("a.wav", "zi"), ("missing.wav", "zi"), ("short.wav", "zi")])
    with pytest.raises(InputError, match=r"1 of 3 rows usable.*expected at least 50% usable"):
        speech.load_split(str(corpus), "ro", "dev")
    assert len(speech.load_split(str(corpus), "ro", "dev", min_usable_fraction=0.3)) == 1


def test_missing_language_tsv_or_columns_are_refused(corpus):
    with pytest.raises(InputError, match=r"uk: no such folder; expected a Common Voice language folder"):
        speech.load_split(str(corpus), "uk", "train")
    with pytest.raises(InputError, match=r"test.tsv: file not found; expected the test split of language 'ro'"):
        speech.load_split(str(corpus), "ro", "test")
    write_tsv(corpus / "ro" / "test.tsv", [("a.wav", "zi")], header=("client_id", "file", "text", "votes"))
    with pytest.raises(InputError, match=r"test.tsv: no 'path' or 'sentence' column"):
        speech.load_split(str(corpus), "ro", "test")
    (corpus / "ro" / "test.tsv").write_text("path\tsentence\n", encoding="utf-8")  # a language with no data
    with pytest.raises(InputError, match=r"0 of 0 rows usable"):
        speech.load_split(str(corpus), "ro", "test")


def test_speech_dataset_batches_features_and_labels(corpus):
    records = speech.load_split(str(corpus), "ro", "train", VOCABULARY)
    vocabulary = CharVocabulary.from_texts(text for _, text in records)
    batches = list(speech.speech_dataset(records, vocabulary, batch_size=3))
    assert [len(b["labels"]) for b in batches] == [3, 3, 3, 1]
    first = batches[0]
    assert first["features"].dtype == tf.float32 and first["labels"].dtype == tf.int32
    assert first["feature_lengths"].dtype == tf.int32 and first["label_lengths"].dtype == tf.int32
    # The served front end on the raw waveforms gives the same features.
    waveforms = [audio.load_audio(path).numpy() for path, _ in records[:3]]
    padded = np.zeros((3, max(map(len, waveforms))), np.float32)
    for row, waveform in zip(padded, waveforms):
        row[:len(waveform)] = waveform
    served, served_lengths = audio.LogMelFrontEnd()(padded, np.array([len(w) for w in waveforms]))
    assert first["feature_lengths"].numpy().tolist() == served_lengths.numpy().tolist() == \
        [1 + (len(w) - 400) // 160 for w in waveforms]
    frames = int(max(first["feature_lengths"]))
    np.testing.assert_allclose(first["features"].numpy(), served.numpy()[:, :frames], atol=1e-4)
    decoded = [vocabulary.decode(row[:n]) for b in batches for row, n in zip(b["labels"].numpy(), b["label_lengths"])]
    assert decoded == [text for _, text in records]
    assert first["labels"].numpy()[1, first["label_lengths"][1]:].tolist() == \
        [0] * (first["labels"].shape[1] - int(first["label_lengths"][1]))


def epoch_texts(dataset, vocabulary):
    return [vocabulary.decode(row[:n]) for b in dataset for row, n in zip(b["labels"].numpy(), b["label_lengths"])]


def test_training_shuffles_each_epoch_reproducibly_and_augments(corpus):
    records = speech.load_split(str(corpus), "ro", "train", VOCABULARY)
    vocabulary = CharVocabulary.from_texts(text for _, text in records)
    dataset = speech.speech_dataset(records, vocabulary, 8, training=True, spec_augment=True, seed=5)
    again = speech.speech_dataset(records, vocabulary, 8, training=True, spec_augment=True, seed=5)
    epochs = [epoch_texts(dataset, vocabulary) for _ in range(3)]
    assert epochs == [epoch_texts(again, vocabulary) for _ in range(3)]
    assert all(sorted(e) == sorted(t for _, t in records) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1
    plain = {vocabulary.decode(row[:n]): (f[:m].numpy())
             for b in speech.speech_dataset(records, vocabulary, 8)
             for row, n, f, m in zip(b["labels"].numpy(), b["label_lengths"], b["features"], b["feature_lengths"])}
    masks = []
    for batch in [next(iter(dataset)), next(iter(dataset))]:
        for row, n, features, m in zip(batch["labels"].numpy(), batch["label_lengths"], batch["features"],
                                       batch["feature_lengths"]):
            features, original = features[:m].numpy(), plain[vocabulary.decode(row[:n])]
            masked = features != original
            assert np.all(features[masked] == 0)
            assert 10 <= masked.all(axis=0).sum() <= 20  # two 10-bin frequency masks
            assert 12 <= masked.all(axis=1).sum() <= 24  # two 12-frame time masks
            masks.append(np.flatnonzero(masked.all(axis=0)).tolist())
    assert len(set(map(tuple, masks))) > 2  # fresh masks per utterance and epoch


def test_bad_dataset_arguments_are_refused():
    with pytest.raises(InputError, match="no records"):
        speech.speech_dataset([], VOCABULARY, 4)
    with pytest.raises(InputError, match="batch_size 0"):
        speech.speech_dataset([("a.wav", "zi")], VOCABULARY, 0)


# --- the espeak-ng corpus builder --------------------------------------------------------------

DIC = """\
12
bună/A
ziua/B\tpo:noun
Paris
școală
ab
maşină
frumoasă/AB
abcdefghijk
casă
123
masă/C
apă
"""


def test_word_lists_are_parsed_and_filtered():
    words = speech.parse_word_list(DIC.splitlines())
    assert words[:3] == ["bună", "ziua", "Paris"] and "12" not in words and len(words) == 12
    alphabet = speech.ESPEAK_LANGUAGES["ro"].alphabet
    # Kept: lower case, 3..10 letters of the Romanian alphabet (ş with a cedilla is not one of them).
    assert speech.select_words(words, alphabet) == ["apă", "bună", "casă", "frumoasă", "masă", "ziua", "școală"]
    assert speech.select_words(["casa", "casa", "e\u0301ta"], "acseéto") == ["casa", "éta"]


def test_word_split_keeps_test_words_unseen():
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(26) for j in range(26)]
    plan = speech.plan_corpus("ro", words, 100, seed=3)
    assert plan == speech.plan_corpus("ro", words, 100, seed=3)
    assert plan != speech.plan_corpus("ro", words, 100, seed=4)
    by_split = {s: [u for u in plan if u.split == s] for s in speech.SPLITS}
    assert {s: len(u) for s, u in by_split.items()} == {"train": 70, "dev": 15, "test": 15}
    vocab = {s: {w for u in us for w in u.sentence.split()} for s, us in by_split.items()}
    assert not vocab["test"] & vocab["train"] and not vocab["dev"] & vocab["train"] and not vocab["test"] & vocab["dev"]
    assert len(vocab["train"]) == 70  # every word of the split's pool is spoken
    lengths = {len(u.sentence.split()) for u in plan}
    assert lengths == {1, 2, 3}
    assert len({u.sentence for u in by_split["train"]}) == 70
    assert len({(u.variant, u.speed, u.pitch) for u in plan}) > 10
    assert {u.variant for u in plan} <= set(speech.ESPEAK_VARIANTS)
    with pytest.raises(InputError, match="1000 distinct words needed, the word list gives only 676"):
        speech.plan_corpus("ro", words, 1000)


def test_missing_packages_are_named_with_the_install_command(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InputError) as error:
        speech.build_espeak_corpus(str(tmp_path / "corpus"), ["ro", "cy"], 10)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("espeak corpus: missing espeak-ng (the synthesiser), aspell:cy (Welsh words)")
    assert message.endswith("install with: apt-get install aspell aspell-cy espeak-ng (needs root)")
    monkeypatch.setitem(speech.ESPEAK_LANGUAGES, "ro", speech.EspeakLanguage(
        "Romanian", ("hunspell-ro",), str(tmp_path / "ro_RO.dic"), "abc"))
    with pytest.raises(InputError, match=r"ro_RO.dic \(Romanian words\); install with: apt-get install "
                                         r"espeak-ng hunspell-ro \(needs root\)$"):
        speech.build_espeak_corpus(str(tmp_path / "corpus"), ["ro"], 10)
    with pytest.raises(InputError, match="no word list known for language.s. br; supported: ro, cs, ar"):
        speech.build_espeak_corpus(str(tmp_path / "corpus"), ["br"], 10)
    assert not (tmp_path / "corpus").exists()


FAKE_ESPEAK = """\
#!{python}
# Stands in for espeak-ng: a 22,050 Hz tone as long as the text, written where -w says.
import math, struct, sys, wave
arguments = sys.argv[1:]
if "--version" in arguments:
    print("eSpeak NG text-to-speech: fake")
    sys.exit(0)
text = sys.stdin.read()
with open({log!r}, "a") as log:
    log.write(text + "\\n")
with wave.open(arguments[arguments.index("-w") + 1], "wb") as out:
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(22050)
    out.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(i / 5)))
                             for i in range(2205 * (2 + len(text) // 4))))
"""


@pytest.fixture
def fake_espeak(tmp_path, monkeypatch):
    """espeak-ng replaced by a script on PATH, Romanian words from a small .dic file; returns a
    function counting the utterances synthesised so far."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "spoken.txt"
    script = folder / "espeak-ng"
    script.write_text(FAKE_ESPEAK.format(python=sys.executable, log=str(log)))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(folder))
    words = [a + b + c for a in "bcdm" for b in "aăeiu" for c in "stnr"]  # 80 words
    dic = tmp_path / "ro_RO.dic"
    dic.write_text(f"{len(words)}\n" + "\n".join(f"{w}/AB" for w in words) + "\n", encoding="utf-8")
    monkeypatch.setitem(speech.ESPEAK_LANGUAGES, "ro", speech.EspeakLanguage(
        "Romanian", ("hunspell-ro",), str(dic), speech.ESPEAK_LANGUAGES["ro"].alphabet))
    return lambda: len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


def test_builder_writes_the_common_voice_layout_and_reuses_it(tmp_path, fake_espeak, snapshot):
    root = str(tmp_path / "corpus")
    counts = speech.build_espeak_corpus(root, ["ro"], 12, progress=False)
    assert counts == {"ro": {"train": 8, "dev": 2, "test": 2}} and fake_espeak() == 12
    records = {split: speech.load_split(root, "ro", split) for split in speech.SPLITS}
    assert {split: len(r) for split, r in records.items()} == counts["ro"]
    waveform, rate = audio.read_audio(records["train"][0][0])
    assert int(rate) == 16000 and waveform.shape[0] > 16000 * 0.15
    header = open(os.path.join(root, "ro", "train.tsv"), encoding="utf-8").readline().split("\t")
    assert header[1:3] == ["path", "sentence"]
    train_words = {w for _, text in records["train"] for w in text.split()}
    assert not train_words & {w for _, text in records["test"] for w in text.split()}

    before = snapshot(root)
    assert speech.build_espeak_corpus(root, ["ro"], 12, progress=False) == counts
    assert fake_espeak() == 12 and snapshot(root) == before  # reused, nothing synthesised again

    # An interrupted build (marker says incomplete, a clip and a half-written file) is completed.
    clips = os.path.join(root, "ro", "clips")
    marker = os.path.join(root, "ro", speech.CORPUS_MARKER)
    with open(marker) as f:
        content = f.read()
    with open(marker, "w") as f:
        f.write(content.replace('"complete": true', '"complete": false'))
    os.remove(os.path.join(clips, "ro_dev_00001.wav"))
    open(os.path.join(clips, "ro_dev_00001.wav.part"), "wb").close()
    assert speech.build_espeak_corpus(root, ["ro"], 12, progress=False) == counts
    assert fake_espeak() == 13 and snapshot(root) == before

    # Other parameters: refused without overwrite (disk unchanged), rebuilt with it.
    with pytest.raises(InputError, match=r"ro holds a corpus built with other parameters; pass overwrite=True"):
        speech.build_espeak_corpus(root, ["ro"], 10, progress=False)
    assert snapshot(root) == before
    assert speech.build_espeak_corpus(root, ["ro"], 10, overwrite=True, progress=False) == \
        {"ro": {"train": 6, "dev": 2, "test": 2}}
    assert fake_espeak() == 13 + 10  # every clip spoken again: same names, other sentences
    assert sorted(os.listdir(clips)) == sorted([f"ro_train_{i:05d}.wav" for i in range(6)] +
                                               [f"ro_{s}_{i:05d}.wav" for s in ("dev", "test") for i in range(2)])


def test_builder_refuses_folders_it_did_not_write(tmp_path, fake_espeak, snapshot):
    folder = tmp_path / "corpus" / "ro"
    folder.mkdir(parents=True)
    write_tsv(folder / "train.tsv", [("a.mp3", "zi")])
    before = snapshot(str(tmp_path / "corpus"))
    with pytest.raises(InputError, match=r"corpus/ro holds files not written by the corpus builder"):
        speech.build_espeak_corpus(str(tmp_path / "corpus"), ["ro"], 12, progress=False)
    assert snapshot(str(tmp_path / "corpus")) == before and fake_espeak() == 0


def test_builder_options_are_checked(tmp_path, fake_espeak):
    root = str(tmp_path / "corpus")
    with pytest.raises(InputError, match=r"fractions \(0.5, 0.5, 0.0\), expected 3 positive shares"):
        speech.build_espeak_corpus(root, ["ro"], 12, fractions=(0.5, 0.5, 0.0))
    with pytest.raises(InputError, match="no utterance count for ro in per_language"):
        speech.build_espeak_corpus(root, ["ro"], {"cs": 12})
    with pytest.raises(InputError, match="2 utterances per language, expected at least 3"):
        speech.build_espeak_corpus(root, ["ro"], 2)
    assert not os.path.exists(root)

