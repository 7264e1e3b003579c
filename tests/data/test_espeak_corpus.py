"""The espeak-ng corpus builder: its word logic, caching and package messages (a stand-in
synthesiser replaces espeak-ng, which tests may not need), and its output read back by the
Common Voice loader."""

import os
import stat
import sys

import pytest

from kerastl.data import audio, espeak_corpus
from kerastl.data.speech import load_split
from kerastl.errors import InputError


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
    words = espeak_corpus.parse_word_list(DIC.splitlines())
    assert words[:3] == ["bună", "ziua", "Paris"] and "12" not in words and len(words) == 12
    alphabet = espeak_corpus.ESPEAK_LANGUAGES["ro"].alphabet
    # Kept: lower case, 3..10 letters of the Romanian alphabet (ş with a cedilla is not one of them).
    assert espeak_corpus.select_words(words, alphabet) == \
        ["apă", "bună", "casă", "frumoasă", "masă", "ziua", "școală"]
    assert espeak_corpus.select_words(["casa", "casa", "e\u0301ta"], "acseéto") == ["casa", "éta"]


def test_word_split_keeps_test_words_unseen():
    words = [f"w{chr(97 + i)}{chr(97 + j)}" for i in range(26) for j in range(26)]
    plan = espeak_corpus.plan_corpus("ro", words, 100, seed=3)
    assert plan == espeak_corpus.plan_corpus("ro", words, 100, seed=3)
    assert plan != espeak_corpus.plan_corpus("ro", words, 100, seed=4)
    by_split = {s: [u for u in plan if u.split == s] for s in espeak_corpus.SPLITS}
    assert {s: len(u) for s, u in by_split.items()} == {"train": 70, "dev": 15, "test": 15}
    vocab = {s: {w for u in us for w in u.sentence.split()} for s, us in by_split.items()}
    assert not vocab["test"] & vocab["train"] and not vocab["dev"] & vocab["train"] and not vocab["test"] & vocab["dev"]
    assert len(vocab["train"]) == 70  # every word of the split's pool is spoken
    lengths = {len(u.sentence.split()) for u in plan}
    assert lengths == {1, 2, 3}
    assert len({u.sentence for u in by_split["train"]}) == 70
    assert len({(u.variant, u.speed, u.pitch) for u in plan}) > 10
    assert {u.variant for u in plan} <= set(espeak_corpus.ESPEAK_VARIANTS)
    with pytest.raises(InputError, match="1000 distinct words needed, the word list gives only 676"):
        espeak_corpus.plan_corpus("ro", words, 1000)


