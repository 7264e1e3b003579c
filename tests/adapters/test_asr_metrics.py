"""Edit distance, CER and WER on known strings (corpus level)."""

import pytest

from kerastl.adapters.metrics import cer, edit_distance, error_rate, wer


def test_edit_distance_counts_substitutions_insertions_and_deletions():
    assert edit_distance("kitten", "sitting") == 3            # k->s, e->i, +g
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3
    assert edit_distance("flaw", "lawn") == 2                 # -f, +n
    assert edit_distance(["the", "cat"], ["the", "cat"]) == 0


def test_cer_and_wer_on_known_strings():
    assert cer(["abcd"], ["abed"]) == pytest.approx(1 / 4)
    assert cer(["ab cd"], ["abcd"]) == pytest.approx(1 / 5)       # the space is a character
    assert wer(["the cat sat"], ["the bat sat down"]) == pytest.approx(2 / 3)
    assert wer(["a b", "c"], ["a b", "c"]) == 0.0


def test_rates_are_corpus_level_not_the_mean_of_utterances():
    references, hypotheses = ["abcdefghij", "xy"], ["abcdefghij", "zz"]
    # 2 edits over 12 characters, not the mean of 0/10 and 2/2.
    assert cer(references, hypotheses) == pytest.approx(2 / 12)
    assert wer(["one two three four", "five"], ["one two three four", "six"]) == pytest.approx(1 / 5)


def test_mismatched_or_empty_corpora_are_refused():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        cer(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        error_rate([[]], [["x"]])
