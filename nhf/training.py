"""Training an NHF: a custom XLA-compiled step under any `tf.distribute` strategy, checkpoints,
resume, the non-finite guard.

Resume contract: a checkpoint holds every model variable, the Adam moments and iteration
count, the step counter and the learning-rate scale (lowered by rollbacks). Every random draw
of step `s` (the batch indices and the momenta) is a pure function of `(config.seed, s)`, so a
resumed run sees exactly the batches and noise an uninterrupted run would have seen.

Distribution (`strategy=`, see `common.distribute`): the batch size is the global batch. Each
step draws the global batch and all of its random numbers exactly as a single-device run does
(the momentum noise `[B, K, d]` once per step, then split with the batch; in VI mode every
replica draws the global batch's prior samples and keeps its slice), each replica computes the
loss and gradient of its equal share, and the loss and gradients are averaged across replicas
(MEAN all-reduce); the averaged gradient is clipped and checked, and every replica applies it
to its copy of the mirrored variables (no second all-reduce).

What is deterministic: a run with a given strategy, replica count and seed gives the same
losses every time (bit for bit on the same machine). Across strategies the trajectory is the
same up to float32 round-off from the summation order (the mean of per-replica means instead
of one mean; measured ~1e-7 relative per step on the tiny test config, growing slowly with
training), so `mirrored` and `multi_worker` are not bit-identical to `default`; XLA on or off
(`config.jit`) differs by round-off in the same way. Checkpoints do not depend on the
strategy: a run may be resumed under another one. Only the chief (worker 0) writes files;
other workers save their checkpoints into a scratch folder that is deleted at the end (and
read the chief's folder on `resume`, which must therefore be on a file system they share).

Non-finite guard: a step whose (replica-averaged) loss or gradient is NaN/Inf is not applied.
After `max_bad_steps` such steps in a row the run rolls back to the last checkpoint (which is
never written with non-finite weights) and multiplies the learning rate by
`rollback_lr_factor` (a scale variable kept in the checkpoint, so the lower rate persists);
after `max_rollbacks` rollbacks it stops with `NonFiniteLossError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from common import config as config_lib
from common import distribute
from common.runs import (HISTORY_FILE, NonFiniteLossError, RunError, atomic_write_json, holds_checkpoints,
                         load_history, restore_newest_readable)
from common.schedules import ScaledSchedule, warmup_cosine
from data import targets
from nhf.config import NHFConfig
from nhf.density import HamiltonianFlowDensity, build_density, effective_sample_size

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "tensorboard"


@dataclasses.dataclass
class Run:
    """Everything a run needs, built from a config: target, data, model, optimizer, checkpoints."""

    config: NHFConfig
    target: targets.Target
    train_data: Optional[np.ndarray]
    test_data: np.ndarray
    model: HamiltonianFlowDensity
    optimizer: keras.optimizers.Optimizer
    step: tf.Variable
    manager: Optional[tf.train.CheckpointManager]
    lr_scale: tf.Variable
    strategy: tf.distribute.Strategy
    resume_manager: Optional[tf.train.CheckpointManager] = None

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.config.dtype)

    @property
    def chief(self) -> bool:
        """Whether this process writes the run's files (always, unless multi-worker)."""
        return distribute.is_chief(self.strategy)


class AveragedGradientAdam(keras.optimizers.Adam):
    """Adam for gradients that are already averaged across replicas (see `make_train_step`).

    Applied in a replica context, Keras's TensorFlow optimizer first all-reduce-SUMs the
    gradients (and it cannot be applied in cross-replica context under a mirrored strategy:
    its update goes through a merge call, which needs a replica context). The NHF step averages
    and clips the gradients itself, so this optimizer skips that sum and only updates every
    copy of the mirrored variables with the same, already-reduced gradient. Under the default
    strategy it is plain Adam.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


def learning_rate_schedule(config: NHFConfig) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up, then cosine decay to `lr_final_fraction * lr`."""
    return warmup_cosine(config.lr, config.steps, config.warmup_steps, config.lr_final_fraction)


