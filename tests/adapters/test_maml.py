"""First-order MAML: a toy linear problem against a hand-computed update, and on adapters."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kerastl.adapters.maml import first_order_maml_step, make_inner_optimizer, split_batch
from kerastl.adapters.model import MultilingualASR

LR, BETA2, EPS = 0.01, 0.999, 1e-8


def toy_tasks():
    rng = np.random.default_rng(0)
    tasks = []
    for key, true_w in (("a", [1.0, -2.0]), ("b", [-0.5, 3.0])):
        x = rng.normal(size=(4, 2)).astype("float32")
        tasks.append((key, {"x": x, "y": (x @ np.array(true_w)).astype("float32")}))
    return tasks


def squared_error(w, batch):
    return float(np.mean((batch["x"] @ w - batch["y"]) ** 2))


def squared_error_gradient(w, batch):
    residual = batch["x"] @ w - batch["y"]
    return 2 * batch["x"].T @ residual / len(residual)


def hand_maml(w0, tasks, meta_lr, progress):
    """The update written out: Adam with beta1 = 0 (m = g), one state for the whole step."""
    v, t, update = np.zeros_like(w0), 0, np.zeros_like(w0)
    for _, batch in tasks:
        support = {k: x[:2] for k, x in batch.items()}
        query = {k: x[2:] for k, x in batch.items()}
        w = w0.copy()
        for half in (support, query):
            if half is query:
                w_support = w.copy()
            g = squared_error_gradient(w, half)
            t += 1
            v = BETA2 * v + (1 - BETA2) * g ** 2
            w = w - LR * g / (np.sqrt(v / (1 - BETA2 ** t)) + EPS)
        update += w - w_support                      # theta_after_query - theta_after_support
    return w0 + meta_lr * (1 - progress) * update / len(tasks)


def test_one_meta_step_matches_the_hand_computed_first_order_update():
    w0 = np.array([0.3, 0.7])
    w = keras.Variable(w0.astype("float32"))
    tasks = toy_tasks()
    seen = []

    def loss_fn(key, batch):
        seen.append((key, len(batch["y"])))
        return tf.reduce_mean(tf.square(tf.linalg.matvec(batch["x"], w) - batch["y"]))

    facts = first_order_maml_step([w], tasks, loss_fn, meta_lr=1.0, progress=0.25)
    np.testing.assert_allclose(w.numpy(), hand_maml(w0, tasks, 1.0, 0.25), rtol=1e-5, atol=1e-6)
    assert seen == [("a", 2), ("a", 2), ("b", 2), ("b", 2)]   # support then query, per task
    support_loss = np.mean([squared_error(w0, {k: x[:2] for k, x in b.items()}) for _, b in tasks])
    assert facts["support_loss"] == pytest.approx(support_loss, rel=1e-5)
    assert facts["outer_step_size"] == pytest.approx(0.75)
    # With beta1 = 0 the first Adam step moves each weight by lr against the gradient's sign,
    # so the update is not theta_query - theta_0 (which would include the support step).
    assert not np.allclose(w.numpy(), w0 + 0.75 * np.mean(
        [-LR * np.sign(squared_error_gradient(w0, {k: x[:2] for k, x in b.items()})) for _, b in tasks], 0))


def test_a_reused_inner_optimizer_keeps_its_moments_and_progress_one_freezes():
    w = keras.Variable(np.array([0.3, 0.7], "float32"))
    optimizer = make_inner_optimizer()
    loss_fn = lambda key, batch: tf.reduce_mean(tf.square(tf.linalg.matvec(batch["x"], w) - batch["y"]))  # noqa: E731
    before = w.numpy().copy()
    first_order_maml_step([w], toy_tasks(), loss_fn, meta_lr=1.0, progress=1.0, inner_optimizer=optimizer)
    np.testing.assert_array_equal(w.numpy(), before)            # step size meta_lr * (1 - 1) = 0
    first_order_maml_step([w], toy_tasks(), loss_fn, meta_lr=1.0, inner_optimizer=optimizer)
    assert int(optimizer.iterations) == 8                       # 2 calls x 2 tasks x (support, query)
    assert float(optimizer.beta_1) == 0.0 and float(optimizer.learning_rate) == pytest.approx(0.01)


def test_split_batch_halves_every_tensor_and_drops_an_odd_last_example():
    support, query = split_batch({"a": np.arange(5), "b": np.arange(10).reshape(5, 2)})
    np.testing.assert_array_equal(support["a"], [0, 1])
    np.testing.assert_array_equal(query["a"], [2, 3])
    np.testing.assert_array_equal(query["b"], [[4, 5], [6, 7]])
    with pytest.raises(ValueError, match="at least 2"):
        split_batch({"a": np.arange(1)})


def test_meta_learning_a_shared_adapter_set_changes_only_those_adapters():
    keras.utils.set_random_seed(0)
    asr = MultilingualASR({"ru": 6, "it": 5}, num_layers=1, hidden_dim=8, num_heads=2, intermediate_dim=16,
                          adapter_dim=4, dropout=0.0)
    asr.add_adapters("meta")
    recognizers = {lang: asr.recognizer(lang, "adapter", adapter="meta") for lang in ("ru", "it")}
    rng = np.random.default_rng(0)

    def batch(vocab):
        return {"features": rng.normal(size=(4, 40, 80)).astype("float32"),
                "feature_lengths": np.full(4, 40, "int32"),
                "labels": rng.integers(1, vocab, size=(4, 3)).astype("int32"), "label_lengths": np.full(4, 3, "int32")}

    tasks = [("ru", batch(6)), ("it", batch(5))]
    frozen = [v.numpy().copy() for v in asr.variables_of("backbone") + asr.variables_of("head")]
    meta = asr.variables_of("adapters", "meta")
    before = [v.numpy().copy() for v in meta]
    loss_fn = tf.function(lambda lang, half: recognizers[lang].batch_loss(half)[0])
    facts = first_order_maml_step(meta, tasks, loss_fn, meta_lr=1.0)
    assert np.isfinite(facts["query_loss"])
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, meta)]
    assert any(changed)
    for value, variable in zip(frozen, asr.variables_of("backbone") + asr.variables_of("head")):
        np.testing.assert_array_equal(value, variable.numpy())
