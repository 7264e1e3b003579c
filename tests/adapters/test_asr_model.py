"""MultilingualASR and CTCRecognizer: shared layers, modes, freezing, trained share, saving, learning."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.adapters.metrics import error_rate
from kerastl.adapters.model import MODEL_SIZES, MultilingualASR
from kerastl.errors import InputError

SIZE = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32, adapter_dim=4, dropout=0.0)


def tiny_asr(**options):
    keras.utils.set_random_seed(0)
    return MultilingualASR({"ru": 7, "it": 6, "ro": 5}, **{**SIZE, **options})


def random_batch(vocab, batch=4, frames=40, seed=0):
    rng = np.random.default_rng(seed)
    return {"features": rng.normal(size=(batch, frames, 80)).astype("float32"),
            "feature_lengths": np.linspace(frames, frames // 2, batch).astype("int32"),
            "labels": rng.integers(1, vocab, size=(batch, 3)).astype("int32"),
            "label_lengths": np.full(batch, 3, "int32")}


def dataset(batch, repeat=1):
    return tf.data.Dataset.from_tensors(batch).repeat(repeat)


def values(layers):
    return [w.copy() for layer in layers for w in layer.get_weights()]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def test_modes_names_and_adapters_initialised_as_the_reference():
    asr = tiny_asr()
    batch = random_batch(5)
    plain = asr.recognizer("ro", "plain")(batch)
    adapted = asr.recognizer("ro", "adapter")(batch)
    assert tuple(plain["logits"].shape) == (4, 9, 5)
    np.testing.assert_array_equal(plain["logit_lengths"], [9, 7, 5, 4])
    # The reference's (PyTorch default) up-projection: a new adapter changes the layer's output...
    assert np.abs(adapted["logits"] - plain["logits"]).max() > 1e-3
    for adapter in asr.adapters["ro"]:
        adapter.up.kernel.assign(np.zeros(adapter.up.kernel.shape, "float32"))
    # ...and with W_up = 0 it is the identity.
    np.testing.assert_allclose(asr.recognizer("ro", "adapter")(batch)["logits"], plain["logits"], atol=1e-6)
    assert [a.name for a in asr.adapters["ro"]] == ["adapter_ro_0", "adapter_ro_1"]
    fused = asr.recognizer("ro", "simadapter", sources=["ru", "it"])
    assert fused.mode == "simadapter" and fused.fusion_languages == ["ru", "it", "ro"]
    assert [layer.name for layer in asr.fusions["ro"]] == ["simadapter_ro_0", "simadapter_ro_1"]
    assert all(layer.guide_index == 2 and layer.guide_weight == 0.1 for layer in asr.fusions["ro"])
    fused(batch, training=True)
    assert len(fused.losses) == 4                 # per layer: stability regulariser + guide loss
    fused(batch)
    assert fused.losses == []                     # in training only, as the reference
    attention = fused.fusion_attention(dataset(batch))
    assert attention.shape == (2, 3)
    np.testing.assert_allclose(attention.sum(1), 1.0, rtol=1e-5)
    assert MODEL_SIZES["paper"]["num_layers"] == 12 and MODEL_SIZES["paper"]["hidden_dim"] == 256


def test_recognizers_share_layers_so_pre_training_one_changes_what_the_others_see():
    asr = tiny_asr()
    asr.train_only(backbone=True, heads=["ru"])
    ru = asr.recognizer("ru", "plain")
    ro = asr.recognizer("ro", "adapter")
    assert ru.encoder is ro.encoder
    batch = random_batch(5)
    before_ro, before_encoder, before_ro_head = ro(batch)["logits"].numpy(), values([asr.encoder]), \
        values([asr.heads["ro"]])
    ru.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)      # eager: no 10 s tracing
    ru.fit(dataset(random_batch(7, seed=1), 2), epochs=1, verbose=0)
    assert not same(before_encoder, values([asr.encoder]))
    assert same(before_ro_head, values([asr.heads["ro"]]))
    assert not np.allclose(ro(batch)["logits"], before_ro)


def test_train_only_freezes_the_rest_and_trainable_share_counts_parameters():
    asr = tiny_asr()
    asr.train_only(adapters=["ro"], heads=["ro"])
    ro = asr.recognizer("ro", "adapter")
    encoder = asr.encoder.count_params()
    adapters = sum(a.count_params() for a in asr.adapters["ro"])
    head = asr.heads["ro"].count_params()
    assert adapters == 2 * (2 * 16 + 16 * 4 + 4 * 16) and head == 16 * 5 + 5
    assert ro.parameter_counts() == (adapters + head, encoder + adapters + head)
    assert ro.trainable_share() == pytest.approx((adapters + head) / (encoder + adapters + head))
    frozen_before = values([asr.encoder, asr.heads["ru"]] + asr.adapters["ru"])
    trained_before = values(asr.adapters["ro"] + [asr.heads["ro"]])
    ro.compile(optimizer=keras.optimizers.Adam(1e-2), run_eagerly=True)
    ro.fit(dataset(random_batch(5), 2), epochs=1, verbose=0)
    assert same(frozen_before, values([asr.encoder, asr.heads["ru"]] + asr.adapters["ru"]))
    assert not same(trained_before, values(asr.adapters["ro"] + [asr.heads["ro"]]))

    asr.add_fusion("ro", ["ru"])
    asr.train_only(fusions=["ro"])
    fused = asr.recognizer("ro", "simadapter")
    # per layer: query and key D*D + D, value D*D; no LayerNorm (the residual is the frozen
    # layer's); the averaged attention and the guide weight are bookkeeping, not parameters
    fusion = 2 * (3 * 16 * 16 + 2 * 16)
    total = encoder + head + sum(a.count_params() for lang in ("ru", "ro") for a in asr.adapters[lang]) + fusion
    assert fused.parameter_counts() == (fusion, total)


def test_encoder_layer_written_out_equals_keras_hubs_and_returns_its_feed_forward_input():
    asr = tiny_asr()
    encoder = asr.encoder
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 6, 16)).astype("float32")
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2, [True] * 2 + [False] * 4])
    layer = encoder.transformer_layers[0]
    output, normalized = encoder.run_layer(0, x, mask)
    np.testing.assert_allclose(output, layer(x, padding_mask=mask), rtol=1e-5, atol=1e-5)
    # LN2 of the stream after self-attention: the output minus the feed-forward block's output.
    ff = layer._feedforward_output_dense(layer._feedforward_intermediate_dense(normalized))
    np.testing.assert_allclose(layer._feedforward_layer_norm(output - ff), normalized, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(normalized.numpy().mean(-1), 0.0, atol=1e-5)


def test_simadapter_residual_is_the_frozen_layers_feed_forward_input():
    """With W_V = 0 a fused layer outputs its residual alone: the layer's LN2(h)."""
    asr = tiny_asr(num_layers=1)
    fused = asr.recognizer("ro", "simadapter", sources=["ru", "it"])
    asr.fusions["ro"][0].value_kernel.assign(np.zeros((16, 16), "float32"))
    batch = random_batch(5)
    x, padding_mask, _ = asr.encoder.embed(batch["features"], batch["feature_lengths"])
    _, normalized = asr.encoder.run_layer(0, x, padding_mask)
    hidden = asr.heads["ro"].kernel.numpy()
    expected = asr.encoder.final_norm(normalized).numpy() @ hidden + asr.heads["ro"].bias.numpy()
    np.testing.assert_allclose(fused(batch)["logits"], expected, rtol=1e-4, atol=1e-4)


