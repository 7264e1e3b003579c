"""The training stages on a tiny tone corpus: learning, what each stage freezes and trains,
SimAdapter fusion and evaluation (the multilingual trainer's Keras round trip: tests/test_keras_objects.py)."""

import numpy as np
import pytest
from tone_asr import SOURCES, changed_layers, copy_with_target, weights_by_layer

from kerastl.adapters import methods, stages


def test_multilingual_pretraining_learns_both_languages(trained_sources, tone_data):
    _, vocabularies, _, _ = tone_data
    assert trained_sources["untrained"]["cer"] > 0.6
    for lang in SOURCES:
        assert trained_sources["scores"][lang]["cer"] < 0.35, (lang, trained_sources["scores"])
        assert trained_sources["scores"][lang]["wer"] <= 1.0
    assert trained_sources["untrained"]["cer"] - trained_sources["scores"]["aa"]["cer"] > 0.4
    result = trained_sources["pretrained"]
    assert set(result.recognizers) == set(SOURCES)
    assert result.trained_share == 1.0  # plain recognisers: the backbone and both heads, all trained
    losses = result.history["loss"]
    assert len(losses) == 25 and losses[-1] < 0.1 * losses[0]
    assert result.history["loss"][-1] == pytest.approx(result.history["ctc_aa"][-1] + result.history["ctc_bb"][-1],
                                                       rel=1e-4)
    assert result.utterances_per_second > 0


def test_two_stage_source_adapters_leave_the_backbone_and_the_pretrained_heads_frozen(trained_sources):
    changed = changed_layers(trained_sources["after_pretraining"], trained_sources["model"])
    assert changed == {"adapter_aa_0", "adapter_bb_0"}
    model, result = trained_sources["model"], trained_sources["adapters"]
    trained = sum(int(np.prod(w.shape)) for lang in SOURCES for layer in model.layers_of("adapters", lang)
                  for w in layer.weights)
    heads = sum(model.heads[lang].count_params() for lang in SOURCES)
    total = trained + heads + model.encoder.count_params()
    assert result.trained_share == pytest.approx(trained / total)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_joint_source_adapters_train_the_heads_too(trained_sources, tone_data):
    _, vocabularies, train, _ = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    before = weights_by_layer(model)
    stages.train_source_adapters(model, {lang: train[lang] for lang in SOURCES}, epochs=1, train_heads=True,
                                 verbose=0)
    assert changed_layers(before, model) == {"adapter_aa_0", "adapter_bb_0", "head_aa", "head_bb"}


@pytest.mark.parametrize("method, adapter_training, trained", [
    ("head", "two_stage", {"head_tt"}),
    ("adapter", "two_stage", {"head_tt", "adapter_tt_0"}),
    ("adapter", "joint", {"head_tt", "adapter_tt_0"}),
    ("full_ft", "two_stage", {"head_tt", "encoder"}),
])
def test_target_baselines_train_only_their_parts(method, adapter_training, trained, trained_sources, tone_data):
    _, vocabularies, train, _ = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    before = weights_by_layer(model)
    result = stages.train_target(model, "tt", method, train["tt"], epochs=1, verbose=0,
                                 adapter_training=adapter_training)
    assert changed_layers(before, model) == trained
    two_stage = method == "adapter" and adapter_training == "two_stage"
    assert ("head_loss" in result.history) == two_stage     # the history of the head's own first stage
    parameters = sum(layer.count_params() for name in trained for layer in model.all_layers() if layer.name == name)
    recognizer = result.recognizer
    assert recognizer.mode == methods.recognizer_mode(method)
    assert result.trained_share == pytest.approx(parameters / recognizer.count_params())
    assert len(recognizer.trainable_weights) == sum(len(layer.trainable_weights) for layer in model.all_layers()
                                                    if layer.name in trained)


