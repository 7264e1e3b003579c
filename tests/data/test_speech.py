"""Speech corpora: the Common Voice loader and its bad-input handling, and the tf.data pipeline."""

import logging
import os
import shutil

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