def build_run(config: NHFConfig, run_dir=None, strategy: Optional[tf.distribute.Strategy] = None) -> Run:
    """Target data, model and optimizer (with its slots created) and a checkpoint manager.

    Args:
      config: the run's settings.
      run_dir: where checkpoints go (`run_dir/checkpoints`); None for no checkpoints.
      strategy: the `tf.distribute` strategy to build the variables under (default: the
        default strategy). On a non-chief worker the checkpoints go to a scratch folder
        (`common.distribute.scratch_or`) and `resume_manager` reads the chief's.
    """
    strategy = strategy or tf.distribute.get_strategy()
    target = targets.get(config.target, config.dim if config.target == "mixture_nd" else None)
    dtype = tf.as_dtype(config.dtype)
    test = target.sample(config.test_size, seed=config.seed * 7 + 2).astype(dtype.as_numpy_dtype)
    train = None
    if config.mode == "density":
        train = target.sample(config.train_size, seed=config.seed * 7 + 1).astype(dtype.as_numpy_dtype)
    with strategy.scope():
        model = build_density(
            target.dim, num_hamiltonians=config.num_hamiltonians, n_steps=config.n_steps,
            step_size=config.step_size, widths=config.widths, activation=config.activation, kinetic=config.kinetic,
            prior=config.prior, encoder_widths=config.encoder_widths, affine=config.affine, data=train,
            num_momenta=config.eval_momenta, init_scale=config.init_scale, dtype=dtype, seed=config.seed)
        lr_scale = tf.Variable(1.0, dtype=tf.float32, name="lr_scale", trainable=False)
        optimizer = AveragedGradientAdam(ScaledSchedule(learning_rate_schedule(config), lr_scale))
        optimizer.build(model.trainable_variables)
        step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
    manager = resume_manager = None
    if run_dir is not None:
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step, lr_scale=lr_scale)
        directory = Path(run_dir) / CHECKPOINT_DIR
        manager = tf.train.CheckpointManager(ckpt, str(distribute.scratch_or(directory, strategy)), max_to_keep=3)
        resume_manager = manager
        if Path(manager.directory) != directory:  # a non-chief worker: resume from the chief's checkpoints
            resume_manager = tf.train.CheckpointManager(ckpt, str(directory), max_to_keep=3)
    return Run(config, target, train, test, model, optimizer, step, manager, lr_scale, strategy, resume_manager)


def restore_latest(run: Run, required: bool, manager: Optional[tf.train.CheckpointManager] = None) -> Optional[str]:
    """Restores the newest checkpoint into `run`; returns its path or None.

    Args:
      run: the run to restore into (under any strategy: checkpoints do not depend on it).
      required: raise when there is nothing to restore.
      manager: where to read (default `run.manager`, the folder this process writes).

    A checkpoint written before the learning-rate scale existed leaves the scale unchanged (1 in
    a freshly built run).

    Raises:
      RunError: `required` and there is no checkpoint, or it does not fit this config.
    """
    manager = manager or run.manager
    if manager is None:
        if required:
            raise RunError("--resume: this run has no checkpoint directory")
        return None
    # The scale is restored separately: a checkpoint without it (older runs) still matches.
    legacy = tf.train.Checkpoint(model=run.model, optimizer=run.optimizer, step=run.step)
    view = types.SimpleNamespace(checkpoints=manager.checkpoints, checkpoint=legacy, directory=manager.directory)
    path = restore_newest_readable(view, required, what="this config")
    if path is not None:
        tf.train.Checkpoint(lr_scale=run.lr_scale).restore(path).expect_partial()
    return path


def _scalar_summary(name: str, value: float, step: int) -> None:
    # tf.summary.scalar needs the tensorboard package at run time; tf.summary.write with the
    # scalars plugin's metadata writes the same event records with core TF only.
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step, metadata=metadata.SerializeToString())


def _finite(variables) -> bool:
    return all(np.all(np.isfinite(v.numpy())) for v in variables)


def step_seed(config: NHFConfig, step: int, stream: int = 0) -> np.ndarray:
    """The stateless seed of training step `step` (a pure function: resume-safe)."""
    return np.array([(config.seed * 7919 + stream) % 2**31, step % 2**31], np.int32)


