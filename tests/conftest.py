"""Shared test helpers."""

import hashlib
import os
import re

import pytest


def tree_snapshot(root):
    """{relative path: sha256 of content (or 'dir')} for everything under root."""
    snapshot = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            snapshot[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                snapshot[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return snapshot


@pytest.fixture
def snapshot():
    return tree_snapshot


@pytest.fixture
def refused(capsys):
    """`refused(call, prog, message, root)`: `call()` must return exit code 2 after printing
    exactly one stderr line `<prog>: error: ...` that matches `message`, and leave everything
    under `root` as it was (the disk is checked before anything is written)."""

    def check(call, prog, message, root):
        before = tree_snapshot(root)
        code = call()
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.count("\n") == 1 and err.startswith(f"{prog}: error: "), err
        assert re.search(message, err), err
        assert tree_snapshot(root) == before

    return check



@pytest.fixture
def with_run_folders():
    """`with_run_folders(args, root)`: an app's arguments plus `--output <root>/new_run` and
    `--export-dir <root>/exports` unless the arguments name their own (bad-input tests)."""

    def add(args, root):
        args = list(args)
        if "--output" not in args:
            args += ["--output", os.path.join(str(root), "new_run")]
        if "--export-dir" not in args:
            args += ["--export-dir", os.path.join(str(root), "exports")]
        return args

    return add

@pytest.fixture
def tensorboard_scalars():
    """`tensorboard_scalars(folder)` -> {tag: {step: value}} of the scalar summaries in a
    TensorBoard folder's event files, read with TF's own event iterator; a step written twice
    (a resumed run redoing a round) keeps its latest value, as TensorBoard shows it."""

    def read(folder):
        import glob

        import tensorflow as tf

        events = []
        for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    events.append((event.wall_time, value.tag, event.step, float(tf.make_ndarray(value.tensor))))
        scalars = {}
        for _, tag, step, value in sorted(events, key=lambda e: e[0]):
            scalars.setdefault(tag, {})[step] = value
        return scalars

    return read


def write_tone_corpus(root, alphabets, sizes=(16, 4, 6), seed=0, rate=16000, char_seconds=0.1):
    """A tiny speech corpus in Common Voice's layout (WAV clips, train/dev/test.tsv) that needs
    no synthesiser: every character is a 0.1 s tone of its own pitch (the same pitch in every
    language), a space is 0.1 s of silence. `alphabets` {lang: characters}; `sizes` utterances
    per split; transcripts are 1-2 words of 1-3 characters. Returns {lang: {split: texts}}."""
    import random

    import numpy as np
    import tensorflow as tf

    rng = random.Random(seed)
    characters = sorted(set("".join(alphabets.values())))
    pitch = {c: 300.0 * 1.25 ** i for i, c in enumerate(characters)}
    time = np.arange(int(char_seconds * rate)) / rate
    pause = np.zeros(int(0.05 * rate))
    texts = {}
    for lang, alphabet in alphabets.items():
        os.makedirs(os.path.join(root, lang, "clips"), exist_ok=True)
        texts[lang] = {}
        for split, count in zip(("train", "dev", "test"), sizes):
            rows, texts[lang][split] = ["client_id\tpath\tsentence"], []
            for k in range(count):
                text = " ".join("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
                                for _ in range(rng.randint(1, 2)))
                tones = [np.zeros_like(time) if c == " "
                         else 0.5 * np.hanning(len(time)) * np.sin(2 * np.pi * pitch[c] * time) for c in text]
                waveform = np.concatenate([pause, *tones, pause]).astype("float32")
                name = f"{lang}_{split}_{k}.wav"
                tf.io.write_file(os.path.join(root, lang, "clips", name), tf.audio.encode_wav(waveform[:, None], rate))
                rows.append(f"tone\t{name}\t{text}")
                texts[lang][split].append(text)
            with open(os.path.join(root, lang, f"{split}.tsv"), "w") as f:
                f.write("\n".join(rows) + "\n")
    return texts


@pytest.fixture(scope="session")
def tone_corpus():
    """`tone_corpus(root, alphabets, sizes=(16, 4, 6))`: writes a tiny tone corpus in Common
    Voice's layout (see `write_tone_corpus`); for speech tests that need no espeak-ng."""
    return write_tone_corpus
