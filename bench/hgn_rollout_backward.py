#!/usr/bin/env python3
"""The SavedModel's `rollout_backward` on held-out clips against the run's own backward evaluation.

    python bench/hgn_rollout_backward.py runs/hgn-pendulum

Loads `RUN/saved_model` with `tf.saved_model.load` (no project code in the model path), feeds
each of the run's test trajectories (the first `eval_frames` frames, as `hgn.evaluation` scores
them) to `rollout_backward(frames, eval_frames - 1, dt)`, reverses the output into forward time
and scores the per-pixel MSE x 1e-4 against the clip; prints it beside `metrics.json`'s
`test_backward` figure and writes `bench/results/hgn_rollout_backward.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "hgn_rollout_backward.json"))
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    saved = json.loads((run_dir / "config.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())

    import tensorflow as tf

    import data
    from common import config as config_lib
    from common import cpu
    from hgn.evaluation import load_split
    from hgn.config import HGNConfig

    config = config_lib.from_dict(HGNConfig, saved["config"])
    builder = data.prepare(saved["dataset"], data_dir=saved["data_dir"], n_train=config.n_train, n_test=config.n_test,
                           **config.data_variant())
    frames = load_split(builder, "test", config, config.eval_trajectories)["frames"]
    module = tf.saved_model.load(str(run_dir / "saved_model"))
    t0 = time.time()
    errors = []
    for i in range(0, len(frames), args.batch_size):
        clip = frames[i:i + args.batch_size]
        out = module.rollout_backward(tf.constant(clip), tf.constant(clip.shape[1] - 1, tf.int32),
                                      tf.constant(config.dt, tf.float32))["frames"].numpy()
        errors.append(np.mean(np.square(clip.astype(np.float64) - out[:, ::-1]), axis=(1, 2, 3, 4)))
    mse = float(np.concatenate(errors).mean() * 1e4)
    evaluated = metrics["test_backward"]["mse_x1e4"]
    result = {
        "command": "python bench/hgn_rollout_backward.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "run_dir": str(run_dir), "trajectories": len(frames), "frames": int(frames.shape[1]),
        "saved_model_rollout_backward_mse_x1e4": round(mse, 3),
        "evaluation_test_backward_mse_x1e4": round(evaluated, 3),
        "relative_difference": round(abs(mse - evaluated) / evaluated, 5),
        "seconds": round(time.time() - t0, 1), "cpu": cpu.describe(),
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"rollout_backward: test MSE x1e-4 {mse:.3f} on {len(frames)} clips; the run's backward evaluation: "
          f"{evaluated:.3f} ({100 * result['relative_difference']:.3f}% apart); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
