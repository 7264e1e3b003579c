"""The AMSL model: outputs, per-sample scores, ablations, training with fit (its .keras round
trip: tests/test_keras_objects.py)."""

import keras
import numpy as np
import pytest

from kerastl.anomaly.model import AMSL

SMALL = dict(num_slots=12, filters=(4, 8), head_units=16)


def windows(n=48, steps=20, channels=5, seed=0):
    t = np.arange(steps)[None, :, None]
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 6, (n, 1, channels))
    return (0.5 + 0.4 * np.sin(t / 3.0 + phase) + 0.05 * rng.normal(size=(n, steps, channels))).astype("float32")


def built(x, **options):
    keras.utils.set_random_seed(0)
    model = AMSL(**{**SMALL, **options})
    model.adapt(x)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model


def test_outputs_and_score_is_the_sum_of_per_view_mse():
    x = windows()
    model = built(x)
    out = model(x[:6])
    assert out["views"].shape == (6, 7, 20, 5) and out["reconstructions"].shape == (6, 7, 20, 5)
    assert out["view_logits"].shape == (42, 7)
    views, recon = out["views"].numpy(), out["reconstructions"].numpy()
    expected = ((views - recon) ** 2).mean(axis=(2, 3)).sum(axis=1)
    np.testing.assert_allclose(model.score(x[:6]).numpy(), expected, rtol=1e-5)
    # adapt() fitted each view's channel ranges: the training views lie in [0, 1].
    train_views = model.scaled_views(x, seed=np.array([0, 0])).numpy()
    assert train_views.min() == pytest.approx(0.0, abs=1e-6) and train_views.max() == pytest.approx(1.0, abs=1e-6)


def test_scores_are_per_sample():
    x = windows()
    model = built(x)
    batch = x[:8].copy()
    before = model.score(batch).numpy()
    batch[3] = batch[3] * -2.0 + 1.0
    after = model.score(batch).numpy()
    changed = np.flatnonzero(~np.isclose(before, after, rtol=1e-5, atol=1e-7))
    assert changed.tolist() == [3]
    # ...and independent of the batch a window is scored in.
    np.testing.assert_allclose(model.score(batch[5:6]).numpy(), after[5:6], rtol=1e-5)


@pytest.mark.parametrize("options, views, memories", [
    ({}, 7, {"global_memory", "local_memories", "fusion"}),
    ({"memory": "global"}, 7, {"global_memory"}),
    ({"memory": "local"}, 7, {"local_memories"}),
    ({"memory": "none"}, 7, set()),
    ({"transformations": ()}, 1, {"global_memory", "local_memories", "fusion"}),
    ({"transformations": ("noise", "smoothing")}, 3, {"global_memory", "local_memories", "fusion"}),
])
def test_ablations_build_the_parts_they_name(options, views, memories):
    x = windows(n=16)
    model = built(x, **options)
    out = model(x[:2])
    assert out["reconstructions"].shape == (2, views, 20, 5)
    present = {name for name in ("global_memory", "local_memories", "fusion")
               if getattr(model, {"global_memory": "global_memory", "local_memories": "local_memory",
                                  "fusion": "fusion"}[name]) is not None}
    assert present == memories
    assert (out["view_logits"] is None) == (views == 1)
    assert len(model.decoders) == views


def test_trains_with_fit_and_predicts_the_score():
    x = windows(n=64)
    model = built(x, shrink_threshold=0.01)
    history = model.fit(x, batch_size=16, epochs=4, verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()])
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    assert history.history["reconstruction_loss"][-1] < history.history["reconstruction_loss"][0]
    # 7-way CE starts near chance, log 7 per view, summed over the 7 views (the reference's weights).
    assert history.history["view_loss"][0] == pytest.approx(7 * np.log(7), rel=0.2)
    assert history.history["memory_loss"][-1] > 0                # the entropy terms are in the loss
    np.testing.assert_allclose(model.predict(x[:10], verbose=0), model.score(x[:10]).numpy(), rtol=1e-5)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="memory='both-ish'"):
        AMSL(memory="both-ish")
    with pytest.raises(ValueError, match="unknown transformation 'mirror'"):
        AMSL(transformations=("mirror",))
