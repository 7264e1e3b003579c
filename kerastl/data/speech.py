"""Speech corpora in Common Voice's layout: a checking loader, a tf.data pipeline, and an
offline corpus synthesised with espeak-ng.

Layout (one folder per language):
```
<root>/<lang>/clips/<file>.mp3|.wav
<root>/<lang>/train.tsv, dev.tsv, test.tsv   tab-separated, header row with `path` and
                                             `sentence` columns (others are ignored)
```
Common Voice releases (`commonvoice:DIR`) and the espeak-ng corpus that `build_espeak_corpus`
writes (`espeak:DIR`) both have it, so one loader serves both.

`load_split` checks every row and skips bad ones with a warning each (logger
`kerastl.data.speech`) and a summary count: a missing or unsupported audio file, unreadable
audio, audio shorter than one 25 ms frame, a sample rate that cannot be read or is below
8 kHz, an empty transcript (after `normalize_transcript`), characters outside a given
vocabulary. Sample rates: every rate from 8 kHz up is accepted and resampled to 16 kHz; with
`expected_rate` given, files at another rate are kept, resampled, and warned about (a corpus
mixing rates usually means mixed sources). When no row is usable, or fewer than
`min_usable_fraction` of them, `InputError` says so in one line with the counts (and nothing
else is printed), so an app exits with code 2.

Example:
>>> records = load_split("cv-corpus/", "ro", "train")                 # doctest: +SKIP
>>> vocabulary = CharVocabulary.from_texts(text for _, text in records)  # doctest: +SKIP
>>> batches = speech_dataset(records, vocabulary, batch_size=16, training=True)  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import unicodedata

import tensorflow as tf

from kerastl.data import audio
from kerastl.data.vocabulary import CharVocabulary, normalize_transcript
from kerastl.errors import InputError, require_writable

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
# The shortest file that still gives one filterbank frame, in seconds.
MIN_DURATION = audio.FRAME_LENGTH / audio.SAMPLE_RATE


# ---------------------------------------------------------------------------------------------
# Loading a split


@dataclasses.dataclass
class SpeechSplit:
    """What `scan_split` found in one TSV.

    Attributes:
        tsv: the file read.
        records: usable rows as (audio path, normalised transcript).
        skipped: bad rows as (TSV line number, audio path or '', reason).
        resampled: usable files whose rate differs from the expected rate (when one was given).
        rows: data rows in the TSV.
    """

    tsv: str
    records: list[tuple[str, str]]
    skipped: list[tuple[int, str, str]]
    resampled: list[tuple[int, str, int]]
    rows: int

    def summary(self) -> str:
        """One line: usable rows and the skipped ones by reason."""
        reasons = collections.Counter(reason.split(":")[0] for _, _, reason in self.skipped)
        detail = "; ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        return (f"{self.tsv}: {len(self.records)} of {self.rows} rows usable"
                + (f", {len(self.skipped)} skipped ({detail})" if self.skipped else ""))


def _read_tsv(tsv: str) -> list[tuple[int, str, str]]:
    """(line number, path cell, sentence cell) of each data row; checks the header."""
    try:
        with open(tsv, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except UnicodeDecodeError as err:
        raise InputError(f"{tsv}: not UTF-8 text ({err.reason}), expected a tab-separated table") from None
    if not rows:
        raise InputError(f"{tsv}: empty file, expected a header row with 'path' and 'sentence' columns")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in ("path", "sentence") if name not in header]
    if missing:
        raise InputError(f"{tsv}: no {' or '.join(repr(m) for m in missing)} column; expected a tab-separated "
                         f"header with 'path' and 'sentence' (found: {', '.join(header) or 'nothing'})")
    path_at, sentence_at = header.index("path"), header.index("sentence")
    width = max(path_at, sentence_at) + 1
    return [(number, row[path_at].strip() if len(row) >= width else "", row[sentence_at] if len(row) >= width else "")
            for number, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]


def _op_error_text(err: Exception) -> str:
    """The reason in a TensorFlow op error, without the op and device decorations."""
    text = str(getattr(err, "message", err)).strip()
    text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[Op:[^\]]*\].*$", "", text, flags=re.S)
    return text.splitlines()[0] if text else type(err).__name__


def audio_problem(path: str) -> tuple[str | None, int]:
    """(why the file cannot be used or None, its sample rate or 0), by decoding it."""
    if not os.path.isfile(path):
        return "missing audio file", 0
    if not path.lower().endswith(audio.AUDIO_EXTENSIONS):
        return f"unsupported audio type: expected {' or '.join(audio.AUDIO_EXTENSIONS)}", 0
    try:
        waveform, rate = audio.read_audio(path)
    except (tf.errors.OpError, ValueError) as err:
        return f"unreadable audio: {_op_error_text(err)}", 0
    rate = int(rate)
    if rate < audio.MIN_SAMPLE_RATE:
        return f"bad sample rate: {rate} Hz in the header, expected at least {audio.MIN_SAMPLE_RATE} Hz", rate
    if int(tf.size(waveform)) < MIN_DURATION * rate:
        return f"too short: {int(tf.size(waveform))} samples at {rate} Hz, under one 25 ms frame", rate
    return None, rate


def scan_split(root: str, lang: str, split: str, vocabulary: CharVocabulary | None = None,
               expected_rate: int | None = None, workers: int = 2) -> SpeechSplit:
    """Reads `<root>/<lang>/<split>.tsv` and checks every row (see the module docstring).

    Raises `InputError` only when the language folder or the TSV is missing or malformed;
    bad rows are returned in `skipped`. `workers` threads decode the audio.
    """
    folder = os.path.join(root, lang)
    if not os.path.isdir(folder):
        raise InputError(f"{folder}: no such folder; expected a Common Voice language folder "
                         f"(clips/ and {split}.tsv) for language {lang!r}")
    tsv = os.path.join(folder, f"{split}.tsv")
    if not os.path.isfile(tsv):
        raise InputError(f"{tsv}: file not found; expected the {split} split of language {lang!r} "
                         "(a tab-separated file with 'path' and 'sentence' columns)")
    rows = _read_tsv(tsv)
    records, skipped, resampled, candidates = [], [], [], []
    for number, name, sentence in rows:
        path = os.path.join(folder, "clips", name)
        text = normalize_transcript(sentence)
        unknown = vocabulary.unknown_characters(text) if vocabulary is not None else set()
        if not name:
            skipped.append((number, "", "no audio file named"))
        elif not text:
            skipped.append((number, path, "empty transcript"))
        elif unknown:
            skipped.append((number, path, "characters outside the vocabulary: " + "".join(sorted(unknown))))
        else:
            candidates.append((number, path, text))
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        checks = list(pool.map(audio_problem, [path for _, path, _ in candidates]))
    for (number, path, text), (problem, rate) in zip(candidates, checks):
        if problem:
            skipped.append((number, path, problem))
            continue
        records.append((path, text))
        if expected_rate is not None and rate != expected_rate:
            resampled.append((number, path, rate))
    skipped.sort()
    return SpeechSplit(tsv, records, skipped, resampled, len(rows))


def load_split(root: str, lang: str, split: str, vocabulary: CharVocabulary | None = None,
               expected_rate: int | None = None, min_usable_fraction: float = 0.5,
               workers: int = 2) -> list[tuple[str, str]]:
    """The usable (audio path, normalised transcript) rows of `<root>/<lang>/<split>.tsv`.

    Args:
        root: the corpus folder (one sub-folder per language, Common Voice layout).
        lang: the language folder's name, e.g. "ro".
        split: "train", "dev" or "test" (any `<split>.tsv` works).
        vocabulary: when given, rows with characters it lacks are skipped.
        expected_rate: when given, files at another sample rate get a warning (and are
            resampled like every file).
        min_usable_fraction: below this share of usable rows the split is refused.
        workers: threads decoding audio for the checks.

    Each bad row is logged as a warning, then one summary line; `InputError` (one line, no
    warnings) when the folder or TSV is missing, nothing is usable, or too little is.
    """
    scanned = scan_split(root, lang, split, vocabulary, expected_rate, workers)
    if not scanned.records or len(scanned.records) < min_usable_fraction * scanned.rows:
        first = f"; first: line {scanned.skipped[0][0]}: {scanned.skipped[0][2]}" if scanned.skipped else ""
        need = "expected at least one usable row" if not scanned.records else \
            f"expected at least {min_usable_fraction:.0%} usable"
        raise InputError(f"{scanned.summary()}{first}; {need}")
    for number, path, reason in scanned.skipped:
        logger.warning("%s: line %d: %s: %s; skipped", scanned.tsv, number, path or "-", reason)
    for number, path, rate in scanned.resampled:
        logger.warning("%s: line %d: %s: sample rate %d Hz, expected %d Hz; resampled to %d Hz",
                       scanned.tsv, number, path, rate, expected_rate, audio.SAMPLE_RATE)
    if scanned.skipped or scanned.resampled:
        logger.warning("%s%s", scanned.summary(),
                       f", {len(scanned.resampled)} resampled from another rate" if scanned.resampled else "")
    return scanned.records


# ---------------------------------------------------------------------------------------------
# The tf.data pipeline


def utterance_features(path) -> tf.Tensor:
    """An audio file -> normalised log-mel features `[frames, 80]` (what the model sees)."""
    return audio.normalize_utterance(audio.log_mel_filterbanks(audio.load_audio(path)))


def speech_dataset(records: list[tuple[str, str]], vocabulary: CharVocabulary, batch_size: int,
                   training: bool = False, spec_augment: bool | dict = False, seed: int = 0) -> tf.data.Dataset:
    """Padded batches of features and character ids for CTC training and evaluation.

    Each element is a dict: `features` float32 `[B, T, 80]` (0 after each utterance's end),
    `feature_lengths` int32 `[B]`, `labels` int32 `[B, L]` (padded with 0, the blank),
    `label_lengths` int32 `[B]`. Features are computed once (first pass) and cached in memory,
    so keep the dataset object to reuse it. With `training`, utterances are reshuffled every
    epoch (seeded) and, with `spec_augment` (True, or a dict of `audio.spec_augment`
    arguments), masked afresh every epoch from seeded stateless draws.

    Example:
    >>> batch = next(iter(speech_dataset(records, vocabulary, batch_size=8)))  # doctest: +SKIP
    >>> batch["features"].shape                                                 # doctest: +SKIP
    TensorShape([8, 212, 80])
    """
    if not records:
        raise InputError("speech_dataset: no records, expected (audio path, transcript) pairs")
    if batch_size < 1:
        raise InputError(f"batch_size {batch_size}: expected a positive integer")
    paths = [path for path, _ in records]
    texts = [text for _, text in records]

    def featurize(path, text):
        features = utterance_features(path)
        labels = vocabulary.tf_encode(text)
        return {"features": features, "feature_lengths": tf.shape(features)[0],
                "labels": labels, "label_lengths": tf.shape(labels)[0]}

    dataset = tf.data.Dataset.from_tensor_slices((paths, texts))
    dataset = dataset.map(featurize, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        dataset = dataset.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
        if spec_augment:
            options = spec_augment if isinstance(spec_augment, dict) else {}
            draws = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

            def augment(example, draw):
                masked = audio.spec_augment(example["features"], tf.cast(draw % (2**31 - 1), tf.int32), **options)
                return {**example, "features": masked}

            dataset = tf.data.Dataset.zip(dataset, draws).map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.padded_batch(batch_size, padded_shapes={
        "features": [None, audio.NUM_MEL_BINS], "feature_lengths": [], "labels": [None], "label_lengths": []})
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------------------------
# An offline corpus synthesised with espeak-ng


@dataclasses.dataclass(frozen=True)
class EspeakLanguage:
    """Where a language's words come from and which letters its words may use."""

    name: str
    packages: tuple[str, ...]  # Debian packages holding the word list
    word_list: str  # a file (hunspell .dic or one word per line), or "aspell:<dictionary>"
    alphabet: str  # lower-case letters of the language's script


_LATIN = "abcdefghijklmnopqrstuvwxyz"
ESPEAK_LANGUAGES = {
    "ro": EspeakLanguage("Romanian", ("hunspell-ro",), "/usr/share/hunspell/ro_RO.dic", _LATIN + "ăâîșț"),
    "cs": EspeakLanguage("Czech", ("hunspell-cs",), "/usr/share/hunspell/cs_CZ.dic", _LATIN + "áčďéěíňóřšťúůýž"),
    "ar": EspeakLanguage("Arabic", ("hunspell-ar",), "/usr/share/hunspell/ar.dic",
                         "".join(map(chr, range(0x621, 0x63B))) + "".join(map(chr, range(0x641, 0x64B)))),
    "uk": EspeakLanguage("Ukrainian", ("wukrainian",), "/usr/share/dict/ukrainian",
                         "абвгґдеєжзиіїйклмнопрстуфхцчшщьюя"),
    "ru": EspeakLanguage("Russian", ("hunspell-ru",), "/usr/share/hunspell/ru_RU.dic",
                         "абвгдеёжзийклмнопрстуфхцчшщъыьэюя"),
    "it": EspeakLanguage("Italian", ("hunspell-it",), "/usr/share/hunspell/it_IT.dic", _LATIN + "àèéìíòóù"),
    "pt": EspeakLanguage("Portuguese", ("hunspell-pt-pt",), "/usr/share/hunspell/pt_PT.dic", _LATIN + "áâãàçéêíóôõú"),
    "cy": EspeakLanguage("Welsh", ("aspell", "aspell-cy"), "aspell:cy", _LATIN + "âêîôûŵŷáéíóúàèìòùäëïöüÿ"),
    "eu": EspeakLanguage("Basque", ("hunspell-eu",), "/usr/share/hunspell/eu.dic", _LATIN + "ñ"),
}
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "f4")
ESPEAK_SPEEDS = (130, 155, 180)  # words per minute (espeak-ng's default is 175)
ESPEAK_PITCHES = (35, 50, 65)  # 0..99, default 50
CORPUS_MARKER = "espeak_corpus.json"
CORPUS_FORMAT = 1  # bump when the builder's output changes for the same parameters


