"""One NHF run from its settings to its outputs: `run_experiment`, which `train_nhf.py`
(`nhf.cli`) calls once it has checked the command line (as `hgn.experiment` for HGN), and
`fit_samples`, the same on the user's own points from Python.

Run directory layout: `config.json` (the flat config), `checkpoints/`, `logs/` (TensorBoard),
`history.json`, `metrics.json` (see `nhf.evaluation`), `figure.png`, `loss_curve.png` and
`saved_model/` (see `nhf.export`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

from common import config as config_lib
from common import distribute
from common.runs import RunError, atomic_write_json, check_resumable, holds_checkpoints, load_history
from data import samples as samples_lib
from nhf import evaluation
from nhf.config import NHFConfig
from nhf.density import HamiltonianFlowDensity
from nhf.training import CHECKPOINT_DIR, Run, build_run, restore_latest, train

CONFIG_FILE = "config.json"

# Fields that may change between a run and its resumption (they do not change the model or
# the random stream of the steps already taken).
RESUMABLE_CHANGES = ("steps", "eval_momenta", "eval_every", "checkpoint_every", "log_every", "export", "jit_compile",
                     "max_nonfinite_steps", "max_rollbacks", "rollback_lr_factor", "test_size", "figure",
                     "serve_max_batch", "serve_max_samples", "max_train_minutes")


def check_saved_config(config: NHFConfig, run_dir: Path, flag: str = "--resume") -> None:
    """Raises `RunError` naming every field in which `config` differs from the run's saved
    `config.json` (fields in `RESUMABLE_CHANGES` may differ); a run without one passes."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return
    saved = config_lib.to_dict(config_lib.from_dict(NHFConfig, json.loads(path.read_text())))
    check_resumable(saved, config_lib.to_dict(config), RESUMABLE_CHANGES, path, flag)


def _check_run_dir(config: NHFConfig, run_dir: Path, resume: bool, eval_only: bool) -> None:
    if eval_only and not resume:
        raise RunError("--eval-only needs --resume (it evaluates the run's newest checkpoint)")
    if not resume and holds_checkpoints(run_dir / CHECKPOINT_DIR):
        raise RunError(f"--run-dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue it "
                       "or choose another --run-dir")
    if resume:
        check_saved_config(config, run_dir)


def _final_metrics(run: Run, restored: Optional[str], stats: Dict, history: list) -> Dict[str, object]:
    c = run.config
    metrics = evaluation.evaluate(run)
    metrics.update({
        "resumed_from": restored,
        "final_loss": history[-1]["loss"] if history and "loss" in history[-1] else None,
        "parameters": int(sum(int(np.prod(v.shape)) for v in run.model.density_variables)),
        "config": config_lib.to_dict(c),
        "strategy": distribute.strategy_name(run.strategy), "replicas": run.strategy.num_replicas_in_sync,
        "training": {k: v for k, v in stats.items() if k != "history"},
        "note": "NLLs are negative IWAE bounds (upper bounds on the true NLL) in nats, in the data's own units; "
                "timings on a shared 2-core CPU are noisy",
    })
    if c.mode == "vi":
        metrics["note"] += "; vi: elbo <= log Z, ESS of importance weights over phase-space samples"
    return metrics


def train_and_evaluate(config: NHFConfig, run_dir, *, resume: bool = False, eval_only: bool = False,
                       progress: int = 1, strategy: Optional[tf.distribute.Strategy] = None,
                       samples: Optional[np.ndarray] = None) -> Tuple[Run, Dict[str, object]]:
    """`run_experiment`, also returning the `Run` (its trained `density`)."""
    run_dir = Path(run_dir)
    _check_run_dir(config, run_dir, resume, eval_only)
    strategy = strategy or tf.distribute.get_strategy()
    run = build_run(config, run_dir, strategy, samples)
    try:
        restored = restore_latest(run, required=resume, manager=run.resume_manager)
        if restored and run.manager is not run.resume_manager:
            # A non-chief worker resumed from the chief's folder: keep its own copy as the
            # rollback target, as the chief has one.
            run.manager.save(checkpoint_number=run.step)
        say = print if progress and run.chief else (lambda *a: None)  # one line per phase
        if restored:
            say(f"resumed from {restored} at step {run.step}")
        if run.chief:
            atomic_write_json(run_dir / CONFIG_FILE, config_lib.to_dict(config))
        if not eval_only and run.step < config.steps:
            say(f"training on {run.target.name} to step {config.steps} in {run_dir}")
        stats = {} if eval_only else train(run, run_dir, progress=progress)
        history = stats.get("history") or load_history(run_dir, run.step)
        if not run.chief:
            # Wait while the chief evaluates and exports: a worker that exits early is reported
            # to the chief as crashed by TensorFlow's coordination service.
            distribute.barrier(strategy)
            return run, {"target": run.target.name, "step": run.step, "chief": False,
                         "final_loss": history[-1]["loss"] if history else None,
                         "training": {k: v for k, v in stats.items() if k != "history"}}
        say("evaluating and exporting")
        metrics = evaluation.write_outputs(run, run_dir, _final_metrics(run, restored, stats, history), history)
        if metrics.get("saved_model_stale"):
            say(f"note: {metrics['saved_model_stale']}")
        distribute.barrier(strategy)
        return run, metrics
    finally:
        if run.manager is not None:
            distribute.remove_scratch(run.manager.directory, strategy)


