"""`SemiSupervisedModel`: a classifier trained on labeled + unlabeled batches with `model.fit`."""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm, StepNetworks
from kerastl.ssl.precision import loss_dtype


@keras.saving.register_keras_serializable("kerastl")
class SemiSupervisedModel(keras.Model):
    """Wraps a network (images -> logits) and an SSL algorithm.

    Training batches are `((x_lb, y_lb), (index, x_weak, x_strong))` (the views the algorithm
    names, see `kerastl.data.pipeline.ssl_stream`), or `(x_lb, y_lb)` for the supervised
    baseline. Each step minimises what `algorithm.compute_losses` returns (by default
    `CE(labeled) + weight(step) * algorithm.unsupervised_loss(...)`). Which forward passes
    a step runs, and so which images batch norm normalises together and which pass moves
    its statistics, is the algorithm's and follows TorchSSL: FixMatch, FlexMatch and UDA run
    ONE pass over the concatenation of the labeled batch and the unlabeled views;
    Pseudo-Label, Pi-Model, Mean Teacher's student and VAT run the labeled batch alone (the
    only pass that moves the statistics) and each unlabeled view alone with the statistics
    frozen; MixMatch and ReMixMatch run the mixed batch in interleaved chunks of the labeled
    batch size, of which only the first moves them. The algorithm's own trainable weights
    (e.g. ReMixMatch's rotation head) are trained with the network's.

    An exponential moving average of the weights (`ema_network`, decay 0.999; BN statistics
    copied) is what `evaluate`, `predict` and `model(x)` use, and what apps export. With
    `ema_warmup`, the decay at step k is `min(decay, (1 + k) / (10 + k))`, so short runs are
    not evaluated on weights that barely moved from their initialisation.

    Metrics: `loss`, `sup_loss`, `unsup_loss`, `mask_ratio` (share of unlabeled examples
    whose pseudo-label passed the threshold) during training; `loss`, `accuracy` in evaluation.

    Under `tf.distribute`, build and compile it in the strategy's scope; on several workers
    use `kerastl.ssl.MultiWorkerMirroredStrategy` (Keras' `fit` needs it there).

    Example:
    >>> from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer
    >>> model = SemiSupervisedModel(small_cnn((28, 28, 1), 10),
    ...                             build_algorithm("flexmatch", len(x_ulb), 10, total_steps=5000))
    >>> model.compile(optimizer=torchssl_optimizer(0.03, total_steps=5000))
    >>> model.fit(ssl_stream(...), steps_per_epoch=500, epochs=10,
    ...           validation_data=eval_dataset(x_test, y_test))                 # doctest: +SKIP
    """

    def __init__(self, network: keras.Model, algorithm: SSLAlgorithm, ema_decay: float = 0.999,
                 ema_warmup: bool = False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(network, dict):
            network = keras.saving.deserialize_keras_object(network)
        if isinstance(algorithm, dict):
            algorithm = keras.saving.deserialize_keras_object(algorithm)
        self.network = network
        self.algorithm = algorithm
        self.ema_decay = float(ema_decay)
        self.ema_warmup = bool(ema_warmup)
        self.ema_network = keras.models.clone_model(network)
        self.ema_network.set_weights(network.get_weights())
        self.ema_network.trainable = False
        # Keras runs a non-trainable BN layer in inference mode even with training=True. A
        # teacher pass (Mean Teacher) must normalise with batch statistics, as TorchSSL's
        # does, so the EMA copy's BN layers stay "trainable": no optimizer ever sees them,
        # and their moving statistics are overwritten by the online network's every step.
        for layer in self.ema_network.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = True
        self._pairs = list(zip(network.weights, self.ema_network.weights))
        self._feature_network = _Untracked(_feature_network(network))
        self.algorithm.attach(network)
        for online, ema in self._pairs:
            if tuple(online.shape) != tuple(ema.shape):
                raise ValueError("the EMA copy's weights do not line up with the network's")
        self._trackers = {name: keras.metrics.Mean(name=name)
                          for name in ("loss", "sup_loss", "unsup_loss", "mask_ratio")}
        self._eval_loss = keras.metrics.Mean(name="loss")
        self._eval_accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def build(self, input_shape=None):
        # The network and its EMA copy are built at construction; the algorithm's state
        # (e.g. CPL's counters) is created in its constructor.
        self.algorithm.built = True
        self.built = True

    def _trained_variables(self):
        # The network's, plus any weights of the algorithm itself (ReMixMatch's rotation head).
        return self.network.trainable_variables + self.algorithm.trainable_variables

    @property
    def trainable_variables(self):
        # What the optimizer trains, for every caller (e.g. a checkpoint that builds the
        # optimizer before restoring): never the EMA copy, whose BN layers are flagged
        # trainable only so that a teacher pass normalises with batch statistics.
        return self._trained_variables()

    @property
    def trainable_weights(self):
        return self._trained_variables()

    @property
    def metrics(self):
        return [*self._trackers.values(), self._eval_loss, self._eval_accuracy]

    def call(self, inputs, training=False):
        # Inference (evaluate, predict, export) uses the EMA weights; training uses the network.
        return self.network(inputs, training=True) if training else self.ema_network(inputs, training=False)

    def _unpack(self, data):
        if not self.algorithm.views:
            labeled = data[0] if isinstance(data[0], (tuple, list)) else data
            return labeled[0], labeled[1], None, []
        (x_lb, y_lb), unlabeled = data
        return x_lb, y_lb, unlabeled[0], list(unlabeled[1:1 + len(self.algorithm.views)])

    def train_step(self, data):
        x_lb, y_lb, index, views = self._unpack(data)
        step = tf.convert_to_tensor(self.optimizer.iterations)  # this step's k, read before the update
        nets = StepNetworks(self.network, self.ema_network, self._feature_network.value)
        with tf.GradientTape() as tape:
            losses = self.algorithm.compute_losses(nets, x_lb, y_lb, index, views, step)
            # Replicas' gradients are summed: each replica's loss is its share of the global mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = self.optimizer.scale_loss(losses["loss"] / replicas)
        variables = self._trained_variables()
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self._update_ema(step)
        for name in ("loss", "sup_loss", "unsup_loss"):
            self._trackers[name].update_state(losses[name])
        masked = losses.get("mask") is not None
        if masked:
            self._trackers["mask_ratio"].update_state(tf.reduce_mean(losses["mask"]))
        return _loggable({name: tracker.result() for name, tracker in self._trackers.items()
                          if name != "mask_ratio" or masked})

    def _update_ema(self, step):
        decay = self.ema_decay
        if self.ema_warmup:  # in the loss dtype: float64 for a float64 network's weights
            k = tf.cast(step, loss_dtype(self.network.compute_dtype))
            decay = tf.minimum(decay, (1.0 + k) / (10.0 + k))
        for online, ema in self._pairs:
            if online.trainable:
                weight = decay if isinstance(decay, float) else tf.cast(decay, ema.dtype)
                ema.assign(weight * ema + (1.0 - weight) * online)
            else:  # BN moving statistics are copied, as TorchSSL's EMA copies buffers
                ema.assign(online)

    def test_step(self, data):
        x, y = data[0], data[1]
        logits = tf.cast(self(x, training=False), tf.float32)
        self._eval_loss.update_state(tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)))
        self._eval_accuracy.update_state(y, logits)
        return _loggable({"loss": self._eval_loss.result(), "accuracy": self._eval_accuracy.result()})

    def get_config(self):
        return {**super().get_config(), "network": keras.saving.serialize_keras_object(self.network),
                "algorithm": keras.saving.serialize_keras_object(self.algorithm),
                "ema_decay": self.ema_decay, "ema_warmup": self.ema_warmup}


