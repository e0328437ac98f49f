#!/usr/bin/env python3
"""Training throughput with 1 and 2 replicas, and the cost of checkpointing.

    python bench/scaling.py                       # both models, all layouts (about 15 minutes)
    python bench/scaling.py --models nhf --hgn-steps 60 --nhf-steps 600

For HGN (preset `small`, batch 16) and NHF (preset `small`, batch 256) it runs the real trainers
(`train_hgn.py`, `train_nhf.py`) as subprocesses in three layouts with the same global batch:

    default      one device
    mirrored     MirroredStrategy over 2 logical CPU devices (--strategy mirrored --replicas 2)
    two_workers  MultiWorkerMirroredStrategy, two local processes on loopback ports (TF_CONFIG)

and reports steady-state training samples per second (compilation excluded: HGN from the
timestamps of its logged steps, NHF from its own timer, which skips the first step). Then it
times one checkpoint save of each model in-process and reports the overhead of saving every
N steps relative to the measured step time.

All replicas share this machine's cores, so 2 replicas cannot be faster than 1 here; the figures
show what distribution costs on one machine (the synchronisation and the smaller per-replica
batches), which is the overhead a real multi-machine run pays on top of its speed-up.
Writes `bench/results/scaling.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `common`, run from any folder

from common import cpu  # noqa: E402  (light: no TensorFlow)

RESULTS = ROOT / "bench" / "results"
LAYOUTS = ("default", "mirrored", "two_workers")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, args, layout: str, run_dir: Path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_CONFIG", None)
    base = [sys.executable, str(ROOT / script), *args, "--run-dir", str(run_dir)]
    if layout == "default":
        return [subprocess.Popen(base, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    if layout == "mirrored":
        return [subprocess.Popen([*base, "--strategy", "mirrored", "--replicas", "2"], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    procs = []
    for i in range(2):
        worker_env = dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}))
        procs.append(subprocess.Popen([*base, "--strategy", "multi_worker"], cwd=ROOT, env=worker_env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait(procs, what: str) -> float:
    t0 = time.perf_counter()
    for p in procs:
        _, err = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise RuntimeError(f"{what} failed (exit {p.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - t0


def hgn_layout(layout: str, steps: int, data_dir: Path, work: Path) -> dict:
    run_dir = work / f"hgn-{layout}"
    log_every = max(steps // 6, 1)
    args = ["--preset", "small", "--dataset", "pendulum", "--data-dir", str(data_dir), "--steps", str(steps),
            "--checkpoint-every", str(log_every), "--eval-trajectories", "16", "--energy-steps", "20", "--verbose", "0"]
    wall = _wait(_launch("train_hgn.py", args, layout, run_dir), f"train_hgn.py ({layout})")
    history = json.loads((run_dir / "history.json").read_text())
    # Steady state: from the first logged step (compilation done) to the last.
    first, last = history[0], history[-1]
    seconds = last["wall_seconds"] - first["wall_seconds"]
    batch = json.loads((run_dir / "config.json").read_text())["config"]["batch_size"]
    sps = (last["step"] - first["step"]) * batch / seconds
    return {"samples_per_second": sps, "seconds_per_step": seconds / (last["step"] - first["step"]),
            "steps_timed": last["step"] - first["step"], "batch_size": batch, "process_wall_seconds": wall,
            "final_loss": last["loss"]}


def nhf_layout(layout: str, steps: int, work: Path) -> dict:
    run_dir = work / f"nhf-{layout}"
    args = ["--preset", "small", "--target", "mixture", "--steps", str(steps), "--checkpoint-every", str(steps),
            "--eval-every", str(10 * steps), "--test-size", "2000", "--eval-momenta", "32", "--no-export",
            "--no-progress"]
    wall = _wait(_launch("train_nhf.py", args, layout, run_dir), f"train_nhf.py ({layout})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    t = metrics["training"]
    return {"samples_per_second": t["samples_per_second"], "seconds_per_step": t["seconds_per_step"],
            "steps_timed": t["steps_run"] - 2, "batch_size": metrics["config"]["batch_size"],
            "process_wall_seconds": wall, "test_nll": metrics["test_nll"]}


def checkpoint_cost(model: str, repeats: int = 5) -> dict:
    """Seconds per checkpoint save (median of `repeats`) and the checkpoint's size on disk."""
    import dataclasses

    import tensorflow as tf  # noqa: F401  (in-process, after the subprocess runs)

    with tempfile.TemporaryDirectory() as d:
        if model == "hgn":
            from hgn import PRESETS, training

            m = training.build_model(PRESETS["small"])
            manager = training.checkpoint_manager(m, d)
        else:
            from nhf import training
            from nhf.config import PRESETS

            run = training.build_run(dataclasses.replace(PRESETS["small"], train_size=1000, test_size=100), d)
            manager = run.manager
        manager.save(checkpoint_number=0)  # first save builds the saver
        times = []
        for i in range(1, repeats + 1):
            t0 = time.perf_counter()
            manager.save(checkpoint_number=i)
            times.append(time.perf_counter() - t0)
        size = sum(p.stat().st_size for p in Path(manager.latest_checkpoint).parent.glob(
            Path(manager.latest_checkpoint).name + "*"))
    return {"seconds_per_save": float(np.median(times)), "all_seconds": times, "bytes": size}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="hgn,nhf", help="comma-separated: hgn, nhf")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated: " + ", ".join(LAYOUTS))
    parser.add_argument("--hgn-steps", type=int, default=120, help="HGN training steps per layout")
    parser.add_argument("--nhf-steps", type=int, default=1500, help="NHF training steps per layout")
    parser.add_argument("--checkpoint-every", default="10,100,1000", help="N values for the overhead table")
    parser.add_argument("--output", default=str(RESULTS / "scaling.json"))
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    layouts = [x for x in args.layouts.split(",") if x]
    bad = [m for m in models if m not in ("hgn", "nhf")] + [x for x in layouts if x not in LAYOUTS]
    if bad:
        parser.error(f"unknown --models/--layouts value(s) {bad}; valid: hgn, nhf; {', '.join(LAYOUTS)}")
    if args.hgn_steps < 12 or args.nhf_steps < 10:
        parser.error("--hgn-steps must be >= 12 and --nhf-steps >= 10")
    every = [int(n) for n in args.checkpoint_every.split(",")]

    report = {"command": "python bench/scaling.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu.describe(), "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "throughput": {},
              "checkpoint": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        if "hgn" in models:
            import data
            from hgn import PRESETS

            c = PRESETS["small"]
            data_dir = work / "data"
            data.prepare("pendulum", data_dir=str(data_dir), n_train=c.n_train, n_test=c.n_test,
                         n_frames=c.data_frames, dt=c.dt, image_size=c.image_size, seed=c.data_seed)
            for layout in layouts:
                r = hgn_layout(layout, args.hgn_steps, data_dir, work)
                report["throughput"].setdefault("hgn", {})[layout] = r
                print(f"hgn {layout:12s} {r['samples_per_second']:8.1f} samples/s "
                      f"({r['seconds_per_step']:.3f} s/step, batch {r['batch_size']})", flush=True)
        if "nhf" in models:
            for layout in layouts:
                r = nhf_layout(layout, args.nhf_steps, work)
                report["throughput"].setdefault("nhf", {})[layout] = r
                print(f"nhf {layout:12s} {r['samples_per_second']:8.1f} samples/s "
                      f"({r['seconds_per_step'] * 1e3:.2f} ms/step, batch {r['batch_size']})", flush=True)
    for model in models:
        cost = checkpoint_cost(model)
        step = report["throughput"][model].get("default", next(iter(report["throughput"][model].values())))
        cost["overhead_fraction"] = {str(n): cost["seconds_per_save"] / (n * step["seconds_per_step"]) for n in every}
        report["checkpoint"][model] = cost
        print(f"{model} checkpoint: {cost['seconds_per_save'] * 1e3:.1f} ms per save, {cost['bytes'] / 1e6:.2f} MB; "
              + ", ".join(f"every {n}: {100 * f:.2f}%" for n, f in cost["overhead_fraction"].items()), flush=True)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    from common.runs import atomic_write_json

    atomic_write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
