#!/usr/bin/env python3
"""NHF training speed and long-run stability.

Speed: training samples per second of the full train step (loss, gradient, clipping, finite
check, Adam update, input pipeline, `fit`'s callbacks) after compilation, for the default configuration (preset
`small`, batch 256) and for the original repository's design (preset `original`: two
Hamiltonians, K and V 2-128-128-1 softplus MLPs, 128-unit encoder, 2 leapfrog steps of 0.1,
batch 10). The original code ran 0.072 s/step (139 samples/s) on a comparable 2-core machine.

Stability: the `original` design trained for `--stability-steps` steps on each target; counts
non-finite steps (skipped by the guard) and rollbacks, and reports the final quick test NLL.

    python bench/nhf_speed.py                                  # speed only
    python bench/nhf_speed.py --stability-steps 20000 --targets mixture,checkerboard,...
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from common import cpu

cpu.use_onednn()  # as train_nhf.py, before TensorFlow loads

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.runs import atomic_write_json  # noqa: E402
from data import targets  # noqa: E402
from nhf import training  # noqa: E402
from nhf.config import PRESETS  # noqa: E402

ORIGINAL_SECONDS_PER_STEP = 0.072
ORIGINAL_SAMPLES_PER_SECOND = 139.0


def measure_speed(config, steps: int, repeats: int = 3) -> dict:
    """Seconds per step of `nhf.training.train` (`fit` with the run's callbacks: guard, logger,
    checkpointer) after a 5-step warm-up that compiles the step; the median of `repeats`
    stretches of `steps` steps (each stretch excludes its first step)."""
    with tempfile.TemporaryDirectory() as d:
        base = dataclasses.replace(config, train_size=20_000, test_size=500, eval_every=10**9, export=False,
                                   figure=False, log_every=50, checkpoint_every=10**9)
        run = training.build_run(dataclasses.replace(base, steps=5), d)
        training.train(run, d, progress=False)
        best = []
        for r in range(repeats):
            run.config = dataclasses.replace(base, steps=run.step + steps + 1)
            best.append(training.train(run, d, progress=False)["seconds_per_step"])
        sec = float(np.median(best))
        params = int(sum(int(np.prod(v.shape)) for v in run.model.density_variables))
    return {"batch_size": config.batch_size, "seconds_per_step": sec, "samples_per_second": config.batch_size / sec,
            "seconds_per_step_all_repeats": best, "parameters": params, "steps_timed": steps, "repeats": repeats}


def stability(config, target: str, steps: int) -> dict:
    c = dataclasses.replace(config, target=target, steps=steps, eval_every=max(steps // 4, 1),
                            checkpoint_every=max(steps // 4, 1), log_every=100, export=False, test_size=2000)
    with tempfile.TemporaryDirectory() as d:
        run = training.build_run(c, d)
        t0 = time.perf_counter()
        try:
            stats = training.train(run, d, progress=False)
            status = "ok"
        except Exception as e:  # record, do not abort the whole benchmark
            return {"target": target, "steps": steps, "status": f"error: {e}"}
        losses = [h["loss"] for h in stats["history"]]
        quick = [(h["step"], h["test_nll_k32"]) for h in stats["history"] if "test_nll_k32" in h]
    return {"target": target, "steps": steps, "status": status, "nonfinite_steps": stats["nonfinite_steps"],
            "rollbacks": stats["rollbacks"], "all_losses_finite": bool(np.all(np.isfinite(losses))),
            "test_nll_k32_curve": quick, "nll_floor": targets.get(target, c.dim if target == "mixture_nd" else None).nll_floor,
            "wall_seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timing-steps", type=int, default=300, help="timed steps per repeat (0: skip the speed part)")
    parser.add_argument("--stability-steps", type=int, default=0, help="steps per target for the NaN check (0: skip)")
    parser.add_argument("--targets", default=",".join(targets.names()), help="comma-separated targets for the NaN check")
    parser.add_argument("--out", default="bench/results/nhf_speed.json", help="results JSON")
    parser.add_argument("--note", default="timings are a median of repeats; say here what else ran on the machine",
                        help="conditions to record (other load)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets.split(",")) - set(targets.names()))
    if unknown:
        parser.error(f"unknown --targets {','.join(unknown)}; valid: {', '.join(targets.names())}")
    results = {"command": "python bench/nhf_speed.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                           "tensorflow": tf.__version__, "cpu": cpu.describe()},
               "note": args.note,
               "original_code": {"seconds_per_step": ORIGINAL_SECONDS_PER_STEP,
                                 "samples_per_second": ORIGINAL_SAMPLES_PER_SECOND, "batch_size": 10}}
    out = Path(args.out)
    if args.timing_steps > 0:
        results["speed"] = {
            "default_small_batch256": measure_speed(PRESETS["small"], args.timing_steps),
            "original_design_batch10": measure_speed(PRESETS["original"], args.timing_steps),
        }
        orig = results["speed"]["original_design_batch10"]
        orig["speedup_vs_original_code"] = orig["samples_per_second"] / ORIGINAL_SAMPLES_PER_SECOND
        print(json.dumps(results["speed"], indent=1), flush=True)
        atomic_write_json(out, results)
    if args.stability_steps:
        results["stability"] = {"config": "preset original (batch 10)", "runs": []}
        for name in args.targets.split(","):
            r = stability(PRESETS["original"], name, args.stability_steps)
            results["stability"]["runs"].append(r)
            print(json.dumps(r), flush=True)
            atomic_write_json(out, results)  # partial results survive an interrupted run
    return 0


if __name__ == "__main__":
    sys.exit(main())
