"""Batch normalization whose moving variance is PyTorch's `running_var`.

Keras' and PyTorch's batch normalization normalise a training batch alike (by its mean and
its biased variance) and differ in one place: the moving variance. Keras averages the biased
batch variance, PyTorch the unbiased one (Bessel's correction, n / (n - 1) with n the values
per channel: batch x height x width). After k updates the two moving variances differ by up
to that factor (1.3 % for 8 images of 2x2, 0.003 % for 64 of 32x32), and so do the network's
outputs in inference. `TorchBatchNormalization` is the switch that removes this difference,
for a network whose PyTorch twin must keep the same statistics step by step
(benchmarks/parity/ssl.py) or whose weights move between the two frameworks mid-training.

kerastl's networks keep Keras' layer; `with_torch_batch_norm(model)` is a copy of a model
with every `BatchNormalization` replaced by this layer and the weights carried over.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable("kerastl")
class TorchBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` whose moving variance averages the unbiased batch
    variance, as `torch.nn.BatchNorm2d`'s `running_var` does.

    Outputs are Keras' layer's, in training and in inference; only the moving variance
    differs. `momentum` keeps Keras' meaning (the moving statistics' share kept per update:
    PyTorch's momentum 0.1 is Keras' 0.9). Refuses `renorm` and masks, which PyTorch's layer
    does not have.

    Example:
    >>> layer = TorchBatchNormalization(momentum=0.0)
    >>> _ = layer(np.array([[0.0], [2.0]]), training=True)
    >>> float(layer.moving_variance[0])   # unbiased: 2.0 (Keras' layer keeps 1.0)
    2.0
    """

    def __init__(self, **kwargs):
        if kwargs.get("renorm"):
            raise ValueError("TorchBatchNormalization: renorm has no PyTorch counterpart; use "
                             "keras.layers.BatchNormalization")
        super().__init__(**kwargs)

    def call(self, inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError("TorchBatchNormalization: masks have no PyTorch counterpart; use "
                             "keras.layers.BatchNormalization")
        if not (training and self.trainable):
            return super().call(inputs, training=training)
        # Keras' training branch with the moving variance PyTorch keeps. Computed in at least
        # float32, as Keras' layer (bfloat16 / float16 inputs overflow in the moments).
        inputs = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        mean, variance = self._moments(inputs, None)
        count = ops.cast(ops.size(inputs) // ops.shape(inputs)[self.axis], inputs.dtype)
        unbiased = variance * count / ops.maximum(count - 1.0, 1.0)
        keep = self.momentum
        self.moving_mean.assign(ops.cast(self.moving_mean, inputs.dtype) * keep + mean * (1.0 - keep))
        self.moving_variance.assign(ops.cast(self.moving_variance, inputs.dtype) * keep + unbiased * (1.0 - keep))
        outputs = ops.batch_normalization(
            inputs, mean, variance, axis=self.axis,
            offset=ops.cast(self.beta, inputs.dtype) if self.center else None,
            scale=ops.cast(self.gamma, inputs.dtype) if self.scale else None,
            epsilon=self.epsilon)
        return ops.cast(outputs, self.compute_dtype)


def with_torch_batch_norm(model: keras.Model) -> keras.Model:
    """A copy of `model` (functional or Sequential) whose `BatchNormalization` layers are
    `TorchBatchNormalization` with the same configuration, carrying `model`'s weights.

    Example:
    >>> from kerastl.nets import small_cnn
    >>> twin = with_torch_batch_norm(small_cnn((28, 28, 1), 10))
    >>> type(twin.get_layer("bn0_0")).__name__
    'TorchBatchNormalization'
    """
    def clone(layer):
        if type(layer) is keras.layers.BatchNormalization:
            return TorchBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy
