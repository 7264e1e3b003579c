"""Checkpoints that resume a run exactly: weights, optimizer, method state, step."""

from __future__ import annotations

import keras
import tensorflow as tf


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves the model, its optimizer and any extra trackables at the end of every epoch.

    Everything a run needs to continue lives in these objects: the weights and the model's
    non-trainable state (BN statistics, EMA weights, curriculum counters are variables of the
    model), the optimizer's slots and its `iterations` counter. The data position is derived
    from `iterations` (the streams in `kerastl.data.pipeline` are pure functions of the step),
    so no iterator state is saved.

    Example:
    >>> checkpoint = TrainingCheckpoint("run/checkpoints", model)            # doctest: +SKIP
    >>> step = checkpoint.restore()           # 0 on a fresh run             # doctest: +SKIP
    >>> model.fit(stream(start_step=step), initial_epoch=step // steps_per_epoch,
    ...           steps_per_epoch=steps_per_epoch, epochs=epochs, callbacks=[checkpoint])
    """

    def __init__(self, directory: str, model: keras.Model, max_to_keep: int = 2, **trackables):
        super().__init__()
        self._model_to_save = model
        # Keras 3 layers kept in lists inside custom layers are not TF-trackable children, so
        # their non-trainable variables (BN moving statistics) would be missed: every model
        # variable is also saved by position.
        self._checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                                               model_variables=[v.value for v in model.variables], **trackables)
        self.manager = tf.train.CheckpointManager(self._checkpoint, directory, max_to_keep=max_to_keep)

    def restore(self) -> int:
        """Restores the latest checkpoint, if any; returns the optimizer step reached."""
        model = self._model_to_save
        if not model.optimizer.built:
            with model.distribute_strategy.scope():
                model.optimizer.build(model.trainable_variables)
        if self.manager.latest_checkpoint:
            self._checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
        return int(model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=int(self._model_to_save.optimizer.iterations.numpy()))
