"""MemoryModule and AdaptiveFusion: addressing, shrinkage, entropy loss, global vs local, Keras life cycle."""

import numpy as np
import keras
import pytest

from kerastl.anomaly.memory import AdaptiveFusion, MemoryModule


def built_memory(slots, dim, memories=1, **options):
    layer = MemoryModule(num_slots=slots, num_memories=memories, **options)
    layer.build((None, memories, 3, dim) if memories > 1 else (None, 3, dim))
    return layer


def test_addressing_is_softmax_of_similarities_and_sums_to_one():
    layer = built_memory(3, 2)
    layer.memory.assign(np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], "float32"))
    z = np.array([[[2.0, 0.0]]], "float32")
    weights = layer.address(z).numpy()[0, 0]
    expected = np.exp([2.0, 0.0, 2.0]) / np.exp([2.0, 0.0, 2.0]).sum()   # z . m_i = 2, 0, 2
    np.testing.assert_allclose(weights, expected, rtol=1e-6)
    read = layer(z).numpy()[0, 0]
    np.testing.assert_allclose(read, expected @ np.array([[1, 0], [0, 1], [1, 1]]), rtol=1e-6)
    random = np.random.default_rng(0).normal(size=(5, 4, 2)).astype("float32")
    np.testing.assert_allclose(layer.address(random).numpy().sum(-1), 1.0, rtol=1e-6)


def test_hard_shrinkage_zeroes_small_weights_and_renormalises():
    layer = built_memory(3, 2, shrink_threshold=0.2)
    layer.memory.assign(np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]], "float32"))
    z = np.array([[[2.0, 0.0]]], "float32")
    plain = np.exp([2.0, 0.0, 2.0]) / np.exp([2.0, 0.0, 2.0]).sum()     # 0.4683, 0.0634, 0.4683
    weights = layer.address(z).numpy()[0, 0]
    # relu(w - 0.2) * w / |w - 0.2| keeps w where w > 0.2 and zeroes it below; then L1 normalise.
    kept = np.where(plain > 0.2, plain, 0.0)
    np.testing.assert_allclose(weights, kept / kept.sum(), rtol=1e-5)
    assert weights[1] == 0.0 and weights.sum() == pytest.approx(1.0)


def test_entropy_is_added_as_a_weighted_layer_loss():
    layer = built_memory(4, 3, entropy_weight=0.5)
    layer.memory.assign(np.zeros((1, 4, 3), "float32"))      # uniform addressing: entropy log 4
    layer(np.ones((2, 5, 3), "float32"))
    assert len(layer.losses) == 1
    assert float(layer.losses[0]) == pytest.approx(0.5 * np.log(4), rel=1e-5)


def test_entropy_mean_over_slots_divides_by_the_slot_count():
    layer = built_memory(4, 3, entropy_weight=0.5, entropy_reduction="mean")
    layer.memory.assign(np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]]], "float32"))
    z = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]]], "float32")
    layer(z)
    w = np.exp([[1.0, 0, 0, 0], [0, 0, 2.0, 0]])
    w /= w.sum(-1, keepdims=True)
    assert float(layer.losses[0]) == pytest.approx(0.5 * np.mean(-w * np.log(w)), rel=1e-5)
    with pytest.raises(ValueError, match="entropy_reduction='max'"):
        MemoryModule(entropy_reduction="max")


def test_local_memories_are_read_per_view_and_global_is_shared():
    views, dim = 3, 2
    local = built_memory(2, dim, memories=views)
    bank = np.stack([np.full((2, dim), float(v + 1)) for v in range(views)]).astype("float32")
    local.memory.assign(bank)              # memory v holds only the value v + 1
    z = np.random.default_rng(1).normal(size=(4, views, 5, dim)).astype("float32")
    read = local(z).numpy()
    for v in range(views):
        np.testing.assert_allclose(read[:, v], v + 1.0, rtol=1e-6)
    shared = built_memory(2, dim)
    shared.memory.assign(bank[1:2])
    np.testing.assert_allclose(shared(z).numpy(), 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="3 memories need axis 1 of size 3"):
        MemoryModule(num_slots=2, num_memories=3).build((None, 4, 5, dim))


def test_fusion_mixes_local_and_global_with_learned_weights_per_view():
    fusion = AdaptiveFusion(2)
    fusion.build([(None, 2, 3), (None, 2, 3)])
    fusion.logits.assign(np.array([[0.0, 0.0], [np.log(3.0), -np.log(3.0)]], "float32"))  # sigmoid: .5/.5, .75/.25
    local, shared = np.ones((1, 2, 3), "float32"), np.full((1, 2, 3), 10.0, "float32")
    out = fusion([local, shared]).numpy()
    np.testing.assert_allclose(out[0, 0], 0.5 * 1 + 0.5 * 10, rtol=1e-6)
    np.testing.assert_allclose(out[0, 1], 0.75 * 1 + 0.25 * 10, rtol=1e-6)


def test_memory_trains_with_fit():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6, 8))
    features = keras.layers.Dense(8)(inputs)
    read = MemoryModule(num_slots=10, num_memories=4, shrink_threshold=0.02, name="memory")(features)
    model = keras.Model(inputs, AdaptiveFusion(4)([read, features]))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4, 6, 8)).astype("float32")
    before = model.get_layer("memory").memory.numpy().copy()
    history = model.fit(x, x, epochs=3, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.allclose(before, model.get_layer("memory").memory.numpy())
