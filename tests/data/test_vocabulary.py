"""Character vocabularies with the CTC blank at id 0, and transcript normalisation."""

import json

import numpy as np
import pytest
import tensorflow as tf

from kerastl.data.vocabulary import BLANK_ID, CharVocabulary, normalize_transcript
from kerastl.errors import InputError

ROMANIAN = ["bună ziua", "școală și țară", "îți"]


def test_ids_start_after_the_blank_in_code_point_order():
    vocabulary = CharVocabulary.from_texts(["ba ab", "c"])
    assert BLANK_ID == 0
    assert vocabulary.characters == [" ", "a", "b", "c"]
    assert vocabulary.size == 5  # 4 characters + blank
    assert vocabulary.encode("cab a") == [4, 2, 3, 1, 2]
    assert vocabulary.decode([0, 4, 0, 0, 2, 3, 1, 2, 0]) == "cab a"
    assert vocabulary.decode([4, 4, 2]) == "cca"  # repeats are kept: merging is CTC decoding's job
    assert vocabulary.decode([5, -1, 2]) == "a"  # ids outside the vocabulary are skipped


def test_unknown_characters_are_reported_and_dropped():
    vocabulary = CharVocabulary.from_texts(ROMANIAN)
    assert vocabulary.unknown_characters("bună xyz") == {"x", "y"}
    assert vocabulary.encode("bxună") == vocabulary.encode("bună")
    assert vocabulary.unknown_characters("ziua") == set()


@pytest.mark.parametrize("text", ["bună ziua", "școală și țară", "", "îți  ț", "bună x ziua"])
def test_graph_encode_agrees_with_python(text):
    vocabulary = CharVocabulary.from_texts(ROMANIAN)
    ids = vocabulary.tf_encode(tf.constant(text))
    assert ids.dtype == tf.int32
    assert ids.numpy().tolist() == vocabulary.encode(text)


def test_graph_encode_of_a_batch_is_ragged_and_works_in_tf_data():
    vocabulary = CharVocabulary.from_texts(ROMANIAN)
    ragged = vocabulary.tf_encode(tf.constant(ROMANIAN))
    assert ragged.to_list() == [vocabulary.encode(t) for t in ROMANIAN]
    dataset = tf.data.Dataset.from_tensor_slices(ROMANIAN).map(vocabulary.tf_encode)
    assert [ids.numpy().tolist() for ids in dataset] == [vocabulary.encode(t) for t in ROMANIAN]


def test_graph_decode_agrees_with_python():
    vocabulary = CharVocabulary.from_texts(ROMANIAN)
    rows = [vocabulary.encode("școală") + [0, 0], [0] + vocabulary.encode("îți") + [99, 0, -3]]
    width = max(map(len, rows))
    ids = np.array([row + [0] * (width - len(row)) for row in rows], np.int32)
    decoded = tf.function(vocabulary.tf_decode)(tf.constant(ids))
    assert [s.decode("utf-8") for s in decoded.numpy()] == [vocabulary.decode(row) for row in ids]
    assert [s.decode("utf-8") for s in decoded.numpy()] == ["școală", "îți"]
    assert vocabulary.tf_decode(tf.constant(ids[0])).numpy().decode("utf-8") == "școală"


def test_round_trip_through_config_and_json(tmp_path):
    vocabulary = CharVocabulary.from_texts(["м'ясо", "їжак"])
    assert CharVocabulary.from_config(vocabulary.get_config()) == vocabulary
    path = tmp_path / "uk.json"
    vocabulary.save(str(path))
    assert json.loads(path.read_text(encoding="utf-8")) == {"characters": list("'ажкмосяї")}
    loaded = CharVocabulary.load(str(path))
    assert loaded == vocabulary and loaded.encode("їжак") == vocabulary.encode("їжак")


def test_any_character_order_is_kept(tmp_path):
    vocabulary = CharVocabulary(["z", "a", " "])
    assert vocabulary.encode("a z") == [2, 3, 1]
    assert vocabulary.tf_encode(tf.constant("a z")).numpy().tolist() == [2, 3, 1]
    assert vocabulary.decode([1, 2, 3]) == "za "


def test_bad_vocabularies_are_refused(tmp_path):
    with pytest.raises(InputError, match="repeated"):
        CharVocabulary(["a", "b", "a"])
    with pytest.raises(InputError, match="single characters"):
        CharVocabulary(["ab"])
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(InputError, match="broken.json: not a vocabulary file"):
        CharVocabulary.load(str(broken))
    with pytest.raises(InputError, match="missing.json: file not found"):
        CharVocabulary.load(str(tmp_path / "missing.json"))


@pytest.mark.parametrize("raw, clean", [
    ("Bună ziua, prieteni!", "bună ziua prieteni"),
    ("  «Ce  mai faci?» — Bine.  ", "ce mai faci bine"),
    ("М’ясо та ЇЖАК", "м'ясо та їжак"),
    ("Dobrý den...", "dobrý den"),
    ("e\u0301", "é"),  # decomposed accent composed (NFC)
    ("?!", ""),
])
def test_transcripts_are_normalised(raw, clean):
    assert normalize_transcript(raw) == clean
