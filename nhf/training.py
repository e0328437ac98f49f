"""Training an NHF with `keras.Model.fit` (`nhf.model.NHFModel`): input pipelines, checkpoints,
resume and the non-finite guard (`nhf.experiment` runs a whole experiment on top of them).

Resume contract: a checkpoint holds every variable of the density, the Adam moments and
iteration count, the step counter and the learning-rate scale (lowered by rollbacks). The
batches and momentum noise of step `s` are a pure function of `(config.seed, s)` (see
`data.samples.sample_batches`), so a resumed run sees exactly the batches and noise an uninterrupted run
would have seen.

Distribution (`strategy=`, see `common.distribute`): the batch size is the global batch. The
pipeline yields global batches carrying their own noise (density mode) or the step's seed (VI
mode), and `fit` splits them across the replicas; each replica computes the loss and gradient
of its equal share and the step averages them (see `nhf.model`). A run with a given strategy,
replica count and seed gives the same losses every time (bit for bit on the same machine);
across strategies the trajectory is the same up to float32 round-off from the summation order
(~1e-7 relative per step on the tiny test config), and XLA on or off (`config.jit_compile`)
differs by round-off in the same way. Checkpoints do not depend on the strategy: a run may be
resumed under another one. Only the chief (worker 0) writes files; other workers save their
checkpoints into a scratch folder that is deleted at the end (and read the chief's folder on
`resume`, which must therefore be on a file system they share).

Non-finite guard (`common.callbacks`): a step whose (replica-averaged) loss or gradient is
NaN/Inf is not applied. After `max_nonfinite_steps` such steps in a row the run rolls back to
the last checkpoint (never written with non-finite weights) and multiplies the learning rate by
`rollback_lr_factor` (a scale variable kept in the checkpoint, so the lower rate persists);
after `max_rollbacks` rollbacks it stops with `NonFiniteLossError`.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import types
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from common import distribute
from common.callbacks import (ExcludeCompilation, ScalarLogger, TimeBudget, TrainingClock, fit_with_rollbacks,
                              write_scalar)
from common.runs import (HISTORY_FILE, RunError, atomic_write_json, load_history, restore_newest_readable,
                         spent_training_seconds)
from common.schedules import ScaledSchedule, warmup_cosine
from data import samples as samples_lib
from data.samples import sample_batches, vi_batches
from data import targets
from nhf import evaluation
from nhf.config import NHFConfig
from nhf.density import HamiltonianFlowDensity, build_density
from nhf.model import AveragedGradientAdam, NHFModel

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "logs"  # TensorBoard; runs written before this version have theirs in tensorboard/


@dataclasses.dataclass
class Run:
    """Everything a run needs, built from a config: target, data, model, checkpoints."""

    config: NHFConfig
    target: targets.Target
    train_data: Optional[np.ndarray]
    test_data: np.ndarray
    model: NHFModel
    manager: Optional[tf.train.CheckpointManager]
    strategy: tf.distribute.Strategy
    resume_manager: Optional[tf.train.CheckpointManager] = None

    @property
    def density(self) -> HamiltonianFlowDensity:
        return self.model.density

    @property
    def step(self) -> int:
        return int(self.model.train_steps.numpy())

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.config.dtype)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run's files (always, unless multi-worker)."""
        return distribute.is_chief(self.strategy)