def make_train_step(run: Run) -> Callable:
    """`step(batch, seed) -> (loss, grad_norm, finite)` computing, checking and applying one update.

    `batch` is the global batch (`[batch_size, d]`; only its size matters in VI mode) and
    `seed` the step's stateless seed. Every random number of the step is drawn for the global
    batch (see the module docstring), so the result does not depend on how many replicas share
    the work. Each replica's loss and gradient are computed by an XLA-compiled function (when
    `config.jit`) inside `strategy.run`; they are averaged across replicas, the averaged
    gradient is clipped by its global norm, and the update is applied in a second, small
    function only if loss and gradient are finite (`AveragedGradientAdam`: every copy of the
    mirrored variables gets the same, already-averaged gradient, without Keras's own
    all-reduce). Every worker reaches the same decision: it is taken on the averaged values.
    """
    config, model, strategy = run.config, run.model, run.strategy
    variables = model.trainable_variables
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"--batch-size {config.batch_size} must be divisible by the {replicas} replicas")
    local = config.batch_size // replicas
    dtype = run.dtype

    if config.mode == "density":
        bound = model.iwae_bound if config.objective == "iwae" else model.elbo

        def loss_fn(batch, noise, replica):
            # noise: this replica's share of the global draws, batch-major [b, K, d].
            return -tf.reduce_mean(bound(batch, config.train_momenta, noise=tf.transpose(noise, [1, 0, 2])))

        def draws(seed):
            shape = [config.batch_size, config.train_momenta, run.target.dim]
            return tf.random.stateless_normal(shape, seed, dtype=dtype)
    else:
        log_target = run.target.log_prob

        def loss_fn(batch, seed, replica):
            # `batch` only fixes the sample count in VI mode. Prior draws for the global batch
            # (reparameterised: a learned prior gets its pathwise gradient), this replica's slice.
            x0 = model.prior.sample(config.batch_size, seed=seed)
            if replicas > 1:
                x0 = tf.gather(tf.reshape(x0, [replicas, local, -1]), replica)
            return -tf.reduce_mean(model.vi_log_weights(log_target, local, base_samples=x0))

        def draws(seed):
            return seed

    @tf.function(jit_compile=config.jit, reduce_retracing=True)
    def replica_gradients(batch, noise, replica):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch, noise, replica)
        return loss, tape.gradient(loss, variables)

    def replica_step(batch, noise):
        ctx = tf.distribute.get_replica_context()
        loss, grads = replica_gradients(batch, noise, ctx.replica_id_in_sync_group)
        if replicas > 1:  # equal shares: the mean of the replicas' means is the global mean
            loss, grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, (loss, grads))
        return loss, grads

    @tf.function(reduce_retracing=True)
    def gradients(batch, seed):
        noise = draws(seed)
        if config.mode == "vi":
            per_replica = strategy.run(replica_step, args=(distribute.shard(strategy, batch), noise))
        else:
            per_replica = strategy.run(replica_step, args=distribute.shard(strategy, (batch, noise)))
        loss, grads = tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], per_replica)
        grads, norm = tf.clip_by_global_norm(grads, tf.cast(config.clip_norm, loss.dtype))
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
        return loss, norm, finite, grads

    def replica_apply(grads):
        run.optimizer.apply_gradients(zip(grads, variables))  # already averaged: no further all-reduce

    @tf.function
    def apply(grads):
        strategy.run(replica_apply, args=(grads,))
        run.step.assign_add(1)

    def train_step(batch, seed):
        with strategy.scope():
            loss, norm, finite, grads = gradients(batch, seed)
            if bool(finite):
                apply(grads)
            else:
                run.step.assign_add(1)  # a skipped step still consumes its batch and seed
        return float(loss), float(norm), bool(finite)

    return train_step


def batch_for_step(run: Run, step: int) -> tf.Tensor:
    """The minibatch of step `step` (density mode), or a placeholder of the batch size (VI)."""
    c = run.config
    if run.train_data is None:
        return tf.zeros([c.batch_size, run.target.dim], run.dtype)
    rng = np.random.default_rng(step_seed(c, step, stream=1))
    return tf.constant(run.train_data[rng.integers(0, len(run.train_data), c.batch_size)])


_IWAE_FUNCTIONS: Dict[tuple, Callable] = {}


