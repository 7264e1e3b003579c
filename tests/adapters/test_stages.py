"""The training stages on a tiny tone corpus: learning, what each stage freezes and trains,
MetaAdapter's MAML step, SimAdapter fusion, and running methods with reuse and resume."""

import keras
import numpy as np
import pytest

from kerastl.adapters import stages
from kerastl.adapters.model import MultilingualASR
from kerastl.data.vocabulary import CharVocabulary
from kerastl.data.speech import load_split, speech_dataset

ALPHABETS = {"aa": "abcd", "bb": "cdef", "tt": "abef"}
SOURCES = ["aa", "bb"]
SIZE = dict(num_layers=1, hidden_dim=32, num_heads=2, intermediate_dim=64, adapter_dim=8, dropout=0.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tone_corpus):
    root = str(tmp_path_factory.mktemp("tones"))
    tone_corpus(root, ALPHABETS, sizes=(16, 4, 6))
    records = {lang: {split: load_split(root, lang, split) for split in ("train", "test")} for lang in ALPHABETS}
    vocabularies = {lang: CharVocabulary.from_texts(t for _, t in records[lang]["train"]) for lang in ALPHABETS}
    train = {lang: speech_dataset(records[lang]["train"], vocabularies[lang], 4, training=True) for lang in ALPHABETS}
    test = {lang: speech_dataset(records[lang]["test"], vocabularies[lang], 8) for lang in ALPHABETS}
    return records, vocabularies, train, test


def weights_by_layer(model: MultilingualASR) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.all_layers()}


def changed_layers(before, model) -> set[str]:
    after = weights_by_layer(model)
    return {name for name in after if name not in before
            or any(not np.array_equal(a, b) for a, b in zip(before[name], after[name]))}


@pytest.fixture(scope="module")
def sources(data, tmp_path_factory):
    """A source model: pre-trained (weights kept), then two-stage adapters; saved for copies."""
    _, vocabularies, train, test = data
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


def copy_with_target(sources, vocabularies) -> MultilingualASR:
    model = MultilingualASR.load(sources["folder"])
    model.add_language("tt", vocabularies["tt"].size)
    return model


def test_multilingual_pretraining_learns_both_languages(sources, data):
    _, vocabularies, _, _ = data
    assert sources["untrained"]["cer"] > 0.6
    for lang in SOURCES:
        assert sources["scores"][lang]["cer"] < 0.35, (lang, sources["scores"])
        assert sources["scores"][lang]["wer"] <= 1.0
    assert sources["untrained"]["cer"] - sources["scores"]["aa"]["cer"] > 0.4
    result = sources["pretrained"]
    assert set(result.recognizers) == set(SOURCES)
    assert result.trained_share == 1.0  # plain recognisers: the backbone and both heads, all trained
    losses = result.history["loss"]
    assert len(losses) == 25 and losses[-1] < 0.1 * losses[0]
    assert result.history["loss"][-1] == pytest.approx(result.history["ctc_aa"][-1] + result.history["ctc_bb"][-1],
                                                       rel=1e-4)
    assert result.utterances_per_second > 0


def test_two_stage_adapters_leave_the_backbone_frozen(sources):
    changed = changed_layers(sources["after_pretraining"], sources["model"])
    assert changed == {"adapter_aa_0", "adapter_bb_0", "head_aa", "head_bb"}
    model, result = sources["model"], sources["adapters"]
    trained = sum(int(np.prod(w.shape)) for lang in SOURCES
                  for layer in model.layers_of("adapters", lang) + model.layers_of("head", lang) for w in layer.weights)
    total = trained + model.encoder.count_params()
    assert result.trained_share == pytest.approx(trained / total)
    assert result.history["loss"][-1] < result.history["loss"][0]