def learning_rate_schedule(config: NHFConfig) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up, then cosine decay to `final_lr_fraction * learning_rate`."""
    return warmup_cosine(config.learning_rate, config.steps, config.warmup_steps, config.final_lr_fraction)


# ---------------------------------------------------------------------------- data
def load_data(config: NHFConfig, samples: Optional[np.ndarray] = None
              ) -> Tuple[targets.Target, Optional[np.ndarray], np.ndarray]:
    """The run's target and its (train, test) points, in the config's dtype.

    Built-in targets draw `train_size` and `test_size` points from seeded streams (no training
    points in VI mode). The user's points (`samples`, or the file `config.data`) are split into
    a held-out `test_fraction` and the rest for training.

    Raises:
      SampleFileError: a bad samples file, or fewer training points than `batch_size`.
    """
    dtype = tf.as_dtype(config.dtype).as_numpy_dtype
    if samples is not None or config.data:
        if samples is not None:
            points, name = samples_lib.check_samples(samples, "the samples"), "data:array"
        else:
            points, name = samples_lib.load_samples(config.data), f"data:{Path(config.data).name}"
        train, test = samples_lib.split_samples(points, config.test_fraction, config.seed)
        if len(train) < config.batch_size:
            raise samples_lib.SampleFileError(
                f"{name[5:]} has {len(train)} training points (after holding out {len(test)} for the test NLL), "
                f"fewer than --batch-size {config.batch_size}")
        return samples_lib.samples_target(points, name), train.astype(dtype), test.astype(dtype)
    target = targets.get(config.target, config.dim if config.target == "mixture_nd" else None)
    test = target.sample(config.test_size, seed=config.seed * 7 + 2).astype(dtype)
    train = None
    if config.mode == "density":
        train = target.sample(config.train_size, seed=config.seed * 7 + 1).astype(dtype)
    return target, train, test


def training_batches(run: Run, start_step: int) -> tf.data.Dataset:
    """The run's training pipeline from `start_step` on, set up for its strategy."""
    c = run.config
    if c.mode == "vi":
        dataset = vi_batches(c.batch_size, seed=c.seed, start_step=start_step)
    else:
        dataset = sample_batches(run.train_data, c.batch_size, seed=c.seed, momenta=c.train_momenta,
                                 start_step=start_step)
    return distribute.shard_by_data(dataset, run.strategy)


# ---------------------------------------------------------------------------- model, checkpoints
def build_model(config: NHFConfig, dim: int, train: Optional[np.ndarray] = None,
                target: Optional[targets.Target] = None,
                strategy: Optional[tf.distribute.Strategy] = None) -> NHFModel:
    """A compiled `NHFModel` with every variable and optimizer slot created, ready to restore into.

    Args:
      config: the run's settings.
      dim: d, the size of q.
      train: training points `[n, d]`; the output affine layer is initialised from their mean
        and standard deviation (the data's standardisation inside the model).
      target: VI mode: the target whose `log_prob` the flow fits.
      strategy: the `tf.distribute` strategy to build (and train) under; None: the default.
    """
    with (strategy or tf.distribute.get_strategy()).scope():
        density = build_density(
            dim, num_hamiltonians=config.num_hamiltonians, n_steps=config.n_steps, step_size=config.step_size,
            widths=config.widths, activation=config.activation, kinetic=config.kinetic, prior=config.prior,
            encoder_widths=config.encoder_widths, affine=config.affine, data=train, num_momenta=config.eval_momenta,
            init_scale=config.init_scale, dtype=tf.as_dtype(config.dtype), seed=config.seed)
        model = NHFModel(density, mode=config.mode, objective=config.objective, global_batch_size=config.batch_size,
                         clip_norm=config.clip_norm, target_log_prob=target.log_prob if config.mode == "vi" else None,
                         eval_momenta=32, jit_compile=config.jit_compile)
        model.compile(optimizer=AveragedGradientAdam(ScaledSchedule(learning_rate_schedule(config), model.lr_scale)))
        return model.build_all()


def checkpoint_manager(model: NHFModel, directory, max_to_keep: int = 3) -> tf.train.CheckpointManager:
    """A `tf.train.CheckpointManager` in `directory` over the density, the optimizer, the step
    counter and the learning-rate scale (the layout of runs written before `NHFModel`)."""
    ckpt = tf.train.Checkpoint(model=model.density, optimizer=model.optimizer, step=model.train_steps,
                               lr_scale=model.lr_scale)
    return tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=max_to_keep)


