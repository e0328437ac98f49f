"""How good is a trained HGN: rollout MSE, VPT, energy drift, time rescaling, latent R^2.

Conventions (the paper's and Botev et al. 2021's):

* Per-pixel MSE with pixels in [0, 1], averaged over every frame of a `eval_frames`-frame
  rollout (inference frames included, as the paper's `include_inference` split does), reported
  x 1e-4. Forward: infer from the first k frames, roll forward. Backward: infer from the last k
  frames, roll backward with -dt.
* VPT: per trajectory, mse_norm_t = mean((gt - pred)^2) / mean(gt^2) over the extrapolated
  frames t >= k; VPT is the number of extrapolated frames before the first one above 0.025
  (all of them if none is); the median over trajectories is reported.
* Long horizon (Botev et al. 2021): on longer test trajectories, the MSE over the frames
  beyond the training window only, forward and backward (backward: the frames before the
  last `window`), and the VPT of the whole rollout.
"""
from __future__ import annotations

import functools
import weakref
from typing import Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from hgn.config import HGNConfig
from hgn.model import HGN

VPT_THRESHOLD = 0.025
_ROLLOUT_FNS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _batched(fn, arrays, batch_size: int):
    outs = []
    n = len(arrays[0])
    for i in range(0, n, batch_size):
        outs.append(fn(*[a[i:i + batch_size] for a in arrays]))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def rollout_predictions(model: HGN, frames: np.ndarray, backward: bool = False, batch_size: int = 16,
                        n_steps: Optional[int] = None, dt: Optional[float] = None) -> Dict[str, np.ndarray]:
    """Rollouts from trajectories `[N, T, H, W, 3]`, aligned with them in forward time.

    Returns:
      dict of NumPy `frames` `[N, n+1, H, W, 3]`, `q`, `p`, `energy`; for `backward`, time runs
      forward (index t is frame t), like the ground truth.
    """
    n_steps = frames.shape[1] - 1 if n_steps is None else n_steps
    fn = _rollout_fn(model, backward, n_steps, dt)

    def run(f):
        out = fn(tf.constant(f))
        out = {k: v.numpy() for k, v in out.items()}
        if backward:
            out = {k: v[:, ::-1] for k, v in out.items()}
        return out

    return _batched(run, [frames], batch_size)


def _traced(model: HGN, key, fn: functools.partial):
    # One traced function of a frames batch per model and `key`, shared by every batch and call.
    # Each wraps its own `functools.partial`: TensorFlow counts the traces of functions made from
    # one lambda (one code object) together and would warn of retracing.
    cache = _ROLLOUT_FNS.setdefault(model, {})
    if key not in cache:
        s = model.config.image_size
        cache[key] = tf.function(fn, input_signature=[tf.TensorSpec([None, None, s, s, 3], tf.float32)])
    return cache[key]


def _rollout_fn(model: HGN, backward: bool, n_steps: int, dt: Optional[float]):
    return _traced(model, (backward, n_steps, dt),
                   functools.partial(model.rollout, n_steps=n_steps, dt=dt, backward=backward))