class _Untracked:
    """Holds an object out of Keras' attribute tracking (the feature view shares the
    network's layers; tracking it would list their weights twice)."""

    def __init__(self, value):
        self.value = value


def _feature_network(network):
    """`network` with two outputs, `(features, logits)`, when it has a `features` layer."""
    try:
        features = network.get_layer("features").output
    except ValueError:
        return None
    return keras.Model(network.inputs, [features, network.outputs[0]], name=f"{network.name}_features")


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` takes nested values too.

    Keras is missing a public way to train with `fit` on several workers: Keras 3 (3.15, and
    3.16 still) `fit` starts by reducing its first batch across replicas with ONE
    `strategy.reduce` call over the whole batch structure (`(x, y)`, or the SSL streams'
    `((x_lb, y_lb), (index, *views))`), and TensorFlow's multi-worker `reduce` takes a single
    tensor: on two or more workers, `fit` fails on any nested batch before the first step
    (measured with Keras 3.15.1 and TF 2.17.1, also for a one-layer model on `(x, y)`
    batches), and no public option skips that reduction. This strategy
    reduces each tensor of the structure. tests/ssl/test_distributed.py checks that Keras
    still reduces the whole batch in one call; when that test fails, Keras changed and this
    class may be needed no more.

    Example:
    >>> strategy = MultiWorkerMirroredStrategy()        # TF_CONFIG names the workers  # doctest: +SKIP
    >>> with strategy.scope():                                                      # doctest: +SKIP
    ...     model = SemiSupervisedModel(network, algorithm)
    """

    def reduce(self, reduce_op, value, axis=None):
        reduce_one = super().reduce
        return tf.nest.map_structure(lambda tensor: reduce_one(reduce_op, tensor, axis), value)


def _loggable(logs: dict) -> dict:
    """Step outputs that Keras can reduce under every strategy.

    Keras 3 reduces the per-worker logs of MultiWorkerMirroredStrategy with a mean over
    axis 0, which fails on scalars (tensorflow/tensorflow#72388): there, logs are shaped [1].
    """
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {key: tf.reshape(value, [1]) for key, value in logs.items()}
    return logs
