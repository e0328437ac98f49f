"""Training an HGN with `keras.Model.fit`: checkpoints, resume, the non-finite guard, TensorBoard.

Resume contract: a checkpoint holds the networks, both optimizers (Adam moments and step
counts), the GECO parameter, the posterior-sampling seed state and `train_steps` (batches
consumed). The training pipeline is deterministic given its seed, so skipping `train_steps`
batches puts a resumed run on exactly the data an uninterrupted run would have seen next.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from common.runs import NonFiniteLossError, RunError, restore_newest_readable
from hgn.config import HGNConfig
from hgn.model import HGN

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"


def build_model(config: HGNConfig) -> HGN:
    """A compiled HGN with every variable (and optimizer slot) created, ready to restore into."""
    keras.utils.set_random_seed(config.seed)
    model = HGN(config)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=config.jit_compile)
    return model.build_all()


def _variables_by_path(model: HGN) -> dict:
    # tf.train.Checkpoint does not see into Keras 3 sub-layers: name every variable explicitly
    # (weights, counters, the posterior seed state and the metric trackers' totals).
    found = {}
    for v in [*model.variables, model.seed_generator.state]:
        found.setdefault(v.path.replace("/", "."), v)
    return found


def checkpoint_manager(model: HGN, run_dir, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    """A `tf.train.CheckpointManager` over model, optimizers and counters in `run_dir/checkpoints`."""
    ckpt = tf.train.Checkpoint(model=_variables_by_path(model), optimizer=model.optimizer,
                               geco_optimizer=model.geco_optimizer)
    return tf.train.CheckpointManager(ckpt, str(Path(run_dir) / CHECKPOINT_DIR), max_to_keep=max_to_keep)


def restore_latest(model: HGN, manager: tf.train.CheckpointManager, required: bool) -> Optional[str]:
    """Restores the newest checkpoint; returns its path (None if there is none and not `required`).

    Raises:
      RunError: `required` and no checkpoint exists, or the checkpoint does not fit the model.
    """
    return restore_newest_readable(manager, required, what="this model's config")


def _weights_finite(model: HGN) -> bool:
    return all(np.all(np.isfinite(w.numpy())) for w in model.weights if w.dtype.startswith("float"))


class StepCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint every `every` training steps and when training ends; stops at `steps`.

    Never saves non-finite weights (the train step skips non-finite updates, so this is a
    second line of defence).
    """

    def __init__(self, manager: tf.train.CheckpointManager, every: int, steps: int):
        super().__init__()
        self.manager, self.every, self.steps = manager, every, steps
        self.last_saved: Optional[int] = None

    def _step(self) -> int:
        return int(self.model.train_steps.numpy())

    def save(self) -> None:
        step = self._step()
        if step == self.last_saved:
            return
        if not _weights_finite(self.model):
            raise NonFiniteLossError(f"weights became non-finite at step {step}; not checkpointed")
        self.manager.save(checkpoint_number=step)
        self.last_saved = step

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every == 0:
            self.save()
        if step >= self.steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.save()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training after `patience` consecutive non-finite steps (each already skipped).

    The reason is kept in `self.error` and raised by `train` once `fit` returns, so the last
    good checkpoint stays the newest one.
    """

    def __init__(self, patience: int):
        super().__init__()
        self.patience = patience
        self.error: Optional[str] = None

    def on_train_batch_end(self, batch, logs=None):
        streak = int(self.model.nonfinite_streak.numpy())
        if streak >= self.patience:
            step = int(self.model.train_steps.numpy())
            self.error = (f"loss or gradients non-finite for {streak} consecutive steps (last at step {step}); "
                          f"those updates were skipped and the last checkpoint holds finite weights. "
                          f"Try a lower --learning-rate")
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of wall-clock time have passed (a checkpoint is saved at the end)."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start >= self.seconds:
            self.model.stop_training = True


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars every `every` steps, written with core TF ops only.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package at run time (for
    `tf.summary.scalar`); `tf.summary.write` with the scalars plugin's metadata writes the same
    event records without it, and TensorBoard reads them when installed.
    """

    def __init__(self, log_dir, every: int):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.every = every
        from tensorflow.core.framework import summary_pb2

        self.metadata = summary_pb2.SummaryMetadata()
        self.metadata.plugin_data.plugin_name = "scalars"

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.train_steps.numpy())
        if step % self.every or not logs:
            return
        with self.writer.as_default():
            for name, value in logs.items():
                tf.summary.write(f"train/{name}", tf.constant(float(value), tf.float32), step=step,
                                 metadata=self.metadata.SerializeToString())
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()


def train(model: HGN, dataset: tf.data.Dataset, run_dir, *, manager: tf.train.CheckpointManager,
          verbose: int = 1, extra_callbacks: Optional[List[keras.callbacks.Callback]] = None) -> int:
    """Runs `fit` from `model.train_steps` to `config.steps`; returns the final step.

    Args:
      model: a built (and possibly restored) HGN.
      dataset: the repeated, deterministic training pipeline from its beginning; the batches a
        restored model already consumed are skipped here.
      run_dir: run directory (TensorBoard logs go to `run_dir/logs`).
      manager: the checkpoint manager.
      verbose: Keras progress-bar verbosity (1 bar, 2 one line per epoch, 0 silent).

    Raises:
      NonFiniteLossError: the guard stopped training.
    """
    c = model.config
    start = int(model.train_steps.numpy())
    if start >= c.steps:
        return start
    epoch_len = c.checkpoint_every
    guard = NonFiniteGuard(c.max_nonfinite_steps)
    checkpointer = StepCheckpoint(manager, c.checkpoint_every, c.steps)
    callbacks = [
        guard,
        checkpointer,
        ScalarLogger(Path(run_dir) / LOG_DIR, every=max(1, min(50, epoch_len))),
        *([TimeBudget(c.max_train_minutes)] if c.max_train_minutes else []),
        *(extra_callbacks or []),
    ]
    try:
        model.fit(dataset.skip(start), epochs=math.ceil(c.steps / epoch_len), steps_per_epoch=epoch_len,
                  initial_epoch=start // epoch_len, callbacks=callbacks, verbose=verbose)
    except KeyboardInterrupt:
        # Ctrl-C (SIGINT): keep the work done so far; --resume continues from this step.
        checkpointer.save()
        raise
    if guard.error:
        raise NonFiniteLossError(guard.error)
    return int(model.train_steps.numpy())
