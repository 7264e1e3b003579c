"""What every semi-supervised algorithm shares: the interface and the pseudo-labelling hooks.

An algorithm is a Keras layer that turns one training step's batch into losses.
`SemiSupervisedModel.train_step` does the rest (the optimizer, EMA, metrics). The default
`compute_losses` runs ONE forward pass over labeled + unlabeled views and the supervised
loss, so an algorithm that only needs the unlabeled logits is one short file:

```python
class MyAlgorithm(SSLAlgorithm):
    views = ("weak", "strong")             # which unlabeled views the step feeds

    def unsupervised_loss(self, logits, index, step):
        pseudo, mask = self.confident_pseudo_labels(logits["weak"], index)
        return masked_mean(cross_entropy(pseudo, logits["strong"]), mask), mask

register_algorithm("my_algorithm", MyAlgorithm, lambda setting: MyAlgorithm(),
                   "one line for the apps' --help")   # kerastl.ssl.algorithms.registry
```

Registered, it is `--algorithm my_algorithm` in `apps.flexmatch`; a file shipped with
kerastl also gets its module name in the registry's `BUILTIN_MODULES`.

Algorithms that need more (a teacher network, extra passes, mixed inputs) override
`compute_losses`, which receives a `StepNetworks` with the forward passes they may run.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from kerastl.ssl.precision import in_loss_dtype, loss_dtype
from kerastl.ssl.thresholds import FixedThreshold


class SSLAlgorithm(keras.layers.Layer):
    """Base class. Subclasses set `views` and implement `unsupervised_loss`.

    Attributes:
        views: the unlabeled views the algorithm needs, a subset of ("weak", "strong") in
            the order the data stream yields them; empty for the supervised baseline.
        threshold: the confidence threshold layer (`FixedThreshold(default_tau)` unless
            one is given, e.g. a `CurriculumThreshold`); None when `default_tau` is None.
        lambda_u: weight of the unsupervised loss.
        needs_square_images: what in the algorithm needs square images (e.g. "its rotation
            task"), or None when images of any shape will do.
        joint_forward: how the default `compute_losses` runs the step. True: ONE forward
            pass over labeled + unlabeled views, so batch norm normalises with (and its
            moving statistics follow) the whole step's batch (TorchSSL's FixMatch, FlexMatch,
            UDA). False: the labeled batch alone updates batch norm, each unlabeled view
            runs alone with the moving statistics frozen (TorchSSL's Pseudo-Label, Pi-Model).
        replay_draws: None, or a callable `(name, step) -> array` that replaces the random
            draws made inside a training step (`name`: "mixup_lambda", "mixup_order",
            "vat_direction", "rotation"; `step`: the step index), to replay another
            implementation's draws (benchmarks/parity/ssl.py feeds USB's). Called eagerly;
            not saved with the algorithm.
    """

    views: tuple[str, ...] = ("weak", "strong")
    default_tau: float | None = 0.95
    default_uratio: int = 7  # unlabeled batch = uratio * labeled batch, TorchSSL's value for the algorithm
    needs_square_images: str | None = None
    joint_forward: bool = True
    replay_draws = None

    def __init__(self, threshold=None, lambda_u: float = 1.0, **kwargs):
        # Losses are computed in float32 under mixed precision (in float64 for a float64
        # network: StepNetworks' logits and `kerastl.ssl.precision.loss_dtype` decide).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(threshold, dict):
            threshold = keras.saving.deserialize_keras_object(threshold)
        if threshold is None and self.default_tau is not None:
            threshold = FixedThreshold(self.default_tau)
        self.threshold = threshold
        self.lambda_u = float(lambda_u)

    def confident_pseudo_labels(self, logits_weak: tf.Tensor, index: tf.Tensor):
        """Hard pseudo-labels of the weak view and the threshold's mask (which may update
        the threshold's state, e.g. CPL's counters)."""
        probs, pseudo = hard_pseudo_labels(logits_weak)
        return pseudo, self.threshold(tf.reduce_max(probs, axis=-1), pseudo, index)

    def attach(self, network: keras.Model) -> None:
        """Called once by `SemiSupervisedModel` with the network, before training, so an
        algorithm can build weights sized by it (e.g. ReMixMatch's rotation head)."""

    def compute_losses(self, nets: "StepNetworks", x_lb: tf.Tensor, y_lb: tf.Tensor, index,
                       views: list[tf.Tensor], step: tf.Tensor) -> dict:
        """Losses of one training step: a dict with `loss` (what is minimised), `sup_loss`,
        `unsup_loss` and `mask` (float mask of unlabeled examples that counted, or None).

        Default: the forward passes `joint_forward` names, cross-entropy on the labeled
        logits, `unsupervised_loss` on the unlabeled logits (a dict by view name), weighted
        by `loss_weight(step)`. All of it in the logits' loss dtype (`nets.dtype`).
        """
        if not views:
            sup_loss = tf.reduce_mean(cross_entropy(tf.cast(y_lb, tf.int32), nets(x_lb)))
            return {"loss": sup_loss, "sup_loss": sup_loss, "unsup_loss": tf.zeros_like(sup_loss), "mask": None}
        if self.joint_forward:
            num_lb = tf.shape(x_lb)[0]
            logits = nets(tf.concat([x_lb, *views], axis=0))
            logits_lb, parts = logits[:num_lb], tf.split(logits[num_lb:], len(views), axis=0)
        else:
            logits_lb, parts = nets(x_lb), [nets.frozen_bn(view) for view in views]
        sup_loss = tf.reduce_mean(cross_entropy(tf.cast(y_lb, tf.int32), logits_lb))
        unsup_loss, mask = self.unsupervised_loss(dict(zip(self.views, parts)), index, step)
        return {"loss": sup_loss + self.loss_weight(step, sup_loss.dtype) * unsup_loss, "sup_loss": sup_loss,
                "unsup_loss": unsup_loss, "mask": mask}

    def unsupervised_loss(self, logits: dict[str, tf.Tensor], index: tf.Tensor, step: tf.Tensor):
        """The hook of the default `compute_losses`: returns `(loss, mask)`, a scalar loss and
        the float mask of examples that count (None when nothing is masked)."""
        raise NotImplementedError(f"{type(self).__name__} must implement unsupervised_loss or compute_losses")

    def loss_weight(self, step: tf.Tensor, dtype=tf.float32) -> tf.Tensor:
        """Weight of the unsupervised loss at `step`, in `dtype` (the losses' dtype; a
        ramp-up overrides this)."""
        return tf.constant(self.lambda_u, dtype)

    def replayed(self, name: str, step: tf.Tensor):
        """What `replay_draws` gives for the draw `name` at `step`, or None when it is not
        set (the algorithm then draws itself)."""
        if self.replay_draws is None:
            return None
        return tf.convert_to_tensor(self.replay_draws(name, int(step)))

    def get_config(self):
        config = {**super().get_config(), "lambda_u": self.lambda_u}
        if self.threshold is not None:
            config["threshold"] = keras.saving.serialize_keras_object(self.threshold)
        return config


class StepNetworks:
    """The forward passes an algorithm may run inside a training step.

    `nets(x)` is the trained network in training mode, its logits in `nets.dtype` (the loss
    dtype: float32, also for a mixed-precision network; float64 for a float64 network;
    `dtype` asks for another). `frozen_bn(x)` is the same pass with the batch-norm moving
    statistics left as they were (TorchSSL's `freeze_bn`: extra passes over perturbed or
    repeated inputs must not move them).
    `teacher(x)` is the EMA network in training mode (batch statistics, as TorchSSL's teacher
    pass; its moving statistics are replaced by the online network's after the step), without
    gradient. `features(x)` returns
    `(features, logits)` of the network's `features` layer (frozen batch norm), or fails
    when the network has none.
    """

    def __init__(self, network, teacher=None, feature_network=None):
        self.network = network
        self._teacher = teacher
        self._feature_network = feature_network
        self.dtype = loss_dtype(network.compute_dtype)

    def __call__(self, x, dtype=None):
        return tf.cast(self.network(x, training=True), dtype or self.dtype)

    def _with_frozen_statistics(self, fn, x):
        moving = [v for v in self.network.non_trainable_variables]
        saved = [tf.identity(v) for v in moving]
        with tf.control_dependencies(saved):
            out = fn(x)
        flat = tf.nest.flatten(out)
        with tf.control_dependencies(flat):
            for variable, value in zip(moving, saved):
                variable.assign(value)
        return out

    def frozen_bn(self, x, dtype=None):
        return self._with_frozen_statistics(lambda inputs: self(inputs, dtype), x)

    def teacher(self, x):
        if self._teacher is None:
            raise ValueError("this model has no teacher (EMA) network")
        return tf.stop_gradient(tf.cast(self._teacher(x, training=True), self.dtype))

    def features(self, x):
        if self._feature_network is None:
            raise ValueError("the network has no layer named 'features' (the penultimate representation)")
        def run(inputs):
            features, logits = self._feature_network(inputs, training=True)
            return tf.cast(features, self.dtype), tf.cast(logits, self.dtype)
        return self._with_frozen_statistics(run, x)


def hard_pseudo_labels(logits: tf.Tensor, temperature: float = 1.0):
    """`(probs, argmax)` of `softmax(logits / T)`, with no gradient flowing into the targets
    (float32 probabilities; float64 for float64 logits)."""
    probs = tf.nn.softmax(tf.stop_gradient(in_loss_dtype(logits)) / temperature, axis=-1)
    return probs, tf.argmax(probs, axis=-1, output_type=tf.int32)


def cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-example CE: integer targets, or soft targets (a distribution per row). In float32
    (mixed-precision logits included), in float64 for float64 logits."""
    logits = in_loss_dtype(logits)
    if targets.shape.rank == logits.shape.rank:
        return -tf.reduce_sum(tf.cast(targets, logits.dtype) * tf.nn.log_softmax(logits, axis=-1), axis=-1)
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def masked_mean(per_example: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over ALL examples of `loss * mask` (divided by the batch, not by sum(mask))."""
    return tf.reduce_mean(per_example * mask)


def linear_rampup(step: tf.Tensor, rampup_steps: float, dtype=tf.float32) -> tf.Tensor:
    """min(1, step / rampup_steps); 1 when rampup_steps is 0. `rampup_steps` may be
    fractional (a share of a short run: TorchSSL's `it / (ratio * num_train_iter)`)."""
    if rampup_steps <= 0:
        return tf.constant(1.0, dtype)
    return tf.clip_by_value(tf.cast(step, dtype) / tf.constant(float(rampup_steps), dtype), 0.0, 1.0)


def sharpen(probs: tf.Tensor, temperature: float) -> tf.Tensor:
    """`p^(1/T)` renormalised over the last axis (MixMatch's sharpening)."""
    powered = tf.pow(probs, 1.0 / temperature)
    return powered / tf.reduce_sum(powered, axis=-1, keepdims=True)


def step_seed(salt: int, step: tf.Tensor) -> tf.Tensor:
    """A stateless seed for random choices made inside the training step at `step`, so a
    resumed run draws what an uninterrupted run would have drawn."""
    return tf.stack([tf.constant(salt, tf.int64), tf.cast(step, tf.int64)])


def mixup(x: tf.Tensor, targets: tf.Tensor, alpha: float, seed: tf.Tensor, draws=None):
    """MixUp as MixMatch uses it: `lam ~ Beta(alpha, alpha)`, `lam = max(lam, 1 - lam)` (so
    each mixed example stays closer to its own input), partners by a random permutation.
    `draws`: None, or `(lam, order)` to use instead of drawing them from `seed` (`lam` before
    `max(lam, 1 - lam)`). `lam` is in the targets' dtype (the loss dtype); with float64
    targets (a float64 network) the images are mixed in float64 too.

    Returns `(mixed_x, mixed_targets, lam)`.
    """
    dtype = targets.dtype
    if dtype == tf.float64:
        x = tf.cast(x, dtype)
    if draws is not None:
        lam, order = tf.cast(draws[0], dtype), tf.cast(draws[1], tf.int32)
    else:
        seeds = tf.random.experimental.stateless_split(seed, 3)
        if alpha > 0:
            gammas = tf.random.stateless_gamma([2], seeds[0], alpha=alpha)
            lam = tf.cast(gammas[0] / (gammas[0] + gammas[1]), dtype)
        else:
            lam = tf.constant(1.0, dtype)
        order = tf.random.experimental.stateless_shuffle(tf.range(tf.shape(x)[0]), seeds[1])
    lam = tf.maximum(lam, 1.0 - lam)
    mixed_x = tf.cast(lam, x.dtype) * x + tf.cast(1.0 - lam, x.dtype) * tf.gather(x, order)
    mixed_targets = lam * targets + (1.0 - lam) * tf.gather(targets, order)
    return mixed_x, mixed_targets, lam


def softmax_mse(logits: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    """Mean over examples AND classes of `(softmax(logits) - targets)^2` (PyTorch's
    `mse_loss(reduction='mean')`, MixMatch's L2 loss divided by the number of classes), in
    the logits' loss dtype."""
    probs = tf.nn.softmax(in_loss_dtype(logits), axis=-1)
    return tf.reduce_mean(tf.square(probs - tf.cast(targets, probs.dtype)))


def interleave_order(chunks: int, chunk_size: int):
    """Row order that makes each of `chunks` chunks of `chunk_size` rows hold a share of
    every chunk (TorchSSL's MixMatch `interleave`: chunk i's i-th group of rows is swapped
    with chunk 0's i-th group; groups of `chunk_size // chunks` rows, the last ones one
    larger when it does not divide). A swap: the order is its own inverse."""
    groups = [chunk_size // chunks] * chunks
    for g in range(chunk_size - sum(groups)):
        groups[-g - 1] += 1
    offsets = np.cumsum([0] + groups)
    order = np.arange(chunks * chunk_size)
    for i in range(1, chunks):
        own = np.arange(offsets[i], offsets[i + 1])
        order[own], order[i * chunk_size + own] = i * chunk_size + own, own
    return order


def chunked_forward(nets: StepNetworks, x: tf.Tensor, chunk_size: int, interleave: bool = True) -> tf.Tensor:
    """Logits of `x` in chunks of `chunk_size` rows, as TorchSSL's MixMatch and ReMixMatch
    run their mixed batch: the first chunk is a training pass (it alone moves the batch-norm
    statistics), every other chunk runs alone with them frozen, each normalised with its
    own batch statistics. With `interleave`, the chunks first exchange rows
    (`interleave_order`), so the first one holds labeled and unlabeled rows; the logits come
    back in the order of `x`. Needs a static batch size (Keras' `drop_remainder` batches)."""
    total, size = x.shape[0], chunk_size
    if total is None or size is None:
        raise ValueError("chunked_forward needs batches of a static size (batch with drop_remainder=True)")
    if total % size:
        raise ValueError(f"chunked_forward: {total} rows are not whole chunks of {size}")
    chunks = total // size
    order = interleave_order(chunks, size) if interleave else None
    if order is not None:
        x = tf.gather(x, order)
    parts = [nets(x[:size])] + [nets.frozen_bn(x[k * size:(k + 1) * size]) for k in range(1, chunks)]
    logits = tf.concat(parts, axis=0)
    return tf.gather(logits, order) if order is not None else logits
