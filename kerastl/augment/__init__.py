"""Image augmentation in pure, stateless TF ops (usable inside tf.data with AUTOTUNE).

Every view function has the signature `view(image, seed) -> image` (float32 `[H, W, C]`
in [0, 1], a shape-[2] integer seed), so the same seed always gives the same view.

- `weak_augment`: flip + reflect-padded random crop (the weak view).
- `strong_augment`: `rand_augment` (RandAugment, 3 of 14 ops, + Cutout), then the weak view
  (TorchSSL's order).
"""

from kerastl.augment.randaugment import rand_augment, strong_augment
from kerastl.augment.weak import weak_augment

__all__ = ["rand_augment", "strong_augment", "weak_augment"]