@pytest.mark.parametrize("method, trained", [
    ("head", {"head_tt"}),
    ("adapter", {"head_tt", "adapter_tt_0"}),
    ("full_ft", {"head_tt", "encoder"}),
])
def test_target_baselines_train_only_their_parts(method, trained, sources, data):
    _, vocabularies, train, _ = data
    model = copy_with_target(sources, vocabularies)
    before = weights_by_layer(model)
    result = stages.train_target(model, "tt", method, train["tt"], epochs=1, verbose=0)
    assert changed_layers(before, model) == trained
    parameters = sum(layer.count_params() for name in trained for layer in model.all_layers() if layer.name == name)
    recognizer = result.recognizer
    assert recognizer.mode == stages.recognizer_mode(method)
    assert result.trained_share == pytest.approx(parameters / recognizer.count_params())
    assert len(recognizer.trainable_weights) == sum(len(layer.trainable_weights) for layer in model.all_layers()
                                                    if layer.name in trained)


def test_simadapter_stage_trains_only_the_fusion_and_the_head(sources, data):
    _, vocabularies, train, test = data
    model = copy_with_target(sources, vocabularies)
    stages.train_target(model, "tt", "adapter", train["tt"], epochs=2, verbose=0)
    before = weights_by_layer(model)
    result = stages.train_simadapter(model, "tt", SOURCES, train["tt"], epochs=2, verbose=0)
    assert changed_layers(before, model) == {"simadapter_tt_0", "head_tt"}
    recognizer = result.recognizer
    assert recognizer.fusion_languages == ["aa", "bb", "tt"]
    fusion = recognizer.fusion[0]
    parameters = sum(int(np.prod(v.shape)) for v in fusion.weights if not any(v is s for s in fusion.state_variables))
    parameters += model.heads["tt"].count_params()
    assert result.trained_share == pytest.approx(parameters / recognizer.parameter_counts()[1])
    attention = recognizer.fusion_attention(test["tt"])
    assert attention.shape == (1, 3) and attention.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(attention > 0)


def test_metaadapter_runs_maml_over_the_sources_then_fine_tunes(sources, data, monkeypatch):
    _, vocabularies, train, _ = data
    model = copy_with_target(sources, vocabularies)
    steps = []
    original = stages.first_order_maml_step

    def counting(variables, tasks, loss_fn, **kwargs):
        steps.append(([key for key, _ in tasks], kwargs["meta_lr"], kwargs["progress"]))
        return original(variables, tasks, loss_fn, **kwargs)

    monkeypatch.setattr(stages, "first_order_maml_step", counting)
    before = weights_by_layer(model)
    meta = stages.meta_train_adapters(model, {lang: train[lang] for lang in SOURCES}, epochs=1, meta_lr=0.5,
                                      verbose=0)
    # 16 training utterances per source in batches of 4: 4 steps per pass, one task per source.
    assert [languages for languages, _, _ in steps] == [SOURCES] * 4
    assert [progress for _, _, progress in steps] == pytest.approx([0, 0.25, 0.5, 0.75])
    assert {meta_lr for _, meta_lr, _ in steps} == {0.5}
    assert changed_layers(before, model) == {"adapter_meta_0"}
    # moved away from the identity (the zero up-projection)
    assert np.abs(model.adapters["meta"][0].up.kernel.numpy()).max() > 0
    assert len(meta.history["query_loss"]) == 1 and meta.trained_share < 0.2

    meta_weights = model.adapters["meta"][0].get_weights()
    result = stages.train_metaadapter(model, "tt", {lang: train[lang] for lang in SOURCES}, train["tt"],
                                      meta_epochs=1, epochs=1, verbose=0)
    assert result.name == "metaadapter" and "meta_support_loss" in result.history
    assert result.recognizer.adapter_names == ["tt"]
    target = model.adapters["tt"][0].get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(target, meta_weights))  # fine-tuned from the copy
    assert changed_layers(before, model) == {"adapter_meta_0", "adapter_tt_0", "head_tt"}