def build_run(config: NHFConfig, run_dir=None, strategy: Optional[tf.distribute.Strategy] = None,
              samples: Optional[np.ndarray] = None) -> Run:
    """Target, data, compiled model and checkpoint managers of a run.

    Args:
      config: the run's settings.
      run_dir: where checkpoints go (`run_dir/checkpoints`); None for no checkpoints.
      strategy: the `tf.distribute` strategy to build the variables under (default: the
        default strategy). On a non-chief worker the checkpoints go to a scratch folder
        (`common.distribute.scratch_or`) and `resume_manager` reads the chief's.
      samples: the user's points `[n, d]` (instead of `config.data` or a built-in target).

    Raises:
      ValueError: `batch_size` not divisible by the replicas.
    """
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {replicas} replicas")
    target, train, test = load_data(config, samples)
    model = build_model(config, target.dim, train, target, strategy)
    manager = resume_manager = None
    if run_dir is not None:
        directory = Path(run_dir) / CHECKPOINT_DIR
        manager = resume_manager = checkpoint_manager(model, distribute.scratch_or(directory, strategy))
        if Path(manager.directory) != directory:  # a non-chief worker: resume from the chief's checkpoints
            resume_manager = checkpoint_manager(model, directory)
    return Run(config, target, train, test, model, manager, strategy, resume_manager)


def restore_latest(run: Run, required: bool, manager: Optional[tf.train.CheckpointManager] = None) -> Optional[str]:
    """Restores the newest readable checkpoint into `run`; returns its path or None.

    Args:
      run: the run to restore into (under any strategy: checkpoints do not depend on it).
      required: raise when there is nothing to restore.
      manager: where to read (default `run.manager`, the folder this process writes).

    A checkpoint written before the learning-rate scale existed leaves the scale unchanged.

    Raises:
      RunError: `required` and there is no checkpoint, or none fits this config.
    """
    manager = manager or run.manager
    if manager is None:
        if required:
            raise RunError("--resume: this run has no checkpoint directory")
        return None
    model = run.model
    # The scale is restored separately: a checkpoint without it (older runs) still matches.
    legacy = tf.train.Checkpoint(model=model.density, optimizer=model.optimizer, step=model.train_steps)
    view = types.SimpleNamespace(checkpoints=manager.checkpoints, checkpoint=legacy, directory=manager.directory)
    with run.strategy.scope():
        path = restore_newest_readable(view, required, what="this config")
        if path is not None:
            tf.train.Checkpoint(lr_scale=model.lr_scale).restore(path).expect_partial()
            model.nonfinite_streak.assign(0)
    return path


# ---------------------------------------------------------------------------- training
class QuickEvaluation(keras.callbacks.Callback):
    """Every `every` steps: the test NLL (IWAE, K = 32) of the first 2,000 test points (density
    mode) or the VI report on 4,000 samples, added to the history entry of that step and to
    TensorBoard (`test/nll_iwae_k32`, `vi/ess_fraction`)."""

    def __init__(self, run: Run, history: List[dict], writer, every: int):
        super().__init__()
        self.run, self.history, self.writer, self.every = run, history, writer, every

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.train_steps.numpy())
        if step % self.every or int(self.model.nonfinite_streak.numpy()):
            return
        c, density = self.run.config, self.run.density
        if c.mode == "density":
            quick = self.run.test_data[:2000]
            values = {"test_nll_k32": evaluation.iwae_nll(density, quick, 32, seed=c.seed + 5, jit=c.jit_compile)["nll"]}
            scalar = ("test/nll_iwae_k32", values["test_nll_k32"])
        else:
            values = {f"vi_{k}": v for k, v in evaluation.vi_report(density, self.run.target, n=4000).items()}
            scalar = ("vi/ess_fraction", values["vi_ess_fraction"])
        if self.history and self.history[-1]["step"] == step:
            self.history[-1].update(values)
        else:
            self.history.append({"step": step, **values})
        with self.writer.as_default():
            write_scalar(*scalar, step=step)


