"""Running the methods for one target: prerequisites chained, finished methods skipped."""

import numpy as np
import pytest
from tone_asr import SOURCES, copy_with_target

from kerastl.adapters import methods


def test_run_methods_chains_prerequisites_and_skips_finished(trained_sources, tone_data):
    _, vocabularies, train, test = tone_data
    done = []
    target = methods.TargetData(train["tt"], test["tt"], vocabularies["tt"])
    settings = methods.StageSettings(epochs=1, fusion_epochs=1, verbose=0)
    saved = {}

    def on_finished(method, model, facts):
        done.append(method)
        saved[method] = model

    results = methods.run_methods(["simadapter"], lambda: copy_with_target(trained_sources, vocabularies), None,
                                  "tt", SOURCES, target, settings, on_finished=on_finished)
    assert done == ["adapter", "simadapter"] and list(results) == ["adapter", "simadapter"]
    assert saved["adapter"] is saved["simadapter"]  # the fusion continues the adapter's model
    for facts in results.values():
        assert 0 <= facts["cer"] and 0 <= facts["wer"] and 0 < facts["trained_share"] < 1
    assert np.sum(results["simadapter"]["attention"]) == pytest.approx(1.0, abs=1e-5)

    done.clear()
    resumed = methods.run_methods(["simadapter"], None, None, "tt", SOURCES, target, settings,
                                  finished={"adapter": results["adapter"]}, restore=lambda method: saved[method],
                                  on_finished=on_finished)
    assert done == ["simadapter"] and resumed["adapter"] is results["adapter"]
    assert methods.method_order(["simadapter_plus", "head"]) == ["head", "metaadapter", "simadapter_plus"]
