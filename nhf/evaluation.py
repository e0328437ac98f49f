"""Scoring an NHF: the IWAE test NLL, the paired gap to a known density, the VI report, and the
run's written outputs (metrics.json, figure.png, loss_curve.png, saved_model/).

NLLs are negative IWAE bounds: upper bounds on the true NLL, in nats, in the data's own units
(the output affine layer that standardises the data inside the model enters every density
through its log-Jacobian).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from common.runs import atomic_write_json, stale_export_note
from data import targets
from nhf.density import HamiltonianFlowDensity, effective_sample_size

_IWAE_FUNCTIONS: Dict[tuple, Callable] = {}


def _iwae_function(model: HamiltonianFlowDensity, num_momenta: int, jit: bool) -> Callable:
    # One compiled function per (model, K): re-creating it per call would re-trace and
    # re-compile at every evaluation.
    key = (id(model), num_momenta, jit)
    if key not in _IWAE_FUNCTIONS:
        _IWAE_FUNCTIONS[key] = tf.function(lambda q, s: model.iwae_bound(q, num_momenta, s), jit_compile=jit)
    return _IWAE_FUNCTIONS[key]


def iwae_log_probs(model: HamiltonianFlowDensity, data: np.ndarray, num_momenta: int, seed: int = 0,
                   chunk_states: int = 131_072, jit: bool = True) -> np.ndarray:
    """The IWAE bound (a lower bound on log p(q)) at each point of `data` `[n, d]`, float64 `[n]`.

    Computed in chunks of `chunk_states // num_momenta` points (padded to one compiled shape);
    chunk i draws its momenta from the stateless seed `(seed, i)`.
    """
    chunk = max(1, min(len(data), chunk_states // num_momenta))
    fn = _iwae_function(model, num_momenta, jit)
    values = []
    for i, start in enumerate(range(0, len(data), chunk)):
        part = data[start:start + chunk]
        if len(part) < chunk:
            part = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), axis=0)])
        values.append(fn(tf.constant(part), tf.constant([seed, i], tf.int32)).numpy()[: len(data) - start])
    return np.concatenate(values).astype(np.float64)


def mean_and_stderr(values: np.ndarray) -> Tuple[float, float]:
    """The mean of `values` and its standard error over them."""
    return float(values.mean()), float(values.std() / math.sqrt(len(values)))


def nll_summary(log_prob: np.ndarray) -> Dict[str, float]:
    """`{"nll": mean of -log_prob, "stderr": its standard error over points}`."""
    mean, stderr = mean_and_stderr(log_prob)
    return {"nll": -mean, "stderr": stderr}


def iwae_nll(model: HamiltonianFlowDensity, data: np.ndarray, num_momenta: int, seed: int = 0,
             chunk_states: int = 131_072, jit: bool = True) -> Dict[str, float]:
    """Mean negative IWAE bound (an upper bound on the NLL, in nats) over `data`, in chunks.

    Returns:
      `{"nll": mean, "stderr": standard error over points}`.
    """
    return nll_summary(iwae_log_probs(model, data, num_momenta, seed, chunk_states, jit))


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


def vi_report(model: HamiltonianFlowDensity, target: targets.Target, n: int = 20_000, seed: int = 0
              ) -> Dict[str, float]:
    """Reverse-KL fit quality: ELBO (<= log Z), importance-sampling log Z and the ESS fraction."""
    log_w = model.vi_log_weights(target.log_prob, n, seed=tf.constant([seed, 99], tf.int32))
    log_w = tf.cast(log_w, tf.float64)
    ess = float(effective_sample_size(log_w).numpy())
    log_z = float((tf.reduce_logsumexp(log_w) - math.log(n)).numpy())
    out = {"elbo": float(tf.reduce_mean(log_w).numpy()), "log_z_estimate": log_z, "ess": ess,
           "ess_fraction": ess / n, "num_samples": n}
    if target.normalised:
        out["log_z_true"] = 0.0
    return out


def evaluate(run, num_momenta: Optional[int] = None, max_points: Optional[int] = None) -> Dict[str, object]:
    """Final metrics of a run (`nhf.training.Run`): train/test IWAE NLL against the floor (density
    mode) or the VI report.

    Args:
      run: the run (config, target, data, density, step counter).
      num_momenta: K of the IWAE bound (default `config.eval_momenta`).
      max_points: score at most this many test points.
    """
    c, density = run.config, run.density
    k = num_momenta or c.eval_momenta
    floor = run.target.nll_floor
    metrics: Dict[str, object] = {"target": run.target.name, "mode": c.mode, "dim": run.target.dim,
                                  "nll_floor": floor, "eval_momenta": k, "step": run.step}
    test = run.test_data if max_points is None else run.test_data[:max_points]
    test_lp = iwae_log_probs(density, test, k, seed=c.seed + 11, jit=c.jit_compile)
    summary = nll_summary(test_lp)
    metrics["test_nll"], metrics["test_nll_stderr"] = summary["nll"], summary["stderr"]
    if run.train_data is not None:
        train_eval = iwae_nll(density, run.train_data[: len(test)], k, seed=c.seed + 12, jit=c.jit_compile)
        metrics["train_nll"], metrics["train_nll_stderr"] = train_eval["nll"], train_eval["stderr"]
    if floor is not None:
        metrics["gap"] = metrics["test_nll"] - floor
    if c.mode == "density":
        metrics.update(paired_gap(run.target, test, test_lp))
    if c.mode == "vi":
        metrics["vi"] = vi_report(density, run.target, seed=c.seed)
    return metrics


def _figure_extent(points: np.ndarray) -> Optional[Tuple[float, float, float, float]]:
    """A square view of the first two coordinates holding 99% of `points`, with a margin."""
    low, high = np.percentile(points[:, :2], [0.5, 99.5], axis=0)
    centre, half = (low + high) / 2, 0.6 * float(np.max(high - low))
    return (centre[0] - half, centre[0] + half, centre[1] - half, centre[1] + half)


def write_outputs(run, run_dir, metrics: Dict[str, object], history: list) -> Dict[str, object]:
    """Writes `figure.png` (when `config.figure`, d >= 2), `loss_curve.png`, `saved_model/` (when
    `config.export`) and `metrics.json` into `run_dir`; returns the metrics as written (with
    `saved_model_stale`, a note, when an earlier export is left in `run_dir` by `--no-export`)."""
    from nhf import export as export_lib
    from nhf import plots

    c, run_dir = run.config, Path(run_dir)
    user_points = run.target.log_prob is None and run.target.name.startswith("data:")
    # The user's points: only in 2-D (a slice at q[2:] = 0 would miss them), framed around them.
    if c.figure and (run.target.dim == 2 if user_points else run.target.dim >= 2):
        extent = _figure_extent(run.test_data) if user_points else None
        plots.density_figure(run.density, run.target, run_dir / "figure.png", seed=c.seed, extent=extent)
    if history:
        floor = run.target.nll_floor if c.mode == "density" else None
        plots.loss_curve(history, run_dir / "loss_curve.png", floor, title=f"NHF on {run.target.name}")
    if c.export:
        export_lib.export_saved_model(run.density, run_dir / "saved_model", c.eval_momenta,
                                      max_batch=c.serve_max_batch, max_samples=c.serve_max_samples)
        metrics["saved_model"] = str(run_dir / "saved_model")
    elif (run_dir / "saved_model").is_dir():  # an earlier export, left behind by a resume with --no-export
        metrics["saved_model_stale"] = stale_export_note("train_nhf.py", run_dir)
    metrics = _json_safe(metrics)
    atomic_write_json(run_dir / "metrics.json", metrics)
    return metrics


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
