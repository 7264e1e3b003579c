"""AMSL's loss terms against the reference code's equations (its train.py), computed by hand
with numpy from the model's own features, memories, logits and reconstructions:

  loss = sum_v mean_{batch,time,channels} (view_v - recon_v)^2
       + 2e-4 * sum_v [mean_{batch,positions,slots} -w log w (global) + (same, local memory v)]
       + 1.0 * sum_v mean_batch CE(softmax(logits_v), v)

and the first port's choices behind their options (CE averaged over views, entropy summed over
slots and averaged over views, a linear decoder output)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.anomaly.model import AMSL

SMALL = dict(num_slots=6, filters=(2, 4), head_units=8, transformations=("noise", "negation", "reversal"))


def windows(n=6, steps=12, channels=3):
    rng = np.random.default_rng(3)
    return rng.uniform(0.0, 1.0, (n, steps, channels)).astype("float32")


def model_for(x, **options):
    keras.utils.set_random_seed(1)
    model = AMSL(**{**SMALL, **options})
    model.adapt(x)
    return model


def softmax(a):
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def by_hand(model, x):
    """The reference's loss terms, from the model's parts: (reconstruction, entropy, CE) with
    the reference's reductions, and the first port's (entropy, CE)."""
    out = model(x, training=False)
    views, recon, logits = out["views"].numpy(), out["reconstructions"].numpy(), out["view_logits"].numpy()
    n, v = views.shape[:2]
    mse = sum(np.mean((views[:, r] - recon[:, r]) ** 2) for r in range(v))
    features = model.encoder(tf.reshape(out["views"], [-1, *model.window_shape, 1])).numpy()
    features = features.reshape(n, v, -1, features.shape[-1])                     # [batch, view, position, dim]
    global_memory = model.global_memory.memory.numpy()[0]                         # [slots, dim]
    local_memories = model.local_memory.memory.numpy()                            # [views, slots, dim]
    entropy_mean, entropy_sum = 0.0, 0.0
    for r in range(v):
        for memory in (global_memory, local_memories[r]):
            w = softmax(features[:, r] @ memory.T)                                # [batch, position, slots]
            h = -w * np.log(w)
            entropy_mean += h.mean()                                              # reference: mean over slots too
            entropy_sum += h.sum(-1).mean() / v                                   # first port: mean over views
    probabilities = softmax(logits).reshape(n, v, v)                              # rows: window-major, view-minor
    ce_per_view = [-np.log(probabilities[:, r, r]).mean() for r in range(v)]
    return mse, entropy_mean, entropy_sum, sum(ce_per_view), np.mean(ce_per_view)


def test_default_losses_follow_the_reference_equations():
    x = windows()
    model = model_for(x)
    mse, entropy_mean, _, ce_sum, _ = by_hand(model, x)
    values = {k: float(t) for k, t in model._step_losses(tf.constant(x), None, training=False).items()}
    assert values["reconstruction_loss"] == pytest.approx(mse, rel=1e-5)
    assert values["memory_loss"] == pytest.approx(2e-4 * entropy_mean, rel=1e-4)
    assert values["view_loss"] == pytest.approx(ce_sum, rel=1e-5)
    assert values["loss"] == pytest.approx(mse + 2e-4 * entropy_mean + ce_sum, rel=1e-5)
    # 4 views: the summed CE is 4x the mean, the reference's entropy 4 / 6 slots x MemAE's.
    assert ce_sum > 3.0 * np.log(4)


def test_first_port_options_average_the_ce_and_sum_the_entropy_over_slots():
    x = windows()
    model = model_for(x, ssl_reduction="mean", entropy_reduction="sum")
    mse, _, entropy_sum, _, ce_mean = by_hand(model, x)
    values = {k: float(t) for k, t in model._step_losses(tf.constant(x), None, training=False).items()}
    assert values["memory_loss"] == pytest.approx(2e-4 * entropy_sum, rel=1e-4)
    assert values["view_loss"] == pytest.approx(ce_mean, rel=1e-5)
    assert values["loss"] == pytest.approx(mse + 2e-4 * entropy_sum + ce_mean, rel=1e-5)


def test_decoder_output_is_a_sigmoid_unless_linear_is_asked_for():
    x = windows()
    sigmoid, linear = model_for(x), model_for(x, decoder_activation="linear")
    assert sigmoid.decoders[0].layers[-2].activation is keras.activations.sigmoid
    assert linear.decoders[0].layers[-2].activation is keras.activations.linear
    recon = sigmoid(x)["reconstructions"].numpy()
    assert recon.min() > 0.0 and recon.max() < 1.0
    # Same weights, different output: the sigmoid of the linear model's pre-activation.
    linear.set_weights(sigmoid.get_weights())
    np.testing.assert_allclose(recon, 1 / (1 + np.exp(-linear(x)["reconstructions"].numpy())), rtol=1e-5, atol=1e-6)


def test_score_is_the_per_window_sum_over_views_of_the_mse():
    x = windows()
    model = model_for(x)
    out = model(x, training=False)
    views, recon = out["views"].numpy(), out["reconstructions"].numpy()
    per_window = np.stack([((views[i] - recon[i]) ** 2).mean(axis=(1, 2)).sum() for i in range(len(x))])
    np.testing.assert_allclose(model.score(x).numpy(), per_window, rtol=1e-5)
    # Not the reference evaluation's batch mean: the windows' scores differ.
    assert np.ptp(per_window) > 0


@pytest.mark.parametrize("option, value", [("ssl_reduction", "max"), ("entropy_reduction", "none"),
                                           ("decoder_activation", "tanh")])
def test_unknown_loss_options_are_refused(option, value):
    with pytest.raises(ValueError, match=f"{option}='{value}'"):
        AMSL(**{option: value})
