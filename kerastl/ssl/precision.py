"""The dtype a semi-supervised step computes its losses in."""

from __future__ import annotations

import tensorflow as tf


def loss_dtype(dtype) -> tf.DType:
    """float64 for float64, else float32: the dtype of losses, masks, loss weights and the
    learning rate for values (or a network's compute dtype) of `dtype`.

    Under mixed precision (bf16 / fp16 networks) losses stay float32; a float64 network keeps
    float64 throughout, where float32 would round every loss, mask product and gradient at
    ~1e-7 (the reference, USB, computes them in the network's dtype).
    """
    return tf.float64 if tf.as_dtype(dtype) == tf.float64 else tf.float32


def in_loss_dtype(x: tf.Tensor) -> tf.Tensor:
    """`x` cast to `loss_dtype(x.dtype)`."""
    return tf.cast(x, loss_dtype(x.dtype))
