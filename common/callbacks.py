"""Run mechanics shared by both trainers: Keras callbacks for checkpoints, the non-finite guard,
the wall-clock budget and TensorBoard scalars, and the training clock.

The callbacks expect a Keras model with two int64 counters:

* `train_steps`: batches consumed by training (the resume counter; a skipped step counts);
* `nonfinite_streak`: consecutive steps whose loss or gradients were not finite (each skipped
  by the model's `train_step`, never applied).

`hgn.model.HGN` has both. The rollback itself (restore the newest checkpoint, lower the
learning rate) is the trainer's `roll_back`; `fit_with_rollbacks` runs `fit` with these
callbacks and calls it when `NonFiniteGuard` stops `fit`.
"""
from __future__ import annotations

import functools
import math
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import keras
import numpy as np
import tensorflow as tf

from common.runs import NonFiniteLossError


def weights_finite(model) -> bool:
    """Whether every floating-point weight of `model` is finite."""
    return all(np.all(np.isfinite(w.numpy())) for w in model.weights if w.dtype.startswith("float"))


@functools.lru_cache(maxsize=None)
def _scalar_metadata() -> bytes:
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    return metadata.SerializeToString()


def write_scalar(name: str, value: float, step: int) -> None:
    """Writes one TensorBoard scalar to the default summary writer, with core TF ops only.

    `tf.summary.scalar` needs the `tensorboard` package at run time; `tf.summary.write` with the
    scalars plugin's metadata writes the same event records without it, and TensorBoard reads
    them when installed.
    """
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=_scalar_metadata())


class StepCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint every `every` training steps and when training ends; stops at `steps`.

    Never saves non-finite weights (the train step skips non-finite updates, so this is a
    second line of defence), nor in the middle of a non-finite streak (a rollback must find the
    state before it). `after_save`, when set, runs after each save (e.g. to write the history).
    """

    def __init__(self, manager: tf.train.CheckpointManager, every: int, steps: int):
        super().__init__()
        self.manager, self.every, self.steps = manager, every, steps
        self.last_saved: Optional[int] = None
        self.after_save: Optional[Callable[[], None]] = None

    def _step(self) -> int:
        return int(self.model.train_steps.numpy())

    def save(self) -> None:
        step = self._step()
        if step == self.last_saved or int(self.model.nonfinite_streak.numpy()):
            return
        if not weights_finite(self.model):
            raise NonFiniteLossError(f"weights became non-finite at step {step}; not checkpointed")
        self.manager.save(checkpoint_number=step)
        self.last_saved = step
        if self.after_save is not None:
            self.after_save()

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if step % self.every == 0:
            self.save()
        if step >= self.steps:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self.save()


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops `fit` after `patience` consecutive non-finite steps (each already skipped).

    What happened is kept in `self.tripped` (a message) for the trainer, which then rolls back
    to the last checkpoint or raises; the last good checkpoint stays the newest one either way.
    """

    def __init__(self, patience: int):
        super().__init__()
        self.patience = patience
        self.tripped: Optional[str] = None

    def on_train_batch_end(self, batch, logs=None):
        streak = int(self.model.nonfinite_streak.numpy())
        if streak >= self.patience:
            step = int(self.model.train_steps.numpy())
            self.tripped = f"loss or gradients non-finite for {streak} consecutive steps (last at step {step})"
            self.model.stop_training = True


class TrainingClock:
    """Wall-clock seconds spent training, excluding the pauses callbacks declare (test-curve
    evaluations and, through `ExcludeCompilation`, compilation add their duration to `paused`);
    a resumed run's clock starts at the seconds it `spent` before (`spent_training_seconds`)."""

    def __init__(self, spent: float = 0.0):
        self.start = time.monotonic() - spent
        self.paused = 0.0

    def seconds(self) -> float:
        return time.monotonic() - self.start - self.paused


