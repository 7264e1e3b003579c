"""Memory modules: learnable prototype slots read by softmax addressing (MemAE, AMSL).

`MemoryModule` replaces each feature vector z (last axis) by a convex combination of its
memory slots, w = softmax(z M^T), read = w M; with `shrink_threshold` > 0 MemAE's hard
shrinkage zeroes the small addressing weights and renormalises. The addressing entropy is
added as a layer loss, weighted by `entropy_weight`, which pushes each feature to use few
slots: with `entropy_reduction="sum"` (MemAE's) the entropy of each feature's weights (sum
over slots of -w log w) averaged over features; with "mean" (AMSL's reference code) -w log w
averaged over features and slots, i.e. the first divided by `num_slots`.

With `num_memories=1` one memory is shared by every position (AMSL's *global* memory). With
`num_memories=V` the input's axis 1 indexes V views and view v reads only memory v (AMSL's
*local* memories). `AdaptiveFusion` mixes the two reads with learned per-view weights.

Example:
>>> import numpy as np, keras
>>> memory = MemoryModule(num_slots=50, num_memories=7)
>>> features = np.random.rand(4, 7, 10, 2, 16).astype("float32")   # [batch, views, h, w, dim]
>>> tuple(memory(features).shape)
(4, 7, 10, 2, 16)
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable("kerastl")
class MemoryModule(keras.layers.Layer):
    """Softmax-addressed memory with optional hard shrinkage and an entropy loss.

    Args:
        num_slots: memory items per memory (the paper: 500).
        num_memories: 1 = one memory for all inputs; V > 1 = one memory per index of axis 1.
        shrink_threshold: MemAE's lambda; 0 disables shrinkage (MemAE: 1/num_slots .. 3/num_slots).
        entropy_weight: weight of the addressing entropy added with `add_loss`.
        entropy_reduction: "sum" over slots (MemAE) or "mean" over slots (AMSL's code), then
            the mean over features either way.

    Example (MemAE's bottleneck in a functional model):
    >>> inputs = keras.Input((16,))
    >>> read = MemoryModule(num_slots=100, shrink_threshold=0.0025)(keras.layers.Dense(32)(inputs))
    >>> model = keras.Model(inputs, keras.layers.Dense(16)(read))
    >>> model.compile(optimizer="adam", loss="mse")   # + the entropy loss, through add_loss
    """

    def __init__(self, num_slots: int = 500, num_memories: int = 1, shrink_threshold: float = 0.0,
                 entropy_weight: float = 2e-4, entropy_reduction: str = "sum", **kwargs):
        super().__init__(**kwargs)
        if num_slots < 1 or num_memories < 1:
            raise ValueError(f"num_slots {num_slots}, num_memories {num_memories}: expected positive integers")
        if entropy_reduction not in ("sum", "mean"):
            raise ValueError(f"entropy_reduction={entropy_reduction!r}: expected 'sum' or 'mean' (over slots)")
        self.entropy_reduction = entropy_reduction
        self.num_slots = int(num_slots)
        self.num_memories = int(num_memories)
        self.shrink_threshold = float(shrink_threshold)
        self.entropy_weight = float(entropy_weight)

    def build(self, input_shape):
        dim = int(input_shape[-1])
        if self.num_memories > 1 and (len(input_shape) < 3 or input_shape[1] != self.num_memories):
            raise ValueError(f"input shape {tuple(input_shape)}: {self.num_memories} memories need axis 1 of "
                             f"size {self.num_memories} (one memory per view) and a feature axis")
        bound = dim ** -0.5
        self.memory = self.add_weight(name="memory", shape=(self.num_memories, self.num_slots, dim),
                                      initializer=keras.initializers.RandomUniform(-bound, bound))

    def _memories_per_row(self, z):
        """z as [batch, memories, positions, dim] with the memory each row reads."""
        dim = tf.shape(z)[-1]
        if self.num_memories == 1:
            return tf.reshape(z, [-1, 1, tf.reduce_prod(tf.shape(z)[1:-1]), dim])
        return tf.reshape(z, [tf.shape(z)[0], self.num_memories, -1, dim])

    def address(self, z):
        """Addressing weights `[..., num_slots]` (rows sum to 1) for features `[..., dim]`."""
        z = tf.convert_to_tensor(z, self.compute_dtype)
        rows = self._memories_per_row(z)
        weights = tf.nn.softmax(tf.einsum("bmpd,msd->bmps", rows, tf.cast(self.memory, z.dtype)), axis=-1)
        if self.shrink_threshold > 0:
            # MemAE's hard shrinkage, relu(w - lambda) * w / |w - lambda|, then L1 renormalisation.
            shifted = weights - self.shrink_threshold
            weights = tf.nn.relu(shifted) * weights / (tf.abs(shifted) + 1e-12)
            weights = weights / tf.maximum(tf.reduce_sum(weights, axis=-1, keepdims=True), 1e-12)
        return tf.reshape(weights, tf.concat([tf.shape(z)[:-1], [self.num_slots]], axis=0))

    def call(self, z):
        weights = self.address(z)
        rows = self._memories_per_row(weights)
        read = tf.einsum("bmps,msd->bmpd", rows, tf.cast(self.memory, weights.dtype))
        per_slot = -weights * tf.math.log(weights + 1e-12)
        entropy = tf.reduce_mean(tf.reduce_sum(per_slot, axis=-1) if self.entropy_reduction == "sum" else per_slot)
        if self.entropy_weight:
            self.add_loss(self.entropy_weight * entropy)
        return tf.reshape(read, tf.shape(z))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "num_slots": self.num_slots, "num_memories": self.num_memories,
                "shrink_threshold": self.shrink_threshold, "entropy_weight": self.entropy_weight,
                "entropy_reduction": self.entropy_reduction}


@keras.saving.register_keras_serializable("kerastl")
class AdaptiveFusion(keras.layers.Layer):
    """Per view r: fused_r = a_r * local_r + b_r * global_r with learned a, b in (0, 1).

    a and b are sigmoids of 2 learned numbers per view (both start at 0.5). Inputs are
    `[local, global]`, each `[batch, views, ..., dim]`.

    Example:
    >>> import numpy as np
    >>> local, shared = np.ones((2, 7, 3, 4), "float32"), np.zeros((2, 7, 3, 4), "float32")
    >>> float(AdaptiveFusion(7)([local, shared])[0, 0, 0, 0])
    0.5
    """

    def __init__(self, num_views: int, **kwargs):
        super().__init__(**kwargs)
        self.num_views = int(num_views)

    def build(self, input_shape):
        self.logits = self.add_weight(name="fusion_logits", shape=(self.num_views, 2), initializer="zeros")

    @property
    def weights_per_view(self):
        """[views, 2]: the (local, global) mixing weights."""
        return tf.sigmoid(self.logits)

    def call(self, inputs):
        local, shared = inputs
        mix = tf.cast(self.weights_per_view, local.dtype)
        shape = tf.concat([[1, self.num_views], tf.ones([tf.rank(local) - 2], tf.int32)], axis=0)
        return tf.reshape(mix[:, 0], shape) * local + tf.reshape(mix[:, 1], shape) * shared

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "num_views": self.num_views}
