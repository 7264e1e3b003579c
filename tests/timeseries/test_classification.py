"""AdaRNN for classification: the paper's five metrics against hand computation and
scikit-learn, the window statistics and the GBT baseline, the classification training step and learning
the watch exercises across time (the .keras round trip: tests/test_keras_objects.py)."""

import doctest
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

from kerastl.data import har
from kerastl.data.sensors import ChannelScaler
from kerastl.timeseries import AdaRNN, TDMCallback, adarnn, classification, distances, matching, tdc
from kerastl.timeseries.classification import (WindowStatisticsGBT, binary_auc, classification_scores,
                                               window_statistics)

# Confusion matrix [[3, 0, 0], [1, 1, 1], [0, 1, 3]] (rows: truth, columns: prediction).
LABELS = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
PREDICTED = np.array([0, 0, 0, 0, 1, 2, 1, 2, 2, 2])


def probabilities_predicting(predicted, num_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.0, 1.0, (len(predicted), num_classes))
    scores[np.arange(len(predicted)), predicted] += 1.0  # the predicted class is the most probable
    return scores / scores.sum(axis=1, keepdims=True)


def test_metrics_of_a_hand_computed_confusion_matrix_match_sklearn():
    probabilities = probabilities_predicting(PREDICTED)
    scores = classification_scores(LABELS, probabilities, ["a", "b", "c"])
    assert scores["confusion_matrix"] == [[3, 0, 0], [1, 1, 1], [0, 1, 3]]
    # precision 3/4, 1/2, 3/4; recall 1, 1/3, 3/4; F1 6/7, 2/5, 3/4
    assert scores["acc"] == pytest.approx(0.7)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(25 / 36)
    assert scores["f1"] == pytest.approx((6 / 7 + 2 / 5 + 3 / 4) / 3)
    assert scores["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3,
                                                      "auc": scores["per_class"]["b"]["auc"]})
    precision, recall, f1, _ = precision_recall_fscore_support(LABELS, PREDICTED, average="macro", zero_division=0)
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx((precision, recall, f1))
    assert scores["auc"] == pytest.approx(roc_auc_score(LABELS, probabilities, multi_class="ovr", average="macro"))


def test_auc_by_hand_with_ties_and_absent_classes_follow_sklearns_macro_rules():
    # positives 0.9, 0.5 vs negatives 0.5, 0.2, 0.1: 3 + (1/2 + 2) of 6 pairs ordered right.
    assert binary_auc([1, 1, 0, 0, 0], [0.9, 0.5, 0.5, 0.2, 0.1]) == pytest.approx(5.5 / 6)
    assert np.isnan(binary_auc([1, 1], [0.2, 0.3]))
    # Class 3 never occurs nor is predicted (left out of the averages); class 2 is predicted
    # but absent from the truth (precision and recall 0, no AUC).
    labels, predicted = np.array([0, 0, 1, 1, 1, 0]), np.array([0, 2, 1, 1, 0, 0])
    probabilities = probabilities_predicting(predicted, num_classes=4, seed=1)
    scores = classification_scores(labels, probabilities)
    expected = precision_recall_fscore_support(labels, predicted, average="macro", zero_division=0)[:3]
    assert (scores["precision"], scores["recall"], scores["f1"]) == pytest.approx(expected)
    assert scores["per_class"]["2"]["auc"] is None and scores["per_class"]["3"]["support"] == 0
    assert scores["auc"] == pytest.approx(np.mean([roc_auc_score(labels == c, probabilities[:, c]) for c in (0, 1)]))


@pytest.mark.parametrize("module", [classification, tdc, matching, adarnn, har], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"np": np}, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_window_statistics_by_hand():
    window = np.array([[[0.0, 3.0], [1.0, 2.0], [2.0, 1.0], [3.0, 0.0]]])  # channel 1 = channel 0 reversed
    features = window_statistics(window)[0]
    # mean, std, min, 25 %, median, 75 %, max, mean |step|, for each channel; then the correlation
    np.testing.assert_allclose(features, [1.5, 1.5, np.sqrt(1.25), np.sqrt(1.25), 0, 0, 0.75, 0.75, 1.5, 1.5,
                                          2.25, 2.25, 3, 3, 1, 1, -1], rtol=1e-6)


