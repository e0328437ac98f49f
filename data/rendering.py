"""Soft-disk rendering of bodies, as in DeepMind's Hamiltonian dynamics suite, for whole batches.

Each body is a disk of radius sqrt(m / pi) world units. In unit-canvas coordinates (the square
`[-extent, extent]^2` mapped to `[0, 1]^2`, pixel centres at `linspace(0, 1, size)`) its
opacity at distance d from the centre is `sigmoid((r - d) * 80)`. Colours are HSV hues
`linspace(0, 1, n_colors, endpoint=False)` at full saturation and value (one colour: red;
two: red and cyan). Bodies are alpha-composited front to back (body 0 in front) over the
grey background (0.321, 0.349, 0.368).

One deliberate difference from the suite: image rows run top to bottom with world y pointing
up, so a pendulum hangs down in the pictures (the suite draws it hanging up).
"""
from __future__ import annotations

import colorsys

import numpy as np

__all__ = ["BACKGROUND", "SHARPNESS", "palette", "render"]

BACKGROUND = (0.321, 0.349, 0.368)
SHARPNESS = 80.0


def palette(n_colors: int) -> np.ndarray:
    """RGB colours `[n_colors, 3]` of hues `linspace(0, 1, n_colors, endpoint=False)`, s = v = 1."""
    if n_colors < 1:
        raise ValueError(f"n_colors must be >= 1, got {n_colors}")
    hues = np.linspace(0.0, 1.0, n_colors, endpoint=False)
    return np.array([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues], np.float32)


def render(positions: np.ndarray, radii: np.ndarray, colors: np.ndarray, extent: float,
           image_size: int, dtype=np.float32) -> np.ndarray:
    """Draws soft disks on the grey background.

    Args:
      positions: world positions `[n, T, bodies, 2]` (x, y).
      radii: world radii `[n, bodies]`.
      colors: RGB colours `[n, bodies, 3]` in [0, 1].
      extent: the canvas is `[-extent, extent]^2` in world units.
      image_size: output height and width in pixels.
      dtype: `np.float32` for values in [0, 1], or `np.uint8` for `round(255 v)` (computed slice
        by slice, which is faster than converting afterwards).

    Returns:
      Frames `[n, T, image_size, image_size, 3]` of `dtype`.
    """
    positions = np.asarray(positions, np.float64)
    n, t, bodies, _ = positions.shape
    unit = ((positions + extent) / (2.0 * extent)).astype(np.float32)
    unit_radius = (np.asarray(radii, np.float64) / (2.0 * extent)).astype(np.float32)
    grid = np.linspace(0.0, 1.0, image_size, dtype=np.float32)
    background = np.asarray(BACKGROUND, np.float32)
    # Compositing front to back, pixel = sum_b w_b c_b + w_bg background with
    # w_b = alpha_b prod_{a<b} (1 - alpha_a), equals background + sum_b w_b (c_b - background).
    tint = np.asarray(colors, np.float32) - background  # [n, bodies, 3]
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.uint8):
        raise ValueError(f"dtype must be float32 or uint8, got {dtype}")
    scale = np.float32(255.0 if dtype == np.uint8 else 1.0)
    frames = np.empty((n, t, image_size, image_size, 3), dtype)
    # Small slices keep the working arrays in cache, which is worth several times the speed.
    step = max(1, _SLICE_PIXELS // (t * image_size * image_size))
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        weights = _body_weights(unit[lo:hi], unit_radius[lo:hi], grid)
        for c in range(3):
            channel = np.full(weights[0].shape, background[c] * scale, np.float32)
            for b in range(bodies):
                channel += weights[b] * (tint[lo:hi, b, c, None, None, None] * scale)
            np.clip(channel, 0.0, scale, out=channel)
            if dtype == np.uint8:
                np.rint(channel, out=channel)
            frames[lo:hi, ..., c] = channel
    return frames


_SLICE_PIXELS = 1 << 18


def _body_weights(unit, unit_radius, grid):
    """Compositing weights `w_b`, each `[n, T, H, W]`, of the bodies in front-to-back order."""
    weights = []
    transmittance = None
    for b in range(unit.shape[2]):
        du2 = np.square(unit[:, :, b, 0, None] - grid)  # [n, T, W]
        dv2 = np.square(unit[:, :, b, 1, None] - grid[::-1])  # [n, T, H]; row 0 is the top
        z = dv2[:, :, :, None] + du2[:, :, None, :]
        np.sqrt(z, out=z)
        # sigmoid((r - d) * k) = (1 + tanh((r - d) * k / 2)) / 2; tanh is vectorised in NumPy.
        np.subtract(unit_radius[:, b, None, None, None], z, out=z)
        z *= np.float32(SHARPNESS / 2.0)
        np.tanh(z, out=z)
        z *= np.float32(0.5)
        z += np.float32(0.5)
        if transmittance is None:
            weights.append(z)
            transmittance = 1.0 - z if unit.shape[2] > 1 else None
        else:
            weights.append(z * transmittance)
            transmittance *= 1.0 - z
    return weights
