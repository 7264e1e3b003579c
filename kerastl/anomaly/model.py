"""The AMSL model: self-supervised views, a shared conv encoder, global + local memories,
adaptive fusion and one decoder per view (Zhang et al., TKDE 2022).

A window `[time, channels]` becomes 1 + len(transformations) views (`transforms.make_views`),
each min-max scaled with per-view, per-channel ranges fitted on training data (`adapt`).
Each view, seen as a one-channel image, goes through the shared encoder (Conv 4x4 ReLU,
MaxPool 2, Conv 4x4 ReLU, MaxPool 2) to features z. A shared head classifies which view z
came from (cross-entropy, weight `ssl_weight`). The global memory (shared by all views) and
the view's local memory each read z; `AdaptiveFusion` mixes the reads into z_hat; the view's
decoder (transposed convs, a sigmoid output as the views lie in [0, 1]) reconstructs the
view from concat[z, z_hat].

Loss, with the reference code's weights (its train.py): sum over views of the view's MSE
(mean over batch, time, channels) + `entropy_weight` * sum over views and over both memories
of the mean addressing entropy (-w log w averaged over positions and slots) + `ssl_weight` *
sum over views of the view's cross-entropy (mean over batch). Named options keep the first
port's choices: `ssl_reduction="mean"` (the CE averaged over views), `entropy_reduction="sum"`
(each feature's entropy summed over slots, averaged over positions and views),
`decoder_activation="linear"`. The anomaly score of a window is the sum over views of its
reconstruction MSE (`score`); at scoring time the views use a fixed seed with parameters
shared by the whole batch, so each window's score depends on that window only (the
reference code's evaluation averages over a batch instead).

Ablations are options: `transformations=()` (no self-supervision: the original view only,
no view classifier), `memory="none" | "global" | "local" | "both"`.

Example:
>>> import numpy as np, keras
>>> windows = np.random.rand(32, 16, 3).astype("float32")
>>> model = AMSL(num_slots=20, filters=(4, 8))
>>> model.adapt(windows)
>>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
>>> history = model.fit(windows, batch_size=16, epochs=1, verbose=0)
>>> model.score(windows[:4]).shape
TensorShape([4])
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from kerastl.anomaly.memory import AdaptiveFusion, MemoryModule
from kerastl.anomaly.transforms import DEFAULT_TRANSFORMATIONS, check_transformations, make_views

MEMORY_MODES = ("both", "global", "local", "none")
# Scoring draws the random view parameters from this fixed seed (see the module docstring).
SCORING_SEED = (20220101, 0)


def padded_size(size: int, multiple: int = 4) -> int:
    """The size after zero padding to a multiple of `multiple` (two 2x poolings need 4)."""
    return -(-int(size) // multiple) * multiple


def conv_encoder(steps: int, channels: int, filters: Sequence[int], name: str = "encoder") -> keras.Sequential:
    """[batch, time, channels, 1] -> [batch, time'/4, channels'/4, filters[1]] (time', channels'
    padded up to multiples of 4 at the start, as the reference pads DSADS' 125 x 45 to 128 x 48)."""
    pad = ((padded_size(steps) - steps, 0), (padded_size(channels) - channels, 0))
    return keras.Sequential([
        keras.layers.ZeroPadding2D(pad),
        keras.layers.Conv2D(filters[0], 4, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
        keras.layers.Conv2D(filters[1], 4, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2, padding="same"),
    ], name=name)


def conv_decoder(steps: int, channels: int, filters: Sequence[int], name: str = "decoder",
                 output_activation: str | None = None) -> keras.Sequential:
    """Features [batch, time'/4, channels'/4, d] -> [batch, time, channels, 1]: transposed convs
    (2 * filters[1], then filters[1] and filters[0] with stride 2, then 1 with
    `output_activation`, None = linear), cropped."""
    crop = ((padded_size(steps) - steps, 0), (padded_size(channels) - channels, 0))
    return keras.Sequential([
        keras.layers.Conv2DTranspose(2 * filters[1], 4, padding="same", activation="relu"),
        keras.layers.Conv2DTranspose(filters[1], 4, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2DTranspose(filters[0], 4, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2DTranspose(1, 4, padding="same", activation=output_activation),
        keras.layers.Cropping2D(crop),
    ], name=name)


@keras.saving.register_keras_serializable("kerastl")
class AMSL(keras.Model):
    """Adaptive Memory networks with Self-supervised Learning (see the module docstring).

    Args:
        transformations: names from `transforms.TRANSFORMATIONS` (default: the paper's six).
        num_slots: slots per memory (paper: 500).
        memory: "both" (global + local, fused), "global", "local" or "none".
        filters: the encoder's two conv widths (paper: 32, 64).
        shrink_threshold: MemAE hard shrinkage in the memories (0 = off).
        entropy_weight: weight of the memories' addressing-entropy loss (paper: 2e-4).
        ssl_weight: weight of the view-classification loss (paper: 1.0).
        ssl_reduction: "sum" (the reference's) or "mean" of the per-view cross-entropies.
        entropy_reduction: "mean" (the reference's: -w log w averaged over positions and slots,
            summed over views) or "sum" (each feature's entropy, averaged over positions and views).
        decoder_activation: "sigmoid" (the reference's) or "linear" decoder output.
        head_units, dropout: the view classifier's hidden layer (paper: 128, 0.5).
        seed: salt of the training views' stateless seeds (the other half is the step).

    Example (the "global memory only" ablation, as a user would train it):
    >>> model = AMSL(memory="global", num_slots=100)                     # doctest: +SKIP
    >>> model.adapt(x_train_normal)          # per-view min-max ranges   # doctest: +SKIP
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))             # doctest: +SKIP
    >>> model.fit(x_train_normal, batch_size=16, epochs=100)             # doctest: +SKIP
    >>> scores = model.predict(x_test)       # one score per window      # doctest: +SKIP
    """

    def __init__(self, transformations: Sequence[str] = DEFAULT_TRANSFORMATIONS, num_slots: int = 500,
                 memory: str = "both", filters: Sequence[int] = (32, 64), shrink_threshold: float = 0.0,
                 entropy_weight: float = 2e-4, ssl_weight: float = 1.0, head_units: int = 128,
                 dropout: float = 0.5, seed: int = 0, ssl_reduction: str = "sum", entropy_reduction: str = "mean",
                 decoder_activation: str = "sigmoid", **kwargs):
        super().__init__(**kwargs)
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory={memory!r}: expected one of {', '.join(MEMORY_MODES)}")
        for option, value, allowed in (("ssl_reduction", ssl_reduction, ("sum", "mean")),
                                       ("entropy_reduction", entropy_reduction, ("mean", "sum")),
                                       ("decoder_activation", decoder_activation, ("sigmoid", "linear"))):
            if value not in allowed:
                raise ValueError(f"{option}={value!r}: expected one of {', '.join(allowed)}")
        self.ssl_reduction, self.entropy_reduction = ssl_reduction, entropy_reduction
        self.decoder_activation = decoder_activation
        self.transformations = check_transformations(list(transformations))
        self.num_views = 1 + len(self.transformations)
        self.num_slots = int(num_slots)
        self.memory_mode = memory
        self.filters = tuple(int(f) for f in filters)
        self.shrink_threshold = float(shrink_threshold)
        self.entropy_weight = float(entropy_weight)
        self.ssl_weight = float(ssl_weight) if self.transformations else 0.0
        self.head_units = int(head_units)
        self.dropout = float(dropout)
        self.seed = int(seed)
        # "mean": each memory's loss is the mean over every (view, position, slot); times the
        # number of views it is the reference's sum over views of the per-view means.
        memory_weight = self.entropy_weight * (self.num_views if entropy_reduction == "mean" else 1)
        memory_args = dict(num_slots=self.num_slots, shrink_threshold=self.shrink_threshold,
                           entropy_weight=memory_weight, entropy_reduction=entropy_reduction)
        self.global_memory = (MemoryModule(num_memories=1, name="global_memory", **memory_args)
                              if memory in ("both", "global") else None)
        self.local_memory = (MemoryModule(num_memories=self.num_views, name="local_memories", **memory_args)
                             if memory in ("both", "local") else None)
        self.fusion = AdaptiveFusion(self.num_views, name="fusion") if memory == "both" else None
        self.view_classifier = keras.Sequential([
            keras.layers.Conv2D(1, 4, padding="same", activation="sigmoid"),
            keras.layers.Flatten(),
            keras.layers.Dense(self.head_units, activation="relu"),
            keras.layers.Dropout(self.dropout),
            keras.layers.Dense(self.num_views),
        ], name="view_classifier") if self.transformations else None
        self.loss_trackers = {name: keras.metrics.Mean(name=name)
                              for name in ("loss", "reconstruction_loss", "view_loss", "memory_loss", "view_accuracy")}

    def build(self, input_shape):
        steps, channels = int(input_shape[1]), int(input_shape[2])
        self.window_shape = (steps, channels)
        self.view_min = self.add_weight(name="view_min", shape=(self.num_views, channels), initializer="zeros",
                                        trainable=False)
        self.view_max = self.add_weight(name="view_max", shape=(self.num_views, channels), initializer="ones",
                                        trainable=False)
        self.encoder = conv_encoder(steps, channels, self.filters)
        self.encoder.build((None, steps, channels, 1))
        latent = tuple(self.encoder.compute_output_shape((None, steps, channels, 1))[1:])
        if self.view_classifier is not None:
            self.view_classifier.build((None, *latent))
            dropout = next(layer for layer in self.view_classifier.layers if isinstance(layer, keras.layers.Dropout))
            # Keras keeps the dropout seed state outside TF's object graph; tracking it here puts it
            # in a tf.train.Checkpoint of the model, so a resumed run draws the same dropout masks.
            self._track_trackable(dropout.seed_generator.state.value, name="view_dropout_seed_state")
        per_view = (None, self.num_views, *latent)
        for memory in (self.global_memory, self.local_memory):
            if memory is not None:
                memory.build(per_view)
        if self.fusion is not None:
            self.fusion.build([per_view, per_view])
        decoder_in = latent[:-1] + (latent[-1] * (1 if self.memory_mode == "none" else 2),)
        activation = None if self.decoder_activation == "linear" else self.decoder_activation
        self.decoders = [conv_decoder(steps, channels, self.filters, name=f"decoder_{r}", output_activation=activation)
                         for r in range(self.num_views)]
        for decoder in self.decoders:
            decoder.build((None, *decoder_in))
        self.built = True

    # -- views ---------------------------------------------------------------------------
    def raw_views(self, windows, seed=None):
        """Unscaled views [batch, views, time, channels]; seed None = scoring mode (fixed, shared)."""
        if seed is None:
            return make_views(windows, self.transformations, tf.constant(SCORING_SEED, tf.int64), shared=True)
        return make_views(windows, self.transformations, seed, shared=False)

    def adapt(self, windows, batch_size: int = 512):
        """Fits the per-view, per-channel min-max ranges on training windows (views drawn with
        the training seed of step 0), before training."""
        windows = tf.convert_to_tensor(windows, tf.float32)
        if not self.built:
            self.build(windows.shape)
        seed = tf.constant([self.seed, 0], tf.int64)
        low, high = None, None
        for start in range(0, int(windows.shape[0]), batch_size):
            views = self.raw_views(windows[start:start + batch_size], seed)
            batch_low, batch_high = tf.reduce_min(views, axis=[0, 2]), tf.reduce_max(views, axis=[0, 2])
            low = batch_low if low is None else tf.minimum(low, batch_low)
            high = batch_high if high is None else tf.maximum(high, batch_high)
        self.view_min.assign(low)
        self.view_max.assign(high)

    def scaled_views(self, windows, seed=None):
        views = self.raw_views(windows, seed)
        low, high = self.view_min[None, :, None, :], self.view_max[None, :, None, :]
        return (views - low) / tf.maximum(high - low, 1e-6)

    # -- forward -------------------------------------------------------------------------
    def call(self, windows, training=False, seed=None):
        """Returns {"views", "reconstructions"} ([batch, views, time, channels]) and
        "view_logits" ([batch * views, views], or None without self-supervision)."""
        return self.forward_views(self.scaled_views(windows, seed), training=training)

    def forward_views(self, views, training=False):
        """The network on given scaled views [batch, views, time, channels] (the same outputs as
        `call`): for views made elsewhere, e.g. the reference code's in the parity harness."""
        steps, channels = self.window_shape
        images = tf.reshape(views, [-1, steps, channels, 1])
        features = self.encoder(images, training=training)
        logits = self.view_classifier(features, training=training) if self.view_classifier is not None else None
        per_view = tf.reshape(features, tf.concat([[-1, self.num_views], tf.shape(features)[1:]], axis=0))
        if self.memory_mode == "none":
            decoder_in = per_view
        else:
            reads = {}
            if self.global_memory is not None:
                reads["global"] = self.global_memory(per_view)
            if self.local_memory is not None:
                reads["local"] = self.local_memory(per_view)
            fused = self.fusion([reads["local"], reads["global"]]) if self.fusion is not None else next(iter(reads.values()))
            decoder_in = tf.concat([per_view, fused], axis=-1)
        reconstructions = tf.stack([self.decoders[r](decoder_in[:, r], training=training)[..., 0]
                                    for r in range(self.num_views)], axis=1)
        return {"views": views, "reconstructions": reconstructions, "view_logits": logits}

    def view_errors(self, windows):
        """Per-window, per-view reconstruction MSE [batch, views] (scoring mode)."""
        outputs = self(windows, training=False)
        return tf.reduce_mean(tf.square(outputs["views"] - outputs["reconstructions"]), axis=[2, 3])

    def score(self, windows):
        """Anomaly score per window [batch]: the sum over views of its reconstruction MSE."""
        return tf.reduce_sum(self.view_errors(windows), axis=1)

    # -- training ------------------------------------------------------------------------
    def _step_losses(self, windows, seed, training):
        return self.loss_terms(self(windows, training=training, seed=seed))

    def loss_terms(self, outputs):
        """{"loss", "reconstruction_loss", "view_loss", "memory_loss", "view_accuracy"} of the
        outputs of the last forward pass (`call` or `forward_views`; the memories' entropy
        losses are those of that pass)."""
        per_view_mse = tf.reduce_mean(tf.square(outputs["views"] - outputs["reconstructions"]), axis=[0, 2, 3])
        reconstruction = tf.reduce_sum(per_view_mse)
        memory = tf.add_n(self.losses) if self.losses else tf.constant(0.0)
        view_loss, view_accuracy = tf.constant(0.0), tf.constant(0.0)
        if outputs["view_logits"] is not None:
            labels = tf.tile(tf.range(self.num_views), [tf.shape(outputs["views"])[0]])
            logits = outputs["view_logits"]
            view_loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
            if self.ssl_reduction == "sum":  # every view has a batch of rows: the mean times V sums over views
                view_loss = view_loss * self.num_views
            view_accuracy = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, -1, tf.int32), labels), tf.float32))
        total = reconstruction + memory + self.ssl_weight * view_loss
        return {"loss": total, "reconstruction_loss": reconstruction, "view_loss": view_loss,
                "memory_loss": memory, "view_accuracy": view_accuracy}

    def _windows(self, data):
        return data[0] if isinstance(data, (tuple, list)) else data

    def train_step(self, data):
        windows = self._windows(data)
        # Training views are a pure function of (seed, step): a resumed run sees the same views.
        seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)])
        with tf.GradientTape() as tape:
            values = self._step_losses(windows, seed, training=True)
        gradients = tape.gradient(values["loss"], self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables))
        return self._track(values)

    def test_step(self, data):
        return self._track(self._step_losses(self._windows(data), None, training=False))

    def predict_step(self, data):
        return self.score(self._windows(data))

    def _track(self, values):
        for name, tracker in self.loss_trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}

    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    def get_config(self):
        return {**super().get_config(), "transformations": list(self.transformations), "num_slots": self.num_slots,
                "memory": self.memory_mode, "filters": list(self.filters), "shrink_threshold": self.shrink_threshold,
                "entropy_weight": self.entropy_weight, "ssl_weight": self.ssl_weight,
                "head_units": self.head_units, "dropout": self.dropout, "seed": self.seed,
                "ssl_reduction": self.ssl_reduction, "entropy_reduction": self.entropy_reduction,
                "decoder_activation": self.decoder_activation}
