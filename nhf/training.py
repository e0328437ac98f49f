"""Training an NHF: a custom XLA-compiled step, checkpoints, resume, the non-finite guard.

Resume contract: a checkpoint holds every model variable, the Adam moments and iteration
count, and the step counter. Every random draw of step `s` (the batch indices and the momenta)
is a pure function of `(config.seed, s)`, so a resumed run sees exactly the batches and noise an
uninterrupted run would have seen.

Non-finite guard: a step whose loss or gradient is NaN/Inf is not applied. After
`max_bad_steps` such steps in a row the run rolls back to the last checkpoint (which is never
written with non-finite weights); after `max_rollbacks` rollbacks it stops with
`NonFiniteLossError`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf

from common import config as config_lib
from common.runs import NonFiniteLossError, RunError, atomic_write_json, restore_newest_readable
from data import targets
from nhf.config import NHFConfig
from nhf.density import HamiltonianFlowDensity, build_density, effective_sample_size

CHECKPOINT_DIR = "checkpoints"
LOG_DIR = "tensorboard"
HISTORY_FILE = "history.json"


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

    @property
    def dtype(self) -> tf.DType:
        return tf.as_dtype(self.config.dtype)


def learning_rate_schedule(config: NHFConfig) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up, then cosine decay to `lr_final_fraction * lr`."""
    decay_steps = max(config.steps - config.warmup_steps, 1)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if config.warmup_steps else config.lr, decay_steps, alpha=config.lr_final_fraction,
        warmup_target=config.lr if config.warmup_steps else None, warmup_steps=config.warmup_steps)


def build_run(config: NHFConfig, run_dir=None) -> Run:
    """Target data, model and optimizer (with its slots created) and a checkpoint manager."""
    target = targets.get(config.target, config.dim if config.target == "mixture_nd" else None)
    dtype = tf.as_dtype(config.dtype)
    test = target.sample(config.test_size, seed=config.seed * 7 + 2).astype(dtype.as_numpy_dtype)
    train = None
    if config.mode == "density":
        train = target.sample(config.train_size, seed=config.seed * 7 + 1).astype(dtype.as_numpy_dtype)
    model = build_density(
        target.dim, num_hamiltonians=config.num_hamiltonians, n_steps=config.n_steps, step_size=config.step_size,
        widths=config.widths, activation=config.activation, kinetic=config.kinetic, prior=config.prior,
        encoder_widths=config.encoder_widths, affine=config.affine, data=train, num_momenta=config.eval_momenta,
        init_scale=config.init_scale, dtype=dtype, seed=config.seed)
    optimizer = keras.optimizers.Adam(learning_rate_schedule(config))
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64, name="step", trainable=False)
    manager = None
    if run_dir is not None:
        ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
        manager = tf.train.CheckpointManager(ckpt, str(Path(run_dir) / CHECKPOINT_DIR), max_to_keep=3)
    return Run(config, target, train, test, model, optimizer, step, manager)


