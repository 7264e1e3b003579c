"""An offline multilingual speech corpus synthesised with espeak-ng, in Common Voice's layout.

`build_espeak_corpus` takes short words of each language's Debian word list
(`ESPEAK_LANGUAGES`: ro cs ar uk ru it pt cy eu), splits them between train/dev/test (test
words are never heard in training), speaks phrases of them with seeded random espeak-ng voices,
speeds and pitches, and writes 16 kHz WAV clips with train/dev/test.tsv: the folder that
`kerastl.data.speech.load_split` reads (`espeak:DIR` in the apps). A built corpus is reused, an
interrupted one completed; a missing synthesiser or word list is one `InputError` naming the
Debian packages to install (they need root).

Example:
>>> build_espeak_corpus("runs/espeak", ["ro", "ru"], {"ro": 300, "ru": 1500})  # doctest: +SKIP
{'ro': {'train': 210, 'dev': 45, 'test': 45}, 'ru': {'train': 1050, 'dev': 225, 'test': 225}}
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import unicodedata

import tensorflow as tf

from kerastl.data import audio
from kerastl.data.speech import SPLITS
from kerastl.errors import InputError, require_writable

logger = logging.getLogger(__name__)


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