class TrainingStats(keras.callbacks.Callback):
    """Counts steps and skipped (non-finite) steps and times the steps after the first (which
    includes tracing and compilation)."""

    def __init__(self):
        super().__init__()
        self.steps = self.nonfinite = self.timed_steps = 0
        self.timed_from: Optional[float] = None
        self.last = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if int(self.model.nonfinite_streak.numpy()):
            self.nonfinite += 1
        self.last = time.perf_counter()
        if self.timed_from is None:
            self.timed_from = self.last
        else:
            self.timed_steps += 1


def train(run: Run, run_dir, progress: int = 1,
          extra_callbacks: Optional[List[keras.callbacks.Callback]] = None) -> Dict:
    """Trains `run` with `fit` from its current step to `config.steps`.

    Writes TensorBoard scalars to `run_dir/logs` (`train/loss`, `train/grad_norm`,
    `train/learning_rate`, ...), checkpoints every `checkpoint_every` steps and at the end, and
    `history.json` (one entry per `log_every` steps: the mean loss and gradient norm of those
    steps, the next step's learning rate, the quick test NLL every `eval_every` steps). Under a
    multi-worker strategy only the chief writes the TensorBoard log and `history.json` and runs
    the quick evaluations.

    Returns:
      `{"history": [...], "seconds": ..., "steps_run": ..., "samples_per_second": ...,
        "seconds_per_step": ..., "nonfinite_steps": ..., "rollbacks": ..., "lr_scale": ...,
        "replicas": ...}` (samples are global-batch examples).

    Raises:
      NonFiniteLossError: when rollbacks did not cure repeated non-finite steps; the newest
        checkpoint then holds the last finite weights.
    """
    c, model, chief, run_dir = run.config, run.model, run.chief, Path(run_dir)
    start = run.step
    history = load_history(run_dir, start) if chief else []
    # A resumed run's clock, and so its --max-train-minutes, continues from the time already spent.
    stats, clock, t0 = TrainingStats(), TrainingClock(spent_training_seconds(history)), time.perf_counter()
    logger = ScalarLogger(run_dir / LOG_DIR if chief else None, every=c.log_every, history=history,
                          reset_metrics=True, clock=clock)

    def callbacks(checkpointer):
        return [ExcludeCompilation(clock),  # first: the budget below sees its pause
                stats, logger, *([QuickEvaluation(run, history, logger.writer, c.eval_every)] if chief else []),
                checkpointer, *([TimeBudget(c.max_train_minutes, clock)] if c.max_train_minutes else []),
                *(extra_callbacks or [])]

    def write_history():
        if chief:
            atomic_write_json(run_dir / HISTORY_FILE, [h for h in history if h["step"] <= run.step])

    def roll_back() -> str:
        scale = float(model.lr_scale.numpy()) * c.rollback_lr_factor
        restore_latest(run, required=True)
        with run.strategy.scope():
            model.lr_scale.assign(scale)  # after the restore: the lowered rate goes into later checkpoints
        history[:] = [h for h in history if h["step"] <= run.step]  # those steps are redone
        return f"rolled back to step {run.step}, learning-rate scale now {scale:.3g}"

    with run.strategy.scope():
        rollbacks = fit_with_rollbacks(
            model, lambda step: training_batches(run, step), manager=run.manager, steps=c.steps,
            checkpoint_every=c.checkpoint_every, max_nonfinite_steps=c.max_nonfinite_steps,
            max_rollbacks=c.max_rollbacks, roll_back=roll_back, callbacks=callbacks, after_save=write_history,
            verbose=int(progress) if chief else 0, say=lambda line: print(f"warning: {line}", file=sys.stderr),
            hint="Try a smaller --learning-rate or --step-size, or --dtype float64")
    write_history()
    per_step = (stats.last - stats.timed_from) / stats.timed_steps if stats.timed_steps else float("nan")
    return {"history": history, "seconds": time.perf_counter() - t0, "steps_run": run.step - start,
            "samples_per_second": c.batch_size / per_step if stats.timed_steps else float("nan"),
            "seconds_per_step": per_step, "nonfinite_steps": stats.nonfinite, "rollbacks": rollbacks,
            "lr_scale": float(model.lr_scale.numpy()), "replicas": run.strategy.num_replicas_in_sync}
