"""Training an HGN with `keras.Model.fit`: checkpoints, resume, the non-finite guard, TensorBoard.

Resume contract: a checkpoint holds the networks, both optimizers (Adam moments, step counts
and learning rates), the GECO parameter and `train_steps` (batches consumed). The training
pipeline is deterministic given its seed, and the posterior noise of batch i is drawn from a
stateless seed (config.seed, i) inside the pipeline, so skipping `train_steps` batches puts a
resumed run on exactly the data and noise an uninterrupted run would have seen next.

Distribution: build the model under a `tf.distribute` strategy (`build_model(config,
strategy)`); `fit` then splits each global batch across the replicas. Because the noise
travels with the batch, a mirrored or multi-worker run computes the same global gradient as a
single-device run, up to the order of float32 sums.

Non-finite guard: a step whose loss or gradients are not finite is skipped (never applied).
After `max_nonfinite_steps` such steps in a row the run rolls back to its newest checkpoint
(which never holds non-finite weights), multiplies the learning rate by `rollback_lr_factor`
and replays the data from there; after `max_rollbacks` rollbacks it stops with
`NonFiniteLossError`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, List, Optional

import keras
import numpy as np
import tensorflow as tf

from common import distribute
from common.runs import (HISTORY_FILE, NonFiniteLossError, RunError, atomic_write_json, load_history,
                         restore_newest_readable)
from common.schedules import ScaledSchedule, warmup_cosine
from hgn.config import HGNConfig
from hgn.model import HGN

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"
CURVE_FILE = "test_curve.json"
NOISE_STREAM = 104_729  # offsets the posterior-noise seeds from every other use of config.seed


def build_model(config: HGNConfig, strategy: Optional[tf.distribute.Strategy] = None) -> HGN:
    """A compiled HGN with every variable (and optimizer slot) created, ready to restore into.

    Args:
      config: the model's config.
      strategy: a `tf.distribute` strategy to build (and later train) under; None = default.
    """
    keras.utils.set_random_seed(config.seed)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = HGN(config)
        learning_rate = config.learning_rate
        if model.lr_scale is not None:
            final = config.final_lr_fraction if config.decay == "cosine" else 1.0
            learning_rate = ScaledSchedule(warmup_cosine(config.learning_rate, config.steps, config.warmup_steps, final),
                                           model.lr_scale)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=config.jit_compile)
        return model.build_all()


def lower_learning_rate(model: HGN, factor: float) -> float:
    """Multiplies the learning rate (or its schedule's scale) by `factor`; returns the new current rate."""
    if model.lr_scale is not None:
        model.lr_scale.assign(model.lr_scale * factor)
    else:
        model.optimizer.learning_rate.assign(float(model.optimizer.learning_rate.numpy()) * factor)
    return float(model.optimizer.learning_rate.numpy())


def with_posterior_noise(dataset: tf.data.Dataset, model: HGN) -> tf.data.Dataset:
    """Adds `noise` `[B, 2, h, w, c]` to each batch: the posterior noise of batch i (forward, backward).

    Drawn from the stateless seed (config.seed, i) for the whole global batch, so it does not
    depend on how the batch is split across replicas, and a resumed run (which skips i batches)
    draws the same numbers.
    """
    shape = list(model.latent_shape)
    seed = (model.config.seed + NOISE_STREAM) % 2**31

    def add(i, batch):
        frames = batch["frames"] if isinstance(batch, dict) else batch
        batch = dict(batch) if isinstance(batch, dict) else {"frames": frames}
        size = tf.shape(frames)[0]
        batch["noise"] = tf.random.stateless_normal(tf.concat([[size, 2], shape], 0),
                                                    seed=tf.stack([tf.constant(seed, tf.int64), i]))
        return batch

    return dataset.enumerate().map(add, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _variables_by_path(model: HGN) -> dict:
    # tf.train.Checkpoint does not see into Keras 3 sub-layers: name every variable explicitly
    # (weights, counters, the posterior seed state and the metric trackers' totals).
    found = {}
    for v in [*model.variables, model.seed_generator.state]:
        found.setdefault(v.path.replace("/", "."), v)
    return found


def checkpoint_manager(model: HGN, run_dir, max_to_keep: int = 3, scratch: bool = True) -> tf.train.CheckpointManager:
    """A `tf.train.CheckpointManager` over model, optimizers and counters in `run_dir/checkpoints`.

    On a non-chief worker of a multi-worker run the manager writes into a scratch directory
    instead (every worker takes part in saving; only the chief's checkpoints are kept), unless
    `scratch` is off: a manager only used to restore reads the chief's checkpoints.
    """
    ckpt = tf.train.Checkpoint(model=_variables_by_path(model), optimizer=model.optimizer,
                               geco_optimizer=model.geco_optimizer)
    base = distribute.scratch_or(Path(run_dir), model.distribute_strategy) if scratch else Path(run_dir)
    directory = base / CHECKPOINT_DIR
    return tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=max_to_keep)


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
        self.after_save: Optional[Callable[[], None]] = None

    def _step(self) -> int:
        return int(self.model.train_steps.numpy())

    def save(self) -> None:
        step = self._step()
        if step == self.last_saved or int(self.model.nonfinite_streak.numpy()):
            # Never in the middle of a non-finite streak: a rollback must find the state before it.
            return
        if not _weights_finite(self.model):
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

    What happened is kept in `self.tripped` (a message) for `train`, which then rolls back to the
    last checkpoint or raises; the last good checkpoint stays the newest one either way.
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
    """Wall-clock seconds spent training, excluding the pauses callbacks declare (test-curve evaluations)."""

    def __init__(self):
        self.start = time.monotonic()
        self.paused = 0.0

    def seconds(self) -> float:
        return time.monotonic() - self.start - self.paused


class TimeBudget(keras.callbacks.Callback):
    """Stops training once `minutes` of training time have passed (a checkpoint is saved at the end)."""

    def __init__(self, minutes: float, clock: TrainingClock):
        super().__init__()
        self.seconds = 60.0 * minutes
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.seconds() >= self.seconds:
            self.model.stop_training = True


class TestCurve(keras.callbacks.Callback):
    """Test MSE, forward and backward, every `every_minutes` of training time: the learning curve.

    Scores rollouts of the held-out `frames` `[N, T, H, W, 3]` (as `hgn.evaluation` does, on
    fewer trajectories) and appends `{"step", "train_seconds", "test_mse_x1e4_forward",
    "test_mse_x1e4_backward"}` to `curve`; the time spent evaluating is excluded from the clock
    (and so from the training budget). Also written to TensorBoard as `test/mse_x1e4_*`.
    """

    def __init__(self, frames: np.ndarray, every_minutes: float, clock: TrainingClock, curve: List[dict],
                 writer=None):
        super().__init__()
        self.frames, self.every, self.clock, self.curve, self.writer = frames, 60.0 * every_minutes, clock, curve, writer
        self.next_at = self.every

    def _score(self) -> None:
        from hgn.evaluation import score_rollouts

        t0 = time.monotonic()
        step = int(self.model.train_steps.numpy())
        point = {"step": step, "train_seconds": round(self.clock.seconds(), 1)}
        for direction in ("forward", "backward"):
            point[f"test_mse_x1e4_{direction}"] = round(
                score_rollouts(self.model, self.frames, backward=direction == "backward")["mse_x1e4"], 3)
        self.curve.append(point)
        if self.writer is not None:
            with self.writer.as_default():
                for direction in ("forward", "backward"):
                    tf.summary.scalar(f"test/mse_x1e4_{direction}", point[f"test_mse_x1e4_{direction}"], step=step)
            self.writer.flush()
        self.clock.paused += time.monotonic() - t0

    def on_train_batch_end(self, batch, logs=None):
        if self.clock.seconds() >= self.next_at:
            self._score()
            self.next_at = self.clock.seconds() + self.every

    def on_train_end(self, logs=None):
        if not self.curve or self.curve[-1]["step"] != int(self.model.train_steps.numpy()):
            self._score()


class ScalarLogger(keras.callbacks.Callback):
    """TensorBoard scalars every `every` steps, written with core TF ops only.

    `keras.callbacks.TensorBoard` needs the `tensorboard` package at run time (for
    `tf.summary.scalar`); `tf.summary.write` with the scalars plugin's metadata writes the same
    event records without it, and TensorBoard reads them when installed.
    """

    def __init__(self, log_dir, every: int, history: Optional[List[dict]] = None):
        super().__init__()
        self.writer = tf.summary.create_file_writer(str(log_dir))
        self.every = every
        self.history = history if history is not None else []
        from tensorflow.core.framework import summary_pb2

        self.metadata = summary_pb2.SummaryMetadata()
        self.metadata.plugin_data.plugin_name = "scalars"

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.train_steps.numpy())
        if step % self.every or not logs:
            return
        values = {name: float(value) for name, value in logs.items()}
        values["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        self.history.append({"step": step, **values, "wall_seconds": round(time.monotonic() - self.start, 3)})
        with self.writer.as_default():
            for name, value in values.items():
                tf.summary.write(f"train/{name}", tf.constant(value, tf.float32), step=step,
                                 metadata=self.metadata.SerializeToString())
        self.writer.flush()

    def on_train_end(self, logs=None):
        self.writer.flush()


def _shard_by_data(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    # Multi-worker: every worker builds the same deterministic pipeline and keeps its part of each
    # global batch (file-based auto-sharding would give workers different data orders).
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def train(model: HGN, dataset: tf.data.Dataset, run_dir, *, manager: tf.train.CheckpointManager,
          verbose: int = 1, extra_callbacks: Optional[List[keras.callbacks.Callback]] = None,
          curve_frames: Optional[np.ndarray] = None) -> int:
    """Runs `fit` from `model.train_steps` to `config.steps`; returns the final step.

    Args:
      model: a built (and possibly restored) HGN, built under the strategy to train with.
      dataset: the repeated, deterministic training pipeline from its beginning (global
        batches); the posterior noise is added here and the batches a restored model already
        consumed are skipped.
      run_dir: run directory (TensorBoard logs go to `run_dir/logs`, logged scalars to
        `run_dir/history.json`; only the chief writes them).
      manager: the checkpoint manager.
      verbose: Keras progress-bar verbosity (1 bar, 2 one line per epoch, 0 silent).
      curve_frames: held-out trajectories `[N, T, H, W, 3]` for the test-MSE curve, scored every
        `config.curve_every_minutes` of training time into `run_dir/test_curve.json` (chief only).

    Raises:
      NonFiniteLossError: non-finite steps persisted after `max_rollbacks` rollbacks (or with no
        checkpoint to roll back to).
    """
    c = model.config
    strategy = model.distribute_strategy
    chief = distribute.is_chief(strategy)
    run_dir = Path(run_dir)
    start = int(model.train_steps.numpy())
    if start >= c.steps:
        return start
    epoch_len = c.checkpoint_every
    dataset = _shard_by_data(with_posterior_noise(dataset, model), strategy)
    history = load_history(run_dir, start) if chief else []
    curve = load_history(run_dir, start, CURVE_FILE) if chief else []
    clock = TrainingClock()
    if curve:  # a resumed run's curve continues from the training time already spent
        clock.start -= curve[-1]["train_seconds"]
    rollbacks = 0
    while True:
        start = int(model.train_steps.numpy())
        guard = NonFiniteGuard(c.max_nonfinite_steps)
        checkpointer = StepCheckpoint(manager, c.checkpoint_every, c.steps)
        logger = ScalarLogger(run_dir / LOG_DIR, every=max(1, min(50, epoch_len)), history=history) if chief else None

        def write_logs():
            step = int(model.train_steps.numpy())
            atomic_write_json(run_dir / HISTORY_FILE, [h for h in history if h["step"] <= step])
            if curve:
                atomic_write_json(run_dir / CURVE_FILE, [p for p in curve if p["step"] <= step])

        if chief:
            checkpointer.after_save = write_logs
        callbacks = [
            guard,
            *([TestCurve(curve_frames, c.curve_every_minutes, clock, curve, logger.writer)]
              if chief and curve_frames is not None and c.curve_every_minutes else []),
            checkpointer,
            *([logger] if logger else []),
            *([TimeBudget(c.max_train_minutes, clock)] if c.max_train_minutes else []),
            *(extra_callbacks or []),
        ]
        try:
            model.fit(dataset.skip(start), epochs=math.ceil(c.steps / epoch_len), steps_per_epoch=epoch_len,
                      initial_epoch=start // epoch_len, callbacks=callbacks, verbose=verbose)
        except KeyboardInterrupt:
            # Ctrl-C (SIGINT): keep the work done so far; --resume continues from this step.
            checkpointer.save()
            raise
        if guard.tripped is None:
            if chief:
                write_logs()  # the final checkpoint's step, with the test curve's last point
            return int(model.train_steps.numpy())
        if rollbacks >= c.max_rollbacks or manager.latest_checkpoint is None:
            raise NonFiniteLossError(
                f"{guard.tripped} after {rollbacks} rollback(s); those updates were skipped and the newest "
                f"checkpoint holds finite weights. Try a lower --learning-rate")
        rollbacks += 1
        restored = restore_latest(model, manager, required=True)
        lr = lower_learning_rate(model, c.rollback_lr_factor)
        model.nonfinite_streak.assign(0)
        del history[:]  # replayed from the checkpoint: keep only what it covers
        history.extend(load_history(run_dir, int(model.train_steps.numpy())) if chief else [])
        curve[:] = [p for p in curve if p["step"] <= int(model.train_steps.numpy())]
        if verbose:
            print(f"{guard.tripped}: rolled back to {restored} (step {int(model.train_steps.numpy())}) with "
                  f"learning rate {lr:.3g} (rollback {rollbacks} of {c.max_rollbacks})", flush=True)
