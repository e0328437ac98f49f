"""Pictures of a run: rollout strips (ground truth above prediction), GIFs, MSE and energy curves."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from common.runs import atomic_write_bytes  # noqa: E402


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _save_png(path, image: np.ndarray, scale: int = 2) -> None:
    img = Image.fromarray(_to_uint8(image))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def _save_gif(path, frames: np.ndarray, scale: int = 3, ms_per_frame: int = 100) -> None:
    imgs = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
            for f in _to_uint8(frames)]
    buf = io.BytesIO()
    imgs[0].save(buf, format="GIF", save_all=True, append_images=imgs[1:], duration=ms_per_frame, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def _pad(frames: np.ndarray, width: int = 1, value: float = 1.0) -> np.ndarray:
    pad = [(0, 0)] * (frames.ndim - 3) + [(width, width), (width, width), (0, 0)]
    return np.pad(frames, pad, constant_values=value)


def rollout_strip(path_png, path_gif, gt: np.ndarray, pred: np.ndarray, n_examples: int = 4,
                  every: int = 2) -> None:
    """For each example, a row of ground-truth frames above a row of predicted frames.

    Args:
      gt, pred: `[N, T, H, W, 3]`, aligned in time.
      every: keep one frame in `every` in the PNG (the GIF keeps all).
    """
    n = min(n_examples, len(gt))
    g, p = _pad(gt[:n]), _pad(pred[:n])
    rows = []
    for i in range(n):
        rows.append(np.concatenate(list(g[i, ::every]), axis=1))
        rows.append(np.concatenate(list(p[i, ::every]), axis=1))
        rows.append(np.ones((4,) + rows[-1].shape[1:], np.float32))
    _save_png(path_png, np.concatenate(rows[:-1], axis=0))
    # GIF: a grid with examples side by side, ground truth on top.
    movie = np.concatenate([np.concatenate([g[:n], p[:n]], axis=2)[i] for i in range(n)], axis=2)
    _save_gif(path_gif, movie)


def samples_gif(path, frames: np.ndarray, columns: int = 4) -> None:
    """Sampled trajectories `[N, T, H, W, 3]` as one GIF grid."""
    f = _pad(frames)
    n = (len(f) // columns) * columns or len(f)
    f = f[:n]
    cols = min(columns, n)
    rows = [np.concatenate(list(f[r * cols:(r + 1) * cols]), axis=2) for r in range(n // cols)]
    _save_gif(path, np.concatenate(rows, axis=1))


def _save_fig(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def mse_over_time(path, curves: Dict[str, Sequence[float]], input_frames: int) -> None:
    """Per-frame MSE curves (x 1e-4), one line per `{label: curve}`."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, curve in curves.items():
        ax.plot(np.arange(len(curve)), np.asarray(curve) * 1e4, label=label)
    ax.axvline(input_frames - 0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("frame (forward time)")
    ax.set_ylabel("per-pixel MSE x 1e-4")
    ax.set_title("rollout error per frame")
    ax.legend(fontsize=8)
    _save_fig(fig, path)


def long_horizon(path, metrics: Dict[str, object]) -> None:
    """Per-frame test MSE (x 1e-4) beyond the training window, forward and backward, against the
    mean-frame baseline of those frames (`metrics`: `hgn.evaluation.long_horizon`'s)."""
    start = metrics["rollout_frames"] - metrics["frames_beyond"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for direction in ("forward", "backward"):
        curve = np.asarray(metrics[direction]["per_frame_mse"]) * 1e4
        ax.plot(start + np.arange(len(curve)), curve,
                label=f"{direction} (mean {metrics[direction]['mse_x1e4']:.1f})")
    ax.axhline(metrics["mean_frame_mse_x1e4"], color="grey", ls="--", lw=1, label="mean-frame baseline")
    ax.set_xlabel("frames since the rollout's first frame (backward: in backward time)")
    ax.set_ylabel("per-pixel MSE x 1e-4")
    ax.set_title(f"long horizon: {metrics['frames_beyond']} frames beyond the training window")
    ax.legend(fontsize=8)
    _save_fig(fig, path)


def latent_energy(path, energy: np.ndarray, dt: float, n_lines: int = 8) -> None:
    """H_t - H_0 of the latent rollout for a few trajectories `[N, T]`."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    t = np.arange(energy.shape[1]) * dt
    for e in energy[:n_lines]:
        ax.plot(t, e - e[0], lw=1)
    ax.set_xlabel("time")
    ax.set_ylabel("H(q_t, p_t) - H(q_0, p_0)")
    ax.set_title(f"latent energy over a {energy.shape[1] - 1}-step rollout")
    _save_fig(fig, path)


def training_curves(path, history: Sequence[dict], curve: Sequence[dict] = ()) -> None:
    """What a user reads of training, from `history.json` rows (and `test_curve.json` points).

    Left: the per-pixel reconstruction MSE (training batches) with the test MSE forward and
    backward when a curve was recorded. Right: the KL term, and under GECO the Lagrange
    multiplier on its own axis. The GECO training loss itself is not drawn: it is weighted by
    the multiplier, so it rises while the constraint tightens and reads as divergence.
    """
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    axes[0].plot(steps, [h["reconstruction"] * 1e4 for h in history], label="training batches", lw=1)
    for direction, style in (("forward", "o-"), ("backward", "s--")):
        if curve:
            axes[0].plot([p["step"] for p in curve], [p[f"test_mse_x1e4_{direction}"] for p in curve], style,
                         ms=3, label=f"test, {direction} (30 frames)")
    axes[0].set_yscale("log")
    axes[0].set_title("reconstruction MSE x 1e-4")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [h["kl"] for h in history], color="C2")
    axes[1].set_title("KL per pixel" + (" and GECO multiplier" if "lagrange_multiplier" in history[0] else ""))
    axes[1].set_ylabel("KL", color="C2")
    if "lagrange_multiplier" in history[0]:
        twin = axes[1].twinx()
        twin.plot(steps, [h["lagrange_multiplier"] for h in history], color="C3")
        twin.set_ylabel("multiplier", color="C3")
    for ax in axes:
        ax.set_xlabel("step")
    _save_fig(fig, path)


def save_run_plots(out_dir, metrics: Dict[str, object], test_frames: np.ndarray, samples: np.ndarray,
                   input_frames: int, dt: float) -> Dict[str, str]:
    """Writes every picture of a run into `out_dir`; returns `{name: file name}`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    preds = metrics["_preds"]
    files = {}
    for direction in ("forward", "backward"):
        rollout_strip(out / f"rollout_{direction}.png", out / f"rollout_{direction}.gif", test_frames,
                      preds[("test", direction)]["frames"])
        files[f"rollout_{direction}"] = f"rollout_{direction}.png"
    mse_over_time(out / "mse_over_time.png",
                  {f"{s} {d}": metrics[f"{s}_{d}"]["per_frame_mse"] for s in ("train", "test")
                   for d in ("forward", "backward")}, input_frames)
    latent_energy(out / "latent_energy.png", metrics["energy"]["_energy"], dt)
    samples_gif(out / "samples.gif", samples)
    files.update(mse="mse_over_time.png", energy="latent_energy.png", samples="samples.gif")
    if "long_horizon" in metrics:
        long_horizon(out / "long_horizon.png", metrics["long_horizon"])
        files["long_horizon"] = "long_horizon.png"
    return files
