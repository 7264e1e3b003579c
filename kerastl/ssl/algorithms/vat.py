"""Virtual Adversarial Training (Miyato, Maeda, Koyama & Ishii, TPAMI 2018), with entropy
minimisation (VAT + EntMin).

For each unlabeled image x (weak view) with prediction p(x), the adversarial direction is
found by power iteration: start from a random unit direction d, take the gradient of
KL(p(x) || p(x + xi * d)) with respect to d, normalise it (one iteration by default); the
perturbation r_adv = eps * d has L2 norm eps per image (where float32 cannot resolve the
xi-step, i.e. the gradient is exactly zero on a saturated prediction, the random start
direction is kept rather than a zero perturbation). The loss is KL(p(x) || p(x + r_adv))
(p(x) without gradient), plus `entmin_weight` times the entropy of p(x).

TorchSSL's defaults: vat weight 0.3 ramped up linearly over the first 40 % of training, eps
6, xi 1e-6, one power iteration, entropy weight 0.06, uratio 1. As there, the labeled batch
alone updates the batch-norm statistics; the clean and perturbed unlabeled passes leave
them unchanged. TorchSSL measures eps on standardised inputs; our
networks see pixels in [0, 1], so the perturbation is `eps * input_scale` (the app passes
the training images' pixel standard deviation), the same relative size.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from kerastl.ssl.algorithms.base import SSLAlgorithm, cross_entropy, linear_rampup, step_seed
from kerastl.ssl.algorithms.registry import register_algorithm


@keras.saving.register_keras_serializable("kerastl")
class VAT(SSLAlgorithm):
    """Local distributional smoothness against the most sensitive direction.

    Example:
    >>> algorithm = VAT(lambda_u=0.3, eps=6.0, input_scale=0.3, rampup_steps=400)
    """

    views = ("weak",)
    default_tau = None
    default_uratio = 1

    def __init__(self, lambda_u: float = 0.3, eps: float = 6.0, xi: float = 1e-6, power_iterations: int = 1,
                 entmin_weight: float = 0.06, input_scale: float = 1.0, rampup_steps: float = 0, seed: int = 0,
                 **kwargs):
        super().__init__(None, lambda_u, **kwargs)
        self.eps, self.xi, self.input_scale = float(eps), float(xi), float(input_scale)
        self.power_iterations = int(power_iterations)
        self.entmin_weight = float(entmin_weight)
        self.rampup_steps = float(rampup_steps)
        self.seed = int(seed)

    def adversarial_perturbation(self, nets, x, logits, seed, start=None):
        """r_adv for images `x` whose clean logits are `logits`: L2 norm `eps * input_scale`
        per image, along the power-iteration estimate of the most KL-sensitive direction
        (power iteration from `start`, default a standard normal draw from `seed`)."""
        # The xi-step is ~1e-6 of the input: a float64 network keeps its precision here
        # (float32 rounds the probe and the divergence's gradient).
        precision = nets.dtype
        x = tf.cast(x, precision)
        start = tf.random.stateless_normal(tf.shape(x), seed) if start is None else start
        d = l2_normalize(tf.cast(start, precision))
        for _ in range(self.power_iterations):
            probe = self.xi * d
            with tf.GradientTape() as tape:
                tape.watch(probe)
                divergence = kl_divergence(tf.cast(logits, precision), nets.frozen_bn(x + probe, precision))
            gradient = tf.stop_gradient(tape.gradient(divergence, probe))
            # float32 cannot resolve the xi-step where a prediction is saturated (the gradient
            # is exactly 0): those examples keep their current direction.
            resolved = tf.reduce_any(tf.not_equal(gradient, 0.0), axis=tf.range(1, tf.rank(d)), keepdims=True)
            d = tf.where(resolved, l2_normalize(gradient), d)
        return self.eps * self.input_scale * d

    def compute_losses(self, nets, x_lb, y_lb, index, views, step):
        (x_ulb,) = views
        # Every pass and loss in the loss dtype `nets.dtype` (float64 for a float64 network).
        sup_loss = tf.reduce_mean(cross_entropy(tf.cast(y_lb, tf.int32), nets(x_lb)))
        # Clean and perturbed unlabeled passes normalise over the same kind of batch (the
        # unlabeled one), so their difference is the perturbation's effect alone.
        # The clean logits at the network's precision too: the probe's divergence is a
        # difference of ~1e-6 from them, which float32 rounding of the clean logits would swamp.
        logits_ulb = nets.frozen_bn(x_ulb)
        clean = tf.stop_gradient(logits_ulb)
        seed = step_seed(self.seed * 3 + 11, step)
        r_adv = self.adversarial_perturbation(nets, x_ulb, clean, seed, self.replayed("vat_direction", step))
        vat_loss = kl_divergence(clean, nets.frozen_bn(tf.cast(x_ulb, r_adv.dtype) + r_adv))
        entropy = tf.reduce_mean(cross_entropy(tf.nn.softmax(logits_ulb, axis=-1), logits_ulb))
        loss = sup_loss + self.loss_weight(step, sup_loss.dtype) * vat_loss + self.entmin_weight * entropy
        return {"loss": loss, "sup_loss": sup_loss, "unsup_loss": vat_loss, "mask": None}

    def loss_weight(self, step, dtype=tf.float32):
        return tf.constant(self.lambda_u, dtype) * linear_rampup(step, self.rampup_steps, dtype)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps, "xi": self.xi, "power_iterations": self.power_iterations,
                "entmin_weight": self.entmin_weight, "input_scale": self.input_scale,
                "rampup_steps": self.rampup_steps, "seed": self.seed}


def l2_normalize(d: tf.Tensor) -> tf.Tensor:
    """Each example of `d` scaled to unit L2 norm over all its other axes."""
    axes = tf.range(1, tf.rank(d))
    return d / (tf.sqrt(tf.reduce_sum(tf.square(d), axis=axes, keepdims=True)) + 1e-16)


def kl_divergence(logits_p: tf.Tensor, logits_q: tf.Tensor) -> tf.Tensor:
    """Batch mean of KL(softmax(logits_p) || softmax(logits_q)), in float32 (float64 when
    both logits are float64)."""
    precision = tf.float64 if logits_p.dtype == logits_q.dtype == tf.float64 else tf.float32
    log_p = tf.nn.log_softmax(tf.cast(logits_p, precision), axis=-1)
    log_q = tf.nn.log_softmax(tf.cast(logits_q, precision), axis=-1)
    return tf.reduce_mean(tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1))


def vat(total_steps: int, input_scale: float = 1.0, lambda_u: float = 0.3, rampup: float = 0.4,
        seed: int = 0) -> VAT:
    return VAT(lambda_u, input_scale=input_scale, rampup_steps=rampup * total_steps, seed=seed)


register_algorithm("vat", VAT, lambda s: vat(s.total_steps, s.input_scale, seed=s.seed),
                   "VAT: smooth predictions against the most sensitive perturbation, plus entropy minimisation")
