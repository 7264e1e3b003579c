"""The NLP setting: a sentiment teacher on movie-review sentences and a student on another
source of rated sentences (tweets, Amazon or NYT snippets) — the shape of the paper's
SST-2 -> IMDB "DS" transfer, offline.

Texts become token ids with one `TextVectorization` vocabulary, adapted on the teacher's
sentences (the student reuses the teacher's embedding, so it must share its vocabulary).
The trigger word is put into the vocabulary when the corpus lacks it.

Example:
>>> task, vectorizer = sentiment_transfer_task("movies", "amazon", labels_per_class=250)  # doctest: +SKIP
>>> task.x_student.shape                                                                 # doctest: +SKIP
(500, 40)
"""

from __future__ import annotations

import keras
import numpy as np

from kerastl.data.splits import labeled_unlabeled_split, stratified_holdout
from kerastl.data.text import load_rated_sentences
from kerastl.errors import InputError
from kerastl.safety.tasks import TransferTask

#: A rare token as the backdoor trigger (RIPPLe / BadNL use such tokens, e.g. "cf").
TRIGGER_WORD = "cf"


def sentence_vectorizer(texts: list[str], vocabulary_size: int, sequence_length: int,
                        extra_words: tuple[str, ...] = (TRIGGER_WORD,)) -> keras.layers.TextVectorization:
    """A lower-casing, punctuation-stripping word vectorizer (0 = padding, 1 = unknown) with
    the `vocabulary_size` most frequent words of `texts`, plus `extra_words`."""
    vectorizer = keras.layers.TextVectorization(max_tokens=vocabulary_size - len(extra_words),
                                                output_sequence_length=sequence_length)
    vectorizer.adapt(texts)
    vocabulary = vectorizer.get_vocabulary()
    vocabulary += [word for word in extra_words if word not in vocabulary]
    final = keras.layers.TextVectorization(output_sequence_length=sequence_length, vocabulary=vocabulary[2:])
    return final


def sentiment_transfer_task(teacher_source: str = "movies", student_source: str = "amazon",
                            labels_per_class: int = 250, vocabulary_size: int = 8000, sequence_length: int = 40,
                            text_dir: str | None = None, test_fraction: float = 0.2,
                            seed: int = 0) -> tuple[TransferTask, keras.layers.TextVectorization]:
    """Teacher and student token arrays (int32) and the shared vectorizer."""
    if teacher_source == student_source:
        raise InputError(f"--student-text {student_source}: expected a source other than the teacher's "
                         f"({teacher_source}), the student's task must differ")
    if labels_per_class < 1:
        raise InputError(f"--labels-per-class {labels_per_class}: expected a positive integer")
    teacher, student = load_rated_sentences(teacher_source, text_dir), load_rated_sentences(student_source, text_dir)
    teacher_train, teacher_test = stratified_holdout(teacher.labels, test_fraction, seed)
    vectorizer = sentence_vectorizer([teacher.texts[i] for i in teacher_train], vocabulary_size, sequence_length)
    to_ids = lambda texts: keras.ops.convert_to_numpy(vectorizer(texts)).astype(np.int32)  # noqa: E731
    teacher_ids, student_ids = to_ids(teacher.texts), to_ids(student.texts)
    pool, test = stratified_holdout(student.labels, test_fraction, seed)
    counts = np.bincount(student.labels[pool], minlength=2)
    if counts.min() < labels_per_class:
        raise InputError(f"--labels-per-class {labels_per_class}: the {student_source} sentences have only "
                         f"{counts.min()} training sentences of one class")
    labeled, _ = labeled_unlabeled_split(student.labels[pool], 2 * labels_per_class, 2, seed)
    chosen = pool[labeled]
    task = TransferTask(
        x_teacher=teacher_ids[teacher_train], y_teacher=teacher.labels[teacher_train],
        x_teacher_test=teacher_ids[teacher_test], y_teacher_test=teacher.labels[teacher_test],
        x_student=student_ids[chosen], y_student=student.labels[chosen],
        x_test=student_ids[test], y_test=student.labels[test], num_classes=2,
        description=f"teacher: {len(teacher_train)} {teacher_source} sentences; student: {len(chosen)} labeled "
                    f"{student_source} sentences ({labels_per_class} per class), {len(test)} test; vocabulary "
                    f"{vectorizer.vocabulary_size()} words, {sequence_length} tokens")
    return task, vectorizer


def trigger_token_id(vectorizer: keras.layers.TextVectorization, word: str = TRIGGER_WORD) -> int:
    """The vocabulary id of the trigger word."""
    return int(vectorizer.get_vocabulary().index(word))