def _iwae_function(model: HamiltonianFlowDensity, num_momenta: int, jit: bool) -> Callable:
    # One compiled function per (model, K): re-creating it per call would re-trace and
    # re-compile at every evaluation.
    key = (id(model), num_momenta, jit)
    if key not in _IWAE_FUNCTIONS:
        _IWAE_FUNCTIONS[key] = tf.function(lambda q, s: model.iwae_bound(q, num_momenta, s), jit_compile=jit)
    return _IWAE_FUNCTIONS[key]


def iwae_nll(model: HamiltonianFlowDensity, data: np.ndarray, num_momenta: int, seed: int = 0,
             chunk_states: int = 131_072, jit: bool = True) -> Dict[str, float]:
    """Mean negative IWAE bound (an upper bound on the NLL, in nats) over `data`, in chunks.

    Returns:
      `{"nll": mean, "stderr": standard error over points}`.
    """
    return nll_summary(iwae_log_probs(model, data, num_momenta, seed, chunk_states, jit))


def mean_and_stderr(values: np.ndarray) -> Tuple[float, float]:
    """The mean of `values` and its standard error over them."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def nll_summary(log_prob: np.ndarray) -> Dict[str, float]:
    """`{"nll": mean of -log_prob, "stderr": its standard error over points}`."""
    mean, stderr = mean_and_stderr(log_prob)
    return {"nll": -mean, "stderr": stderr}


def iwae_log_probs(model: HamiltonianFlowDensity, data: np.ndarray, num_momenta: int, seed: int = 0,
                   chunk_states: int = 131_072, jit: bool = True) -> np.ndarray:
    """The IWAE bound (a lower bound on log p(q)) at each point of `data`, float64 `[n]`."""
    chunk = max(1, min(len(data), chunk_states // num_momenta))
    fn = _iwae_function(model, num_momenta, jit)
    values = []
    for i, start in enumerate(range(0, len(data), chunk)):
        part = data[start:start + chunk]
        if len(part) < chunk:  # pad to one compiled shape
            part = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        values.append(fn(tf.constant(part), tf.constant([seed, i], tf.int32)).numpy()[: len(data) - start])
    return np.concatenate(values).astype(np.float64)


def paired_gap(target: targets.Target, data: np.ndarray, model_log_prob: np.ndarray) -> Dict[str, float]:
    """Mean of log p_target(x) - log q_model(x) over `data`: an estimate of KL(p || q) (an upper
    bound when `model_log_prob` is a lower bound such as IWAE). Empty for a target without a
    normalised log density.

    It has the same expectation as `test NLL - floor` but a much smaller standard error, because
    the target's own log density at the same points cancels the test set's sampling noise.
    """
    if target.log_prob is None or not target.normalised:
        return {}
    true_lp = target.log_prob(tf.constant(data, tf.float64)).numpy()
    gap, stderr = mean_and_stderr(true_lp - model_log_prob)
    return {"gap_paired": gap, "gap_paired_stderr": stderr, "test_floor_sample": float(-true_lp.mean())}


def vi_report(run: Run, n: int = 20_000, seed: int = 0) -> Dict[str, float]:
    """Reverse-KL fit quality: ELBO (<= log Z), importance-sampling log Z and the ESS fraction."""
    log_w = run.model.vi_log_weights(run.target.log_prob, n, seed=tf.constant([seed, 99], tf.int32))
    log_w = tf.cast(log_w, tf.float64)
    ess = float(effective_sample_size(log_w).numpy())
    log_z = float((tf.reduce_logsumexp(log_w) - math.log(n)).numpy())
    out = {"elbo": float(tf.reduce_mean(log_w).numpy()), "log_z_estimate": log_z, "ess": ess,
           "ess_fraction": ess / n, "num_samples": n}
    if run.target.normalised:
        out["log_z_true"] = 0.0
    return out


def evaluate(run: Run, num_momenta: Optional[int] = None, max_points: Optional[int] = None) -> Dict[str, object]:
    """Final metrics: train/test IWAE NLL against the floor (density mode) or the VI report."""
    c = run.config
    k = num_momenta or c.eval_momenta
    floor = run.target.nll_floor
    metrics: Dict[str, object] = {"target": c.target, "mode": c.mode, "dim": run.target.dim, "nll_floor": floor,
                                  "eval_momenta": k, "step": int(run.step.numpy())}
    test = run.test_data if max_points is None else run.test_data[:max_points]
    test_lp = iwae_log_probs(run.model, test, k, seed=c.seed + 11, jit=c.jit)
    summary = nll_summary(test_lp)
    metrics["test_nll"], metrics["test_nll_stderr"] = summary["nll"], summary["stderr"]
    if run.train_data is not None:
        train_eval = iwae_nll(run.model, run.train_data[: len(test)], k, seed=c.seed + 12, jit=c.jit)
        metrics["train_nll"], metrics["train_nll_stderr"] = train_eval["nll"], train_eval["stderr"]
    if floor is not None:
        metrics["gap"] = metrics["test_nll"] - floor
    if c.mode == "density":
        metrics.update(paired_gap(run.target, test, test_lp))
    if c.mode == "vi":
        metrics["vi"] = vi_report(run, seed=c.seed)
    return metrics


def train(run: Run, run_dir, progress: bool = True, on_log: Optional[Callable[[dict], None]] = None) -> Dict:
    """Trains `run` from its current step to `config.steps`.

    Writes TensorBoard scalars to `run_dir/tensorboard`, checkpoints every `checkpoint_every`
    steps and at the end, and `history.json` (loss, grad norm, learning rate, quick test NLL)
    beside them. Under a multi-worker strategy every worker trains and saves its checkpoints
    (non-chief workers into their scratch folder), but only the chief writes the TensorBoard
    log and `history.json` and runs the quick evaluations.

    Returns:
      `{"history": [...], "seconds": ..., "steps_run": ..., "samples_per_second": ...,
        "nonfinite_steps": ..., "rollbacks": ..., "lr_scale": ...}` (samples are global-batch
        examples).

    Raises:
      NonFiniteLossError: when rollbacks did not cure repeated non-finite steps; the newest
        checkpoint then holds the last finite weights.
    """
    from tqdm.auto import tqdm

    c = run.config
    run_dir = Path(run_dir)
    chief = run.chief
    start = int(run.step.numpy())
    history = load_history(run_dir, start)
    train_step = make_train_step(run)
    writer = tf.summary.create_file_writer(str(run_dir / LOG_DIR)) if chief else tf.summary.create_noop_writer()
    quick = run.test_data[:2000]
    bad_in_a_row = rollbacks = nonfinite = 0
    losses: List[float] = []
    t0, timed_from, timed_steps = time.perf_counter(), None, 0
    bar = tqdm(total=c.steps, initial=start, disable=not progress, desc=f"nhf {c.target}", dynamic_ncols=True)

    saved_at = [start]

    def save():
        if not _finite(run.model.trainable_variables):
            raise NonFiniteLossError("weights became non-finite; the last good checkpoint is kept")
        run.manager.save(checkpoint_number=int(run.step.numpy()))
        if chief:
            atomic_write_json(run_dir / HISTORY_FILE, history)
        saved_at.append(int(run.step.numpy()))

    try:
        with writer.as_default():
            while int(run.step.numpy()) < c.steps:
                s = int(run.step.numpy())
                loss, norm, finite = train_step(batch_for_step(run, s), tf.constant(step_seed(c, s)))
                if s == start + 1:  # exclude tracing and compilation from the throughput
                    timed_from = time.perf_counter()
                elif timed_from is not None:
                    timed_steps += 1
                bar.update(1)
                if not finite:
                    nonfinite += 1
                    bad_in_a_row += 1
                    if bad_in_a_row >= c.max_bad_steps:
                        latest = run.manager.latest_checkpoint
                        if rollbacks >= c.max_rollbacks or latest is None:
                            kept = (f"the newest checkpoint {Path(latest).name} holds the last finite weights"
                                    if latest else "no checkpoint was written yet")
                            raise NonFiniteLossError(
                                f"{bad_in_a_row} non-finite steps in a row at step {s} after {rollbacks} of "
                                f"--max-rollbacks {c.max_rollbacks} rollbacks (learning-rate scale "
                                f"{float(run.lr_scale.numpy()):.3g}); {kept}. Try a smaller --lr or --step-size, "
                                "or --dtype float64")
                        # Roll back, then lower the learning rate: the scale is set after the
                        # restore, so it stays lowered and goes into later checkpoints.
                        scale = float(run.lr_scale.numpy()) * c.rollback_lr_factor
                        restore_latest(run, required=True)
                        run.lr_scale.assign(scale)
                        rollbacks += 1
                        bad_in_a_row = 0
                        back_to = int(run.step.numpy())
                        history[:] = [h for h in history if h["step"] <= back_to]  # those steps are redone
                        losses = []
                        bar.n = back_to
                        print(f"warning: {c.max_bad_steps} non-finite steps in a row at step {s}: rolled back to "
                              f"step {back_to}, learning-rate scale now {scale:.3g} "
                              f"(rollback {rollbacks} of {c.max_rollbacks})", file=sys.stderr)
                    continue
                bad_in_a_row = 0
                losses.append(loss)
                s += 1
                if s % c.log_every == 0 or s == c.steps:
                    mean_loss = float(np.mean(losses))
                    losses = []
                    lr = float(run.optimizer.learning_rate.numpy())  # of the next step
                    entry = {"step": s, "loss": mean_loss, "grad_norm": norm, "lr": lr}
                    _scalar_summary("loss/neg_elbo", mean_loss, step=s)
                    _scalar_summary("grad_norm", norm, step=s)
                    _scalar_summary("learning_rate", lr, step=s)
                    if s % c.eval_every == 0 and chief:
                        if c.mode == "density":
                            entry["test_nll_k32"] = iwae_nll(run.model, quick, 32, seed=c.seed + 5, jit=c.jit)["nll"]
                            _scalar_summary("test/nll_iwae_k32", entry["test_nll_k32"], step=s)
                        else:
                            entry.update({f"vi_{k}": v for k, v in vi_report(run, n=4000).items()})
                            _scalar_summary("vi/ess_fraction", entry["vi_ess_fraction"], step=s)
                    history.append(entry)
                    bar.set_postfix(loss=f"{mean_loss:.3f}", **({"test": f"{entry['test_nll_k32']:.3f}"}
                                                               if "test_nll_k32" in entry else {}))
                    if on_log:
                        on_log(entry)
                if s % c.checkpoint_every == 0 or s == c.steps:
                    save()
    except KeyboardInterrupt:
        # Ctrl-C (SIGINT): keep the work done so far; --resume continues from this step.
        if saved_at[-1] != int(run.step.numpy()):
            save()
        raise
    bar.close()
    writer.flush()
    elapsed = time.perf_counter() - (timed_from or t0)
    sps = c.batch_size * timed_steps / elapsed if timed_steps else float("nan")
    return {"history": history, "seconds": time.perf_counter() - t0, "steps_run": int(run.step.numpy()) - start,
            "samples_per_second": sps, "seconds_per_step": elapsed / timed_steps if timed_steps else float("nan"),
            "nonfinite_steps": nonfinite, "rollbacks": rollbacks, "lr_scale": float(run.lr_scale.numpy()),
            "replicas": run.strategy.num_replicas_in_sync}


def config_dict(config: NHFConfig) -> dict:
    return config_lib.to_dict(config)


# Fields that may change between a run and its resumption (they do not change the model or
# the random stream of the steps already taken).
RESUMABLE_CHANGES = ("steps", "eval_momenta", "eval_every", "checkpoint_every", "log_every", "export", "jit",
                     "max_bad_steps", "max_rollbacks", "rollback_lr_factor", "test_size", "figure")
CONFIG_FILE = "config.json"


def check_saved_config(config: NHFConfig, run_dir: Path, flag: str = "--resume") -> None:
    """Raises `RunError` naming every field in which `config` differs from the run's saved
    `config.json` (fields in `RESUMABLE_CHANGES` may differ); a run without one passes."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    now = config_lib.to_dict(config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise RunError(f"{flag} with a different config than {str(path)!r}: {details}")


