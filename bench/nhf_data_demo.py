#!/usr/bin/env python3
"""`train_nhf.py --data` on a file of 2-D Gaussian-mixture points, scored against the true entropy.

Writes `--file` (points of a three-component mixture with correlated, unequal components),
runs exactly `python train_nhf.py --data FILE --preset PRESET --steps N --run-dir DIR`, then
compares the run's test NLL (negative IWAE bound, in the data's units) with the mixture's
entropy (Monte Carlo over 10^6 fresh points), and, paired on the run's own held-out points, the
SavedModel's log_prob with the true log density (an estimate of KL(p || q) with a small
standard error).

    python bench/nhf_data_demo.py                          # preset small, 3,000 steps, ~3 minutes on 2 cores
    python bench/nhf_data_demo.py --steps 10000 --preset quality
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import cpu
from common.runs import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = np.array([0.5, 0.3, 0.2])
MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 3.0]])
COVS = np.array([[[1.0, 0.6], [0.6, 1.0]], [[0.5, -0.2], [-0.2, 0.3]], [[0.2, 0.0], [0.0, 1.5]]])


def sample(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    component = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    noise = rng.normal(size=(n, 2))
    chol = np.linalg.cholesky(COVS)
    return MEANS[component] + np.einsum("nij,nj->ni", chol[component], noise)


def log_prob(x: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - MEANS[None]
    inv = np.linalg.inv(COVS)
    maha = np.einsum("nki,kij,nkj->nk", diff, inv, diff)
    log_norm = -0.5 * np.log(np.linalg.det(2 * np.pi * COVS))
    comp = np.log(WEIGHTS) + log_norm - 0.5 * maha
    top = comp.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(comp - top).sum(axis=1, keepdims=True)))[:, 0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20_000, help="points in the file")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--file", default="runs/nhf-data-demo.npy")
    parser.add_argument("--run-dir", default="runs/nhf-data-demo")
    parser.add_argument("--out", default="bench/results/nhf_data_demo.json")
    parser.add_argument("--score-only", action="store_true", help="score the finished run in --run-dir, no training")
    args = parser.parse_args(argv)
    points = sample(args.points, seed=0)
    Path(args.file).parent.mkdir(parents=True, exist_ok=True)
    np.save(args.file, points)
    fresh = sample(1_000_000, seed=1)
    true_nll = -log_prob(fresh)
    entropy, entropy_stderr = float(true_nll.mean()), float(true_nll.std() / np.sqrt(len(true_nll)))
    command = [sys.executable, "train_nhf.py", "--data", args.file, "--preset", args.preset, "--steps",
               str(args.steps), "--run-dir", args.run_dir, "--no-progress"]
    t0 = time.time()
    if not args.score_only:
        subprocess.run(command, cwd=ROOT, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    seconds = time.time() - t0
    run_dir = ROOT / args.run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    import tensorflow as tf

    from data.samples import split_samples

    config = json.loads((run_dir / "config.json").read_text())
    _, test = split_samples(points, config["test_fraction"], config["seed"])
    loaded = tf.saved_model.load(str(run_dir / "saved_model"))  # keep a reference: its variables live with it
    model_lp = loaded.log_prob(tf.constant(test, tf.float32)).numpy()
    gap = log_prob(test) - model_lp
    result = {
        "command": " ".join(["python", *command[1:]]), "seconds": None if args.score_only else round(seconds, 1),
        "test_nll": metrics["test_nll"], "test_nll_stderr": metrics["test_nll_stderr"],
        "entropy": entropy, "entropy_stderr": entropy_stderr, "test_nll_minus_entropy": metrics["test_nll"] - entropy,
        "kl_paired": float(gap.mean()), "kl_paired_stderr": float(gap.std() / np.sqrt(len(gap))),
        "within_0.1_nats": bool(abs(metrics["test_nll"] - entropy) < 0.1 and gap.mean() < 0.1),
        "bench_command": "python bench/nhf_data_demo.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "cpu": cpu.describe(),
        "threads": {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
        "affinity_cores": sorted(os.sched_getaffinity(0)),
    }
    print(json.dumps(result, indent=1))
    atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
