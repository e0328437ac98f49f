"""`tf.data` pipelines of trajectory windows for training HGN.

Each element is a batch `{"frames": float32 [B, window, H, W, 3] in [0, 1],
"x": float32 [B, window, 2 d]}`: a window of `window` consecutive frames from each trajectory,
starting at a random offset. With `reverse=True` the window runs backwards in time: frames and
states are reversed and the momenta (second half of x) change sign, which is exactly the
forward trajectory of the time-reversed system (H(q, p) = H(q, -p) for every system here).

Order of operations: (verify files) -> decode -> cache -> shuffle -> repeat -> window -> batch
-> frames to float -> prefetch. Shuffling, window offsets (stateless random ops seeded by
`(seed, element number)`) and parallel maps are all deterministic, so a seeded pipeline gives
the same batches on every run.
"""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from data.builder import (
    DEFAULT_TEST,
    DEFAULT_TRAIN,
    HamiltonianPhysics,
    prepare,
    regenerate_command,
)
from data.generation import DEFAULT_DT, DEFAULT_FRAMES, DEFAULT_IMAGE_SIZE

__all__ = ["CorruptDatasetError", "make_dataset", "make_dataset_from_arrays", "verify_split"]

_SHUFFLE_BUFFER = 10_000
_VERIFIED = set()


class CorruptDatasetError(RuntimeError):
    """A prepared dataset's files are missing, truncated or corrupted."""


def _check_window(window: int, n_frames: int, batch_size: int, window_start: Optional[int]) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if window > n_frames:
        raise ValueError(f"window ({window}) must not exceed the trajectories' n_frames ({n_frames})")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if window_start is not None and not 0 <= window_start <= n_frames - window:
        raise ValueError(f"window_start must be in [0, {n_frames - window}], got {window_start!r}")


def _windows(ds: tf.data.Dataset, *, n_examples: int, n_frames: int, window: int, batch_size: int,
             reverse: bool, shuffle: bool, seed: int, repeat: bool, cache: Union[bool, str],
             drop_remainder: bool, window_start: Optional[int]) -> tf.data.Dataset:
    """The shared tail of both pipelines; `ds` yields `{"frames", "x"}` per trajectory."""
    if cache:
        ds = ds.cache(cache if isinstance(cache, str) else "")
    if shuffle:
        ds = ds.shuffle(max(1, min(n_examples, _SHUFFLE_BUFFER)), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    last_start = n_frames - window

    def crop(count, example):
        if window_start is None:
            start = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), count]),
                                                minval=0, maxval=last_start + 1, dtype=tf.int64)
        else:
            start = tf.constant(window_start, tf.int64)
        frames = example["frames"][start:start + window]
        x = example["x"][start:start + window]
        if reverse:
            frames = frames[::-1]
            q, p = tf.split(x[::-1], 2, axis=-1)
            x = tf.concat([q, -p], axis=-1)
        return {"frames": frames, "x": x}

    ds = ds.enumerate().map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)

    def to_float(batch):
        frames = batch["frames"]
        if frames.dtype == tf.uint8:
            frames = tf.cast(frames, tf.float32) / 255.0
        return {"frames": frames, "x": batch["x"]}

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_dataset_from_arrays(arrays: Dict[str, np.ndarray], *, window: int, batch_size: int,
                             reverse: bool = False, shuffle: bool = True, seed: int = 0,
                             repeat: bool = False, drop_remainder: bool = True,
                             window_start: Optional[int] = None) -> tf.data.Dataset:
    """The windowed pipeline over in-memory arrays (e.g. from `generate_arrays`).

    Args:
      arrays: dict with `images` (float32 in [0, 1] or uint8, `[n, T, H, W, 3]`) and `x`
        (`[n, T, 2 d]`).
      window: frames per window (1 <= window <= T).
      batch_size: windows per batch.
      reverse: reverse time (frames and states) and negate the momenta.
      shuffle: shuffle trajectories (seeded, reshuffled each epoch).
      seed: seeds the shuffle and the window offsets.
      repeat: repeat forever.
      drop_remainder: drop a last, smaller batch.
      window_start: a fixed window offset instead of random ones (e.g. 0 for evaluation).

    Returns:
      A `tf.data.Dataset` of `{"frames": float32 [B, window, H, W, 3], "x": float32 [B, window, 2 d]}`.

    Raises:
      ValueError: missing keys, mismatched lengths, or a bad window/batch size.
    """
    if "images" not in arrays or "x" not in arrays:
        raise ValueError(f"arrays needs 'images' and 'x', got keys {sorted(arrays)}")
    images, x = np.asarray(arrays["images"]), np.asarray(arrays["x"], np.float32)
    if images.ndim != 5 or x.ndim != 3 or images.shape[:2] != x.shape[:2]:
        raise ValueError(f"arrays['images'] [n, T, H, W, 3] and arrays['x'] [n, T, 2d] disagree: "
                         f"{images.shape} and {x.shape}")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    _check_window(window, images.shape[1], batch_size, window_start)
    ds = tf.data.Dataset.from_tensor_slices({"frames": images, "x": x})
    return _windows(ds, n_examples=len(x), n_frames=images.shape[1], window=window, batch_size=batch_size,
                    reverse=reverse, shuffle=shuffle, seed=seed, repeat=repeat, cache=False,
                    drop_remainder=drop_remainder, window_start=window_start)