def _apt_hint(packages) -> str:
    return f"install with: apt-get install {' '.join(sorted(set(packages)))} (needs root)"


def check_espeak_requirements(languages: list[str]) -> None:
    """Raises `InputError` naming the Debian packages to install when espeak-ng or a word
    list is missing, or when a language is not supported."""
    unknown = [lang for lang in languages if lang not in ESPEAK_LANGUAGES]
    if unknown:
        raise InputError(f"espeak corpus: no word list known for language(s) {', '.join(unknown)}; "
                         f"supported: {', '.join(ESPEAK_LANGUAGES)}")
    missing, packages = [], []
    if shutil.which("espeak-ng") is None:
        missing.append("espeak-ng (the synthesiser)")
        packages.append("espeak-ng")
    for lang in languages:
        source = ESPEAK_LANGUAGES[lang]
        if source.word_list.startswith("aspell:"):
            dictionary = source.word_list.split(":", 1)[1]
            found = shutil.which("aspell") is not None and dictionary in subprocess.run(
                ["aspell", "dicts"], capture_output=True, text=True).stdout.split()
        else:
            found = os.path.isfile(source.word_list)
        if not found:
            missing.append(f"{source.word_list} ({source.name} words)")
            packages.extend(source.packages)
    if missing:
        raise InputError(f"espeak corpus: missing {', '.join(missing)}; {_apt_hint(packages)}")


