#!/usr/bin/env python3
"""HGN rollout quality after a fixed CPU budget: test MSE x 1e-4, forward and backward.

    python bench/hgn_quality.py --dataset pendulum --budget-minutes 120
    python bench/hgn_quality.py --dataset mass_spring --budget-minutes 30 -- --preset quality --steps 3000

Trains with `train_hgn.py` (a subprocess; flags after `--` go to it; default `--preset quality`)
until the wall-clock budget or the preset's steps run out, evaluates on 30-frame rollouts as the paper does, and writes
`bench/results/hgn_quality_<dataset>.json` with the budget, the exact command, the metrics and the
published numbers, plus the run's forward/backward rollout strips (PNG and GIF) next to it.
Training time only counts against the budget; data generation and evaluation come on top.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `common` for the CPU description, run from any folder

from common import cpu  # noqa: E402  (light: no TensorFlow)

cpu.use_onednn()  # what train_hgn.py asks for: its runs inherit it, and cpu.describe() records it

RESULTS = ROOT / "bench" / "results"
# Per-pixel MSE x 1e-4 over 30-frame rollouts, train / test: Toth et al. 2020 (arXiv 1909.13789)
# Table 1, leapfrog; the PyTorch re-implementation's reported figures.
PUBLISHED = {
    "pendulum": {"paper_leapfrog": [4.90, 11.72], "pytorch_leapfrog_test": 14.97},
    "mass_spring": {"paper_leapfrog": [3.84, 6.23], "pytorch_5frame": [12.15, 12.21]},
    "two_body": {"paper_leapfrog": [6.36, 16.47], "pytorch_5frame": [6.28, 6.33]},
    "three_body": {"paper_leapfrog": [7.88, 9.80], "pytorch_5frame": [3.35, 3.35]},
}
# The long-run preset of the CPU recipe (its own step count sets the learning-rate decay).
DEFAULT_TRAIN_ARGS = ["--preset", "quality"]


def _without_curves(long_horizon):
    """The long-horizon metrics with the per-frame curves rounded (they are plotted beside)."""
    if long_horizon is None:
        return None
    out = dict(long_horizon)
    for direction in ("forward", "backward"):
        out[direction] = {k: ([round(v * 1e4, 2) for v in val] if k == "per_frame_mse" else val)
                          for k, val in long_horizon[direction].items()}
        out[direction]["per_frame_mse_x1e4"] = out[direction].pop("per_frame_mse")
    return out


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pendulum")
    parser.add_argument("--budget-minutes", type=float, default=120.0, help="training wall-clock budget")
    parser.add_argument("--run-dir", default=None, help="default: runs/quality-<dataset>-<budget>min")
    parser.add_argument("--tag", default="", help="suffix of the result files and run dir (compare settings side by side)")
    parser.add_argument("--note", default=None, help="conditions to record (pinning, other load)")
    parser.add_argument("--eval-only", action="store_true",
                        help="re-evaluate the run's last checkpoint without training (e.g. after an interrupted evaluation)")
    args = parser.parse_args(argv)
    if args.budget_minutes <= 0:
        parser.error(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    suffix = f"_{args.tag}" if args.tag else ""
    run_dir = Path(args.run_dir or ROOT / "runs" / f"quality-{args.dataset}-{args.budget_minutes:g}min{suffix}")
    train_args = [*DEFAULT_TRAIN_ARGS, *extra] if not any(a == "--preset" for a in extra) else extra
    cmd = [sys.executable, str(ROOT / "train_hgn.py"), "--dataset", args.dataset, "--run-dir", str(run_dir),
           "--max-train-minutes", f"{args.budget_minutes:g}", "--verbose", "2", *train_args]
    resume = (run_dir / "checkpoints").is_dir()
    if resume:
        cmd.append("--resume")
    if args.eval_only:
        if not resume:
            parser.error(f"--eval-only: no checkpoints in {str(run_dir)!r}")
        cmd.append("--eval-only")
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    rc = subprocess.call(cmd, cwd=ROOT, env=env)
    if rc != 0:
        print(f"hgn_quality.py: error: train_hgn.py exited with status {rc}", file=sys.stderr)
        return rc
    metrics = json.loads((run_dir / "metrics.json").read_text())
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"hgn_quality_{args.dataset}{suffix}"
    for direction in ("forward", "backward"):
        for ext in ("png", "gif"):
            shutil.copyfile(run_dir / f"rollout_{direction}.{ext}", RESULTS / f"{stem}_rollout_{direction}.{ext}")
    shutil.copyfile(run_dir / "mse_over_time.png", RESULTS / f"{stem}_mse_over_time.png")
    if (run_dir / "long_horizon.png").is_file():
        shutil.copyfile(run_dir / "long_horizon.png", RESULTS / f"{stem}_long_horizon.png")
    report = {
        "command": "python bench/hgn_quality.py " + " ".join(sys.argv[1:] if argv is None else argv + (["--", *extra] if extra else [])),
        "train_command": " ".join(Path(c).name if i < 2 else c for i, c in enumerate(cmd)),
        "dataset": args.dataset,
        "budget_minutes": args.budget_minutes,
        "wall_minutes_total": round((time.time() - t0) / 60, 1),
        "train_seconds": None if args.eval_only else metrics["timing_seconds"]["train"],
        "evaluated_separately": bool(args.eval_only),
        "steps": metrics["step"],
        "batch_size": metrics["config"]["batch_size"],
        "test_mse_x1e4": {"forward": metrics["test_forward"]["mse_x1e4"], "backward": metrics["test_backward"]["mse_x1e4"],
                          "mean": metrics["test_mse_x1e4_mean"]},
        "train_mse_x1e4": {"forward": metrics["train_forward"]["mse_x1e4"],
                           "backward": metrics["train_backward"]["mse_x1e4"]},
        "vpt_median_frames": {"test_forward": metrics["test_forward"]["vpt_median_frames"],
                              "test_backward": metrics["test_backward"]["vpt_median_frames"]},
        "latent_r2": metrics["latent_r2"]["r2_mean"],
        "time_rescaling": metrics.get("time_rescaling"),
        "energy": metrics["energy"],
        "long_horizon": _without_curves(metrics.get("long_horizon")),
        "published_x1e4_train_test": PUBLISHED.get(args.dataset),
        "config": metrics["config"],
        "cpu": cpu.describe(),
        "compute_dtype": metrics.get("compute_dtype"),
        "threads": {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")},
        "mean_frame_mse_x1e4": metrics.get("test_mean_frame_mse_x1e4"),
        "test_curve": json.loads((run_dir / "test_curve.json").read_text()) if (run_dir / "test_curve.json").is_file() else None,
        "note": args.note or "CPU; the paper trains 500k steps of batch 128 on GPUs",
        "pictures": [f"{stem}_rollout_forward.png", f"{stem}_rollout_backward.png", f"{stem}_mse_over_time.png",
                     *([f"{stem}_long_horizon.png"] if (run_dir / "long_horizon.png").is_file() else [])],
    }
    out = RESULTS / f"{stem}.json"
    if args.eval_only and out.is_file():
        # A re-evaluation (e.g. with metrics added since) keeps the training run's own record.
        before = json.loads(out.read_text())
        for key in ("command", "train_command", "train_seconds", "wall_minutes_total", "test_curve", "note"):
            if before.get(key) is not None:
                report[key] = before[key]
        report["evaluated_separately"] = "python bench/hgn_quality.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"test MSE x1e-4: forward {report['test_mse_x1e4']['forward']:.2f}, "
          f"backward {report['test_mse_x1e4']['backward']:.2f} after {report['steps']} steps; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