def per_frame_mse(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-trajectory, per-frame MSE `[N, T]`."""
    return np.mean(np.square(gt.astype(np.float64) - pred), axis=(2, 3, 4))


def valid_prediction_time(gt: np.ndarray, pred: np.ndarray, start: int) -> np.ndarray:
    """VPT per trajectory: extrapolated frames (from `start`) before mse_norm exceeds 0.025
    (0 when nothing is extrapolated, as when the paper's model infers from every frame it shows)."""
    err = per_frame_mse(gt, pred)[:, start:]
    norm = np.mean(np.square(gt.astype(np.float64)), axis=(2, 3, 4))[:, start:]
    good = ~(err / np.maximum(norm, 1e-12) > VPT_THRESHOLD)
    # Frames before the first bad one: the run of leading good frames (0 over an empty axis).
    return np.cumprod(good, axis=1).sum(axis=1).astype(np.int64)


def score_rollouts(model: HGN, frames: np.ndarray, backward: bool) -> Dict[str, object]:
    """MSE x 1e-4, per-frame MSE curve and median VPT of rollouts over `frames` `[N, T, ...]`."""
    pred = rollout_predictions(model, frames, backward=backward)
    curve = per_frame_mse(frames, pred["frames"])
    k = model.config.input_frames
    # Backward inference sees the last k frames: its extrapolation runs from T-k-1 down to 0.
    gt_x = frames[:, ::-1] if backward else frames
    pred_x = pred["frames"][:, ::-1] if backward else pred["frames"]
    vpt = valid_prediction_time(gt_x, pred_x, k)
    return {"mse_x1e4": float(curve.mean() * 1e4), "per_frame_mse": curve.mean(axis=0).tolist(),
            "vpt_median_frames": float(np.median(vpt)), "vpt_mean_frames": float(vpt.mean()),
            "_pred": pred}


def long_horizon(model: HGN, frames: np.ndarray, start: int) -> Dict[str, object]:
    """Rollout quality beyond the training window, forward and backward.

    Args:
      frames: `[N, T, ...]` test trajectories longer than `start`.
      start: the first frame beyond the training window (`HGNConfig.long_horizon_start`). Forward
        rollouts are scored on frames `start..T-1`; backward rollouts, which infer from the
        last k frames, on frames `0..T-1-start` (as far beyond their window, in backward time).

    Returns:
      `{"frames_beyond": T - start, "rollout_frames": T, "forward": {...}, "backward": {...}}`,
      each direction with `mse_x1e4` over the frames beyond, its `per_frame_mse` curve, and the
      median and mean VPT of the whole rollout (at most T - k frames); `mean_frame_mse_x1e4`
      is the mean-frame baseline of frames `start..T-1`.
    """
    n_frames = frames.shape[1]
    if not 0 < start < n_frames:
        raise ValueError(f"long-horizon start {start} must be in (0, {n_frames}): the trajectories are too short")
    k = model.config.input_frames
    out: Dict[str, object] = {"frames_beyond": n_frames - start, "rollout_frames": n_frames}
    for direction in ("forward", "backward"):
        backward = direction == "backward"
        pred = rollout_predictions(model, frames, backward=backward)["frames"]
        # In the rollout's own time, the frames beyond the window are its last T - start.
        gt_x = frames[:, ::-1] if backward else frames
        pred_x = pred[:, ::-1] if backward else pred
        curve = per_frame_mse(gt_x, pred_x)[:, start:]
        vpt = valid_prediction_time(gt_x, pred_x, k)
        out[direction] = {"mse_x1e4": float(curve.mean() * 1e4), "per_frame_mse": curve.mean(axis=0).tolist(),
                          "vpt_median_frames": float(np.median(vpt)), "vpt_mean_frames": float(vpt.mean())}
    out["mean_frame_mse_x1e4"] = mean_frame_mse(frames[:, start:])
    return out


def mean_frame_mse(frames: np.ndarray) -> float:
    """Per-pixel MSE x 1e-4 of predicting every frame of `frames` `[N, T, H, W, 3]` as their mean frame.

    The score of a model that has learned nothing about the dynamics (only the background and
    where bodies tend to be): a rollout MSE near it means the rollouts carry no information.
    """
    mean = frames.astype(np.float64).mean(axis=(0, 1))
    return float(np.mean(np.square(frames - mean)) * 1e4)


def _latent_energy(model: HGN, frames: tf.Tensor, n_steps: int) -> Dict[str, tf.Tensor]:
    state, _, _ = model.infer(frames)
    return {"energy": model.energy(model.integrate(state, n_steps, model.config.dt))}


def latent_energies(model: HGN, frames: np.ndarray, n_steps: int, batch_size: int = 16) -> np.ndarray:
    """Latent H `[N, n_steps + 1]` along forward rollouts from each trajectory's inferred state.

    Nothing is decoded: a long rollout's frames (batch x (n_steps + 1) of them through the
    decoder at once) would need gigabytes for a full-resolution decoder."""
    fn = _traced(model, ("energy", n_steps), functools.partial(_latent_energy, model, n_steps=n_steps))
    return _batched(lambda f: {"energy": fn(tf.constant(f))["energy"].numpy()}, [frames], batch_size)["energy"]


def energy_drift(model: HGN, frames: np.ndarray, n_steps: int) -> Dict[str, object]:
    """Latent energy along an `n_steps` rollout from each trajectory's inferred state.

    H has no natural zero or scale, so the drift is reported relative to the spread of the
    initial energies across trajectories: max_t |H_t - H_0| / std(H_0).
    """
    energy = latent_energies(model, frames[:, :model.config.input_frames], n_steps).astype(np.float64)
    dev = np.abs(energy - energy[:, :1])
    scale = float(np.std(energy[:, 0])) or 1.0
    return {"steps": n_steps, "max_abs_drift_mean": float(dev.max(axis=1).mean()),
            "final_abs_drift_mean": float(dev[:, -1].mean()), "initial_energy_std": scale,
            "relative_drift": float(dev.max(axis=1).mean() / scale),
            "_energy": energy}


def time_rescaling(model: HGN, fine_frames: np.ndarray) -> Dict[str, float]:
    """Rolls out with dt/2 and twice the steps against ground truth rendered at dt/2.

    Args:
      fine_frames: `[N, 2 T - 1, H, W, 3]` ground truth at interval dt/2; inference uses every
        other frame (interval dt, what the encoder was trained on).
    """
    coarse = fine_frames[:, ::2]
    half = rollout_predictions(model, coarse, n_steps=fine_frames.shape[1] - 1, dt=model.config.dt / 2)
    base = rollout_predictions(model, coarse)
    return {"half_dt_mse_x1e4": float(per_frame_mse(fine_frames, half["frames"]).mean() * 1e4),
            "half_dt_odd_frames_mse_x1e4": float(per_frame_mse(fine_frames[:, 1::2], half["frames"][:, 1::2]).mean() * 1e4),
            "base_dt_mse_x1e4": float(per_frame_mse(coarse, base["frames"]).mean() * 1e4),
            "frames": int(fine_frames.shape[1])}


def _design(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    flat = np.concatenate([q.reshape(q.shape[0], q.shape[1], -1), p.reshape(p.shape[0], p.shape[1], -1)], -1)
    return flat.reshape(-1, flat.shape[-1]).astype(np.float64)


def latent_r2(train_latent, train_x: np.ndarray, test_latent, test_x: np.ndarray, ridge: float = 1e-2) -> Dict[str, object]:
    """R^2 on test of a ridge-regularised linear map from the latent (q, p) to the true (q, p).

    The map is fit on training trajectories' rollouts and scored on test rollouts, frame by frame.
    `*_latent` are `(q, p)` pairs `[N, T, ...]`; `*_x` are `[N, T, 2 d]`.
    """
    a, b = _design(*train_latent), train_x.reshape(-1, train_x.shape[-1]).astype(np.float64)
    mu_a, sd_a = a.mean(0), a.std(0) + 1e-8
    mu_b = b.mean(0)
    a_n = (a - mu_a) / sd_a
    w = np.linalg.solve(a_n.T @ a_n + ridge * len(a_n) * np.eye(a_n.shape[1]), a_n.T @ (b - mu_b))
    at = (_design(*test_latent) - mu_a) / sd_a
    bt = test_x.reshape(-1, test_x.shape[-1]).astype(np.float64)
    pred = at @ w + mu_b
    ss_res = ((bt - pred) ** 2).sum(0)
    ss_tot = ((bt - bt.mean(0)) ** 2).sum(0) + 1e-12
    r2 = 1.0 - ss_res / ss_tot
    return {"r2_mean": float(r2.mean()), "r2_per_dim": r2.tolist()}


def load_split(builder, split: str, config: HGNConfig, n: int) -> Dict[str, np.ndarray]:
    """The first `n` trajectories of a TFDS split (fewer if it has fewer), `config.eval_frames`
    long from frame 0: `{"frames": [n, T, H, W, 3] float32, "x": [n, T, 2d] true states}`."""
    import data

    n = min(n, builder.info.splits[split].num_examples)
    ds = data.make_dataset(None, split, builder=builder, window=config.eval_frames, batch_size=n, shuffle=False,
                           window_start=0, drop_remainder=False)
    batch = next(iter(ds))
    return {"frames": batch["frames"].numpy(), "x": batch["x"].numpy()}


def fresh_test_sets(dataset: str, config: HGNConfig) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Test trajectories the dataset does not hold (other seeds, the run's dataset variant), for
    `evaluate`: `fine`, rendered at dt / 2 for the time-rescaling check, and `long`
    (`long_horizon_start + long_horizon_frames` frames; None when `long_horizon_frames` is 0)."""
    import data

    variant = config.data_variant()
    fine = data.generate_arrays(dataset, min(64, config.eval_trajectories), **{
        **variant, "n_frames": 2 * (config.eval_frames - 1) + 1, "dt": config.dt / 2,
        "seed": config.data_seed + 7919})["images"]
    long = None
    if config.long_horizon_frames:
        long = data.generate_arrays(dataset, config.long_horizon_trajectories, num_workers=None, **{
            **variant, "n_frames": config.long_horizon_start + config.long_horizon_frames,
            "seed": config.data_seed + 104729})["images"]
    return fine, long


def evaluate(model: HGN, train: Dict[str, np.ndarray], test: Dict[str, np.ndarray],
             fine_test: Optional[np.ndarray] = None, long_test: Optional[np.ndarray] = None) -> Dict[str, object]:
    """Every metric on `{"frames": [N, T, ...], "x": [N, T, 2d]}` train and test trajectories.

    `fine_test` (test trajectories rendered at dt / 2) adds `time_rescaling`; `long_test` (test
    trajectories of `long_horizon_start + long_horizon_frames` frames) adds `long_horizon`.

    Returns:
      A JSON-ready dict, plus private `_`-prefixed arrays for the plots (strip them before saving).
    """
    metrics: Dict[str, object] = {}
    preds = {}
    for split, arrays in (("train", train), ("test", test)):
        for direction in ("forward", "backward"):
            scores = score_rollouts(model, arrays["frames"], backward=direction == "backward")
            preds[(split, direction)] = scores.pop("_pred")
            metrics[f"{split}_{direction}"] = scores
        metrics[f"{split}_mse_x1e4_mean"] = 0.5 * (metrics[f"{split}_forward"]["mse_x1e4"]
                                                   + metrics[f"{split}_backward"]["mse_x1e4"])
    metrics["test_mean_frame_mse_x1e4"] = mean_frame_mse(test["frames"])
    metrics["energy"] = energy_drift(model, test["frames"][:32], model.config.energy_steps)
    if fine_test is not None:
        metrics["time_rescaling"] = time_rescaling(model, fine_test)
    if long_test is not None:
        metrics["long_horizon"] = long_horizon(model, long_test, model.config.long_horizon_start)
    fwd_train, fwd_test = preds[("train", "forward")], preds[("test", "forward")]
    metrics["latent_r2"] = latent_r2((fwd_train["q"], fwd_train["p"]), train["x"],
                                     (fwd_test["q"], fwd_test["p"]), test["x"])
    metrics["_preds"] = preds
    return metrics


def public(metrics: Dict[str, object]) -> Dict[str, object]:
    """`metrics` without the private `_` arrays (what goes into metrics.json)."""
    if isinstance(metrics, dict):
        return {k: public(v) for k, v in metrics.items() if not k.startswith("_")}
    return metrics