def test_run_methods_chains_prerequisites_and_skips_finished(sources, data):
    _, vocabularies, train, test = data
    done = []
    target = stages.TargetData(train["tt"], test["tt"], vocabularies["tt"])
    settings = stages.StageSettings(epochs=1, fusion_epochs=1, verbose=0)
    saved = {}

    def on_finished(method, model, facts):
        done.append(method)
        saved[method] = model

    results = stages.run_methods(["simadapter"], lambda: copy_with_target(sources, vocabularies), None, "tt",
                                 SOURCES, target, settings, on_finished=on_finished)
    assert done == ["adapter", "simadapter"] and list(results) == ["adapter", "simadapter"]
    assert saved["adapter"] is saved["simadapter"]  # the fusion continues the adapter's model
    for facts in results.values():
        assert 0 <= facts["cer"] and 0 <= facts["wer"] and 0 < facts["trained_share"] < 1
    assert np.sum(results["simadapter"]["attention"]) == pytest.approx(1.0, abs=1e-5)

    done.clear()
    resumed = stages.run_methods(["simadapter"], None, None, "tt", SOURCES, target, settings,
                                 finished={"adapter": results["adapter"]}, restore=lambda method: saved[method],
                                 on_finished=on_finished)
    assert done == ["simadapter"] and resumed["adapter"] is results["adapter"]
    assert stages.method_order(["simadapter_plus", "head"]) == ["head", "metaadapter", "simadapter_plus"]


def test_evaluate_scores_the_greedy_transcripts(sources, data):
    records, vocabularies, _, test = data
    recognizer = sources["model"].recognizer("aa", "adapter")
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


def test_source_model_is_cached_per_stage(data, tmp_path):
    _, vocabularies, train, _ = data
    subset = {lang: train[lang] for lang in SOURCES}
    settings = stages.SourceSettings(pretrain_epochs=1, adapter_epochs=1, verbose=0)
    built = []

    def build():
        built.append(1)
        return MultilingualASR({lang: vocabularies[lang].size for lang in SOURCES}, **SIZE)

    first, facts = stages.train_sources(build, subset, settings, cache=str(tmp_path))
    assert facts["reused"] == [] and set(facts) >= {"pretrain", "source_adapters"}
    again, facts_again = stages.train_sources(build, subset, settings, cache=str(tmp_path))
    assert built == [1] and facts_again["reused"] == ["pretrain", "source_adapters"]
    for a, b in zip(first.encoder.get_weights(), again.encoder.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert stages.fingerprint({"a": 1, "b": [2]}) == stages.fingerprint({"b": [2], "a": 1})


def test_attention_heatmap_is_written_and_checks_its_shape(tmp_path):
    from kerastl.adapters.report import plot_fusion_attention

    path = plot_fusion_attention([[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]], ["ru", "it", "ro"], str(tmp_path / "a.png"))
    from PIL import Image

    with Image.open(path) as image:
        assert image.size[0] > image.size[1] > 100
    with pytest.raises(ValueError, match=r"expected \[layers, 2\]"):
        plot_fusion_attention([[0.5, 0.2, 0.3]], ["ru", "ro"], str(tmp_path / "b.png"))


def test_multilingual_trainer_round_trips_through_a_keras_file(data, tmp_path):
    _, vocabularies, _, test = data
    keras.utils.set_random_seed(1)
    model = MultilingualASR({lang: vocabularies[lang].size for lang in SOURCES}, **SIZE)
    trainer = stages.MultilingualTrainer({lang: model.recognizer(lang, "adapter") for lang in SOURCES})
    batch = {lang: next(iter(test[lang])) for lang in SOURCES}
    expected = trainer(batch)
    trainer.save(tmp_path / "trainer.keras")
    loaded = keras.models.load_model(tmp_path / "trainer.keras")
    assert loaded.recognizers["aa"].encoder is loaded.recognizers["bb"].encoder
    for lang, outputs in loaded(batch).items():
        np.testing.assert_allclose(outputs["logits"], expected[lang]["logits"], atol=1e-5)
        np.testing.assert_array_equal(outputs["logit_lengths"], expected[lang]["logit_lengths"])
