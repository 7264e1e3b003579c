"""Character and word error rates (corpus level), with the edit distance in plain python.

CER = total character edits / total reference characters (spaces count as characters);
WER = total word edits / total reference words (words split on whitespace). Summing edits
over the corpus before dividing weights long utterances more, as scoring tools (sclite,
ESPnet's scoring) do.

Example:
>>> cer(["abc"], ["abd"]), wer(["the cat sat"], ["the cat sat down"])
(0.3333333333333333, 0.3333333333333333)
"""

from __future__ import annotations

from typing import Sequence


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Levenshtein distance (substitutions, deletions, insertions all cost 1)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, start=1):
            current[j] = min(previous[j] + 1,                          # deletion
                             current[j - 1] + 1,                       # insertion
                             previous[j - 1] + (ref_item != hyp_item))  # substitution / match
        previous = current
    return previous[-1]


def error_rate(references: Sequence[Sequence], hypotheses: Sequence[Sequence]) -> float:
    """Total edit distance / total reference length over paired token sequences."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(len(reference) for reference in references)
    if total == 0:
        raise ValueError("the references are empty: an error rate needs at least one reference token")
    return sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / total


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Character error rate over a corpus of transcripts."""
    return error_rate([list(r) for r in references], [list(h) for h in hypotheses])


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Word error rate over a corpus of transcripts."""
    return error_rate([r.split() for r in references], [h.split() for h in hypotheses])
