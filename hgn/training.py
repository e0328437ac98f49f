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
`NonFiniteLossError`. The loop (`common.callbacks.fit_with_rollbacks`) and its callbacks
(checkpoint every N steps, guard, time budget, TensorBoard scalars) are shared with NHF.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import keras
import numpy as np
import tensorflow as tf

from common import distribute
# StepCheckpoint, NonFiniteGuard and the others lived here before moving to common.callbacks.
from common.callbacks import (ClockVariable, ExcludeCompilation, NonFiniteGuard, ScalarLogger,  # noqa: F401
                              StepCheckpoint, TimeBudget, TrainingClock, fit_with_rollbacks)
from common.runs import (HISTORY_FILE, atomic_write_json, load_history, restore_newest_readable,
                         spent_training_seconds)
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
                                           model.lr_scale,
                                           step_fn=model.schedule_step if model.train_seconds is not None else None)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=config.jit_compile)
        return model.build_all()


def _rate_knob(model: HGN) -> tf.Variable:
    """What a rollback lowers (checkpointed): the schedule's scale, or a constant rate itself."""
    return model.lr_scale if model.lr_scale is not None else model.optimizer.learning_rate


def lower_learning_rate(model: HGN, factor: float, of: Optional[float] = None) -> float:
    """Sets the learning rate (or its schedule's scale) to `factor` times `of` (default: its
    value now); returns the new current rate. A rollback passes the value from before its
    restore, which resets it to the checkpoint's, so that each rollback lowers it again."""
    knob = _rate_knob(model)
    knob.assign((float(knob.numpy()) if of is None else of) * factor)
    return float(model.optimizer.learning_rate.numpy())


def with_posterior_noise(dataset: tf.data.Dataset, model: HGN) -> tf.data.Dataset:
    """Adds `noise` `[B, 2, h, w, c]` to each batch: the posterior noise of batch i (forward, backward),
    and with `config.decoded_frames` the `keys` `[B, 2, window]` that choose the frames it decodes.

    Drawn from stateless seeds (config.seed, i) for the whole global batch, so they do not
    depend on how the batch is split across replicas, and a resumed run (which skips i batches)
    draws the same numbers.
    """
    shape = list(model.latent_shape)
    config = model.config
    seed = (config.seed + NOISE_STREAM) % 2**31
    key_seed = (config.seed + 2 * NOISE_STREAM) % 2**31

    def add(i, batch):
        frames = batch["frames"] if isinstance(batch, dict) else batch
        batch = dict(batch) if isinstance(batch, dict) else {"frames": frames}
        size = tf.shape(frames)[0]
        batch["noise"] = tf.random.stateless_normal(tf.concat([[size, 2], shape], 0),
                                                    seed=tf.stack([tf.constant(seed, tf.int64), i]))
        if config.decoded_frames:
            batch["keys"] = tf.random.stateless_uniform(tf.stack([size, 2, config.window]),
                                                        seed=tf.stack([tf.constant(key_seed, tf.int64), i]))
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


class _Records:
    """A run's logged scalars (`history.json`) and test curve (`test_curve.json`), kept in step
    with its checkpoints, and the training clock (which a resumed curve continues). Only the
    chief keeps and writes them."""

    def __init__(self, run_dir: Path, start: int, chief: bool, spent: Optional[float] = None):
        self.run_dir, self.chief = run_dir, chief
        self.history = load_history(run_dir, start) if chief else []
        self.curve = load_history(run_dir, start, CURVE_FILE) if chief else []
        # A resumed run's clock continues from the training time already spent: the checkpointed
        # seconds of a time-paced run (`spent`), else the latest logged or test-curve point's.
        self.clock = TrainingClock(spent if spent is not None else spent_training_seconds(self.history, self.curve))

    def write(self, step: int) -> None:
        atomic_write_json(self.run_dir / HISTORY_FILE, [h for h in self.history if h["step"] <= step])
        if self.curve:
            atomic_write_json(self.run_dir / CURVE_FILE, [p for p in self.curve if p["step"] <= step])

    def rewind(self, step: int) -> None:
        """After a rollback to `step`: what was logged after it is dropped (it will be replayed)."""
        self.history[:] = load_history(self.run_dir, step) if self.chief else []
        self.curve[:] = [p for p in self.curve if p["step"] <= step]


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
    chief = distribute.is_chief(model.distribute_strategy)
    start = int(model.train_steps.numpy())
    if start >= c.steps:
        return start
    dataset = distribute.shard_by_data(with_posterior_noise(dataset, model), model.distribute_strategy)
    spent = float(model.train_seconds.numpy()) if model.train_seconds is not None else None
    records = _Records(Path(run_dir), start, chief, spent)

    def callbacks(checkpointer):
        logger = ScalarLogger(records.run_dir / LOG_DIR, every=max(1, min(50, c.checkpoint_every)),
                              history=records.history, clock=records.clock) if chief else None
        return [
            ExcludeCompilation(records.clock),  # first: the clock's readers below see its pause
            *([TestCurve(curve_frames, c.curve_every_minutes, records.clock, records.curve, logger.writer)]
              if chief and curve_frames is not None and c.curve_every_minutes else []),
            # The logger before the checkpointer: the history written with a checkpoint then holds
            # that step's entry, and with it the training seconds a resume continues from.
            *([logger] if logger else []),
            checkpointer,
            *([TimeBudget(c.max_train_minutes, records.clock)] if c.max_train_minutes else []),
            *([ClockVariable(model.train_seconds, records.clock)] if model.train_seconds is not None else []),
            *(extra_callbacks or []),
        ]

    def roll_back() -> str:
        in_use = float(_rate_knob(model).numpy())  # before the restore sets it back to the checkpoint's
        restored = restore_latest(model, manager, required=True)
        lr = lower_learning_rate(model, c.rollback_lr_factor, of=in_use)
        step = int(model.train_steps.numpy())
        records.rewind(step)  # replayed from the checkpoint: keep only what it covers
        return f"rolled back to {restored} (step {step}) with learning rate {lr:.3g}"

    def write_logs():
        records.write(int(model.train_steps.numpy()))

    fit_with_rollbacks(model, lambda step: dataset.skip(step), manager=manager, steps=c.steps,
                       checkpoint_every=c.checkpoint_every, max_nonfinite_steps=c.max_nonfinite_steps,
                       max_rollbacks=c.max_rollbacks, roll_back=roll_back, callbacks=callbacks,
                       after_save=write_logs if chief else None, verbose=verbose,
                       say=(lambda line: print(line, flush=True)) if verbose else (lambda line: None))
    if chief:
        write_logs()  # the final checkpoint's step, with the test curve's last point
    return int(model.train_steps.numpy())
