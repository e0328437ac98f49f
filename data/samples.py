"""Points as training data: the user's own file (read, checked, split) and the tf.data pipelines
that batch any points for a density model (`nhf`).

    points = load_samples("samples.npy")          # [n, d] float64; .npy, .npz (one array), .csv
    train, test = split_samples(points, test_fraction=0.1, seed=0)
    target = samples_target(points, "samples.npy")  # a `data.targets.Target` without a density
    batches = sample_batches(train, 256, seed=0, momenta=1, start_step=0)  # resumable at any step

A file is accepted when it holds one finite, two-dimensional array of numbers (rows are points,
columns coordinates); a one-dimensional array is refused (it could be n points in 1-D or one
point in n-D: save it as `x[:, None]` or `x[None, :]`). A CSV may start with one header line
of column names. Every refusal is a `SampleFileError` (a `ValueError`) with one line naming
the file and the problem.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Tuple, Union

import numpy as np
import tensorflow as tf

from data.targets import Target

FORMATS = (".npy", ".npz", ".csv")
NOISE_STREAM = 7919  # offsets the momentum-noise seeds from the shuffling seeds
_FOREVER = 2**62

__all__ = ["FORMATS", "SampleFileError", "check_samples", "load_samples", "sample_batches", "samples_target",
           "split_samples", "vi_batches"]


class SampleFileError(ValueError):
    """A samples file that cannot be used; the message names the file and the problem."""


def _read_csv(path: Path) -> np.ndarray:
    lines = [line.strip() for line in path.read_text().splitlines()]
    rows = [(i + 1, line) for i, line in enumerate(lines) if line and not line.startswith("#")]
    if not rows:
        raise SampleFileError(f"--data {str(path)!r} is empty")

    def numbers(line_no: int, line: str):
        try:
            return [float(v) for v in line.split(",")]
        except ValueError:
            return None

    values = [numbers(*row) for row in rows]
    if values[0] is None:  # a header of column names
        rows, values = rows[1:], values[1:]
    if not rows:
        raise SampleFileError(f"--data {str(path)!r} has a header but no rows")
    width = len(values[0]) if values[0] is not None else None
    for (line_no, line), row in zip(rows, values):
        if row is None:
            raise SampleFileError(f"--data {str(path)!r} line {line_no}: not comma-separated numbers: {line[:60]!r}")
        if len(row) != width:
            raise SampleFileError(f"--data {str(path)!r} line {line_no} has {len(row)} values, the first row "
                                  f"has {width} (ragged CSV)")
    return np.asarray(values, np.float64)


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SampleFileError(f"--data {str(path)!r} is not a readable {suffix} file ({e})") from None
    if suffix == ".npz":
        with loaded:
            names = list(loaded.keys())
            if len(names) != 1:
                raise SampleFileError(f"--data {str(path)!r} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                      "it must hold exactly one")
            return loaded[names[0]]
    return loaded


def check_samples(points, what: str = "the samples") -> np.ndarray:
    """`points` as a float64 `[n, d]` array, or a `SampleFileError` naming `what` and the problem.

    Refused: non-numeric values, fewer or more than two dimensions, no rows or no columns,
    NaN or Inf.
    """
    array = np.asarray(points)
    if array.dtype.kind not in "iuf":
        raise SampleFileError(f"{what} must hold numbers, got dtype {array.dtype}")
    if array.ndim == 1:
        raise SampleFileError(f"{what} is one-dimensional (shape {array.shape}); points must be rows of a 2-D "
                              "array: use x[:, None] for n points in 1-D")
    if array.ndim != 2:
        raise SampleFileError(f"{what} must be a 2-D array [points, dimensions], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise SampleFileError(f"{what} is empty (shape {array.shape})")
    bad = ~np.isfinite(array)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise SampleFileError(f"{what} has {int(bad.any(axis=1).sum())} rows with NaN or Inf (first: row {row})")
    return array.astype(np.float64)


def load_samples(path: Union[str, os.PathLike]) -> np.ndarray:
    """Reads a samples file into a float64 `[n, d]` array (rows are points).

    Args:
      path: a `.npy`, `.npz` (exactly one array) or `.csv` (comma-separated, optional header line,
        `#` comment lines) file.

    Raises:
      SampleFileError: a missing, empty or unreadable file, an unknown suffix, a ragged CSV,
        non-finite values, or an array that is not two-dimensional.
    """
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SampleFileError(f"--data {str(path)!r}: unknown format {path.suffix!r}; valid: {', '.join(FORMATS)}")
    if not path.is_file():
        raise SampleFileError(f"--data {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise SampleFileError(f"--data {str(path)!r} is empty")
    return check_samples(_read_array(path), f"--data {str(path)!r}")


def split_samples(points: np.ndarray, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """A seeded random split into (train, test); the test part holds `test_fraction` of the
    points (at least one, and at least one point stays for training)."""
    if len(points) < 2:
        raise SampleFileError(f"the samples hold {len(points)} point; at least 2 are needed (train and test)")
    n_test = min(max(1, int(round(test_fraction * len(points)))), len(points) - 1)
    order = np.random.default_rng(seed).permutation(len(points))
    return points[order[n_test:]], points[order[:n_test]]


def samples_target(points: np.ndarray, name: str) -> Target:
    """A `Target` for points without a known density: `sample(n, seed)` draws rows of `points`
    with replacement; no log density, no NLL floor."""
    points = np.asarray(points, np.float64)

    def sample(n: int, seed: int) -> np.ndarray:
        return points[np.random.default_rng(seed).integers(0, len(points), n)]

    return Target(name=name, dim=points.shape[1], sample=sample, log_prob=None, nll_floor=None,
                  description=f"{len(points)} points in {points.shape[1]}-D from {name}", normalised=False)


def sample_batches(points: np.ndarray, batch_size: int, *, seed: int, momenta: int, start_step: int = 0
                   ) -> tf.data.Dataset:
    """Training batches `{"q": [B, d], "noise": [B, K, d]}` of `points` from step `start_step` on, forever.

    Shuffled without replacement, one permutation per epoch (epoch e draws its permutation from
    the stateless seed (seed, e); the last `n mod B` points of a permutation wait for the next
    one), batched and prefetched. The momentum noise of step s comes from the stateless seed
    (seed + NOISE_STREAM, s). Starting at any step costs one permutation, not a replay.

    Raises:
      ValueError: fewer points than a batch.
    """
    n, d = points.shape
    if n < batch_size:
        raise ValueError(f"{n} points are fewer than one batch of {batch_size}")
    per_epoch = n // batch_size
    values = tf.constant(points)
    shuffle_seed = tf.constant(seed % 2**31, tf.int64)
    noise_seed = tf.constant((seed + NOISE_STREAM) % 2**31, tf.int64)

    def epoch(e):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([shuffle_seed, e]))
        kept = tf.gather(values, order[: per_epoch * batch_size])
        return tf.data.Dataset.from_tensor_slices(tf.reshape(kept, [per_epoch, batch_size, d]))

    def with_noise(step, q):
        noise = tf.random.stateless_normal([batch_size, momenta, d], tf.stack([noise_seed, step]), dtype=q.dtype)
        return {"q": q, "noise": noise}

    first = start_step // per_epoch
    batches = tf.data.Dataset.range(first, _FOREVER).flat_map(epoch).skip(start_step - first * per_epoch)
    steps = tf.data.Dataset.range(start_step, _FOREVER)
    return (tf.data.Dataset.zip((steps, batches))
            .map(with_noise, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def vi_batches(batch_size: int, *, seed: int, start_step: int = 0) -> tf.data.Dataset:
    """VI-mode batches `{"seed": [B, 2] int32}` from step `start_step` on: the stateless seed
    (seed + NOISE_STREAM, s) of step s's prior draws on every row (the rows fix the batch size
    and split across replicas with it)."""
    base = tf.constant((seed + NOISE_STREAM) % 2**31, tf.int64)

    def seeds(step):
        pair = tf.cast(tf.stack([base, step % 2**31]), tf.int32)
        return {"seed": tf.tile(pair[None], [batch_size, 1])}

    return tf.data.Dataset.range(start_step, _FOREVER).map(seeds).prefetch(tf.data.AUTOTUNE)
