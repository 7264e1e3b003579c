"""TrainingCheckpoint restores every model variable, nested ones included."""

import keras
import numpy as np

from kerastl.checkpoint import TrainingCheckpoint


class NormThenDense(keras.layers.Layer):
    """Sublayers held in a list: Keras 3 does not make them TF-trackable children."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.parts = [keras.layers.BatchNormalization(name="norm"), keras.layers.Dense(3, name="dense")]

    def call(self, x, training=None):
        for part in self.parts:
            x = part(x, training=training)
        return x


def test_restore_brings_back_nested_batch_norm_statistics(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, NormThenDense(name="block")(inputs))
    model.compile("adam", "mse")
    model.fit(np.random.rand(64, 4) * 5 + 2, np.random.rand(64, 3), epochs=2, verbose=0)
    saved = {v.path: v.numpy().copy() for v in model.variables}
    assert np.abs(saved["block/norm/moving_mean"]).min() > 0.1  # trained away from 0

    checkpoint = TrainingCheckpoint(str(tmp_path), model)
    checkpoint.on_epoch_end(0)
    for variable in model.variables:
        variable.assign(np.zeros(variable.shape))
    step = checkpoint.restore()

    assert step == int(model.optimizer.iterations.numpy()) > 0
    for variable in model.variables:
        np.testing.assert_array_equal(variable.numpy(), saved[variable.path])