def run_experiment(config: NHFConfig, run_dir, *, resume: bool = False, eval_only: bool = False,
                   progress: int = 1, strategy: Optional[tf.distribute.Strategy] = None,
                   samples: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Trains (or re-evaluates) and writes every output into `run_dir`.

    Outputs: `config.json`, `checkpoints/`, `logs/` (TensorBoard), `history.json`,
    `metrics.json` (train/test IWAE NLL in nats, the floor, the gap, timings), `figure.png`
    (when `config.figure`), `loss_curve.png` and `saved_model/` (when `config.export`).

    Args:
      config: the run's settings (`config.data` names a samples file to fit).
      run_dir: output folder (created).
      resume: continue from the newest checkpoint in `run_dir` (same step, optimizer state,
        learning-rate scale and random stream), under this or any other strategy.
      eval_only: with `resume`, only re-evaluate and rewrite the outputs.
      progress: Keras's verbosity: 0 (or False) nothing, 1 (or True) a progress bar, 2 one line
        per checkpoint interval.
      strategy: the `tf.distribute` strategy to train under (`common.distribute.make_strategy`;
        None: the default strategy). `config.batch_size` is the global batch. Only the chief
        writes outputs; a non-chief worker trains, then returns `{"target", "step", "chief":
        False, "final_loss", "training"}` without evaluating.
      samples: the user's points `[n, d]` to fit instead of `config.data` or a built-in target
        (pass the same points again to resume).

    Raises:
      RunError: `run_dir` already holds checkpoints and `resume` is off; `resume` without a
        checkpoint or with an incompatible config; `eval_only` without `resume`.
      SampleFileError: unusable points (see `data.samples`).
      NonFiniteLossError: training diverged despite rollbacks.
    """
    return train_and_evaluate(config, run_dir, resume=resume, eval_only=eval_only, progress=progress,
                              strategy=strategy, samples=samples)[1]


def _as_points(samples: Union[np.ndarray, tf.data.Dataset]) -> np.ndarray:
    if isinstance(samples, tf.data.Dataset):
        parts = [np.asarray(x) for x in samples.as_numpy_iterator()]
        if not parts:
            raise samples_lib.SampleFileError("the dataset is empty")
        if parts[0].ndim == 1:  # unbatched: one point per element
            return np.stack(parts)
        return np.concatenate(parts)
    return np.asarray(samples)


def fit_samples(samples: Union[np.ndarray, tf.data.Dataset], run_dir, config: Optional[NHFConfig] = None,
                progress: bool = False, **overrides) -> Tuple[HamiltonianFlowDensity, Dict[str, object]]:
    """Fits an NHF density to the user's points and writes a run directory, as `train_nhf.py --data`.

        density, metrics = fit_samples(points, "runs/mine", steps=2000)   # points: [n, d]
        density.log_prob(q); density.sample(100)                          # in the data's units

    Args:
      samples: points `[n, d]` as an array, or a finite `tf.data.Dataset` of points `[d]` or of
        batches `[b, d]`.
      run_dir: output folder (as `run_experiment`).
      config: the settings (default: preset `small`); `overrides` replace single fields.
      progress: show a progress bar.

    Returns:
      The trained density and the metrics written to `run_dir/metrics.json`.

    Raises:
      SampleFileError: unusable points (NaN/Inf, not `[n, d]`, fewer than a batch, ...).
    """
    from nhf.config import PRESETS

    config = dataclasses.replace(config or PRESETS["small"], **overrides)
    config.validate()
    run, metrics = train_and_evaluate(config, run_dir, progress=progress, samples=_as_points(samples))
    return run.density, metrics
