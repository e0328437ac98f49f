"""Points as training data: the user's own file (read, checked, split) and the tf.data pipelines
that batch any points for a density model (`nhf`).

    points = load_samples("samples.npy")          # [n, d] float64; .npy, .npz (one array), .csv
    train, test = split_samples(points, test_fraction=0.1, seed=0)
    target = samples_target(points, "samples.npy")  # a `data.targets.Target` without a density
    batches = sample_batches(train, 256, seed=0, momenta=1, start_step=0)  # resumable at any step

A file is accepted when it holds one finite, two-dimensional array of numbers (rows are points,
columns coordinates); a one-dimensional array is refused (it could be n points in 1-D or one
point in n-D: save it as `x[:, None]` or `x[None, :]`). A CSV is comma-separated (another
separator is named in the error) and may start with one header line of column names, one per
column; a header without a first name (pandas' index column) is refused, and a header of
numbers (pandas' default names 0, 1, ...) cannot be told from a point: it is read as one.
Every refusal is a `SampleFileError` (a `ValueError`) with one line naming the file and the
problem. Reading and checking a file needs no TensorFlow (the pipelines import it).
"""
from __future__ import annotations

import csv
import os
import zipfile
import zlib
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np

from data.targets import Target

FORMATS = (".npy", ".npz", ".csv")
NOISE_STREAM = 7919  # offsets the momentum-noise seeds from the shuffling seeds
_FOREVER = 2**62

__all__ = ["FORMATS", "SampleFileError", "check_path", "check_samples", "load_samples", "sample_batches",
           "samples_target", "split_samples", "vi_batches"]


class SampleFileError(ValueError):
    """A samples file that cannot be used; the message names the file and the problem."""


SEPARATORS = {";": "semicolons", "\t": "tabs", " ": "spaces"}  # what a CSV that is not comma-separated may use


def _numbers(line: str) -> Optional[list]:
    try:
        return [float(v) for v in line.split(",")]
    except ValueError:
        return None


def _separator(line: str) -> Optional[str]:
    """The name of the separator other than a comma that splits `line` into numbers, if one does."""
    for sep, name in SEPARATORS.items():
        parts = line.split() if sep == " " else line.split(sep)
        if len(parts) > 1 and all("," not in part and _numbers(part) is not None for part in parts):
            return name
    return None


def _empty_value(line: str) -> bool:
    """Comma-separated numbers with an empty value among them (a doubled or trailing comma)."""
    parts = [part for part in line.split(",") if part.strip()]
    return len(parts) < len(line.split(",")) and _numbers(",".join(parts)) is not None


def _not_numbers(path: Path, line_no: int, line: str) -> SampleFileError:
    """The error for a line that is not comma-separated numbers, naming what it is instead."""
    where = f"--data {str(path)!r} line {line_no}"
    name = _separator(line)
    if name:
        return SampleFileError(f"{where} is separated by {name}, not commas (np.savetxt(..., delimiter=',') "
                               f"writes commas): {line[:60]!r}")
    if _empty_value(line):
        return SampleFileError(f"{where} has an empty value (a doubled or trailing comma?): {line[:60]!r}")
    return SampleFileError(f"{where}: not comma-separated numbers: {line[:60]!r}")


def _read_csv(path: Path) -> np.ndarray:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first value
    except UnicodeDecodeError as e:
        raise SampleFileError(f"--data {str(path)!r} is not UTF-8 text (byte {e.start}); a CSV must be "
                              "comma-separated numbers") from None
    lines = [line.strip() for line in text.splitlines()]
    rows = [(i + 1, line) for i, line in enumerate(lines) if line and not line.startswith("#")]
    if not rows:
        raise SampleFileError(f"--data {str(path)!r} is empty")
    first = rows[0][1]
    header = None
    if _numbers(first) is None and not (_separator(first) or _empty_value(first)):  # column names
        header, rows = rows[0], rows[1:]
    if not rows:
        raise SampleFileError(f"--data {str(path)!r} has a header but no rows")
    values = []
    for line_no, line in rows:
        row = _numbers(line)
        if row is None:
            raise _not_numbers(path, line_no, line)
        if values and len(row) != len(values[0]):
            raise SampleFileError(f"--data {str(path)!r} line {line_no} has {len(row)} values, the first row "
                                  f"has {len(values[0])} (ragged CSV)")
        values.append(row)
    if header is not None:
        line_no, text = header
        names = next(csv.reader([text]))  # a quoted name may hold commas
        while names and not names[-1].strip():  # a trailing comma
            names.pop()
        if names and not names[0].strip():
            raise SampleFileError(f"--data {str(path)!r} line {line_no}: the header's first column has no name, as "
                                  "pandas' to_csv writes for its index; that column would be read as a coordinate: "
                                  "save with to_csv(index=False)")
        if len(names) != len(values[0]):
            raise SampleFileError(f"--data {str(path)!r}: the header (line {line_no}) names {len(names)} columns, "
                                  f"the rows have {len(values[0])} values")
    return np.asarray(values, np.float64)


# What np.load and its archive members raise for a file that is not what its name says.
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _read_array(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    try:
        loaded = np.load(path, allow_pickle=False)
    except _UNREADABLE as e:
        raise SampleFileError(f"--data {str(path)!r} is not a readable {suffix} file ({e})") from None
    archive = isinstance(loaded, np.lib.npyio.NpzFile)
    if archive != (suffix == ".npz"):
        if archive:
            loaded.close()
        raise SampleFileError(f"--data {str(path)!r} is {'an .npz archive' if archive else 'a single .npy array'} "
                              f"named {suffix}: rename it {'.npz' if archive else '.npy'}")
    if not archive:
        return loaded
    with loaded:
        names = list(loaded.keys())
        if len(names) != 1:
            raise SampleFileError(f"--data {str(path)!r} holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                                  "it must hold exactly one")
        try:
            return loaded[names[0]]
        except _UNREADABLE as e:
            raise SampleFileError(f"--data {str(path)!r}: its array {names[0]!r} is not readable ({e})") from None


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
    path = check_path(path)
    return check_samples(_read_array(path), f"--data {str(path)!r}")


def check_path(path: Union[str, os.PathLike]) -> Path:
    """The checks of `load_samples` that need not read the file (suffix, existence, size), for a
    command line to run before it starts anything; returns the path. Raises `SampleFileError`."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SampleFileError(f"--data {str(path)!r}: unknown format {path.suffix!r}; valid: {', '.join(FORMATS)}")
    if not path.is_file():
        raise SampleFileError(f"--data {str(path)!r} does not exist")
    if path.stat().st_size == 0:
        raise SampleFileError(f"--data {str(path)!r} is empty")
    return path


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
    import tensorflow as tf  # here, so that reading and checking a file needs no TensorFlow

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
    import tensorflow as tf

    base = tf.constant((seed + NOISE_STREAM) % 2**31, tf.int64)

    def seeds(step):
        pair = tf.cast(tf.stack([base, step % 2**31]), tf.int32)
        return {"seed": tf.tile(pair[None], [batch_size, 1])}

    return tf.data.Dataset.range(start_step, _FOREVER).map(seeds).prefetch(tf.data.AUTOTUNE)