def parse_word_list(lines) -> list[str]:
    """Words of a hunspell .dic file (count line, affix flags after '/' and morphological
    fields dropped) or of a plain one-word-per-line list."""
    words = []
    for number, line in enumerate(lines):
        fields = line.split()
        if not fields or (number == 0 and fields[0].isdigit()):
            continue
        words.append(fields[0].split("/", 1)[0])
    return words


def read_word_list(lang: str) -> list[str]:
    """The raw words of a language's Debian word list (see `ESPEAK_LANGUAGES`)."""
    source = ESPEAK_LANGUAGES[lang]
    if source.word_list.startswith("aspell:"):
        result = subprocess.run(["aspell", "-d", source.word_list.split(":", 1)[1], "dump", "master"],
                                capture_output=True, text=True, encoding="utf-8", errors="replace")
        if result.returncode != 0:
            raise InputError(f"espeak corpus: aspell could not list {source.name} words "
                             f"({result.stderr.strip()[:200]}); {_apt_hint(source.packages)}")
        return parse_word_list(result.stdout.splitlines())
    with open(source.word_list, encoding="utf-8", errors="replace") as f:
        return parse_word_list(f)


def select_words(words, alphabet: str, min_length: int = 3, max_length: int = 10) -> list[str]:
    """Sorted distinct words written in lower case with only `alphabet`'s letters, of
    `min_length`..`max_length` letters: short dictionary words, no names or abbreviations."""
    letters = set(alphabet)
    kept = set()
    for word in words:
        word = unicodedata.normalize("NFC", word)
        if min_length <= len(word) <= max_length and set(word) <= letters:
            kept.add(word)
    return sorted(kept)


