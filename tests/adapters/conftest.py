"""Fixtures of the training-stage tests (session-wide: the source model trains once for
every file that uses it)."""

import keras
import pytest
from tone_asr import ALPHABETS, SIZE, SOURCES, weights_by_layer

from kerastl.adapters import stages
from kerastl.adapters.model import MultilingualASR
from kerastl.data.speech import load_split, speech_dataset
from kerastl.data.vocabulary import CharVocabulary


@pytest.fixture(scope="session")
def tone_data(tmp_path_factory, tone_corpus):
    """(records, vocabularies, train batches, test batches) per language of a tiny tone corpus."""
    root = str(tmp_path_factory.mktemp("tones"))
    tone_corpus(root, ALPHABETS, sizes=(16, 4, 6))
    records = {lang: {split: load_split(root, lang, split) for split in ("train", "test")} for lang in ALPHABETS}
    vocabularies = {lang: CharVocabulary.from_texts(t for _, t in records[lang]["train"]) for lang in ALPHABETS}
    train = {lang: speech_dataset(records[lang]["train"], vocabularies[lang], 4, training=True) for lang in ALPHABETS}
    test = {lang: speech_dataset(records[lang]["test"], vocabularies[lang], 8) for lang in ALPHABETS}
    return records, vocabularies, train, test


@pytest.fixture(scope="session")
def trained_sources(tone_data, tmp_path_factory):
    """A source model: pre-trained (weights kept), then two-stage adapters; saved for copies."""
    _, vocabularies, train, test = tone_data
    keras.utils.set_random_seed(0)
    model = MultilingualASR({lang: vocabularies[lang].size for lang in SOURCES}, **SIZE)
    untrained = stages.evaluate(model.recognizer("aa", "plain"), test["aa"], vocabularies["aa"])
    pretrained = stages.pretrain(model, {lang: train[lang] for lang in SOURCES}, epochs=25, learning_rate=3e-3,
                                 verbose=0)
    after_pretraining = weights_by_layer(model)
    scores = {lang: stages.evaluate(model.recognizer(lang, "plain"), test[lang], vocabularies[lang])
              for lang in SOURCES}
    adapters = stages.train_source_adapters(model, {lang: train[lang] for lang in SOURCES}, epochs=2,
                                            learning_rate=3e-3, verbose=0)
    folder = str(tmp_path_factory.mktemp("sources"))
    model.save(folder)
    return dict(untrained=untrained, pretrained=pretrained, scores=scores, adapters=adapters,
                after_pretraining=after_pretraining, model=model, folder=folder)