def verify_split(builder: HamiltonianPhysics, split: str) -> None:
    """Checks that every file of a prepared split is present and holds the recorded examples.

    Reads each shard once (TFRecord CRCs are checked on read) and compares its record count with
    the count TFDS recorded when it wrote the shard. A file is checked once per process unless
    it changes.

    Raises:
      CorruptDatasetError: naming the file and giving the command that regenerates the dataset.
    """
    base = split.split("[")[0]
    info = builder.info.splits[base]
    how = (f"The dataset {builder.info.full_name} in {builder._data_dir_root} is damaged. Regenerate it with:\n"
           f"  {regenerate_command(builder.builder_config, builder._data_dir_root)}")
    for path, expected in zip(info.filepaths, info.shard_lengths):
        path = os.fspath(path)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            raise CorruptDatasetError(f"missing data file {path}.\n{how}") from None
        key = (path, stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        try:
            found = int(tf.data.TFRecordDataset(path).reduce(np.int64(0), lambda n, _: n + 1))
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError) as error:
            raise CorruptDatasetError(f"data file {path} is truncated or corrupted "
                                      f"({type(error).__name__}: {error.message.splitlines()[0]}).\n{how}") from None
        if found != expected:
            raise CorruptDatasetError(f"data file {path} holds {found} examples, but {expected} were written.\n{how}")
        _VERIFIED.add(key)


def make_dataset(system: str, split: str, *, data_dir: Optional[str] = None, window: int, batch_size: int,
                 reverse: bool = False, shuffle: bool = True, seed: int = 0, repeat: bool = False,
                 cache: Union[bool, str] = True, drop_remainder: bool = True,
                 window_start: Optional[int] = None, n_train: int = DEFAULT_TRAIN, n_test: int = DEFAULT_TEST,
                 n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT, image_size: int = DEFAULT_IMAGE_SIZE,
                 n_colors: Optional[int] = None, noise_std: float = 0.0, data_seed: int = 0,
                 builder: Optional[HamiltonianPhysics] = None) -> tf.data.Dataset:
    """The windowed pipeline over a TFDS split, generating the dataset first if it is missing.

    Args:
      system: one of `SYSTEMS`.
      split: `"train"`, `"test"`, or a TFDS split expression such as `"train[:10%]"`.
      data_dir: TFDS data directory (None: `DEFAULT_DATA_DIR`).
      window, batch_size, reverse, shuffle, seed, repeat, drop_remainder, window_start: as in
        `make_dataset_from_arrays` (`seed` seeds the pipeline, not the data).
      cache: cache decoded trajectories (uint8 frames) in memory (True) or in this file (str).
      n_train, n_test, n_frames, dt, image_size, n_colors, noise_std: the dataset variant, as in
        `prepare`; `data_seed` is its generation seed.
      builder: an already prepared builder, which overrides the variant arguments.

    Returns:
      A `tf.data.Dataset` of `{"frames": float32 [B, window, H, W, 3], "x": float32 [B, window, 2 d]}`.

    Raises:
      ValueError: unknown system or split, or bad sizes, naming the argument.
      CorruptDatasetError: a data file is missing, truncated or corrupted (says how to regenerate).
    """
    if builder is None:
        builder = prepare(system, data_dir=data_dir, n_train=n_train, n_test=n_test, n_frames=n_frames, dt=dt,
                          image_size=image_size, n_colors=n_colors, noise_std=noise_std, seed=data_seed)
    base = split.split("[")[0]
    if base not in builder.info.splits:
        raise ValueError(f"split must be one of {sorted(builder.info.splits)} (optionally sliced), got {split!r}")
    config = builder.builder_config
    _check_window(window, config.n_frames, batch_size, window_start)
    verify_split(builder, split)
    read_config = tfds.ReadConfig(shuffle_seed=seed, interleave_cycle_length=1)
    ds = builder.as_dataset(split=split, shuffle_files=False, read_config=read_config)
    ds = ds.map(lambda ex: {"frames": ex["frames"], "x": tf.cast(ex["x"], tf.float32)},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    n_examples = builder.info.splits[split].num_examples
    return _windows(ds, n_examples=n_examples, n_frames=config.n_frames, window=window, batch_size=batch_size,
                    reverse=reverse, shuffle=shuffle, seed=seed, repeat=repeat, cache=cache,
                    drop_remainder=drop_remainder, window_start=window_start)