def test_two_stage_adapter_trains_the_head_first_then_the_adapters_with_the_head_frozen(trained_sources, tone_data,
                                                                                       monkeypatch):
    _, vocabularies, train, _ = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    trainable = []
    original = stages._fit

    def recording(name, recognizer, *args, **kwargs):
        trainable.append((name, recognizer.mode, sorted({v.path.split("/")[0] for v in recognizer.trainable_weights})))
        return original(name, recognizer, *args, **kwargs)

    monkeypatch.setattr(stages, "_fit", recording)
    stages.train_target(model, "tt", "adapter", train["tt"], epochs=1, verbose=0)
    assert trainable == [("adapter_head", "plain", ["head_tt"]), ("adapter", "adapter", ["adapter_tt_0"])]


def test_target_stage_keeps_the_best_dev_epoch_and_stops_after_patience(trained_sources, tone_data):
    _, vocabularies, train, test = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    result = stages.train_target(model, "tt", "head", train["tt"], epochs=6, learning_rate=0.3, validation=test["tt"],
                                 verbose=0, patience=1)
    dev_losses = result.history["val_loss"]
    best = int(np.argmin(dev_losses))
    assert result.best_epoch == best + 1 and result.facts()["best_epoch"] == best + 1
    # patience 1: training stops one epoch after the best, unless the last epoch is the best
    assert len(dev_losses) == min(best + 2, 6)
    kept = result.recognizer.evaluate(test["tt"], verbose=0, return_dict=True)["loss"]
    assert kept == pytest.approx(dev_losses[best], rel=1e-4)


def test_simadapter_stage_trains_only_the_fusion_layers(trained_sources, tone_data):
    _, vocabularies, train, test = tone_data
    model = copy_with_target(trained_sources, vocabularies)
    stages.train_target(model, "tt", "adapter", train["tt"], epochs=2, verbose=0)
    before = weights_by_layer(model)
    result = stages.train_simadapter(model, "tt", SOURCES, train["tt"], epochs=2, guide_weight=0.4,
                                     guide_decay_steps=4, verbose=0)
    assert changed_layers(before, model) == {"simadapter_tt_0"}       # heads, adapters, backbone frozen
    recognizer = result.recognizer
    assert recognizer.fusion_languages == ["aa", "bb", "tt"]
    fusion = recognizer.fusion[0]
    parameters = sum(int(np.prod(v.shape)) for v in fusion.weights if not any(v is s for s in fusion.state_variables))
    assert result.trained_share == pytest.approx(parameters / recognizer.parameter_counts()[1])
    # 16 utterances in batches of 4: 8 steps; the weight decayed 0.4 -> 0 over the first 4 (last step: 0)
    assert float(fusion.guide_weight_variable.numpy()) == 0.0
    attention = recognizer.fusion_attention(test["tt"])
    assert attention.shape == (1, 3) and attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(attention > 0)


def test_evaluate_scores_the_greedy_transcripts(trained_sources, tone_data):
    records, vocabularies, _, test = tone_data
    recognizer = trained_sources["model"].recognizer("aa", "adapter")
    references = [text for _, text in records["aa"]["test"]]
    _, hypothesis_ids = recognizer.decode_dataset(test["aa"])
    hypotheses = [vocabularies["aa"].decode(ids) for ids in hypothesis_ids]
    from kerastl.adapters.metrics import cer, wer

    expected = {"cer": cer(references, hypotheses), "wer": wer(references, hypotheses)}
    assert stages.evaluate(recognizer, test["aa"], vocabularies["aa"]) == pytest.approx(expected)
    assert stages.evaluate(recognizer, test["aa"], vocabularies["aa"], references=references) == pytest.approx(expected)
    _, beam_ids = recognizer.decode_dataset(test["aa"], beam_width=4)
    beam = [vocabularies["aa"].decode(ids) for ids in beam_ids]
    assert stages.evaluate(recognizer, test["aa"], vocabularies["aa"], beam_width=4) == pytest.approx(
        {"cer": cer(references, beam), "wer": wer(references, beam)})
    wrong = ["zz"] * len(references)
    assert stages.evaluate(recognizer, test["aa"], vocabularies["aa"], references=wrong)["cer"] >= 0.5
    with pytest.raises(ValueError, match="references"):
        stages.evaluate(recognizer, test["aa"], vocabularies["aa"], references=references[:1])
