"""Synthetic pendulum-like movies and the few-step training check shared by the HGN tests.

Not a test module: `tests/` is on `sys.path` under pytest's default import mode, so test
files import it as `movies`.
"""
import numpy as np
import tensorflow as tf


def disk_movies(n, frames, size=32, dt=0.125, seed=0):
    """A red disk swinging along x, like a linear oscillator, on the suite's grey background:
    `[n, frames, size, size, 3]` float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(frames) * dt
    amp = rng.uniform(0.2, 0.35, n)[:, None]
    phase = rng.uniform(0, 2 * np.pi, n)[:, None]
    cx = 0.5 + amp * np.cos(2.0 * t[None] + phase)
    grid = (np.arange(size) + 0.5) / size
    d2 = (grid[None, None, None, :] - cx[:, :, None, None]) ** 2 + (grid[None, None, :, None] - 0.5) ** 2
    mask = (1.0 / (1.0 + np.exp((np.sqrt(d2) - 0.12) * 80.0)))[..., None]
    background = np.array([0.321, 0.349, 0.368], np.float32)
    return (background * (1 - mask) + mask * np.array([1.0, 0.0, 0.0], np.float32)).astype(np.float32)


def reconstruction_before_and_after_fit(model, steps=40, seed=4):
    """Per-pixel training MSE of `model` on 32 disk movies before and after `steps` Adam steps."""
    c = model.config
    movies = disk_movies(32, c.window, seed=seed)
    ds = tf.data.Dataset.from_tensor_slices({"frames": movies}).shuffle(32, seed=0).batch(c.batch_size).repeat()
    before = float(model.evaluate(ds, steps=4, verbose=0, return_dict=True)["reconstruction"])
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    after = float(model.evaluate(ds, steps=4, verbose=0, return_dict=True)["reconstruction"])
    return before, after
