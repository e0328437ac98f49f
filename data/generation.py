"""Simulate-and-render examples, seeded per example, in parallel over processes.

Seeding: example `index` of random stream `stream` (0 = train / `generate_arrays`, 1 = test)
draws everything from `SeedSequence([seed, stream, index])`: one child stream for the physics
(parameters, initial state, re-sampling) and one for the picture (colours, noise). So an
example depends on its key alone, and the physics does not change with `n_colors` or
`noise_std`. Examples are simulated in fixed chunks of `CHUNK_SIZE` consecutive indices
(chunk boundaries are multiples of `CHUNK_SIZE`), so the output does not depend on the
number of worker processes either: the same arguments give byte-identical arrays.

Frames are quantised to 8 bits (`round(255 v) / 255`), as the suite stores them, so arrays from
`generate_arrays` equal the frames read back from the TFDS dataset.
"""
from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from data.rendering import palette, render
from data.simulation import sample_trajectories
from data.systems import get_system

__all__ = [
    "CHUNK_SIZE",
    "DEFAULT_DT",
    "DEFAULT_FRAMES",
    "DEFAULT_IMAGE_SIZE",
    "VARIANT_HELP",
    "available_cores",
    "generate_arrays",
    "generate_chunks",
    "validate_generation_args",
]

DEFAULT_TRAIN = 2000
DEFAULT_TEST = 500
PAPER_TRAIN = 50_000
PAPER_TEST = 10_000
# The checkout's git-ignored `datasets/` folder; $HAMILTONIAN_DATA_DIR overrides it.
DEFAULT_DATA_DIR = os.environ.get("HAMILTONIAN_DATA_DIR",
                                  os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "datasets"))
DEFAULT_FRAMES = 32
DEFAULT_DT = 0.125
DEFAULT_IMAGE_SIZE = 32
CHUNK_SIZE = 128
# What each dataset-variant setting means: one definition, the help text of the flags of
# `python -m data.generate` and of `train_hgn.py` (whose config records the variant it trained on).
VARIANT_HELP = {
    "frames": "frames per trajectory",
    "dt": "time between frames",
    "image_size": "frame height and width in pixels",
    "colors": "palette size: each example draws distinct colours for its bodies from it (default: 1 for one "
              "body, else the number of bodies)",
    "noise_std": "standard deviation of Gaussian pixel noise, added before clipping to [0, 1]",
    "seed": "seed of the generated dataset",
}


def available_cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # Not on Linux.
        return os.cpu_count() or 1