def test_gbt_keeps_the_best_validation_rounds_and_columns_for_unseen_classes():
    rng = np.random.default_rng(0)

    def windows(count):  # class 1 windows vary twice as much
        y = np.arange(count) % 2
        return rng.normal(size=(count, 16, 2)) * (1 + y)[:, None, None], y

    (x, y), (x_valid, y_valid) = windows(200), windows(60)
    model = WindowStatisticsGBT(max_rounds=30, seed=0).fit(x, y, x_valid, y_valid, num_classes=3)
    assert len(model.valid_log_loss) == 30
    assert model.best_rounds == int(np.argmin(model.valid_log_loss)) + 1
    probabilities = model.predict_proba(x_valid)
    assert probabilities.shape == (60, 3) and np.all(probabilities[:, 2] == 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert (probabilities.argmax(axis=1) == y_valid).mean() > 0.9


def test_classification_step_is_cross_entropy_per_segment_plus_matching():
    steps, features, k, batch, classes = 5, 3, 3, 6, 4
    keras.utils.set_random_seed(0)
    model = AdaRNN(len_seq=steps, num_features=features, num_domains=k, hidden_sizes=[5, 4], distance="mmd_linear",
                   tdm_lambda=0.7, use_gate=False, bottleneck_width=None, num_classes=classes)
    model.build((None, steps, features))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(k, batch, steps, features)).astype("float32")
    y = rng.integers(0, classes, size=(k, batch))
    flat = x.reshape(k * batch, steps, features)
    probabilities = model(flat).numpy().reshape(k, batch, classes)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    cross_entropy = -np.log(np.take_along_axis(probabilities, y[..., None], axis=-1)[..., 0]).mean(axis=1)
    hidden = [h.numpy().reshape(k, batch, steps, -1) for h in model.hidden_sequences(flat)]
    matching = sum(float(distances.mmd_linear(h[i, :, t], h[j, :, t])) / steps
                   for h in hidden for i, j in itertools.combinations(range(k), 2) for t in range(steps))
    task = sum(cross_entropy[i] + cross_entropy[j] for i, j in itertools.combinations(range(k), 2))
    logs = model.train_step((tf.constant(x), tf.constant(y)))
    assert float(logs["loss"]) == pytest.approx(task + 0.7 * matching, rel=1e-4)
    assert float(logs["cross_entropy"]) == pytest.approx(cross_entropy.mean(), rel=1e-4)
    assert float(logs["accuracy"]) == pytest.approx((probabilities.argmax(-1) == y).mean())
    assert "mse" not in logs


def test_a_classifier_has_no_residual_index():
    with pytest.raises(ValueError, match="num_classes 4: expected at least 2 classes and no residual_index"):
        AdaRNN(len_seq=8, num_features=3, num_classes=4, residual_index=0)


def test_adarnn_learns_the_watch_exercises_across_time():
    windows = har.load_windows("watch", window=32, stride=32)
    split = har.time_split(windows, "time", 0.7, 0.1)
    scaled = ChannelScaler("standard").fit(windows.x[split.train]).transform(windows.x)
    _, parts, _ = tdc.segment_windows(scaled[split.train], split.relative_time[split.train], k=2)
    keras.utils.set_random_seed(0)
    model = AdaRNN(len_seq=32, num_features=6, num_domains=2, hidden_sizes=[32, 32], bottleneck_width=None,
                   tdm_lambda=0.1, num_classes=7)
    model.build((None, 32, 6))
    model.compile(optimizer=keras.optimizers.Adam(5e-3, clipvalue=3.0))
    stream = har.window_batches(scaled, windows.y, [split.train[p] for p in parts], batch_size=32, seed=0)
    model.fit(stream, epochs=8, steps_per_epoch=15, shuffle=False, verbose=0, callbacks=[TDMCallback(pre_epoch=4)])
    scores = classification_scores(windows.y[split.test], model.predict(scaled[split.test], batch_size=512,
                                                                        verbose=0))
    # Measured: test ACC 0.72, macro F1 0.72, AUC 0.96 after these 120 steps; chance is 1/7.
    assert scores["acc"] > 0.55 and scores["f1"] > 0.5 and scores["auc"] > 0.9, scores
