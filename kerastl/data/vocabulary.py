"""Character vocabularies for CTC: id 0 is the blank, ids 1..N are characters.

`normalize_transcript` is the text clean-up every loader applies before a sentence meets a
vocabulary: Unicode NFC, lower case, typographic apostrophes as `'`, every other character
that is not a letter, combining mark or apostrophe becomes a space, spaces collapsed. The
space is an ordinary character of the vocabulary (it separates words for WER).

Example:
>>> vocabulary = CharVocabulary.from_texts(["ab ba", "abc"])
>>> vocabulary.size, vocabulary.encode("cab")
(5, [4, 2, 3])
>>> vocabulary.decode([4, 0, 2, 3])
'cab'
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from typing import Iterable

import tensorflow as tf

from kerastl.errors import InputError

BLANK_ID = 0
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u02bc": "'", "\u2018": "'", "`": "'"})


def normalize_transcript(text: str) -> str:
    """The transcript as a vocabulary sees it (see the module docstring)."""
    text = unicodedata.normalize("NFC", text).lower().translate(_APOSTROPHES)
    kept = "".join(c if c == "'" or unicodedata.category(c)[0] in "LM" else " " for c in text)
    return re.sub(r"\s+", " ", kept).strip()


class CharVocabulary:
    """Characters <-> ids with the CTC blank at id 0.

    Args:
        characters: the N characters, in id order (id i + 1 for characters[i]); each a
            single Unicode code point, no repeats.

    `encode` and `tf_encode` drop characters the vocabulary does not hold (check first with
    `unknown_characters`); `decode` and `tf_decode` skip the blank and unknown ids. They do not
    merge repeats: that is CTC decoding's job.
    """

    def __init__(self, characters: Iterable[str]):
        self.characters = list(characters)
        bad = [c for c in self.characters if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise InputError(f"vocabulary characters {bad[:3]}: expected single characters")
        if len(set(self.characters)) != len(self.characters):
            raise InputError("vocabulary characters: repeated characters, expected each once")
        self._ids = {c: i + 1 for i, c in enumerate(self.characters)}
        # Graph lookup tables: code points sorted, with their ids; id -> character strings.
        order = sorted(range(len(self.characters)), key=lambda i: ord(self.characters[i]))
        self._sorted_codes = tf.constant([ord(self.characters[i]) for i in order], tf.int32)
        self._sorted_ids = tf.constant([i + 1 for i in order], tf.int32)
        self._strings = tf.constant([""] + self.characters, tf.string)

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharVocabulary":
        """The characters of `texts`, sorted by code point."""
        return cls(sorted(set("".join(texts))))

    @property
    def size(self) -> int:
        """Number of ids, blank included (N + 1): the width of a CTC output layer."""
        return len(self.characters) + 1

    def unknown_characters(self, text: str) -> set[str]:
        """The characters of `text` that the vocabulary does not hold."""
        return set(text) - self._ids.keys()

    def encode(self, text: str) -> list[int]:
        """Ids of `text`'s characters (unknown characters dropped)."""
        return [self._ids[c] for c in text if c in self._ids]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of `ids`, skipping the blank (0) and ids outside the vocabulary."""
        return "".join(self.characters[i - 1] for i in map(int, ids) if 1 <= i <= len(self.characters))

    def tf_encode(self, text) -> tf.Tensor:
        """Graph version of `encode`: a scalar string tensor -> int32 ids `[length]` (a 1-D
        string tensor gives a `tf.RaggedTensor` `[batch, None]`). Usable inside `tf.data`."""
        codes = tf.strings.unicode_decode(text, "UTF-8")
        if isinstance(codes, tf.RaggedTensor):
            return tf.ragged.map_flat_values(self._codes_to_ids, codes)
        return self._codes_to_ids(codes)

    def _codes_to_ids(self, codes):
        if len(self.characters) == 0:
            return tf.zeros([0], tf.int32)
        position = tf.searchsorted(self._sorted_codes, codes)
        position = tf.minimum(position, len(self.characters) - 1)
        known = tf.equal(tf.gather(self._sorted_codes, position), codes)
        return tf.boolean_mask(tf.gather(self._sorted_ids, position), known)

    def tf_decode(self, ids) -> tf.Tensor:
        """Graph version of `decode`: int ids `[..., length]` -> strings `[...]` (the export
        uses it to return text)."""
        ids = tf.cast(ids, tf.int32)
        valid = (ids >= 1) & (ids < self.size)
        pieces = tf.gather(self._strings, tf.where(valid, ids, tf.zeros_like(ids)))
        return tf.strings.reduce_join(pieces, axis=-1)

    def get_config(self) -> dict:
        return {"characters": list(self.characters)}

    @classmethod
    def from_config(cls, config: dict) -> "CharVocabulary":
        return cls(config["characters"])

    def save(self, path: str) -> None:
        """Writes the vocabulary as JSON (`{"characters": [...]}`)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.get_config(), f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str) -> "CharVocabulary":
        """Reads a vocabulary written by `save`."""
        if not os.path.isfile(path):
            raise InputError(f"{path}: file not found, expected a vocabulary JSON file")
        try:
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
            characters = config["characters"]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path}: not a vocabulary file ({type(err).__name__}: {err}); "
                             'expected JSON {"characters": [...]}') from None
        return cls(characters)

    def __eq__(self, other) -> bool:
        return isinstance(other, CharVocabulary) and self.characters == other.characters

    def __repr__(self) -> str:
        return f"CharVocabulary({''.join(self.characters)!r})"