def validate_generation_args(system: str, n: int, n_frames: int, dt: float, image_size: int,
                             n_colors: Optional[int], noise_std: float, seed: int) -> int:
    """Checks the generation arguments; returns the number of colours to use.

    Raises:
      ValueError: naming the offending argument (unknown systems list the valid ones).
    """
    sys_ = get_system(system)
    for name, value in (("n", n), ("n_frames", n_frames), ("image_size", image_size), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n_frames <= 0:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if not isinstance(dt, (int, float, np.floating)) or not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
    if not isinstance(noise_std, (int, float, np.floating)) or not math.isfinite(noise_std) or noise_std < 0:
        raise ValueError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    colors = sys_.palette_size(n_colors)
    if isinstance(colors, bool) or not isinstance(colors, (int, np.integer)) or colors < 1:
        raise ValueError(f"n_colors must be a positive integer, got {n_colors!r}")
    if colors > 1 and colors < sys_.n_bodies:
        raise ValueError(f"n_colors must be 1 or at least the number of bodies ({sys_.n_bodies}) of "
                         f"{system}, got {colors}")
    return int(colors)


def _generate_range(args: Tuple) -> Dict[str, object]:
    """Generates examples `start..stop-1` of one stream (a worker's unit of work)."""
    system_name, start, stop, stream, n_frames, dt, image_size, n_colors, noise_std, seed = args
    system = get_system(system_name)
    physics_rngs, picture_rngs = [], []
    for index in range(start, stop):
        physics, picture = np.random.SeedSequence([seed, stream, index]).spawn(2)
        physics_rngs.append(np.random.default_rng(physics))
        picture_rngs.append(np.random.default_rng(picture))
    times = np.arange(n_frames, dtype=np.float64) * dt
    states, params, resampled = sample_trajectories(system, physics_rngs, times)

    bodies = system.n_bodies
    if n_colors == 1:
        color_index = np.zeros((stop - start, bodies), np.int64)
    else:
        color_index = np.stack([rng.choice(n_colors, size=bodies, replace=False) for rng in picture_rngs])
    colors = palette(n_colors)[color_index]
    radii = np.sqrt(system.body_masses(params) / np.pi)
    positions = system.body_positions(states, params)
    if noise_std > 0:
        frames = render(positions, radii, colors, system.extent, image_size)
        shape = frames.shape[1:]
        noise = np.stack([rng.standard_normal(shape, dtype=np.float32) for rng in picture_rngs])
        frames = np.rint(np.clip(frames + np.float32(noise_std) * noise, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        frames = render(positions, radii, colors, system.extent, image_size, dtype=np.uint8)
    return {
        "frames": frames,
        "x": states,
        "dx": system.time_derivative(states, params),
        "params": params,
        "color_index": color_index,
        "resampled": resampled,
    }


def _chunk_bounds(start: int, stop: int) -> List[Tuple[int, int]]:
    bounds = []
    lo = start
    while lo < stop:
        hi = min(stop, (lo // CHUNK_SIZE + 1) * CHUNK_SIZE)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _generation_tasks(system: str, start: int, stop: int, stream: int, n_frames: int, dt: float,
                      image_size: int, n_colors: Optional[int], noise_std: float, seed: int) -> List[Tuple]:
    """The worker tasks (one per chunk) for examples `start..stop-1` of `stream`."""
    n_colors = validate_generation_args(system, max(stop - start, 0), n_frames, dt, image_size,
                                        n_colors, noise_std, seed)
    return [(system, lo, hi, stream, int(n_frames), float(dt), int(image_size), n_colors,
             float(noise_std), int(seed)) for lo, hi in _chunk_bounds(start, stop)]


@contextlib.contextmanager
def _ordered_map(function: Callable, tasks: Sequence[Tuple], num_workers: Optional[int]) -> Iterator[Iterator]:
    """`map(function, tasks)` over `num_workers` processes (None: all cores), results in order.

    With more than one worker the pool starts, and begins on every task, on entry.
    """
    workers = available_cores() if num_workers is None else int(num_workers)
    workers = max(1, min(workers, len(tasks)))
    if workers == 1:
        yield map(function, tasks)
        return
    # Forked workers start instantly and never re-run the caller's script (spawn would, and an
    # unguarded script would then recurse). They only run NumPy/SciPy code, never TensorFlow,
    # so forking a process that has TensorFlow loaded is safe here.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers) as pool:
        yield pool.imap(function, tasks)


def generate_chunks(system: str, start: int, stop: int, *, stream: int = 0,
                    n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT,
                    image_size: int = DEFAULT_IMAGE_SIZE, n_colors: Optional[int] = None,
                    noise_std: float = 0.0, seed: int = 0,
                    num_workers: Optional[int] = 1) -> Iterator[Dict[str, object]]:
    """Yields chunks of examples `start..stop-1` in order, computed by `num_workers` processes.

    Each chunk is a dict with `frames` uint8 `[c, T, H, W, 3]`, `x` and `dx` float64
    `[c, T, 2 d]`, `params` (dict of `[c, ...]` float64), `color_index` int64 `[c, bodies]` and
    `resampled` (how many draws were rejected).

    Args:
      num_workers: processes to use; None for every available core.
    """
    tasks = _generation_tasks(system, start, stop, stream, n_frames, dt, image_size, n_colors, noise_std, seed)
    with _ordered_map(_generate_range, tasks, num_workers) as chunks:
        yield from chunks


def _concatenate(chunks: Sequence[Dict[str, object]]) -> Dict[str, object]:
    params = {k: np.concatenate([c["params"][k] for c in chunks]) for k in chunks[0]["params"]}
    out = {k: np.concatenate([c[k] for c in chunks]) for k in ("frames", "x", "dx", "color_index")}
    out["params"] = params
    return out


def generate_arrays(system: str, n: int, *, n_frames: int = DEFAULT_FRAMES, dt: float = DEFAULT_DT,
                    image_size: int = DEFAULT_IMAGE_SIZE, n_colors: Optional[int] = None,
                    noise_std: float = 0.0, seed: int = 0, num_workers: Optional[int] = 1,
                    progress: Optional[Callable[[int], None]] = None) -> Dict[str, object]:
    """Simulates and renders `n` trajectories in memory.

    Example i is the same as example i of the train split of the TFDS dataset built with the
    same arguments.

    Args:
      system: one of `SYSTEMS`.
      n: number of trajectories (>= 0).
      n_frames: frames per trajectory, at times 0, dt, ..., (n_frames - 1) dt.
      dt: time between frames.
      image_size: frame height and width in pixels (>= 8).
      n_colors: size of the colour palette; None for the system's default (1 for one-body
        systems, the number of bodies otherwise). With more than one colour, each example draws
        distinct colours for its bodies.
      noise_std: standard deviation of Gaussian pixel noise added before clipping to [0, 1].
      seed: the dataset seed (>= 0).
      num_workers: processes to use (None: all cores); the result does not depend on it.
      progress: optional callback receiving the number of examples finished in each chunk.

    Returns:
      A dict of NumPy arrays:
        `images`: float32 `[n, n_frames, image_size, image_size, 3]` in [0, 1].
        `x`: float64 `[n, n_frames, 2 d]`, positions q then momenta p.
        `dx`: float64, same shape, dx/dt = (dH/dp, -dH/dq) at each frame.
        `params`: dict of float64 arrays with leading axis n (e.g. `m`, `g`, `l`).
        `color_index`: int64 `[n, bodies]`, palette index of each body.

    Raises:
      ValueError: for an unknown system or nonsensical sizes, naming the argument.
    """
    validate_generation_args(system, n, n_frames, dt, image_size, n_colors, noise_std, seed)
    chunks = []
    for chunk in generate_chunks(system, 0, n, stream=0, n_frames=n_frames, dt=dt, image_size=image_size,
                                 n_colors=n_colors, noise_std=noise_std, seed=seed, num_workers=num_workers):
        chunks.append(chunk)
        if progress is not None:
            progress(len(chunk["x"]))
    if not chunks:
        sys_ = get_system(system)
        width = 2 * sys_.dim
        example_params = sys_.sample_params(np.random.default_rng(0))
        return {
            "images": np.zeros((0, n_frames, image_size, image_size, 3), np.float32),
            "x": np.zeros((0, n_frames, width)),
            "dx": np.zeros((0, n_frames, width)),
            "params": {k: np.zeros((0,) + np.shape(v)) for k, v in example_params.items()},
            "color_index": np.zeros((0, sys_.n_bodies), np.int64),
        }
    out = _concatenate(chunks)
    images = out.pop("frames").astype(np.float32) / np.float32(255.0)
    return {"images": images, **out}
