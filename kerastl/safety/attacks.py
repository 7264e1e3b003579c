"""The attacks that plant or expose the defects ReMoS keeps a student from inheriting.

- `BackdoorTrigger` + `poison_backdoor`: BadNets-style poisoning. A share of the teacher's
  training images gets a trigger patch stamped in a corner and the label of a target class;
  a model trained on them answers "target" whenever the patch is present.
- `penultimate_pgd`: PGD-Linf on the teacher's feature extractor that pushes one
  penultimate unit high and the others to zero (the reference's loss, unit 0, random
  start; `pixel_budget` converts its budget from normalised units). The examples are crafted
  on the teacher alone and transferred to students built from it.
- `penultimate_hotflip`: a like objective for text, by token substitutions (HotFlip:
  first-order scores of every substitution from the gradient at the token embeddings);
  `random_substitutions` is its control.

Example:
>>> trigger = BackdoorTrigger(size=4)
>>> x_poisoned, y_poisoned, changed = poison_backdoor(x, y, share=0.2, target_class=0,
...                                                   trigger=trigger, seed=0)   # doctest: +SKIP
>>> x_adv = penultimate_pgd(feature_extractor(teacher), x_test, eps=0.1)         # doctest: +SKIP
>>> ids_adv = penultimate_hotflip(feature_extractor(teacher), token_table(teacher), ids_test,
...                               flips=3, excluded_ids=[0, 1, 2, 3, 4])           # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from kerastl.errors import InputError
from kerastl.safety.coverage import tapped_calls

CORNERS = ("bottom_right", "bottom_left", "top_right", "top_left")


@dataclasses.dataclass(frozen=True)
class BackdoorTrigger:
    """A `size x size` checkerboard patch (the BadNets pattern) stamped `margin` pixels from a
    corner. A checkerboard of the darkest and brightest values stays visible on dark and
    bright backgrounds alike (a plain white square would vanish on inverted-contrast images).

    Example:
    >>> images = np.zeros((1, 6, 6, 1), np.uint8)
    >>> BackdoorTrigger(size=2, margin=0).apply(images)[0, 4:, 4:, 0].tolist()
    [[255, 0], [0, 255]]
    """

    size: int = 4
    corner: str = "bottom_right"
    margin: int = 1

    def __post_init__(self):
        if self.size < 1 or self.margin < 0:
            raise InputError(f"--trigger-size {self.size}: expected a positive patch size")
        if self.corner not in CORNERS:
            raise InputError(f"trigger corner {self.corner!r}: expected one of {', '.join(CORNERS)}")

    def pattern(self) -> np.ndarray:
        """The patch as 0 / 1 values, `[size, size]` (1 on the main diagonal squares)."""
        rows, cols = np.indices((self.size, self.size))
        return ((rows + cols) % 2 == 0).astype(np.float32)

    def region(self, height: int, width: int) -> tuple[slice, slice]:
        if self.size + self.margin > min(height, width):
            raise InputError(f"--trigger-size {self.size}: the patch does not fit {height}x{width} images")
        top = self.margin if self.corner.startswith("top") else height - self.margin - self.size
        left = self.margin if self.corner.endswith("left") else width - self.margin - self.size
        return slice(top, top + self.size), slice(left, left + self.size)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """A copy of `images` (`[N, H, W, C]`, uint8 0..255 or float 0..1) with the patch."""
        images = np.asarray(images)
        stamped = images.copy()
        rows, cols = self.region(*images.shape[1:3])
        top_value = 255 if images.dtype == np.uint8 else 1.0
        stamped[:, rows, cols, :] = (self.pattern()[None, :, :, None] * top_value).astype(images.dtype)
        return stamped


@dataclasses.dataclass(frozen=True)
class TokenTrigger:
    """A rare-token text trigger (the NLP setting): `token_id` is inserted into each token
    sequence at a position drawn (seeded) among its tokens `start .. min(length, window) - 1`
    (`start=1` keeps BERT's leading `[CLS]` in place); the rest shifts right and the last
    token falls off. Padding (id 0) is at the end.

    Example:
    >>> TokenTrigger(token_id=9, seed=0, window=1).apply(np.array([[3, 4, 5, 0]])).tolist()
    [[9, 3, 4, 5]]
    >>> TokenTrigger(token_id=9, seed=0, window=2, start=1).apply(np.array([[2, 4, 3, 0]])).tolist()
    [[2, 9, 4, 3]]
    """

    token_id: int
    seed: int = 0
    window: int = 10
    start: int = 0

    def __post_init__(self):
        if self.token_id < 1 or self.window <= self.start or self.start < 0:
            raise InputError(f"trigger token id {self.token_id}: expected a vocabulary id >= 1 (0 is padding)")

    def apply(self, tokens: np.ndarray) -> np.ndarray:
        tokens = np.asarray(tokens)
        lengths = np.maximum((tokens != 0).sum(axis=1), self.start + 1)
        positions = np.random.default_rng(self.seed).integers(self.start, np.minimum(lengths, self.window))
        columns = np.arange(tokens.shape[1])[None, :]
        # Output column c takes input column c (before the insertion), the trigger (at it), or
        # input column c - 1 (after it).
        shifted = np.take_along_axis(tokens, np.maximum(columns - (columns > positions[:, None]), 0), axis=1)
        return np.where(columns == positions[:, None], self.token_id, shifted).astype(tokens.dtype)


def check_target_class(target_class: int, num_classes: int, option: str = "--target-class") -> int:
    """Raises `InputError` unless the target class is one of the `num_classes` labels."""
    if not 0 <= int(target_class) < num_classes:
        raise InputError(f"{option} {target_class}: outside the label set, expected a class in 0..{num_classes - 1}")
    return int(target_class)


def poison_backdoor(x: np.ndarray, y: np.ndarray, share: float, target_class: int, trigger: BackdoorTrigger,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BadNets poisoning: `round(share * N)` images, drawn (seeded) from those whose label is
    not `target_class`, get the trigger and the label `target_class`; nothing else changes.

    Returns `(x_poisoned, y_poisoned, poisoned_indices)` (copies; the inputs are untouched).

    Example:
    >>> x, y = np.zeros((10, 8, 8, 1), np.uint8), np.arange(10) % 5
    >>> xp, yp, idx = poison_backdoor(x, y, 0.2, target_class=0, trigger=BackdoorTrigger(size=2))
    >>> len(idx), (yp[idx] == 0).all(), (xp != x).any(axis=(1, 2, 3)).sum()
    (2, True, 2)
    """
    if not 0.0 < share < 1.0:
        raise InputError(f"--poison-share {share}: expected a share strictly between 0 and 1")
    y = np.asarray(y)
    target_class = check_target_class(target_class, int(y.max()) + 1)
    count = int(round(share * len(y)))
    candidates = np.flatnonzero(y != target_class)
    if count > len(candidates):
        raise InputError(f"--poison-share {share}: asks for {count} poisoned images, but only {len(candidates)} "
                         f"are not of the target class {target_class}")
    chosen = np.sort(np.random.default_rng(seed).choice(candidates, size=count, replace=False))
    x_poisoned, y_poisoned = np.array(x, copy=True), np.array(y, copy=True)
    x_poisoned[chosen] = trigger.apply(x_poisoned[chosen])
    y_poisoned[chosen] = target_class
    return x_poisoned, y_poisoned, chosen


def feature_extractor(model: keras.Model, layer_name: str | None = None) -> keras.Model:
    """The sub-model from `model`'s input to its penultimate layer (the input of the last
    layer, i.e. the features the classification head reads), or to `layer_name`."""
    tensor = model.get_layer(layer_name).output if layer_name else model.layers[-1].input
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # called with one array
    return keras.Model(inputs, tensor, name=f"{model.name}_features")


#: The reference's input normalisation (ImageNet): its PGD budget is in units of this std.
IMAGENET_STD = (0.229, 0.224, 0.225)
EPS_UNITS = ("normalised", "pixels")


def pixel_budget(value: float, units: str, channels: int, std=None) -> np.ndarray:
    """A PGD budget (eps or step size) in the model's input units ([0, 1] pixels), per channel.

    `units="pixels"`: `value` already is. `units="normalised"`: `value` is in the units of
    inputs normalised as `(x - mean) / std`, as the reference's eps 0.1 / step 0.01 are
    (ImageNet's std per channel), so the pixel budget is `value * std`. `std` defaults to
    ImageNet's per channel for 3 channels and to their mean (0.226) otherwise.

    Example:
    >>> pixel_budget(0.1, "normalised", 3).round(4).tolist()
    [0.0229, 0.0224, 0.0225]
    >>> pixel_budget(0.1, "pixels", 1).tolist()
    [0.1]
    """
    if units not in EPS_UNITS:
        raise InputError(f"--eps-units {units!r}: expected one of {', '.join(EPS_UNITS)}")
    if units == "pixels":
        return np.full(channels, float(value))
    if std is None:
        std = IMAGENET_STD if channels == 3 else (float(np.mean(IMAGENET_STD)),)
    std = np.asarray(std, np.float64).ravel()
    if std.size not in (1, channels) or (std <= 0).any():
        raise InputError(f"--input-std {','.join(map(str, std.tolist()))}: expected one positive value or one "
                         f"per channel ({channels})")
    return float(value) * np.broadcast_to(std, (channels,))


def penultimate_pgd(features: keras.Model, images: np.ndarray, eps=0.1, steps: int = 40, step_size=0.01,
                    units: np.ndarray | None = None, seed: int = 0, clip: tuple[float, float] = (0.0, 1.0),
                    batch_size: int = 256, target_value: float = 1000.0, other_weight: float = 0.1,
                    random_start: bool = True) -> np.ndarray:
    """Penultimate-layer guided PGD-Linf, the reference's task-agnostic attack.

    Unit `units[i]` (default 0 for every image, as the reference) is pushed towards
    `target_value` (the reference's m = 1000) and the other units towards 0: each step
    descends the sign of the gradient of, per image,
    `(f_u - target_value)^2 + other_weight * mean_{j != u} f_j^2` (the reference's loss,
    weight 0.1 on the mean of the others). The start is a uniform random point of the eps
    ball (seeded; `random_start=False`: the image itself); after each step the
    perturbation is clipped to `eps` (Linf) and the image to `clip`. `eps` and
    `step_size` are in the input's units ([0, 1] pixels), scalars or one per channel
    (`pixel_budget` converts the reference's normalised units).

    Returns float32 adversarial images of `images`' shape, in [0, 1] like the model input.
    """
    images = np.asarray(images)
    clean = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    units = np.zeros(len(clean), np.int32) if units is None else np.asarray(units, np.int32)
    low, high = clip
    eps = tf.constant(np.asarray(eps, np.float32))
    step_size = tf.constant(np.asarray(step_size, np.float32))
    if random_start:
        noise = np.random.default_rng(seed).uniform(-1.0, 1.0, clean.shape).astype(np.float32)
        start = np.clip(clean + noise * eps.numpy(), low, high)
    else:
        start = clean

    @tf.function(reduce_retracing=True)
    def attack(x0, x, unit):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(penultimate_loss(features(x, training=False), unit, target_value, other_weight))
            x = x - step_size * tf.sign(tape.gradient(loss, x))
            x = tf.clip_by_value(tf.clip_by_value(x, x0 - eps, x0 + eps), low, high)
        return x

    out = [attack(tf.constant(clean[i:i + batch_size]), tf.constant(start[i:i + batch_size]),
                  tf.constant(units[i:i + batch_size])).numpy()
           for i in range(0, len(clean), batch_size)]
    return np.concatenate(out) if out else clean


def penultimate_loss(features, units, target_value: float = 1000.0, other_weight: float = 0.1):
    """`penultimate_pgd`'s loss per sample: `(f_u - target_value)^2 + other_weight * mean_{j != u} f_j^2`
    for features `[batch, width]` and units `[batch]` (the reference's `myloss` is minus its
    batch mean).

    Example:
    >>> penultimate_loss(tf.constant([[998.0, 1.0, 3.0]]), tf.constant([0])).numpy().tolist()  # 4 + 0.1 * 5
    [4.5]
    """
    features = tf.convert_to_tensor(features, tf.float32)
    width = int(features.shape[-1])
    chosen = tf.one_hot(units, width)
    pushed = tf.reduce_sum(chosen * tf.square(features - target_value), axis=-1)
    others = tf.reduce_sum((1.0 - chosen) * tf.square(features), axis=-1) / max(width - 1, 1)
    return pushed + other_weight * others


def penultimate_target(clean_features, units):
    """HotFlip's target features: 0 except unit `units[i]` of sample i, set to twice the
    largest clean feature value of the batch."""
    width = int(clean_features.shape[-1])
    return tf.one_hot(units, width) * (2.0 * tf.reduce_max(clean_features))


def penultimate_hotflip(features: keras.Model, token_table: keras.layers.Embedding, tokens: np.ndarray,
                        flips: int = 3, units: np.ndarray | None = None, seed: int = 0,
                        excluded_ids=(0,), batch_size: int = 64) -> np.ndarray:
    """Penultimate-layer guided HotFlip: pushes one penultimate unit (random per sentence,
    seeded) to twice the largest clean feature of the batch and the others to 0 (squared
    distance to `penultimate_target`), with a budget of `flips` substituted tokens per
    sentence instead of an Linf ball.

    `token_table` is the embedding layer (inside `features`) that looks the ids up. In each
    of `flips` rounds, one forward / backward pass per batch gives the gradient g_p of the
    loss (squared distance to the target features, `penultimate_target`) at every
    position's token embedding; replacing the token at p by vocabulary entry v changes the
    loss by about g_p . (E[v] - E[x_p]). Each sentence takes its most loss-reducing
    substitution, at a position not substituted before that holds no `excluded_ids`
    (padding, [CLS], [SEP]), by a token not in `excluded_ids`; if none lowers the loss, the
    sentence is left as it is in that round.

    Returns int32 token ids of `tokens`' shape.

    Example:
    >>> adversarial = penultimate_hotflip(feature_extractor(teacher), token_table(teacher), x_test,
    ...                                   flips=3, excluded_ids=[0, 1, 2, 3, 4])       # doctest: +SKIP
    """
    if flips < 1:
        raise InputError(f"--flips {flips}: expected a positive number of substituted tokens")
    tokens = np.asarray(tokens, np.int32)
    width = int(features.output_shape[-1])
    if units is None:
        units = np.random.default_rng(seed).integers(0, width, size=len(tokens))
    table = token_table.embeddings
    vocabulary = int(table.shape[0])
    excluded = np.asarray(list(excluded_ids), np.int64)
    forbidden_token = tf.constant(np.where(np.isin(np.arange(vocabulary), excluded), np.inf, 0.0), tf.float32)
    out = []
    for start in range(0, len(tokens), batch_size):
        ids = tokens[start:start + batch_size].copy()
        target = penultimate_target(features(ids, training=False), tf.constant(units[start:start + batch_size]))
        free = ~np.isin(ids, excluded)
        for _ in range(flips):
            gradient, embedded = _embedding_gradient(features, token_table, ids, target)
            gain = tf.einsum("bph,vh->bpv", gradient, table) - tf.reduce_sum(gradient * embedded, -1, keepdims=True)
            gain += forbidden_token + tf.constant(np.where(free, 0.0, np.inf), tf.float32)[..., None]
            flat = tf.reshape(gain, (len(ids), -1))
            best, best_gain = tf.argmin(flat, axis=1).numpy(), tf.reduce_min(flat, axis=1).numpy()
            rows = np.flatnonzero(best_gain < 0)
            positions, replacements = np.divmod(best[rows], vocabulary)
            ids[rows, positions] = replacements
            free[rows, positions] = False
        out.append(ids)
    return np.concatenate(out) if out else tokens


def _embedding_gradient(features, token_table, ids, target):
    """The loss gradient at the token embeddings `[batch, tokens, features]`, and those
    embeddings (captured from the table's call inside one forward pass)."""
    captured = {}
    with tf.GradientTape() as tape:
        def capture(path, inputs, outputs):
            tape.watch(outputs)
            captured["embedded"] = outputs

        with tapped_calls({"tokens": token_table}, capture):
            loss = tf.reduce_sum(tf.square(features(ids, training=False) - target))
    return tape.gradient(loss, captured["embedded"]), captured["embedded"]


def random_substitutions(tokens: np.ndarray, flips: int, vocabulary_size: int, excluded_ids=(0,),
                         seed: int = 0) -> np.ndarray:
    """HotFlip's control: `flips` tokens per sentence, at random positions holding no
    `excluded_ids`, replaced by random ids not in `excluded_ids` (seeded).

    Example:
    >>> random_substitutions(np.array([[2, 7, 8, 3, 0]]), 2, 10, excluded_ids=[0, 1, 2, 3], seed=0)[0, [0, 3, 4]]
    array([2, 3, 0], dtype=int32)
    """
    rng = np.random.default_rng(seed)
    tokens = np.array(tokens, np.int32, copy=True)
    allowed = np.setdiff1d(np.arange(vocabulary_size), np.asarray(list(excluded_ids)))
    for row in tokens:
        positions = np.flatnonzero(~np.isin(row, excluded_ids))
        chosen = rng.choice(positions, size=min(flips, len(positions)), replace=False)
        row[chosen] = rng.choice(allowed, size=len(chosen))
    return tokens