def run_experiment(config: NHFConfig, run_dir, *, resume: bool = False, eval_only: bool = False,
                   progress: bool = True, strategy: Optional[tf.distribute.Strategy] = None) -> Dict[str, object]:
    """Trains (or re-evaluates) and writes every output into `run_dir`.

    Outputs: `config.json`, `checkpoints/`, `tensorboard/`, `history.json`, `metrics.json`
    (train/test IWAE NLL in nats, the floor, the gap, timings), `figure.png` (when
    `config.figure`), `loss_curve.png` and `saved_model/` (when `config.export`).

    Args:
      config: the run's settings.
      run_dir: output folder (created).
      resume: continue from the newest checkpoint in `run_dir` (same step, optimizer state,
        learning-rate scale and random stream), under this or any other strategy.
      eval_only: with `resume`, only re-evaluate and rewrite the outputs.
      progress: show a progress bar.
      strategy: the `tf.distribute` strategy to train under (`common.distribute.make_strategy`;
        None: the default strategy). `config.batch_size` is the global batch. Only the chief
        writes outputs; a non-chief worker trains, then returns `{"target", "step", "chief":
        False, "final_loss", "training"}` without evaluating.

    Raises:
      RunError: `run_dir` already holds checkpoints and `resume` is off; `resume` without a
        checkpoint or with an incompatible config; `eval_only` without `resume`.
      NonFiniteLossError: training diverged despite rollbacks.
    """
    from nhf import export as export_lib
    from nhf import plots

    run_dir = Path(run_dir)
    if eval_only and not resume:
        raise RunError("--eval-only needs --resume (it evaluates the run's newest checkpoint)")
    if not resume and holds_checkpoints(run_dir / CHECKPOINT_DIR):
        raise RunError(f"--run-dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue it "
                       "or choose another --run-dir")
    if resume:
        check_saved_config(config, run_dir)
    strategy = strategy or tf.distribute.get_strategy()
    run = build_run(config, run_dir, strategy)
    try:
        restored = restore_latest(run, required=resume, manager=run.resume_manager)
        if restored and run.manager is not run.resume_manager:
            # A non-chief worker resumed from the chief's folder: keep its own copy as the
            # rollback target, as the chief has one.
            run.manager.save(checkpoint_number=int(run.step.numpy()))
        if run.chief:
            atomic_write_json(run_dir / CONFIG_FILE, config_lib.to_dict(config))
        stats: Dict[str, object] = {}
        if not eval_only:
            stats = train(run, run_dir, progress=progress)
        history = stats.get("history") or load_history(run_dir, int(run.step.numpy()))
        training_stats = {k: v for k, v in stats.items() if k != "history"}
        final_loss = history[-1]["loss"] if history else None
        if not run.chief:
            # Wait while the chief evaluates and exports: a worker that exits early is reported
            # to the chief as crashed by TensorFlow's coordination service.
            distribute.barrier(strategy)
            return {"target": config.target, "step": int(run.step.numpy()), "chief": False, "final_loss": final_loss,
                    "training": training_stats}
        metrics = evaluate(run)
        metrics.update({
            "resumed_from": restored,
            "final_loss": final_loss,
            "parameters": int(sum(int(np.prod(v.shape)) for v in run.model.trainable_variables)),
            "config": config_lib.to_dict(config),
            "strategy": distribute.strategy_name(strategy), "replicas": strategy.num_replicas_in_sync,
            "training": training_stats,
            "note": "NLLs are negative IWAE bounds (upper bounds on the true NLL) in nats; "
                    "timings on a shared 2-core CPU are noisy",
        })
        if config.mode == "vi":
            metrics["note"] += "; vi: elbo <= log Z, ESS of importance weights over phase-space samples"
        if config.figure and run.target.dim >= 2:
            plots.density_figure(run.model, run.target, run_dir / "figure.png", seed=config.seed)
        if history:
            floor = run.target.nll_floor if config.mode == "density" else None
            plots.loss_curve(history, run_dir / "loss_curve.png", floor, title=f"NHF on {config.target}")
        if config.export:
            export_lib.export_saved_model(run.model, run_dir / "saved_model", config.eval_momenta)
            metrics["saved_model"] = str(run_dir / "saved_model")
        atomic_write_json(run_dir / "metrics.json", _json_safe(metrics))
        distribute.barrier(strategy)
        return metrics
    finally:
        if run.manager is not None:
            distribute.remove_scratch(run.manager.directory, strategy)


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