def test_missing_packages_are_named_with_the_install_command(tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    # Romanian's word list present (written here), so the message names only what is missing
    # whatever this machine has installed.
    (tmp_path / "ro.dic").write_text("2\nabc\nabd\n", encoding="utf-8")
    monkeypatch.setitem(espeak_corpus.ESPEAK_LANGUAGES, "ro", espeak_corpus.EspeakLanguage(
        "Romanian", ("hunspell-ro",), str(tmp_path / "ro.dic"), "abc"))
    with pytest.raises(InputError) as error:
        espeak_corpus.build_espeak_corpus(str(tmp_path / "corpus"), ["ro", "cy"], 10)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("espeak corpus: missing espeak-ng (the synthesiser), aspell:cy (Welsh words)")
    assert message.endswith("install with: apt-get install aspell aspell-cy espeak-ng (needs root)")
    monkeypatch.setitem(espeak_corpus.ESPEAK_LANGUAGES, "ro", espeak_corpus.EspeakLanguage(
        "Romanian", ("hunspell-ro",), str(tmp_path / "ro_RO.dic"), "abc"))
    with pytest.raises(InputError, match=r"ro_RO.dic \(Romanian words\); install with: apt-get install "
                                         r"espeak-ng hunspell-ro \(needs root\)$"):
        espeak_corpus.build_espeak_corpus(str(tmp_path / "corpus"), ["ro"], 10)
    with pytest.raises(InputError, match="no word list known for language.s. br; supported: ro, cs, ar"):
        espeak_corpus.build_espeak_corpus(str(tmp_path / "corpus"), ["br"], 10)
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
    monkeypatch.setitem(espeak_corpus.ESPEAK_LANGUAGES, "ro", espeak_corpus.EspeakLanguage(
        "Romanian", ("hunspell-ro",), str(dic), espeak_corpus.ESPEAK_LANGUAGES["ro"].alphabet))
    return lambda: len(log.read_text(encoding="utf-8").splitlines()) if log.exists() else 0


def test_builder_writes_the_common_voice_layout_and_reuses_it(tmp_path, fake_espeak, snapshot):
    root = str(tmp_path / "corpus")
    counts = espeak_corpus.build_espeak_corpus(root, ["ro"], 12, progress=False)
    assert counts == {"ro": {"train": 8, "dev": 2, "test": 2}} and fake_espeak() == 12
    records = {split: load_split(root, "ro", split) for split in espeak_corpus.SPLITS}
    assert {split: len(r) for split, r in records.items()} == counts["ro"]
    waveform, rate = audio.read_audio(records["train"][0][0])
    assert int(rate) == 16000 and waveform.shape[0] > 16000 * 0.15
    header = open(os.path.join(root, "ro", "train.tsv"), encoding="utf-8").readline().split("\t")
    assert header[1:3] == ["path", "sentence"]
    train_words = {w for _, text in records["train"] for w in text.split()}
    assert not train_words & {w for _, text in records["test"] for w in text.split()}

    before = snapshot(root)
    assert espeak_corpus.build_espeak_corpus(root, ["ro"], 12, progress=False) == counts
    assert fake_espeak() == 12 and snapshot(root) == before  # reused, nothing synthesised again

    # An interrupted build (marker says incomplete, a clip and a half-written file) is completed.
    clips = os.path.join(root, "ro", "clips")
    marker = os.path.join(root, "ro", espeak_corpus.CORPUS_MARKER)
    with open(marker) as f:
        content = f.read()
    with open(marker, "w") as f:
        f.write(content.replace('"complete": true', '"complete": false'))
    os.remove(os.path.join(clips, "ro_dev_00001.wav"))
    open(os.path.join(clips, "ro_dev_00001.wav.part"), "wb").close()
    assert espeak_corpus.build_espeak_corpus(root, ["ro"], 12, progress=False) == counts
    assert fake_espeak() == 13 and snapshot(root) == before

    # Other parameters: refused without overwrite (disk unchanged), rebuilt with it.
    with pytest.raises(InputError, match=r"ro holds a corpus built with other parameters; pass overwrite=True"):
        espeak_corpus.build_espeak_corpus(root, ["ro"], 10, progress=False)
    assert snapshot(root) == before
    assert espeak_corpus.build_espeak_corpus(root, ["ro"], 10, overwrite=True, progress=False) == \
        {"ro": {"train": 6, "dev": 2, "test": 2}}
    assert fake_espeak() == 13 + 10  # every clip spoken again: same names, other sentences
    assert sorted(os.listdir(clips)) == sorted([f"ro_train_{i:05d}.wav" for i in range(6)] +
                                               [f"ro_{s}_{i:05d}.wav" for s in ("dev", "test") for i in range(2)])


def test_builder_refuses_folders_it_did_not_write(tmp_path, fake_espeak, snapshot):
    folder = tmp_path / "corpus" / "ro"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text("client_id\tpath\tsentence\nsomeone\ta.mp3\tzi\n", encoding="utf-8")
    before = snapshot(str(tmp_path / "corpus"))
    with pytest.raises(InputError, match=r"corpus/ro holds files not written by the corpus builder"):
        espeak_corpus.build_espeak_corpus(str(tmp_path / "corpus"), ["ro"], 12, progress=False)
    assert snapshot(str(tmp_path / "corpus")) == before and fake_espeak() == 0


def test_builder_options_are_checked(tmp_path, fake_espeak):
    root = str(tmp_path / "corpus")
    with pytest.raises(InputError, match=r"fractions \(0.5, 0.5, 0.0\), expected 3 positive shares"):
        espeak_corpus.build_espeak_corpus(root, ["ro"], 12, fractions=(0.5, 0.5, 0.0))
    with pytest.raises(InputError, match="no utterance count for ro in per_language"):
        espeak_corpus.build_espeak_corpus(root, ["ro"], {"cs": 12})
    with pytest.raises(InputError, match="2 utterances per language, expected at least 3"):
        espeak_corpus.build_espeak_corpus(root, ["ro"], 2)
    assert not os.path.exists(root)