def test_inference_model_gives_the_recognizers_logits():
    asr = tiny_asr()
    asr.add_fusion("ro", ["ru", "it"], temperature=0.5)
    for layer in asr.adapters["ru"] + asr.adapters["it"]:
        layer.up.kernel.assign(np.random.default_rng(1).normal(size=layer.up.kernel.shape).astype("float32"))
    fused = asr.recognizer("ro", "simadapter")
    batch = random_batch(5)
    inputs = {"features": batch["features"], "feature_lengths": batch["feature_lengths"]}
    expected = fused(inputs)["logits"].numpy()
    served = fused.inference_model()
    np.testing.assert_allclose(served(inputs)["logits"], expected, atol=1e-5)
    assert served.input["features"].shape[-1] == 80


def test_multilingual_model_save_and_load(tmp_path):
    asr = tiny_asr(adapter_dims={"ru": 6})
    asr.add_adapters("meta")
    asr.add_fusion("ro", ["it"], guide_weight=0.3)
    for layer in asr.all_layers():
        layer.set_weights([np.random.default_rng(len(w.shape)).normal(size=w.shape).astype("float32") * 0.1
                           for w in layer.get_weights()])
    asr.save(tmp_path / "asr")
    loaded = MultilingualASR.load(tmp_path / "asr")
    assert loaded.get_config() == asr.get_config()
    assert loaded.adapters["ru"][0].bottleneck_dim == 6 and loaded.languages == ["ru", "it", "ro"]
    batch = random_batch(5)
    for lang, mode, adapter in (("ru", "plain", None), ("it", "adapter", "meta"), ("ro", "simadapter", None)):
        np.testing.assert_allclose(loaded.recognizer(lang, mode, adapter=adapter)(batch)["logits"],
                                   asr.recognizer(lang, mode, adapter=adapter)(batch)["logits"], atol=1e-5)
    with pytest.raises(InputError, match="config.json: missing"):
        MultilingualASR.load(tmp_path / "nothing")


