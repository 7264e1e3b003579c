"""The source model, trained once and cached per stage."""

import numpy as np
from tone_asr import SIZE, SOURCES

from kerastl.adapters import source_cache
from kerastl.adapters.model import MultilingualASR


def test_source_model_is_cached_per_stage(tone_data, tmp_path):
    _, vocabularies, train, _ = tone_data
    subset = {lang: train[lang] for lang in SOURCES}
    settings = source_cache.SourceSettings(pretrain_epochs=1, adapter_epochs=1, verbose=0)
    built = []

    def build():
        built.append(1)
        return MultilingualASR({lang: vocabularies[lang].size for lang in SOURCES}, **SIZE)

    first, facts = source_cache.train_sources(build, subset, settings, cache=str(tmp_path))
    assert facts["reused"] == [] and set(facts) >= {"pretrain", "source_adapters"}
    again, facts_again = source_cache.train_sources(build, subset, settings, cache=str(tmp_path))
    assert built == [1] and facts_again["reused"] == ["pretrain", "source_adapters"]
    for a, b in zip(first.encoder.get_weights(), again.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert source_cache.fingerprint({"a": 1, "b": [2]}) == source_cache.fingerprint({"b": [2], "a": 1})
