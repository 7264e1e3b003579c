"""Runs a few FlexMatch steps under a tf.distribute strategy and saves what they produced.

Used by test_distributed.py in child processes (logical devices and TF_CONFIG must be set
before TensorFlow starts). Usage:
    python distributed_run.py single OUT.npz
    python distributed_run.py mirrored OUT.npz
    python distributed_run.py multi_worker OUT.npz   (TF_CONFIG set by the caller)
    python distributed_run.py keras_reduce OUT.npz   (mirrored, recording what Keras reduces)
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import tensorflow as tf  # noqa: E402

mode, out = sys.argv[1], sys.argv[2]
if mode in ("mirrored", "keras_reduce"):
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kerastl.ssl import SemiSupervisedModel, build_algorithm, torchssl_optimizer  # noqa: E402

STEPS, NUM_UNLABELED, B, MU = 4, 48, 8, 3


def batches():
    rng = np.random.default_rng(0)
    x_lb = rng.uniform(0, 1, (STEPS, B, 8, 8, 1)).astype("float32")
    y_lb = rng.integers(0, 4, (STEPS, B))
    index = np.stack([rng.choice(NUM_UNLABELED, MU * B, replace=False) for _ in range(STEPS)])
    weak = rng.uniform(0, 1, (STEPS, MU * B, 8, 8, 1)).astype("float32")
    strong = np.clip(weak + rng.normal(0, 0.1, weak.shape), 0, 1).astype("float32")
    return tf.data.Dataset.from_tensor_slices(((x_lb, y_lb), (index, weak, strong)))


def network():
    # No batch norm: replicas normalise their own share of a batch, which would make the
    # comparison with one device inexact for reasons that have nothing to do with CPL.
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(4)(x))


class ReduceRecorder(tf.distribute.MirroredStrategy):
    """Records the structure of every value Keras asks the strategy to reduce."""

    calls = []

    def reduce(self, reduce_op, value, axis=None):
        self.calls.append(tf.nest.map_structure(lambda tensor: type(tensor).__name__, value))
        return super().reduce(reduce_op, value, axis)


if mode == "single":
    strategy = tf.distribute.get_strategy()
elif mode == "mirrored":
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
elif mode == "keras_reduce":
    strategy = ReduceRecorder(["/cpu:0", "/cpu:1"])
else:
    from kerastl.ssl import MultiWorkerMirroredStrategy

    strategy = MultiWorkerMirroredStrategy()

with strategy.scope():
    keras.utils.set_random_seed(0)
    model = SemiSupervisedModel(network(), build_algorithm("flexmatch", NUM_UNLABELED, 4, 100), ema_decay=0.9)
    model.algorithm.threshold.tau = 0.3  # low enough that examples get selected in a few steps
    model.compile(optimizer=torchssl_optimizer(0.1, 100))
    model.build((None, 8, 8, 1))

losses = []
model.fit(batches(), epochs=1, steps_per_epoch=STEPS, verbose=0, shuffle=False,
          callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: losses.append(float(logs["loss"])))])
threshold = model.algorithm.threshold
result = {"replicas": strategy.num_replicas_in_sync, "losses": np.array(losses),
          "selected_label": threshold.selected_label.numpy(), "classwise_acc": threshold.classwise_acc.numpy(),
          **{f"weight_{i}": w for i, w in enumerate(model.network.get_weights())},
          **{f"ema_{i}": w for i, w in enumerate(model.ema_network.get_weights())}}
if mode == "keras_reduce":
    result["reduced"] = json.dumps(strategy.calls)
task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
if task.get("index", 0) == 0:
    np.savez(out, **result)
print("done", mode, strategy.num_replicas_in_sync)
