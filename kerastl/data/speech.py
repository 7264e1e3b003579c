"""Speech corpora in Common Voice's layout: a checking loader and a tf.data pipeline.

Layout (one folder per language):
```
<root>/<lang>/clips/<file>.mp3|.wav
<root>/<lang>/train.tsv, dev.tsv, test.tsv   tab-separated, header row with `path` and
                                             `sentence` columns (others are ignored)
```
Common Voice releases (`commonvoice:DIR`) and the offline corpus that
`kerastl.data.espeak_corpus.build_espeak_corpus` synthesises (`espeak:DIR`) both have it, so
one loader serves both.

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
import csv
import dataclasses
import logging
import os
import re

import tensorflow as tf

from kerastl.data import audio
from kerastl.data.vocabulary import CharVocabulary, normalize_transcript
from kerastl.errors import InputError

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