def split_words(words: list[str], sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Disjoint seeded samples of `words`, `sizes[split]` words for each split."""
    needed = sum(sizes.values())
    if needed > len(words):
        raise InputError(f"espeak corpus: {needed} distinct words needed, the word list gives only "
                         f"{len(words)}; ask for fewer utterances")
    chosen = random.Random(seed).sample(words, needed)
    pools, start = {}, 0
    for split, size in sizes.items():
        pools[split], start = chosen[start:start + size], start + size
    return pools


def make_phrases(pool: list[str], count: int, rng: random.Random, max_words: int = 3) -> list[str]:
    """`count` distinct phrases of 1..`max_words` words, drawn from `pool` in rounds (every
    word is used once before any is used again)."""
    stream: list[str] = []
    phrases: list[str] = []
    seen = set()
    for _ in range(count * 20):
        if len(phrases) == count:
            break
        length = rng.randint(1, max_words)
        while len(stream) < length:
            round_ = list(pool)
            rng.shuffle(round_)
            stream.extend(round_)
        words, stream = stream[:length], stream[length:]
        phrase = " ".join(words)
        if len(set(words)) == length and phrase not in seen:
            seen.add(phrase)
            phrases.append(phrase)
    if len(phrases) < count:
        raise InputError(f"espeak corpus: only {len(phrases)} distinct phrases from {len(pool)} words, "
                         f"{count} asked for")
    return phrases


@dataclasses.dataclass(frozen=True)
class Utterance:
    split: str
    clip: str  # file name under clips/
    sentence: str
    variant: str
    speed: int
    pitch: int


def split_sizes(total: int, fractions: tuple[float, float, float]) -> dict[str, int]:
    """Utterances per split: dev and test rounded, train the rest; each at least 1."""
    if total < len(SPLITS):
        raise InputError(f"espeak corpus: {total} utterances per language, expected at least {len(SPLITS)}")
    dev, test = (max(1, round(total * f)) for f in fractions[1:])
    return {"train": total - dev - test, "dev": dev, "test": test}


def plan_corpus(lang: str, words: list[str], total: int, seed: int = 0,
                fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), max_words: int = 3,
                variants=ESPEAK_VARIANTS, speeds=ESPEAK_SPEEDS, pitches=ESPEAK_PITCHES) -> list[Utterance]:
    """The utterances of one language: words are split between train/dev/test first (a split
    gets as many distinct words as utterances, so each word is heard about twice), then each
    split's phrases use only its own words, so test words are never heard in training.
    Each utterance gets a seeded random voice variant, speed and pitch."""
    sizes = split_sizes(total, fractions)
    rng = random.Random(f"{seed}-{lang}")
    pools = split_words(words, sizes, rng.randrange(2**32))
    plan = []
    for split in SPLITS:
        for index, sentence in enumerate(make_phrases(pools[split], sizes[split], rng, max_words)):
            plan.append(Utterance(split, f"{lang}_{split}_{index:05d}.wav", sentence, rng.choice(variants),
                                  rng.choice(speeds), rng.choice(pitches)))
    return plan


def synthesize(lang: str, utterance: Utterance, path: str) -> None:
    """Speaks `utterance` with espeak-ng and writes it to `path` as 16 kHz 16-bit WAV
    (written to a temporary name first, so `path` exists only when complete)."""
    raw, part = path + ".espeak.wav", path + ".part"
    try:
        result = subprocess.run(["espeak-ng", "-v", f"{lang}+{utterance.variant}", "-s", str(utterance.speed),
                                 "-p", str(utterance.pitch), "-w", raw, "--stdin"],
                                input=utterance.sentence.encode("utf-8"), capture_output=True)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.decode("utf-8", "replace").strip()[:200])
        waveform = audio.load_audio(raw)
        if int(tf.size(waveform)) < audio.FRAME_LENGTH:
            raise RuntimeError("espeak-ng produced no speech")
        encoded = tf.audio.encode_wav(tf.clip_by_value(waveform, -1.0, 1.0)[:, None], audio.SAMPLE_RATE)
        tf.io.write_file(part, encoded)
        os.replace(part, path)
    finally:
        for leftover in (raw, part):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)


def _espeak_version() -> str:
    result = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True)
    return result.stdout.strip()


def _read_marker(folder: str) -> dict | None:
    try:
        with open(os.path.join(folder, CORPUS_MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _write_json(path: str, content) -> None:
    with open(path + ".part", "w", encoding="utf-8") as f:
        json.dump(content, f, ensure_ascii=False, indent=1)
    os.replace(path + ".part", path)


def _write_tsv(path: str, utterances: list[Utterance]) -> None:
    with open(path + ".part", "w", encoding="utf-8", newline="") as f:
        f.write("client_id\tpath\tsentence\tspeed\tpitch\n")
        for u in utterances:
            f.write(f"espeak-{u.variant}\t{u.clip}\t{u.sentence}\t{u.speed}\t{u.pitch}\n")
    os.replace(path + ".part", path)


def build_espeak_corpus(root: str, languages: list[str], per_language: dict[str, int] | int = 300,
                        seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                        max_words: int = 3, variants=ESPEAK_VARIANTS, speeds=ESPEAK_SPEEDS,
                        pitches=ESPEAK_PITCHES, workers: int = 2, overwrite: bool = False,
                        progress: bool = True) -> dict[str, dict[str, int]]:
    """Synthesises a multilingual speech corpus in Common Voice's layout under `root`.

    For each language: short lower-case words from its Debian word list (`ESPEAK_LANGUAGES`)
    are split between train/dev/test (test words unseen in training), phrases of 1..`max_words`
    words are spoken by espeak-ng with seeded random voice variants (`-v lang+m3`), speeds
    (`-s`) and pitches (`-p`), and written as 16 kHz WAV clips with train/dev/test.tsv.

    Args:
        root: corpus folder (`<root>/<lang>/...`).
        languages: language codes, keys of `ESPEAK_LANGUAGES` (ro cs ar uk ru it pt cy eu).
        per_language: utterances per language (all splits), one number or {lang: number}.
        seed: seeds word choice, phrases and voices.
        fractions: (train, dev, test) shares of the utterances.
        max_words: longest phrase in words.
        variants, speeds, pitches: the espeak-ng voice settings drawn from.
        workers: espeak-ng processes run at once.
        overwrite: replace a complete corpus built with other parameters.
        progress: show a progress bar (tqdm) per language.

    Returns {lang: {split: utterances}}. Cached: a language whose folder holds a complete corpus
    with the same parameters (marker file `espeak_corpus.json`) is reused as it is; a partly
    built one (interrupted) is completed, keeping finished clips. Everything is checked before
    anything is written: `InputError` (one line) when espeak-ng or a word list is missing
    (naming the Debian packages, which need root to install), for a folder holding other data,
    or for a complete corpus with other parameters unless `overwrite`.

    Example:
    >>> build_espeak_corpus("runs/espeak", ["ro", "ru"], {"ro": 300, "ru": 1500})  # doctest: +SKIP
    {'ro': {'train': 210, 'dev': 45, 'test': 45}, 'ru': {'train': 1050, 'dev': 225, 'test': 225}}
    """
    from tqdm import tqdm

    languages = list(dict.fromkeys(languages))
    if not languages:
        raise InputError("espeak corpus: no languages given")
    check_espeak_requirements(languages)
    if isinstance(per_language, int):
        per_language = {lang: per_language for lang in languages}
    missing = [lang for lang in languages if lang not in per_language]
    if missing:
        raise InputError(f"espeak corpus: no utterance count for {', '.join(missing)} in per_language")
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
        raise InputError(f"espeak corpus: fractions {tuple(fractions)}, expected 3 positive shares "
                         "(train, dev, test) summing to 1")
    if max_words < 1:
        raise InputError(f"espeak corpus: max_words {max_words}, expected at least 1")
    version = _espeak_version()
    jobs = []
    for lang in languages:
        folder = os.path.join(root, lang)
        parameters = {"format": CORPUS_FORMAT, "language": lang, "utterances": int(per_language[lang]),
                      "seed": seed, "fractions": list(fractions), "max_words": max_words,
                      "variants": list(variants), "speeds": list(speeds), "pitches": list(pitches),
                      "word_list": ESPEAK_LANGUAGES[lang].word_list, "espeak": version,
                      "sample_rate": audio.SAMPLE_RATE}
        marker = _read_marker(folder)
        if marker is not None and marker.get("parameters") == parameters and marker.get("complete"):
            continue  # built before with the same parameters
        if marker is None and os.path.isdir(folder) and os.listdir(folder):
            raise InputError(f"espeak corpus: {folder} holds files not written by the corpus builder "
                             f"(no {CORPUS_MARKER}); choose another root")
        if marker is not None and marker.get("complete") and not overwrite:
            raise InputError(f"espeak corpus: {folder} holds a corpus built with other parameters; "
                             "pass overwrite=True (apps: --overwrite) to rebuild it, or choose another root")
        if marker is None:
            require_writable(folder, "espeak corpus root", root)
        words = select_words(read_word_list(lang), ESPEAK_LANGUAGES[lang].alphabet)
        plan = plan_corpus(lang, words, parameters["utterances"], seed, tuple(fractions), max_words,
                           variants, speeds, pitches)
        # Finished clips of an interrupted build with these parameters are kept; any other
        # clips (another plan, interrupted writes) are removed.
        keep = marker is not None and marker.get("parameters") == parameters
        jobs.append((lang, folder, parameters, plan, keep))

    for lang, folder, parameters, plan, keep in jobs:
        clips = os.path.join(folder, "clips")
        os.makedirs(clips, exist_ok=True)
        _write_json(os.path.join(folder, CORPUS_MARKER), {"parameters": parameters, "complete": False})
        wanted = {u.clip for u in plan} if keep else set()
        for name in os.listdir(clips):
            if name not in wanted:
                os.remove(os.path.join(clips, name))
        todo = [u for u in plan if not os.path.isfile(os.path.join(clips, u.clip))]
        failed = {}
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool, \
                tqdm(total=len(plan), initial=len(plan) - len(todo), desc=f"espeak-ng {lang}", unit="clip",
                     disable=not progress, file=sys.stderr) as bar:
            futures = {pool.submit(synthesize, lang, u, os.path.join(clips, u.clip)): u for u in todo}
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is not None:
                    failed[futures[future].clip] = str(future.exception())
                bar.update()
        for clip, reason in sorted(failed.items()):
            logger.warning("espeak corpus: %s: %s; left out", os.path.join(clips, clip), reason)
        kept = [u for u in plan if u.clip not in failed]
        counts = {split: sum(u.split == split for u in kept) for split in SPLITS}
        if not all(counts.values()):
            raise InputError(f"espeak corpus: {lang}: synthesis failed for {len(failed)} of {len(plan)} "
                             f"utterances (first: {next(iter(failed.values()), '')}), a split is empty")
        for split in SPLITS:
            _write_tsv(os.path.join(folder, f"{split}.tsv"), [u for u in kept if u.split == split])
        _write_json(os.path.join(folder, CORPUS_MARKER),
                    {"parameters": parameters, "complete": True, "counts": counts})
    return {lang: _read_marker(os.path.join(root, lang))["counts"] for lang in languages}