def restore_latest(run: Run, required: bool) -> Optional[str]:
    """Restores the newest checkpoint into `run`; returns its path or None.

    Raises:
      RunError: `required` and there is no checkpoint, or it does not fit this config.
    """
    if run.manager is None:
        if required:
            raise RunError("--resume: this run has no checkpoint directory")
        return None
    return restore_newest_readable(run.manager, required, what="this config")


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

    The loss and gradient are computed in an XLA-compiled function (when `config.jit`); the
    update is applied in a second, small function only if everything is finite.
    """
    config, model = run.config, run.model
    variables = model.trainable_variables

    if config.mode == "density":
        bound = model.iwae_bound if config.objective == "iwae" else model.elbo

        def loss_fn(batch, seed):
            return -tf.reduce_mean(bound(batch, config.train_momenta, seed))
    else:
        log_target = run.target.log_prob

        def loss_fn(batch, seed):
            # `batch` only fixes the sample count in VI mode.
            return -tf.reduce_mean(model.vi_log_weights(log_target, tf.shape(batch)[0], seed))

    @tf.function(jit_compile=config.jit, reduce_retracing=True)
    def gradients(batch, seed):
        with tf.GradientTape() as tape:
            loss = loss_fn(batch, seed)
        grads = tape.gradient(loss, variables)
        grads, norm = tf.clip_by_global_norm(grads, tf.cast(config.clip_norm, loss.dtype))
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
        return loss, norm, finite, grads

    @tf.function
    def apply(grads):
        run.optimizer.apply_gradients(zip(grads, variables))
        run.step.assign_add(1)

    def train_step(batch, seed):
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
    chunk = max(1, min(len(data), chunk_states // num_momenta))
    fn = _iwae_function(model, num_momenta, jit)
    values = []
    for i, start in enumerate(range(0, len(data), chunk)):
        part = data[start:start + chunk]
        if len(part) < chunk:  # pad to one compiled shape
            part = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        values.append(fn(tf.constant(part), tf.constant([seed, i], tf.int32)).numpy()[: len(data) - start])
    lp = np.concatenate(values).astype(np.float64)
    return {"nll": float(-lp.mean()), "stderr": float(lp.std() / math.sqrt(len(lp)))}


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
    test_eval = iwae_nll(run.model, test, k, seed=c.seed + 11, jit=c.jit)
    metrics["test_nll"], metrics["test_nll_stderr"] = test_eval["nll"], test_eval["stderr"]
    if run.train_data is not None:
        train_eval = iwae_nll(run.model, run.train_data[: len(test)], k, seed=c.seed + 12, jit=c.jit)
        metrics["train_nll"], metrics["train_nll_stderr"] = train_eval["nll"], train_eval["stderr"]
    if floor is not None:
        metrics["gap"] = metrics["test_nll"] - floor
    if c.mode == "vi":
        metrics["vi"] = vi_report(run, seed=c.seed)
    return metrics


def _load_history(run_dir: Path, upto: int) -> List[dict]:
    path = run_dir / HISTORY_FILE
    if not path.exists():
        return []
    return [h for h in json.loads(path.read_text()) if h["step"] <= upto]


def train(run: Run, run_dir, progress: bool = True, on_log: Optional[Callable[[dict], None]] = None) -> Dict:
    """Trains `run` from its current step to `config.steps`.

    Writes TensorBoard scalars to `run_dir/tensorboard`, checkpoints every `checkpoint_every`
    steps and at the end, and `history.json` (loss, grad norm, quick test NLL) beside them.

    Returns:
      `{"history": [...], "seconds": ..., "steps_run": ..., "samples_per_second": ...,
        "nonfinite_steps": ..., "rollbacks": ...}`.

    Raises:
      NonFiniteLossError: when rollbacks did not cure repeated non-finite steps.
    """
    from tqdm.auto import tqdm

    c = run.config
    run_dir = Path(run_dir)
    start = int(run.step.numpy())
    history = _load_history(run_dir, start)
    train_step = make_train_step(run)
    writer = tf.summary.create_file_writer(str(run_dir / LOG_DIR))
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
                        if rollbacks >= c.max_rollbacks or run.manager.latest_checkpoint is None:
                            raise NonFiniteLossError(
                                f"{bad_in_a_row} non-finite steps in a row at step {s} after {rollbacks} rollbacks; "
                                "try a smaller --lr or --step-size, or --dtype float64")
                        restore_latest(run, required=True)
                        rollbacks += 1
                        bad_in_a_row = 0
                        bar.n = int(run.step.numpy())
                    continue
                bad_in_a_row = 0
                losses.append(loss)
                s += 1
                if s % c.log_every == 0 or s == c.steps:
                    mean_loss = float(np.mean(losses))
                    losses = []
                    entry = {"step": s, "loss": mean_loss, "grad_norm": norm}
                    _scalar_summary("loss/neg_elbo", mean_loss, step=s)
                    _scalar_summary("grad_norm", norm, step=s)
                    _scalar_summary("learning_rate", float(run.optimizer.learning_rate.numpy()), step=s)
                    if s % c.eval_every == 0:
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
            "nonfinite_steps": nonfinite, "rollbacks": rollbacks}


def config_dict(config: NHFConfig) -> dict:
    return config_lib.to_dict(config)


# Fields that may change between a run and its resumption (they do not change the model or
# the random stream of the steps already taken).
RESUMABLE_CHANGES = ("steps", "eval_momenta", "eval_every", "checkpoint_every", "log_every", "export", "jit",
                     "max_bad_steps", "max_rollbacks", "test_size")
CONFIG_FILE = "config.json"


def _check_resume_config(config: NHFConfig, run_dir: Path) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    saved = json.loads(path.read_text())
    now = config_lib.to_dict(config)
    changed = sorted(k for k in now if k not in RESUMABLE_CHANGES and saved.get(k) != now[k])
    if changed:
        details = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise RunError(f"--resume with a different config than {str(path)!r}: {details}")


def run_experiment(config: NHFConfig, run_dir, *, resume: bool = False, eval_only: bool = False,
                   progress: bool = True) -> Dict[str, object]:
    """Trains (or re-evaluates) and writes every output into `run_dir`.

    Outputs: `config.json`, `checkpoints/`, `tensorboard/`, `history.json`, `metrics.json`
    (train/test IWAE NLL in nats, the floor, the gap, timings), `figure.png`, `loss_curve.png`
    and `saved_model/` (when `config.export`).

    Args:
      config: the run's settings.
      run_dir: output folder (created).
      resume: continue from the newest checkpoint in `run_dir` (same step, optimizer state and
        random stream).
      eval_only: with `resume`, only re-evaluate and rewrite the outputs.
      progress: show a progress bar.

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
    if not resume and (run_dir / CHECKPOINT_DIR).exists() and any((run_dir / CHECKPOINT_DIR).iterdir()):
        raise RunError(f"--run-dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue it "
                       "or choose another --run-dir")
    if resume:
        _check_resume_config(config, run_dir)
    run = build_run(config, run_dir)
    restored = restore_latest(run, required=resume)
    atomic_write_json(run_dir / CONFIG_FILE, config_lib.to_dict(config))
    stats: Dict[str, object] = {}
    if not eval_only:
        stats = train(run, run_dir, progress=progress)
    history = _load_history(run_dir, int(run.step.numpy()))
    metrics = evaluate(run)
    metrics.update({
        "resumed_from": restored,
        "parameters": int(sum(int(np.prod(v.shape)) for v in run.model.trainable_variables)),
        "config": config_lib.to_dict(config),
        "training": {k: v for k, v in stats.items() if k != "history"},
        "note": "NLLs are negative IWAE bounds (upper bounds on the true NLL) in nats; "
                "timings on a shared 2-core CPU are noisy",
    })
    if config.mode == "vi":
        metrics["note"] += "; vi: elbo <= log Z, ESS of importance weights over phase-space samples"
    if run.target.dim >= 2:
        plots.density_figure(run.model, run.target, run_dir / "figure.png", seed=config.seed)
    if history:
        plots.loss_curve(history, run_dir / "loss_curve.png", run.target.nll_floor if config.mode == "density" else None,
                         title=f"NHF on {config.target}")
    if config.export:
        export_lib.export_saved_model(run.model, run_dir / "saved_model", config.eval_momenta)
        metrics["saved_model"] = str(run_dir / "saved_model")
    atomic_write_json(run_dir / "metrics.json", _json_safe(metrics))
    return metrics


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
