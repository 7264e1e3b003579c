"""AdaRNN / AdaTransformer: the vectorised TDM step equals the per-pair, per-step definition;
training with model.fit; the TDM state travels in checkpoints (the .keras round trip:
tests/test_keras_objects.py)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.data.series import segment_batches, window_starts
from kerastl.timeseries import AdaRNN, AdaTransformer, TDMCallback, build_forecaster, distances

T, F, K, B = 6, 3, 3, 8


def pair_batch(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(K, B, T, F)).astype("float32") + np.arange(K, dtype="float32")[:, None, None, None]
    y = rng.normal(size=(K, B)).astype("float32")
    return x, y


@pytest.mark.parametrize("cls", [AdaRNN, AdaTransformer])
def test_vectorised_step_equals_the_per_pair_per_time_step_definition(cls):
    keras.utils.set_random_seed(0)
    extra = {"hidden_sizes": [5, 4]} if cls is AdaRNN else {"model_dim": 8, "num_layers": 1, "ff_dim": 8}
    model = cls(len_seq=T, num_features=F, num_domains=K, distance="mmd_linear", tdm_lambda=0.7, use_gate=False,
                bottleneck_width=None, **extra)
    model.build((None, T, F))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    x, y = pair_batch()
    sequences = [h.numpy().reshape(K, B, T, -1) for h in model.hidden_sequences(x.reshape(K * B, T, F))]
    forecast = model(x.reshape(K * B, T, F)).numpy().reshape(K, B)
    mse = ((forecast - y) ** 2).mean(axis=1)
    distance = np.zeros((len(sequences), T))
    for layer, hidden in enumerate(sequences):
        for i, j in itertools.combinations(range(K), 2):
            for t in range(T):
                distance[layer, t] += float(distances.mmd_linear(hidden[i, :, t], hidden[j, :, t]))
    pairs = list(itertools.combinations(range(K), 2))
    expected_loss = sum(mse[i] + mse[j] for i, j in pairs) + 0.7 * (distance / T).sum()
    logs = model.train_step((tf.constant(x), tf.constant(y)))
    np.testing.assert_allclose(model.distance_epoch.numpy(), distance, rtol=1e-4, atol=1e-7)
    assert float(logs["loss"]) == pytest.approx(expected_loss, rel=1e-4)
    assert float(logs["transfer"]) == pytest.approx(distance.sum() / T, rel=1e-4)


def test_boosting_phase_weights_the_distances_with_w():
    keras.utils.set_random_seed(0)
    model = AdaRNN(len_seq=T, num_features=F, num_domains=K, hidden_sizes=[4], distance="mmd_linear",
                   bottleneck_width=None)
    model.build((None, T, F))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    weights = np.zeros((1, T), "float32")
    weights[0, 2] = 1.0
    model.tdm_weights.assign(weights)
    model.boosting.assign(1.0)
    x, y = pair_batch(1)
    logs = model.train_step((tf.constant(x), tf.constant(y)))
    # Only time step 2 counts, whatever the gates say.
    assert float(logs["transfer"]) == pytest.approx(float(model.distance_epoch.numpy()[0, 2]), rel=1e-5)


@pytest.mark.parametrize("name, matched", [("adarnn", True), ("adatransformer", True), ("gru", False)])
def test_trains_with_fit_on_segment_batches(name, matched):
    keras.utils.set_random_seed(0)
    t = np.arange(600, dtype="float32")
    values = np.stack([np.sin(t / 7) + t / 300, np.cos(t / 7)], axis=1)
    starts = [window_starts(a, b, T) for a, b in ((0, 200), (200, 400), (400, 600))]
    model = build_forecaster(name, T, 2, 3, distance="mmd_rbf", hidden_size=8, bottleneck_width=None)
    model.compile(optimizer=keras.optimizers.Adam(1e-2, clipvalue=3.0))
    history = model.fit(segment_batches(values, 0, starts, T, 16), steps_per_epoch=8, epochs=4, verbose=0, shuffle=False,
                        callbacks=[TDMCallback(pre_epoch=2)]).history
    assert history["mse"][-1] < 0.5 * history["mse"][0]
    assert (np.array(history["transfer"]) > 0).all() == matched
    if name in ("adarnn", "adatransformer"):
        np.testing.assert_allclose(model.tdm_weights.numpy().sum(axis=1), 1.0, rtol=1e-5)
        assert model.distance_previous.numpy().sum() > 0


def test_a_checkpoint_carries_the_importance_weights(tmp_path):
    model = AdaRNN(len_seq=T, num_features=F, num_domains=2, hidden_sizes=[4, 4])
    model.build((None, T, F))
    model.tdm_weights.assign(np.full((2, T), 0.5, "float32"))
    model.distance_previous.assign(np.full((2, T), 3.0, "float32"))
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    other = AdaRNN(len_seq=T, num_features=F, num_domains=2, hidden_sizes=[4, 4])
    other.build((None, T, F))
    tf.train.Checkpoint(model=other).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(other.tdm_weights.numpy(), 0.5)
    np.testing.assert_allclose(other.distance_previous.numpy(), 3.0)


def test_task_scale_keeps_the_matching_term_at_most_the_task_loss():
    x, _ = pair_batch(2)
    losses = {}
    for scale in ("none", "task"):
        keras.utils.set_random_seed(0)
        # Hidden states of segments 0..2 with means 0..2 apart: a large linear MMD.
        model = AdaRNN(len_seq=T, num_features=F, num_domains=K, hidden_sizes=[8], distance="mmd_linear",
                       tdm_lambda=1.0, use_gate=False, bottleneck_width=None, matching_scale=scale)
        model.build((None, T, F))
        # Targets 0.1 off the forecasts: a small task loss (3 pairs x 2 segments x 0.01).
        targets = model(x.reshape(K * B, T, F) * 10).numpy().reshape(K, B) + 0.1
        loss, transfer, _, _, _ = model._forecast_and_matching_losses(tf.constant(x * 10), tf.constant(targets),
                                                                     training=False)
        task = float(loss) - float(transfer) if scale == "none" else None
        losses[scale] = (float(loss), float(transfer), task)
    loss_none, transfer, task = losses["none"]
    assert task == pytest.approx(0.06, rel=1e-3) and transfer > 10 * task  # the case the scale is for
    # task: the term is lambda x min(1, task / transfer) x transfer = the task loss itself.
    assert losses["task"][0] == pytest.approx(2 * task, rel=1e-5)
    assert loss_none == pytest.approx(task + transfer, rel=1e-5)


def test_the_bottleneck_head_is_the_references():
    keras.utils.set_random_seed(0)
    model = AdaRNN(len_seq=T, num_features=F, num_domains=2, hidden_sizes=[64], bottleneck_width=64,
                   head_dropout=0.5)
    model.build((None, T, F))
    first, second, norm, _, dropout = model.head.blocks
    for dense in (first, second):
        kernel, bias = dense.get_weights()
        assert abs(kernel.std() - 0.005) < 0.0005 and np.all(bias == 0.1)
    assert norm.epsilon == 1e-5 and norm.momentum == 0.9 and dropout.rate == 0.5
    kernel, bias = model.head.output_dense.get_weights()
    assert abs(kernel.std() - np.sqrt(2 / 65)) < 0.06 and np.abs(bias).max() <= 1 / 8
    assert all(layer.dropout == 0.0 for layer in model.encoder_layers)  # no dropout on the GRU inputs
    assert model.gates[0].norm.epsilon == 1e-5
    assert AdaRNN.from_config(model.get_config()).head.blocks[-1].rate == 0.5
