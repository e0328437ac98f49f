"""Data-generation throughput: simulate + render, and `tf.data` batches into a training loop.

    python bench/data_generation.py [--quick]

Prints a table and writes `bench/results/data_generation.json`. Measures (at the defaults:
32x32 frames, dt = 0.125, the accurate ground truth of `data.simulation`, frames quantised to
uint8 as stored):

* trajectories/s to simulate and render pendulum (32 and 30 frames) and two-body (32 frames),
  in one process and in one process per available core;
* end to end: trajectories/s of `python -m data.generate pendulum --train 20000 --test 10`
  in a fresh process (wall clock from launch to exit: start-up, generation, ZLIB encoding,
  serialisation, TFDS's shuffle and the written files; 2,000 train with `--quick`);
* `tf.data` batches/s (window 30, batch 16) from in-memory arrays and from the TFDS dataset
  (after the first, caching epoch), consumed by a trivial `tf.function` step.

The machine may be shared: the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import data
from common import cpu
from data.generation import available_cores, generate_chunks

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "data_generation.json"


def _trajectories_per_second(system: str, n: int, n_frames: int, workers: int, repeats: int) -> float:
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        count = sum(len(chunk["x"]) for chunk in generate_chunks(system, 0, n, n_frames=n_frames, num_workers=workers))
        best = max(best, count / (time.perf_counter() - start))
    return best


def _end_to_end_per_second(n_train: int, n_test: int) -> dict:
    """Runs `python -m data.generate` in a fresh process; wall clock includes start-up and writing."""
    with tempfile.TemporaryDirectory() as data_dir:
        command = [sys.executable, "-m", "data.generate", "pendulum", "--train", str(n_train), "--test", str(n_test),
                   "--data-dir", data_dir]
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        written = sum(path.stat().st_size for path in Path(data_dir).rglob("*.tfrecord*"))
    return {"command": f"python -m data.generate pendulum --train {n_train} --test {n_test} --data-dir <tmp>",
            "seconds": round(seconds, 2), "trajectories_per_second": round((n_train + n_test) / seconds, 1),
            "tfrecord_bytes": written}


def _batches_per_second(ds, n_batches: int) -> float:
    import tensorflow as tf

    @tf.function
    def step(batch):  # A stand-in for a training step: touches every pixel.
        return tf.reduce_mean(batch["frames"]) + tf.reduce_mean(batch["x"])

    iterator = iter(ds)
    for _ in range(20):  # Warm-up: tracing, autotuning, filling the cache/prefetch buffers.
        step(next(iterator))
    start = time.perf_counter()
    for _ in range(n_batches):
        step(next(iterator))
    return n_batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    n, repeats, n_batches = (256, 1, 50) if args.quick else (2048, 3, 300)
    cores = available_cores()
    load_before = os.getloadavg()
    results = {"machine": {"cores": cores, "cpu": cpu.describe(), "platform": platform.platform(),
                           "python": platform.python_version(),
                           "load_average_before": [round(v, 2) for v in load_before]},
               "trajectories_per_second": {}, "tf_data_batches_per_second": {}}
    # First, while no pool of this process competes with it.
    end_to_end = _end_to_end_per_second(*((2000, 10) if args.quick else (20000, 10)))
    results["end_to_end"] = end_to_end
    print(f"end to end, {end_to_end['command']}: {end_to_end['trajectories_per_second']:8.1f} trajectories/s "
          f"({end_to_end['seconds']:.1f} s with start-up)", flush=True)
    for system, frames in (("pendulum", 32), ("pendulum", 30), ("two_body", 32)):
        for label, workers in (("one_process", 1), (f"all_{cores}_cores", cores)):
            rate = _trajectories_per_second(system, n, frames, workers, repeats)
            results["trajectories_per_second"][f"{system}_{frames}frames_{label}"] = round(rate, 1)
            print(f"{system:9s} {frames} frames 32x32, {label:13s}: {rate:8.1f} trajectories/s", flush=True)

    arrays = data.generate_arrays("pendulum", 512, num_workers=cores)
    ds = data.make_dataset_from_arrays(arrays, window=30, batch_size=16, repeat=True)
    rate = _batches_per_second(ds, n_batches)
    results["tf_data_batches_per_second"]["pendulum_arrays_window30_batch16"] = round(rate, 1)
    print(f"tf.data from arrays (window 30, batch 16): {rate:8.1f} batches/s", flush=True)
    with tempfile.TemporaryDirectory() as data_dir:
        builder = data.prepare("pendulum", data_dir=data_dir, n_train=512, n_test=16)
        ds = data.make_dataset("pendulum", "train", data_dir=data_dir, window=30, batch_size=16, repeat=True,
                               builder=builder)
        rate = _batches_per_second(ds, n_batches)
    results["tf_data_batches_per_second"]["pendulum_tfds_cached_window30_batch16"] = round(rate, 1)
    print(f"tf.data from TFDS, cached (window 30, batch 16): {rate:8.1f} batches/s", flush=True)

    load_after = os.getloadavg()
    results["machine"]["load_average_after"] = [round(v, 2) for v in load_after]
    results["notes"] = (
        "Best of repeats for generation. Timings are noisy: other jobs (other engineers' TensorFlow "
        "training and tests) shared these cores, see the load averages. Goal: >= 1000 pendulum "
        "trajectories/s (30 frames, 32x32) on 2 cores with relative energy error < 1e-6; the PyTorch "
        "re-implementation does ~200/s in one process. `trajectories_per_second` is simulation and "
        "rendering in memory; `end_to_end` is the TFDS dataset written by `python -m data.generate` in a "
        "fresh process (start-up, ZLIB encoding, serialisation, shuffling and writing included).")
    results["command"] = "python bench/data_generation.py" + (" --quick" if args.quick else "")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {RESULTS}")
    else:
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
