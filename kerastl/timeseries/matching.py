"""The training step shared by AdaRNN and AdaTransformer: forecasting (or classification) loss
on K segments plus temporal distribution matching between every pair of segments.

A batch holds one batch per segment (domain): `x` `[K, B, len_seq, features]`, `y` `[K, B]`.
All K*B windows go through the encoder at once; the distances between segments i < j are
computed for all pairs, all time steps and all layers in a few tensor operations (no
per-time-step Python loop). For every pair, as in the reference:

    loss_pair = MSE_i + MSE_j + lambda * sum_l sum_t w[l, t] * d(h_i^l[:, t], h_j^l[:, t])

and the step minimises the sum over pairs. `w` is the gate's softmax over time during
pre-training and the boosted `tdm_weights` afterwards (see `TDMCallback`).

`matching_scale="task"` keeps the matching term on the forecasting loss's scale: the summed
distance L_tdm is multiplied by min(1, task / |L_tdm|) (both held constant for the gradient),
so lambda * term never exceeds lambda * the task loss of the step (with "none", the
reference's form, an adversarial term grew to 15-30 times the task loss and made forecasts
worse).

With `num_classes` the models classify windows: the head has one logit per class, the
targets are class indices `[K, B]` and a segment's task loss is its mean cross-entropy
instead of its MSE (the matching is unchanged).

`matching` chooses what is matched:
- "tdm": every layer, every time step, weighted (AdaRNN / AdaTransformer);
- "final": only the last layer's final hidden state, unweighted (MMD-RNN, DANN-RNN);
- "none": no matching (the GRU / Transformer baselines under the same loop).
"""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf

from kerastl.timeseries.distances import get_distance, lookup
from kerastl.timeseries.gates import TemporalGate

MATCHINGS = ("tdm", "final", "none")
MATCHING_SCALES = ("none", "task")


@keras.saving.register_keras_serializable("kerastl")
class ForecastHead(keras.layers.Layer):
    """The prediction from the last time step's hidden state.

    With `bottleneck_width`: the reference's bottleneck head, Dense(w) -> Dense(w) ->
    BatchNorm -> ReLU -> Dropout -> Dense(units), with its initialisation (both bottleneck
    Dense N(0, 0.005) kernels and bias 0.1; the output Dense Xavier-normal kernel and
    PyTorch's default bias U(+-1/sqrt(w))) and PyTorch's batch norm (momentum 0.1, eps 1e-5);
    the reference's dropout is 0.5. Otherwise Dense(units). Returns `[batch]` for `units=1`
    (a forecast), else `[batch, units]` (e.g. one logit per class).

    Example:
    >>> tuple(ForecastHead(64)(np.zeros((8, 32), "float32")).shape)
    (8,)
    >>> tuple(ForecastHead(None, units=6)(np.zeros((8, 32), "float32")).shape)
    (8, 6)
    """

    def __init__(self, bottleneck_width: int | None = 64, dropout: float = 0.0, units: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.bottleneck_width = bottleneck_width
        self.dropout_rate = dropout
        self.units = int(units)
        self.blocks = []
        if bottleneck_width:
            def bottleneck(name):
                return keras.layers.Dense(bottleneck_width, kernel_initializer=keras.initializers.RandomNormal(0.0, 0.005),
                                          bias_initializer=keras.initializers.Constant(0.1), name=name)

            bound = 1.0 / bottleneck_width ** 0.5
            self.blocks = [bottleneck("bottleneck_1"), bottleneck("bottleneck_2"),
                           # momentum 0.9 = PyTorch's BatchNorm momentum 0.1
                           keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="bottleneck_norm"),
                           keras.layers.ReLU(name="bottleneck_relu"),
                           keras.layers.Dropout(dropout, name="bottleneck_dropout")]
            self.output_dense = keras.layers.Dense(
                self.units, name="output",
                kernel_initializer=keras.initializers.RandomNormal(0.0, (2.0 / (bottleneck_width + self.units)) ** 0.5),
                bias_initializer=keras.initializers.RandomUniform(-bound, bound))
        else:
            self.output_dense = keras.layers.Dense(self.units, name="output")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for block in self.blocks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.output_dense.build(shape)
        self.built = True

    def call(self, hidden, training=None):
        for block in self.blocks:
            hidden = block(hidden, training=training)
        output = self.output_dense(hidden)
        return output[..., 0] if self.units == 1 else output

    def get_config(self):
        return {**super().get_config(), "bottleneck_width": self.bottleneck_width, "dropout": self.dropout_rate,
                "units": self.units}


