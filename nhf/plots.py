"""Figures of an NHF run: target vs model density, model samples, learned potentials, loss curve."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from data.targets import Target  # noqa: E402
from nhf.density import HamiltonianFlowDensity  # noqa: E402


def _grid(extent, n: int):
    xs, ys = np.linspace(extent[0], extent[1], n), np.linspace(extent[2], extent[3], n)
    xx, yy = np.meshgrid(xs, ys)
    return xs, ys, np.stack([xx.ravel(), yy.ravel()], axis=1)


def _model_log_density(model, points: np.ndarray, num_momenta: int, dim: int) -> np.ndarray:
    fn = tf.function(lambda q: model.iwae_bound(q, num_momenta, seed=tf.constant([1, 2], tf.int32)),
                     jit_compile=True)
    full = np.zeros((len(points), dim), model.dtype.as_numpy_dtype)
    full[:, :2] = points
    chunk = max(1, 131_072 // num_momenta)
    out = []
    for start in range(0, len(full), chunk):
        part = full[start:start + chunk]
        pad = chunk - len(part)
        if pad:
            part = np.concatenate([part, np.repeat(part[-1:], pad, axis=0)])
        out.append(fn(tf.constant(part)).numpy()[: chunk - pad])
    return np.concatenate(out)


def _target_panel(ax, target: Target, pts: np.ndarray, extent, n_grid: int, n_samples: int, seed: int) -> float:
    """Draws the target's density (or, without one, a histogram of its samples) on `ax`;
    returns the panel's maximum, the colour scale of every density panel."""
    d = target.dim
    if target.log_prob is not None:
        full = np.zeros((len(pts), d))
        full[:, :2] = pts
        target_density = np.exp(target.log_prob(tf.constant(full)).numpy().reshape(n_grid, n_grid))
        vmax = float(target_density.max())
        ax.imshow(target_density, origin="lower", extent=extent, cmap="viridis", vmin=0.0, vmax=vmax)
        ax.set_title(f"target: {target.name}" + (" (slice)" if d > 2 else ""))
        return vmax
    ranges = [list(extent[:2]), list(extent[2:])]
    ts = target.sample(n_samples, seed=seed + 1)
    counts, _, _ = np.histogram2d(ts[:, 0], ts[:, 1], bins=n_grid, range=ranges, density=True)
    vmax = float(counts.max())
    ax.hist2d(ts[:, 0], ts[:, 1], bins=n_grid, range=ranges, cmap="viridis", density=True, vmin=0.0, vmax=vmax)
    # A data file's name can be long: on its own line, in a smaller font, so it fits the panel.
    ax.set_title(f"target samples\n{target.name}", fontsize="medium")
    return vmax


def density_figure(model: HamiltonianFlowDensity, target: Target, path, lim: float = 4.5, n_grid: int = 120,
                   num_momenta: int = 64, n_samples: int = 20_000, seed: int = 0,
                   extent: Optional[Tuple[float, float, float, float]] = None) -> Path:
    """Target density | model density (exp of the IWAE bound) | model samples | V_t(q) per Hamiltonian.

    For d > 2 the densities are shown on the slice q[2:] = 0 and samples in the first two
    coordinates (the target's slice is its unnormalised log density on that slice). The view is
    `extent` = (x min, x max, y min, y max), default the square [-lim, lim]^2.
    """
    extent = extent or (-lim, lim, -lim, lim)
    xs, ys, pts = _grid(extent, n_grid)
    ranges = [list(extent[:2]), list(extent[2:])]
    d = target.dim
    model_lp = _model_log_density(model, pts, num_momenta, d).reshape(n_grid, n_grid)
    samples = model.sample(n_samples, seed=tf.constant([seed, 3], tf.int32)).numpy()
    hams = model.flow.hamiltonians
    ncols = 3 + len(hams)
    fig, axes = plt.subplots(1, ncols, figsize=(3.2 * ncols, 3.4))
    # One colour scale for the three density panels, the target's: the model's density is the
    # exponential of a Monte Carlo bound, and a few noisy grid points far above the target's peak
    # would otherwise set the scale and leave the rest of the panel dark. Values above it saturate.
    vmax = _target_panel(axes[0], target, pts, extent, n_grid, n_samples, seed)
    axes[1].imshow(np.exp(model_lp), origin="lower", extent=extent, cmap="viridis", vmin=0.0, vmax=vmax)
    axes[1].set_title(f"model density (IWAE K={num_momenta})")
    axes[2].hist2d(samples[:, 0], samples[:, 1], bins=n_grid, range=ranges, cmap="viridis", density=True,
                   vmin=0.0, vmax=vmax)
    axes[2].set_title("model samples")
    for ax in axes[:3]:
        ax.set_xlabel("same colour scale", fontsize=7)
    full = np.zeros((len(pts), d), model.dtype.as_numpy_dtype)
    full[:, :2] = pts
    for t in range(len(hams)):
        v = model.potential(tf.constant(full), index=t).numpy().reshape(n_grid, n_grid)
        ax = axes[3 + t]
        im = ax.imshow(v - v.min(), origin="lower", extent=extent, cmap="magma")
        ax.contour(xs, ys, v - v.min(), levels=12, colors="white", linewidths=0.4)
        ax.set_title(f"learned V_{t + 1}(q)")
        fig.colorbar(im, ax=ax, fraction=0.046)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curve(history: Sequence[dict], path, floor: Optional[float] = None, title: str = "") -> Path:
    """Training loss (negative ELBO) and quick test NLL against the floor."""
    fig, ax = plt.subplots(figsize=(6, 4))
    logged = [h for h in history if "loss" in h]
    ax.plot([h["step"] for h in logged], [h["loss"] for h in logged], label="train: -ELBO (batch mean)", lw=1)
    test = [(h["step"], h["test_nll_k32"]) for h in history if "test_nll_k32" in h]
    if test:
        ax.plot(*zip(*test), "o-", label="test: -IWAE (K=32)")
    if floor is not None:
        ax.axhline(floor, color="k", ls="--", lw=1, label=f"true NLL floor {floor:.3f}")
    finite: List[float] = [h["loss"] for h in logged if np.isfinite(h["loss"])]
    if finite:
        lo = min(finite + ([floor] if floor is not None else []))
        ax.set_ylim(lo - 0.2, min(max(finite), lo + 4.0))
    ax.set_xlabel("step")
    ax.set_ylabel("nats")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
