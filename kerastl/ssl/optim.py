"""TorchSSL's optimizer and schedule: SGD + Nesterov with coupled L2 decay, cosine 7*pi/16."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from kerastl.ssl.precision import loss_dtype


@keras.saving.register_keras_serializable("kerastl")
class CosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`lr * cos(7 * pi * step / (16 * total_steps))` (TorchSSL / FixMatch: ends at ~0.2 lr),
    in float32 (`dtype`: another; `SGDWithL2` asks for float64 when it trains float64 weights)."""

    def __init__(self, learning_rate: float, total_steps: int, cycles: float = 7 / 16):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.cycles = float(cycles)

    def __call__(self, step, dtype=tf.float32):
        progress = tf.cast(step, dtype) / float(max(self.total_steps, 1))
        return self.learning_rate * tf.cos(math.pi * self.cycles * progress)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "total_steps": self.total_steps, "cycles": self.cycles}


def decays(variable) -> bool:
    """L2 decay applies to conv and dense kernels, not to BN parameters or biases (TorchSSL)."""
    return variable.name.endswith("kernel")


@keras.saving.register_keras_serializable("kerastl")
class SGDWithL2(keras.optimizers.SGD):
    """SGD as `torch.optim.SGD` applies it, with PyTorch's weight decay.

    - Decay: `g += l2 * w` for kernels only, before momentum (Keras' own `weight_decay` is
      decoupled, AdamW-style, which is a different method).
    - Float64 weights get a float64 learning rate (from a `CosineSchedule`) and momentum.
    - Momentum: the buffer holds gradients, the learning rate scales the whole step:
      `b = momentum * b + g`, `w -= lr * (g + momentum * b)` with Nesterov (`w -= lr * b`
      without). Keras' SGD keeps `m = momentum * m - lr * g` instead, so past steps stay
      scaled by the learning rate of their own step: the same weights for a constant lr,
      not for a schedule (0.17 relative apart after 50 steps of a 50-step cosine schedule).

    Example:
    >>> optimizer = SGDWithL2(l2=5e-4, learning_rate=CosineSchedule(0.03, 2**20),
    ...                       momentum=0.9, nesterov=True)
    """

    def __init__(self, l2: float = 5e-4, **kwargs):
        super().__init__(**kwargs)
        self.l2 = float(l2)
        self._lr_dtype = tf.float32

    def build(self, variables):
        # The learning rate in the weights' loss dtype: float64 when any is float64 (a
        # float32 lr would put a ~1e-8 relative error into every update of a float64
        # network), float32 otherwise (mixed precision keeps float32 weights).
        if any(loss_dtype(v.dtype) == tf.float64 for v in variables):
            self._lr_dtype = tf.float64
        super().build(variables)

    def _get_current_learning_rate(self):
        if isinstance(self._learning_rate, CosineSchedule):
            return self._learning_rate(self._iterations, self._lr_dtype)
        return super()._get_current_learning_rate()

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables if trainable_variables is not None else self._trainable_variables
        if self.l2:
            # Under tf.distribute the replicas' gradients are summed after this point: each
            # replica adds its share of the decay so that the sum adds it once.
            context = tf.distribute.get_replica_context()
            share = self.l2 / (context.num_replicas_in_sync if context is not None else 1)
            grads = [g if g is None or not decays(v) else g + share * tf.cast(v.value, g.dtype)
                     for g, v in zip(grads, variables)]
        return super().apply(grads, trainable_variables)

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = tf.cast(learning_rate, variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, learning_rate * gradient)
            return
        # Not tf.cast(self.momentum, ...): that rounds the Python float to float32 first
        # (0.9 -> 0.89999998), which a float64 update would carry (1.3e-8 relative).
        momentum = tf.constant(self.momentum, variable.dtype)
        buffer = self.momentums[self._get_variable_index(variable)]
        self.assign(buffer, momentum * buffer + gradient)
        step = gradient + momentum * buffer if self.nesterov else buffer
        self.assign_sub(variable, learning_rate * step)

    def get_config(self):
        return {**super().get_config(), "l2": self.l2}


def torchssl_optimizer(learning_rate: float = 0.03, total_steps: int = 2**20, l2: float = 5e-4,
                       momentum: float = 0.9) -> SGDWithL2:
    """The optimizer of the paper preset: SGD(lr 0.03, momentum 0.9, Nesterov), L2 5e-4, cosine."""
    return SGDWithL2(l2=l2, learning_rate=CosineSchedule(learning_rate, total_steps),
                     momentum=momentum, nesterov=True)
