"""Image augmentation in pure, stateless TF ops (usable inside tf.data with AUTOTUNE).

Every view function has the signature `view(image, seed) -> image` (float32 `[H, W, C]`
in [0, 1], a shape-[2] integer seed), so the same seed always gives the same view.
"""

from kerastl.augment.weak import weak_augment

__all__ = ["weak_augment"]
from kerastl.augment.randaugment import rand_augment, strong_augment  # noqa: E402

__all__ += ["rand_augment", "strong_augment"]
