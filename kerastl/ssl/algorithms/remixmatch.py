"""ReMixMatch (Berthelot, Carlini, Cubuk, Kurakin, Sohn, Zhang & Raffel, ICLR 2020).

- Distribution alignment: the weak view's prediction is multiplied by p_target / p_model and
  renormalised, where p_target is the labeled class distribution and p_model a running
  mean (momentum 0.999) of the weak predictions; then sharpened with T = 0.5.
- Augmentation anchoring: the aligned, sharpened weak-view guess is the target of two strong
  (RandAugment) views.
- MixUp (alpha 0.75, lam = max(lam, 1 - lam)) over the labeled batch and the strong, strong
  and weak unlabeled views; cross-entropy on the mixed labeled and unlabeled parts.
- Pre-mixup loss: cross-entropy of the first strong view against the guess (weight w_kl).
- Rotation self-supervision: the first strong view rotated by a random multiple of 90
  degrees; a 4-way head on the network's `features` layer predicts the rotation (w_rot).

TorchSSL's defaults: w_match 1.5, w_kl 0.5, w_rot 0.5, w_match and w_kl ramped up over the
first 1/64 of training, T 0.5, alpha 0.75, uratio 1. As there, the guess, the pre-mixup and
the rotation passes leave the batch-norm statistics unchanged, and the mixed batch runs in
interleaved chunks of the labeled batch size of which only the first moves them
(`chunked_forward`; `interleave=False` as USB 0.3.2). `alignment_epsilon` is added to
p_target and p_model in the alignment (TorchSSL: 0; USB 0.3.2: 1e-6). Rotations need
square images.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import (SSLAlgorithm, chunked_forward, cross_entropy, linear_rampup, mixup,
                                         sharpen, step_seed)
from kerastl.ssl.algorithms.mixmatch import mixup_draws
from kerastl.ssl.algorithms.registry import register_algorithm
from kerastl.ssl.precision import loss_dtype


@keras.saving.register_keras_serializable("kerastl")
class ReMixMatch(SSLAlgorithm):
    """Distribution alignment, augmentation anchoring, MixUp and rotation prediction.

    Example:
    >>> algorithm = ReMixMatch(num_classes=10, rampup_steps=16)   # p_target uniform
    """

    views = ("weak", "strong", "strong2")
    default_tau = None
    default_uratio = 1
    needs_square_images = "its rotation task"

    def __init__(self, num_classes: int, p_target=None, w_match: float = 1.5, w_kl: float = 0.5,
                 w_rot: float = 0.5, temperature: float = 0.5, alpha: float = 0.75, rampup_steps: float = 0,
                 seed: int = 0, interleave: bool = True, alignment_epsilon: float = 0.0, **kwargs):
        kwargs.pop("lambda_u", None)  # w_match is ReMixMatch's unsupervised weight
        super().__init__(None, w_match, **kwargs)
        self.num_classes = int(num_classes)
        if p_target is None:
            p_target = [1.0 / self.num_classes] * self.num_classes
        self.p_target = [float(p) for p in p_target]
        if len(self.p_target) != self.num_classes or min(self.p_target) <= 0:
            raise ValueError(f"p_target: expected {self.num_classes} positive class shares, got {p_target}")
        self.w_kl, self.w_rot = float(w_kl), float(w_rot)
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.rampup_steps = float(rampup_steps)
        self.seed = int(seed)
        self.interleave = bool(interleave)
        self.alignment_epsilon = float(alignment_epsilon)
        self.p_model = self.add_weight(shape=(self.num_classes,), initializer="zeros", trainable=False,
                                       name="p_model", aggregation="only_first_replica")
        self.rotation_head = keras.layers.Dense(4, name="rotation_head", dtype="float32")

    def attach(self, network):
        height, width = network.input_shape[1:3]
        if height != width:
            raise ValueError(f"ReMixMatch rotates images by 90 degrees: expected square images, got {height}x{width}")
        features = network.get_layer("features").output.shape[-1]
        if not self.rotation_head.built:
            # In the loss dtype: float32 under mixed precision, float64 for a float64 network.
            self.rotation_head.dtype_policy = loss_dtype(network.compute_dtype).name
            self.rotation_head.build((None, features))

    def align(self, probs: tf.Tensor, step: tf.Tensor) -> tf.Tensor:
        """Distribution alignment: updates `p_model` with this batch's mean prediction (the
        batch mean itself at step 0), returns `probs * p_target / p_model` renormalised."""
        mean = tf.reduce_mean(probs, axis=0)
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            mean = context.all_reduce("MEAN", mean)
        # Moved in the probabilities' dtype, stored in the state's.
        p_model = tf.where(tf.equal(step, 0), mean, 0.999 * tf.cast(self.p_model, mean.dtype) + 0.001 * mean)
        self.p_model.assign(tf.cast(p_model, self.p_model.dtype))
        epsilon = self.alignment_epsilon
        aligned = probs * (tf.constant(self.p_target, probs.dtype) + epsilon) / (p_model + epsilon)
        return aligned / tf.reduce_sum(aligned, axis=-1, keepdims=True)

    def compute_losses(self, nets, x_lb, y_lb, index, views, step):
        weak, strong, strong2 = views
        num_lb = tf.shape(x_lb)[0]
        probs = tf.nn.softmax(tf.stop_gradient(nets.frozen_bn(weak)), axis=-1)
        guess = tf.stop_gradient(sharpen(self.align(probs, step), self.temperature))
        seeds = tf.random.experimental.stateless_split(step_seed(self.seed * 3 + 17, step), 2)
        labeled = tf.one_hot(tf.cast(y_lb, tf.int32), self.num_classes, dtype=guess.dtype)
        targets = tf.concat([labeled, guess, guess, guess], axis=0)
        mixed_x, mixed_targets, _ = mixup(tf.concat([x_lb, strong, strong2, weak], axis=0), targets,
                                          self.alpha, seeds[0], mixup_draws(self, step))
        logits = chunked_forward(nets, mixed_x, x_lb.shape[0], self.interleave)
        sup_loss = tf.reduce_mean(cross_entropy(mixed_targets[:num_lb], logits[:num_lb]))
        match_loss = tf.reduce_mean(cross_entropy(mixed_targets[num_lb:], logits[num_lb:]))
        premix_loss = tf.reduce_mean(cross_entropy(guess, nets.frozen_bn(strong)))
        rotated, quarter_turns = rotate_randomly(strong, seeds[1], self.replayed("rotation", step))
        features, _ = nets.features(rotated)
        rotation_loss = tf.reduce_mean(cross_entropy(quarter_turns, self.rotation_head(features)))
        ramp = linear_rampup(step, self.rampup_steps, sup_loss.dtype)
        loss = (sup_loss + self.w_rot * rotation_loss + self.w_kl * ramp * premix_loss
                + self.lambda_u * ramp * match_loss)
        return {"loss": loss, "sup_loss": sup_loss, "unsup_loss": match_loss, "mask": None}

    def loss_weight(self, step, dtype=tf.float32):
        return self.lambda_u * linear_rampup(step, self.rampup_steps, dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("lambda_u")
        return {**config, "num_classes": self.num_classes, "p_target": self.p_target, "w_match": self.lambda_u,
                "w_kl": self.w_kl, "w_rot": self.w_rot, "temperature": self.temperature, "alpha": self.alpha,
                "rampup_steps": self.rampup_steps, "seed": self.seed, "interleave": self.interleave,
                "alignment_epsilon": self.alignment_epsilon}


def rotate_randomly(images: tf.Tensor, seed: tf.Tensor, quarter_turns=None):
    """Each square image rotated counter-clockwise by k * 90 degrees, k uniform in
    {0, 1, 2, 3} (or the given `quarter_turns`); returns `(rotated, k)`."""
    if quarter_turns is None:
        quarter_turns = tf.random.stateless_uniform([tf.shape(images)[0]], seed, 0, 4, dtype=tf.int32)
    quarter_turns = tf.cast(quarter_turns, tf.int32)
    rotations = tf.stack([tf.image.rot90(images, k) for k in range(4)], axis=1)  # [batch, 4, H, W, C]
    return tf.gather(rotations, quarter_turns, axis=1, batch_dims=1), quarter_turns


def remixmatch(num_classes: int, total_steps: int, p_target=None, warmup: float = 1 / 64,
               seed: int = 0) -> ReMixMatch:
    return ReMixMatch(num_classes, p_target, rampup_steps=warmup * total_steps, seed=seed)


register_algorithm("remixmatch", ReMixMatch,
                   lambda s: remixmatch(s.num_classes, s.total_steps, s.p_target, seed=s.seed),
                   "ReMixMatch: distribution alignment, augmentation anchoring, MixUp and rotation prediction")