class ExcludeCompilation(keras.callbacks.Callback):
    """Leaves the start of each `fit` call out of `clock`, up to the end of its first batch: the
    training step's tracing and compilation (again after a resume or a rollback) and the input
    pipeline's start. A time budget, and a schedule paced by it, then count training steps only,
    on any CPU, whatever its compiler takes. Put it first among the callbacks that read the clock."""

    def __init__(self, clock: TrainingClock):
        super().__init__()
        self.clock = clock
        self._since: Optional[float] = None
        self._first = False

    def _pause(self) -> None:
        now = time.monotonic()
        self.clock.paused += now - self._since
        self._since = now

    def on_train_begin(self, logs=None):
        self._since, self._first = time.monotonic(), True

    def on_train_batch_begin(self, batch, logs=None):
        if self._first:
            self._pause()  # set-up before the first batch

    def on_train_batch_end(self, batch, logs=None):
        if self._first:
            self._pause()  # the first batch: tracing and compilation
            self._first = False


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of training time have passed (a checkpoint is saved at the end)."""

    def __init__(self, minutes: float, clock: TrainingClock):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.clock = clock

    def on_train_begin(self, logs=None):
        spent = self.clock.seconds()
        if spent >= self.seconds:  # a resume of a run that had used its budget
            print(f"note: --max-train-minutes {self.seconds / 60:g} is already spent ({spent / 60:.1f} minutes of "
                  f"training so far): one step, then the rest of the run; give a larger --max-train-minutes to "
                  f"train longer", file=sys.stderr, flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.seconds() >= self.seconds:
            self.model.stop_training = True


class ClockVariable(keras.callbacks.Callback):
    """Writes the training clock's seconds into `variable` before each batch, so that the training
    step can read the time spent (e.g. a schedule paced by a time budget); checkpointed with the
    model, it lets a resumed run continue its clock."""

    def __init__(self, variable: tf.Variable, clock: TrainingClock):
        super().__init__()
        self.variable = variable
        self.clock = clock

    def on_train_batch_begin(self, batch, logs=None):
        self.variable.assign(self.clock.seconds())


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars (`train/<name>` and `train/learning_rate`) every `every` steps, and
    the same values appended to `history` as `{"step", <name>..., "learning_rate", "wall_seconds"}`,
    with the `clock`'s `"train_seconds"` when given one (a resume continues its budget from them).

    Written with core TF ops only (see `write_scalar`): `keras.callbacks.TensorBoard` needs the
    `tensorboard` package at run time. Keras's trackers average from the start of the epoch;
    with `reset_metrics` each logged value is the mean over the `every` steps since the last one.
    """

    def __init__(self, log_dir, every: int, history: Optional[List[dict]] = None, reset_metrics: bool = False,
                 clock: Optional[TrainingClock] = None):
        super().__init__()
        # No log_dir (e.g. a non-chief worker): the history only.
        self.writer = tf.summary.create_file_writer(str(log_dir)) if log_dir else tf.summary.create_noop_writer()
        self.every = every
        self.history = history if history is not None else []
        self.reset_metrics = reset_metrics
        self.clock = clock  # its seconds go into each entry as "train_seconds": a resume reads them back

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.train_steps.numpy())
        if step % self.every or not logs:
            return
        values = {name: float(value) for name, value in logs.items()}
        values["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        entry = {"step": step, **values, "wall_seconds": round(time.monotonic() - self.start, 3)}
        if self.clock is not None:
            entry["train_seconds"] = round(self.clock.seconds(), 3)
        self.history.append(entry)
        with self.writer.as_default():
            for name, value in values.items():
                write_scalar(f"train/{name}", value, step=step)
        self.writer.flush()
        if self.reset_metrics:
            for metric in self.model.metrics:
                metric.reset_state()

    def on_train_end(self, logs=None):
        self.writer.flush()


def fit_with_rollbacks(model: keras.Model, dataset_from: Callable[[int], tf.data.Dataset], *,
                       manager: tf.train.CheckpointManager, steps: int, checkpoint_every: int,
                       max_nonfinite_steps: int, max_rollbacks: int, roll_back: Callable[[], str],
                       callbacks: Optional[Callable[[StepCheckpoint], List[keras.callbacks.Callback]]] = None,
                       after_save: Optional[Callable[[], None]] = None, verbose: int = 0,
                       say: Callable[[str], None] = print, hint: str = "Try a lower --learning-rate") -> int:
    """`model.fit` from `model.train_steps` to `steps`, with checkpoints and rollbacks; returns the rollbacks.

    Each epoch is `checkpoint_every` steps (the progress bar's unit; all `steps` when fewer). A `NonFiniteGuard` stops
    `fit` after `max_nonfinite_steps` skipped steps in a row; then `roll_back()` restores the
    newest checkpoint and lowers the learning rate (it returns what it did, passed to `say`), the
    streak is cleared and `fit` restarts from the restored step, at most `max_rollbacks` times.
    Ctrl-C saves a checkpoint at the current step before the `KeyboardInterrupt` propagates.

    Args:
      model: a compiled Keras model with `train_steps` and `nonfinite_streak` (see module docstring).
      dataset_from: `dataset_from(step)` -> the training batches from step `step` on (repeated).
      manager: where checkpoints go.
      steps, checkpoint_every: the last step, and the steps between checkpoints.
      max_nonfinite_steps, max_rollbacks: the guard's patience and the rollbacks allowed.
      roll_back: restores the newest checkpoint and lowers the learning rate; returns a message.
      callbacks: `callbacks(checkpointer)` makes the callbacks of one `fit` call, in order,
        including the given `StepCheckpoint` (default: only it); the guard always comes first.
      after_save: runs after each checkpoint (e.g. writes the history).
      verbose: Keras's progress-bar verbosity.
      say: reports each rollback (one line).
      hint: the last sentence of the error.

    Raises:
      NonFiniteLossError: non-finite steps persisted after `max_rollbacks` rollbacks (or with no
        checkpoint to roll back to); the newest checkpoint holds the last finite weights.
    """
    rollbacks = 0
    while True:
        start = int(model.train_steps.numpy())
        if start >= steps:
            return rollbacks
        guard = NonFiniteGuard(max_nonfinite_steps)
        checkpointer = StepCheckpoint(manager, checkpoint_every, steps)
        checkpointer.after_save = after_save
        epoch = min(checkpoint_every, steps)  # a run shorter than one interval: one epoch of its steps
        try:
            model.fit(dataset_from(start), epochs=math.ceil(steps / epoch), steps_per_epoch=epoch,
                      initial_epoch=start // epoch,
                      callbacks=[guard, *(callbacks(checkpointer) if callbacks else [checkpointer])],
                      verbose=verbose, shuffle=False)
        except KeyboardInterrupt:
            checkpointer.save()
            raise
        if guard.tripped is None:
            return rollbacks
        latest = manager.latest_checkpoint
        if rollbacks >= max_rollbacks or latest is None:
            kept = (f"the newest checkpoint {Path(latest).name} holds the last finite weights" if latest
                    else "no checkpoint was written yet")
            raise NonFiniteLossError(f"{guard.tripped} after {rollbacks} rollback(s) (--max-rollbacks "
                                     f"{max_rollbacks}); those updates were skipped and {kept}. {hint}")
        rollbacks += 1
        message = roll_back()
        model.nonfinite_streak.assign(0)
        say(f"{guard.tripped}: {message} (rollback {rollbacks} of {max_rollbacks})")


class BuiltAhead:
    """Keras-model mixin for models whose `build_all()` creates every variable and optimizer slot.

    `fit` would otherwise build the model symbolically from a sample batch first, which under a
    tf.distribute strategy reduces that batch across replicas (and fails for a dict batch under
    MultiWorkerMirroredStrategy), and would build the optimizer for Keras's own, possibly empty,
    variable list. Both models list their variables themselves, so there is nothing to build.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self.built and self.optimizer is not None and self.optimizer.built:
            return
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
