"""MetaAdapter on a tiny tone corpus: the MAML loop over the sources, then fine-tuning."""

import numpy as np
import pytest
from tone_asr import SOURCES, changed_layers, copy_with_target, weights_by_layer

from kerastl.adapters import metaadapter


def test_metaadapter_runs_maml_over_the_sources_then_fine_tunes(trained_sources, tone_data, monkeypatch):
    _, vocabularies, train, _ = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    steps = []
    original = metaadapter.first_order_maml_step

    def counting(variables, tasks, loss_fn, **kwargs):
        steps.append(([key for key, _ in tasks], kwargs["meta_lr"], kwargs["progress"]))
        return original(variables, tasks, loss_fn, **kwargs)

    monkeypatch.setattr(metaadapter, "first_order_maml_step", counting)
    model.add_adapters("meta")
    initial = model.adapters["meta"][0].get_weights()
    before = weights_by_layer(model)
    meta = metaadapter.meta_train_adapters(model, {lang: train[lang] for lang in SOURCES}, epochs=1, meta_lr=0.5,
                                           verbose=0)
    # 16 training utterances per source in batches of 4: 4 steps per pass, one task per source.
    assert [languages for languages, _, _ in steps] == [SOURCES] * 4
    assert [progress for _, _, progress in steps] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert {meta_lr for _, meta_lr, _ in steps} == {0.5}
    # the shared adapter and the sources' heads are meta-learned (the backbone stays frozen)
    assert changed_layers(before, model) == {"adapter_meta_0", "head_aa", "head_bb"}
    assert len(meta.history["query_loss"]) == 1 and meta.trained_share < 0.2
    # the logged distance is the adapter's L2 distance from its initialisation
    moved = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(model.adapters["meta"][0].get_weights(), initial)))
    assert meta.history["adapter_distance"] == pytest.approx([moved], rel=1e-5) and moved > 0

    meta_weights = model.adapters["meta"][0].get_weights()
    fine_tuning = []
    original_target = metaadapter.train_target

    def recording(*args, **kwargs):
        fine_tuning.append((args[5], kwargs["adapter_training"]))
        return original_target(*args, **kwargs)

    monkeypatch.setattr(metaadapter, "train_target", recording)
    result = metaadapter.train_metaadapter(model, "tt", {lang: train[lang] for lang in SOURCES}, train["tt"],
                                           meta_epochs=1, epochs=1, verbose=0)
    assert fine_tuning == [(0.01, "joint")]        # the reference's fine-tuning: Adam 0.01, adapter with head
    assert result.name == "metaadapter" and "meta_support_loss" in result.history
    assert "meta_adapter_distance" in result.history
    assert result.recognizer.adapter_names == ["tt"]
    target = model.adapters["tt"][0].get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(target, meta_weights))  # fine-tuned from the copy
    assert changed_layers(before, model) == {"adapter_meta_0", "adapter_tt_0", "head_tt", "head_aa", "head_bb"}