def test_unknown_languages_and_modes_are_refused():
    asr = tiny_asr()
    with pytest.raises(InputError, match="language 'uk'"):
        asr.recognizer("uk")
    with pytest.raises(InputError, match="no adapters for xx"):
        asr.add_fusion("ro", ["ru", "xx"])
    with pytest.raises(InputError, match="give its source languages"):
        asr.recognizer("ro", "simadapter")
    with pytest.raises(ValueError, match="mode 'fusion'"):
        asr.recognizer("ro", "fusion")
    asr.add_language("uk", 9)
    assert asr.recognizer("uk", "adapter")(random_batch(9))["logits"].shape[-1] == 9


def synthetic_speech(seed=0, utterances=8, vocab=5, frames_per_char=12):
    """Each character is a fixed random spectrum held for 12 frames, plus noise."""
    rng = np.random.default_rng(seed)
    spectra = rng.normal(size=(vocab, 80)).astype("float32")
    labels = rng.integers(1, vocab, size=(utterances, 3)).astype("int32")
    features = np.zeros((utterances, 3 * frames_per_char + 4, 80), "float32")
    for u, row in enumerate(labels):
        for i, char in enumerate(row):
            features[u, i * frames_per_char:(i + 1) * frames_per_char] = spectra[char]
    features += 0.1 * rng.normal(size=features.shape).astype("float32")
    return {"features": features, "feature_lengths": np.full(utterances, features.shape[1], "int32"),
            "labels": labels, "label_lengths": np.full(utterances, 3, "int32")}


def test_ctc_loss_falls_and_the_transcripts_are_learned_on_a_tiny_synthetic_batch():
    keras.utils.set_random_seed(0)
    asr = MultilingualASR({"xx": 5}, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64, dropout=0.0)
    asr.train_only(backbone=True, heads=["xx"])
    recognizer = asr.recognizer("xx", "plain")
    recognizer.compile(optimizer=keras.optimizers.Adam(3e-3))
    batch = synthetic_speech()
    before = recognizer.evaluate(dataset(batch), verbose=0, return_dict=True)["ctc_loss"]
    recognizer.fit(dataset(batch, 60), epochs=1, verbose=0)
    after = recognizer.evaluate(dataset(batch), verbose=0, return_dict=True)["ctc_loss"]
    references, hypotheses = recognizer.decode_dataset(dataset(batch))
    print(f"CTC loss {before:.3f} -> {after:.3f}, token error rate {error_rate(references, hypotheses):.3f}")
    assert after < 0.2 * before
    assert error_rate(references, hypotheses) < 0.3


@pytest.mark.parametrize("module", ["kerastl.adapters.adapter", "kerastl.adapters.simadapter",
                                    "kerastl.adapters.ctc", "kerastl.adapters.metrics", "kerastl.adapters.maml",
                                    "kerastl.adapters.model", "kerastl.nets.asr_encoder"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
