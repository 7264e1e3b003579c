"""Temporal distribution matching (TDM): the boosting update of the importance weights.

During training the model accumulates `distance_epoch[l, t]`, the distance between segment
pairs' hidden states of layer l at time step t, summed over pairs and batches. At the end of
each epoch after pre-training, every weight whose distance grew since the previous epoch is
multiplied by 1 + sigmoid(d_new - d_old) and each layer's row is L1-normalised: the time
steps the model keeps failing to match get more weight.

The weights, the previous epoch's distances and the gate's weights are variables of the
model (`tdm_weights`, `distance_previous`, `gate_weights`), so a checkpoint carries them.

Example:
>>> model = AdaRNN(len_seq=24, num_features=6, num_domains=2)            # doctest: +SKIP
>>> model.fit(pair_stream, epochs=50, steps_per_epoch=steps,
...           callbacks=[TDMCallback(pre_epoch=40), TrainingCheckpoint(...)])  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import tensorflow as tf


def boosting_update(weights, distance_old, distance_new, epsilon: float = 1e-12):
    """The AdaRNN boosting rule on `[layers, len_seq]` arrays.

    Where `distance_new > distance_old + epsilon`: weights *= 1 + sigmoid(new - old); then
    every row is divided by its L1 norm.
    """
    # In the weights' dtype when that is float64 (a float64 model), else float32.
    weights = tf.convert_to_tensor(weights)
    dtype = tf.float64 if weights.dtype == tf.float64 else tf.float32
    weights = tf.cast(weights, dtype)
    distance_old, distance_new = tf.cast(distance_old, dtype), tf.cast(distance_new, dtype)
    grew = distance_new > distance_old + epsilon
    boosted = tf.where(grew, weights * (1.0 + tf.sigmoid(distance_new - distance_old)), weights)
    return boosted / tf.reduce_sum(tf.abs(boosted), axis=-1, keepdims=True)


class TDMCallback(keras.callbacks.Callback):
    """Runs AdaRNN's two phases on a `TemporalMatchingModel` (AdaRNN, AdaTransformer).

    - epochs 0 .. pre_epoch - 1: pre-training; the distances are weighted by the gates.
    - end of epoch pre_epoch - 1: the weights W become the gates' weights (uniform 1/len_seq
      when the model has no gates).
    - later epochs: the distances are weighted by W; at the end of every epoch after the first
      boosting epoch, `boosting_update(W, distance of the previous epoch, this epoch's)`.

    Put it before the checkpoint callback, so that a checkpoint holds the updated weights.

    Example:
    >>> callbacks = [TDMCallback(pre_epoch=40), TrainingCheckpoint("run/checkpoints", model)]  # doctest: +SKIP
    """

    def __init__(self, pre_epoch: int):
        super().__init__()
        if pre_epoch < 0:
            raise ValueError(f"pre_epoch {pre_epoch}: expected >= 0")
        self.pre_epoch = pre_epoch

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        model.boosting.assign(epoch >= self.pre_epoch)
        model.distance_epoch.assign(tf.zeros_like(model.distance_epoch))

    def on_epoch_end(self, epoch, logs=None):
        model = self.model
        if epoch == self.pre_epoch - 1 and model.use_gate:
            model.tdm_weights.assign(model.gate_weights)
        elif epoch >= self.pre_epoch:
            if epoch > self.pre_epoch:
                model.tdm_weights.assign(boosting_update(model.tdm_weights, model.distance_previous,
                                                         model.distance_epoch))
            model.distance_previous.assign(model.distance_epoch)
