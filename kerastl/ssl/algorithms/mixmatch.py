"""MixMatch (Berthelot, Carlini, Goodfellow, Papernot, Oliver & Raffel, NeurIPS 2019).

Label guessing: K = 2 weak augmentations of each unlabeled image, their softmax outputs
averaged and sharpened with temperature T = 0.5 (no gradient; each view's pass runs alone
with the batch-norm statistics frozen). MixUp over the labeled batch (one-hot targets) and
both unlabeled views (guessed targets) with lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam),
partners by a random permutation of the whole batch. Supervised loss: cross-entropy on the
mixed labeled part; unsupervised loss: mean squared error between softmax outputs and the
mixed guesses (per class), weighted by lambda_u = 100 ramped up linearly over the first 40 %
of training.

Defaults follow TorchSSL's configs (alpha 0.5, T 0.5, lambda_u 100, ramp-up 0.4, uratio 1;
the paper's alpha is 0.75). The mixed batch runs as TorchSSL runs it (`chunked_forward`): in
chunks of the labeled batch size, interleaved, the first chunk alone moving the batch-norm
statistics. `interleave=False` skips the interleaving, as USB 0.3.2 does.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import (SSLAlgorithm, chunked_forward, cross_entropy, linear_rampup, mixup,
                                         sharpen, softmax_mse, step_seed)
from kerastl.ssl.algorithms.registry import register_algorithm


@keras.saving.register_keras_serializable("kerastl")
class MixMatch(SSLAlgorithm):
    """Guessed, sharpened labels and MixUp across labeled and unlabeled data.

    Example:
    >>> algorithm = MixMatch(lambda_u=100.0, temperature=0.5, alpha=0.5, rampup_steps=400)
    """

    views = ("weak", "weak2")
    default_tau = None
    default_uratio = 1

    def __init__(self, lambda_u: float = 100.0, temperature: float = 0.5, alpha: float = 0.5,
                 rampup_steps: float = 0, seed: int = 0, interleave: bool = True, **kwargs):
        super().__init__(None, lambda_u, **kwargs)
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.rampup_steps = float(rampup_steps)
        self.seed = int(seed)
        self.interleave = bool(interleave)

    def guess_labels(self, nets, views):
        """Sharpened mean of the views' softmax outputs, one row per unlabeled image."""
        logits = [nets.frozen_bn(view) for view in views]
        mean = tf.add_n([tf.nn.softmax(part, axis=-1) for part in logits]) / len(views)
        return tf.stop_gradient(sharpen(mean, self.temperature))

    def compute_losses(self, nets, x_lb, y_lb, index, views, step):
        num_lb = tf.shape(x_lb)[0]
        guess = self.guess_labels(nets, views)
        num_classes = tf.shape(guess)[-1]
        labeled = tf.one_hot(tf.cast(y_lb, tf.int32), num_classes, dtype=guess.dtype)
        targets = tf.concat([labeled, *([guess] * len(views))], axis=0)
        mixed_x, mixed_targets, _ = mixup(tf.concat([x_lb, *views], axis=0), targets, self.alpha,
                                          step_seed(self.seed * 3 + 13, step), mixup_draws(self, step))
        logits = chunked_forward(nets, mixed_x, x_lb.shape[0], self.interleave)
        sup_loss = tf.reduce_mean(cross_entropy(mixed_targets[:num_lb], logits[:num_lb]))
        unsup_loss = softmax_mse(logits[num_lb:], mixed_targets[num_lb:])
        return {"loss": sup_loss + self.loss_weight(step, sup_loss.dtype) * unsup_loss, "sup_loss": sup_loss,
                "unsup_loss": unsup_loss, "mask": None}

    def loss_weight(self, step, dtype=tf.float32):
        return self.lambda_u * linear_rampup(step, self.rampup_steps, dtype)

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature, "alpha": self.alpha,
                "rampup_steps": self.rampup_steps, "seed": self.seed, "interleave": self.interleave}


def mixup_draws(algorithm, step):
    """`(lam, order)` from the algorithm's `replay_draws`, or None (`mixup` draws them)."""
    if algorithm.replay_draws is None:
        return None
    return algorithm.replayed("mixup_lambda", step), algorithm.replayed("mixup_order", step)


def mixmatch(total_steps: int, lambda_u: float = 100.0, temperature: float = 0.5, alpha: float = 0.5,
             rampup: float = 0.4, seed: int = 0) -> MixMatch:
    return MixMatch(lambda_u, temperature, alpha, rampup * total_steps, seed)


register_algorithm("mixmatch", MixMatch, lambda s: mixmatch(s.total_steps, seed=s.seed),
                   "MixMatch: sharpened guessed labels and MixUp of labeled and unlabeled images")