class TemporalMatchingModel(keras.Model):
    """Base class: a sequence encoder, a forecast head and the TDM training step.

    Subclasses create `self.encoder_layers` (each maps `[B, T, H_in]` to `[B, T, H_l]`) and
    `self.hidden_sizes`, then call `self._create_matching()`. `model(window)` returns the
    forecast `[batch]` for windows `[batch, len_seq, features]`; `fit` takes batches
    `([K, B, len_seq, features], [K, B])` from `kerastl.data.series.segment_batches`;
    `evaluate` / validation take ordinary `([B, len_seq, features], [B])` batches.

    `residual_index`: when set, the model forecasts the change from the window's last value
    of that feature (the target's column), i.e. forecast = last value + head(h).

    `num_classes`: when set, the model classifies windows: `model(window)` returns class
    probabilities `[batch, num_classes]` (softmax of the head's logits), the targets are
    class indices, training minimises each segment's cross-entropy (from the logits) plus
    the matching loss, and the logs report `cross_entropy` and `accuracy` instead of `mse`.
    (`kerastl.data.har.window_batches` streams such batches.)

    `dropout` drops the encoder's inputs (GRU) or attention / feed-forward outputs
    (Transformer) and, unless `head_dropout` is given, the bottleneck head's features;
    `matching_scale` is "none" (lambda * L_tdm, the reference) or "task" (the term held on
    the task loss's scale, see the module's docstring).
    """

    def __init__(self, len_seq: int, num_features: int, num_domains: int = 2, matching: str = "tdm",
                 distance: str = "adversarial", tdm_lambda: float = 0.5, use_gate: bool = True,
                 bottleneck_width: int | None = 64, dropout: float = 0.0, residual_index: int | None = None,
                 num_classes: int | None = None, head_dropout: float | None = None, matching_scale: str = "none",
                 **kwargs):
        super().__init__(**kwargs)
        if matching_scale not in MATCHING_SCALES:
            raise ValueError(f"matching_scale {matching_scale!r}: expected one of {', '.join(MATCHING_SCALES)}")
        if num_classes is not None and (num_classes < 2 or residual_index is not None):
            raise ValueError(f"num_classes {num_classes}: expected at least 2 classes and no residual_index "
                             "(a classifier has no last value to forecast the change from)")
        if matching not in MATCHINGS:
            raise ValueError(f"matching {matching!r}: expected one of {', '.join(MATCHINGS)}")
        lookup(distance)
        if num_domains < 2:
            raise ValueError(f"num_domains {num_domains}: expected at least 2 segments to match")
        self.len_seq = len_seq
        self.num_features = num_features
        self.num_domains = num_domains
        self.matching = matching
        self.distance_name = distance
        self.tdm_lambda = tdm_lambda
        self.use_gate = bool(use_gate and matching == "tdm")
        self.bottleneck_width = bottleneck_width
        self.dropout_rate = dropout
        self.head_dropout = head_dropout
        self.matching_scale = matching_scale
        self.residual_index = residual_index
        self.num_classes = None if num_classes is None else int(num_classes)
        self.head = ForecastHead(bottleneck_width, dropout if head_dropout is None else head_dropout,
                                 units=self.num_classes or 1, name="head")
        pairs = list(itertools.combinations(range(num_domains), 2))
        self._pair_i = tf.constant([i for i, _ in pairs], tf.int32)
        self._pair_j = tf.constant([j for _, j in pairs], tf.int32)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        # The task loss per segment: MSE (forecasting) or cross-entropy (classification).
        self.task_tracker = keras.metrics.Mean(name="cross_entropy" if self.num_classes else "mse")
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy") if self.num_classes else None
        self.transfer_tracker = keras.metrics.Mean(name="transfer")

    def _create_matching(self):
        layers = len(self.hidden_sizes)
        uniform = keras.initializers.Constant(1.0 / self.len_seq)
        shape = (layers, self.len_seq)
        # TDM state as model variables: a checkpoint of the model carries it.
        self.tdm_weights = self.add_weight(shape=shape, initializer=uniform, trainable=False, name="tdm_weights")
        self.gate_weights = self.add_weight(shape=shape, initializer=uniform, trainable=False, name="gate_weights")
        self.distance_epoch = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                              name="distance_epoch")
        self.distance_previous = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                                 name="distance_previous")
        self.boosting = self.add_weight(shape=(), initializer="zeros", trainable=False, name="boosting")
        matched = range(layers) if self.matching == "tdm" else [layers - 1] if self.matching == "final" else []
        self.matched_layers = list(matched)
        # One distance per matched layer (a trainable one, such as the adversarial
        # discriminator, has its own weights per layer).
        trainable = lookup(self.distance_name).trainable
        self.distances = [get_distance(self.distance_name, **({"name": f"discriminator_{l}"} if trainable else {}))
                          for l in self.matched_layers]
        self.gates = [TemporalGate(self.len_seq, name=f"gate_{l}") for l in range(layers)] if self.use_gate else []

    # -- forward -------------------------------------------------------------------------
    def hidden_sequences(self, windows, training=None):
        """The hidden sequence `[B, T, H_l]` of every encoder layer."""
        hidden, outputs = windows, []
        for layer in self.encoder_layers:
            hidden = layer(hidden, training=training)
            outputs.append(hidden)
        return outputs

    def _forecast(self, windows, last_hidden, training):
        """The head's output: the forecast `[B]`, or the class logits `[B, C]`."""
        forecast = self.head(last_hidden, training=training)
        if self.residual_index is not None:
            # Forecast the change from the last observed value: the hidden states then need
            # not carry the level, which differs between segments and would fight matching.
            forecast = forecast + tf.cast(windows[:, -1, self.residual_index], forecast.dtype)
        return forecast

    def _outputs(self, windows, training=None):
        return self._forecast(windows, self.hidden_sequences(windows, training)[-1][:, -1, :], training)

    def call(self, windows, training=None):
        outputs = self._outputs(windows, training)
        return keras.ops.softmax(outputs, axis=-1) if self.num_classes else outputs

    def _task_losses(self, outputs, targets):
        """Per-window task loss: squared error, or cross-entropy from the logits."""
        if self.num_classes:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), outputs)
        return tf.square(outputs - tf.cast(targets, outputs.dtype))

    def _update_task_metrics(self, outputs, targets, task):
        self.task_tracker.update_state(task)
        if self.num_classes:
            self.accuracy_tracker.update_state(targets, outputs)

    def _task_logs(self):
        logs = {"loss": self.loss_tracker.result(), self.task_tracker.name: self.task_tracker.result()}
        if self.num_classes:
            logs["accuracy"] = self.accuracy_tracker.result()
        return logs

    def build(self, input_shape):
        # A dry run on zeros builds every sub-layer (encoder, head, gates, discriminators),
        # so fit() need not trace the model symbolically with pair-shaped batches.
        length, features = input_shape[-2], input_shape[-1]
        sequences = self.hidden_sequences(tf.zeros((2, length, features)))
        self.head(sequences[-1][:, -1, :])
        for gate, hidden in zip(self.gates, sequences):
            gate(hidden, hidden)
        for distance, layer in zip(self.distances, self.matched_layers):
            if isinstance(distance, keras.layers.Layer):
                distance(sequences[layer], sequences[layer])
        self.built = True

    # -- training ------------------------------------------------------------------------
    def _forecast_and_matching_losses(self, windows, targets, training):
        k = self.num_domains
        shape = tf.shape(windows)
        batch = shape[1]
        flat = tf.reshape(windows, tf.concat([[k * batch], shape[2:]], axis=0))
        flat_targets = tf.reshape(targets, [k * batch])
        sequences = self.hidden_sequences(flat, training=training)
        outputs = self._forecast(flat, sequences[-1][:, -1, :], training)
        per_segment = tf.reduce_mean(tf.reshape(self._task_losses(outputs, flat_targets), [k, batch]), axis=1)
        task = tf.reduce_sum(tf.gather(per_segment, self._pair_i) + tf.gather(per_segment, self._pair_j))
        transfer = tf.zeros((), task.dtype)  # float64 in a float64 model
        layer_distances = [tf.zeros([self.len_seq], task.dtype) for _ in self.hidden_sizes]
        gate_means = []
        for distance, layer in zip(self.distances, self.matched_layers):
            hidden = sequences[layer]
            hidden = tf.reshape(hidden, [k, batch, self.len_seq, tf.shape(hidden)[-1]])
            source, target = tf.gather(hidden, self._pair_i), tf.gather(hidden, self._pair_j)  # [P, B, T, H]
            if self.matching == "final":
                transfer += tf.reduce_sum(distance(source[:, :, -1], target[:, :, -1]))
                continue
            # [P, T, B, H]: one distance per pair and time step, in one call.
            per_step = distance(tf.transpose(source, [0, 2, 1, 3]), tf.transpose(target, [0, 2, 1, 3]))
            layer_distances[layer] = tf.reduce_sum(tf.stop_gradient(per_step), axis=0)
            weights = tf.broadcast_to(tf.convert_to_tensor(self.tdm_weights)[layer], tf.shape(per_step))
            if self.use_gate:
                alpha = self.gates[layer](source, target, training=training)  # [P, T]
                gate_means.append(tf.reduce_mean(tf.stop_gradient(alpha), axis=0))
                weights = tf.where(tf.convert_to_tensor(self.boosting) > 0.5, weights, alpha)
            transfer += tf.reduce_sum(weights * per_step)
        if self.matching_scale == "task":
            # Never more than the task loss: min(1, task / |transfer|), held constant.
            scale = tf.minimum(1.0, tf.stop_gradient(task) / (tf.abs(tf.stop_gradient(transfer)) + 1e-12))
            loss = task + self.tdm_lambda * scale * transfer
        else:
            loss = task + self.tdm_lambda * transfer
        metric_terms = (outputs, flat_targets, tf.reduce_mean(per_segment))
        return loss, transfer, tf.stack(layer_distances), gate_means, metric_terms

    def train_step(self, data):
        windows, targets = data[0], data[1]
        with tf.GradientTape() as tape:
            loss, transfer, step_distances, gate_means, metric_terms = self._forecast_and_matching_losses(
                windows, targets, training=True)
        variables = self.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply(gradients, variables)
        if self.matching == "tdm":
            self.distance_epoch.assign_add(step_distances)
        if gate_means:
            # The last pre-training batch's gate weights (averaged over segment pairs): what W
            # starts from; kept as they were once boosting has taken over.
            pre_training = tf.convert_to_tensor(self.boosting) < 0.5
            self.gate_weights.assign(tf.where(pre_training, tf.stack(gate_means), self.gate_weights))
        self.loss_tracker.update_state(loss)
        self._update_task_metrics(*metric_terms)
        self.transfer_tracker.update_state(transfer)
        return {**self._task_logs(), "transfer": self.transfer_tracker.result()}

    def test_step(self, data):
        windows, targets = data[0], data[1]
        outputs = self._outputs(windows, training=False)
        task = tf.reduce_mean(self._task_losses(outputs, targets))
        self.loss_tracker.update_state(task)
        self._update_task_metrics(outputs, targets, task)
        return self._task_logs()

    @property
    def metrics(self):
        trackers = (self.loss_tracker, self.task_tracker, self.accuracy_tracker, self.transfer_tracker)
        return [tracker for tracker in trackers if tracker is not None]

    def get_config(self):
        return {**super().get_config(), "len_seq": self.len_seq, "num_features": self.num_features,
                "num_domains": self.num_domains, "matching": self.matching, "distance": self.distance_name,
                "tdm_lambda": self.tdm_lambda, "use_gate": self.use_gate,
                "bottleneck_width": self.bottleneck_width, "dropout": self.dropout_rate,
                "residual_index": self.residual_index, "num_classes": self.num_classes,
                "head_dropout": self.head_dropout, "matching_scale": self.matching_scale}
