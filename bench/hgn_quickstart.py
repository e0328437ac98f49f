#!/usr/bin/env python3
"""The quick start as a user meets it: `python train_hgn.py --dataset pendulum`, timed end to end.

    python bench/hgn_quickstart.py --name default --out bench/results/hgn_quickstart_epyc.json
    python bench/hgn_quickstart.py --name seed0 --out bench/results/hgn_quickstart_epyc.json -- --seed 0
    python bench/hgn_quickstart.py --dataset two_body --name two_body \
        --out bench/results/hgn_quickstart_systems_epyc.json

Runs the command (plus any flags after `--`) in a fresh process with a fresh dataset folder, so
the wall clock includes simulating and rendering the data, training, evaluation and export, as
on a new machine. Records the wall clock, the child's peak resident memory, the run's own
timings, steps, test MSE x1e-4 forward and backward over 30 frames, median VPT, the mean-frame
baseline and the test curve, with the CPU (model, flags, oneDNN request), the commit and the
load average at the start; copies the forward and backward rollout strips next to the JSON.
Several runs (`--name`) merge into one JSON. Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu  # noqa: E402  (light: no TensorFlow)
from common.runs import atomic_write_json  # noqa: E402
from data.systems import SYSTEMS  # noqa: E402  (numpy only)

RESULTS = ROOT / "bench" / "results"


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=ROOT).stdout.strip()
    return proc.stdout.strip() + ("+uncommitted changes" if dirty else "") if proc.returncode == 0 else "unknown"


def hgn_scores(metrics: dict) -> dict:
    """A run's scores from its `metrics.json`: steps, compute dtype, test MSE x1e-4 forward and
    backward over 30 frames, median VPT and the mean-frame baseline (also `bench/demo.py`'s)."""
    return {
        "steps": metrics["step"], "compute_dtype": metrics["compute_dtype"],
        "test_mse_x1e4": {"forward": round(metrics["test_forward"]["mse_x1e4"], 2),
                          "backward": round(metrics["test_backward"]["mse_x1e4"], 2)},
        "vpt_median_frames": {d: metrics[f"test_{d}"].get("vpt_median_frames") for d in ("forward", "backward")},
        "mean_frame_mse_x1e4": round(metrics["test_mean_frame_mse_x1e4"], 2),
    }


def save_run(out: Path, what: str, name: str, result: dict) -> None:
    """Adds `result` as run `name` to the JSON `out`, keeping its other runs."""
    report = json.loads(out.read_text()) if out.is_file() else {}
    report.setdefault("what", what)
    report.setdefault("runs", {})[name] = result
    atomic_write_json(out, report)


def run(name: str, dataset: str, flags: list, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="hgn-quickstart-") as work:
        run_dir = Path(work) / "run"
        cmd = [sys.executable, str(ROOT / "train_hgn.py"), "--dataset", dataset, "--run-dir", str(run_dir),
               "--data-dir", str(Path(work) / "datasets"), *flags]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        load = [round(x, 2) for x in os.getloadavg()]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"the quick start failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux: the largest child
        metrics = json.loads((run_dir / "metrics.json").read_text())
        curve_file = run_dir / "test_curve.json"
        curve = json.loads(curve_file.read_text()) if curve_file.is_file() else []
        strips = {}
        for direction in ("forward", "backward"):
            src = run_dir / f"rollout_{direction}.png"
            if src.is_file():
                dst = out.parent / f"{out.stem}_{name}_rollout_{direction}.png"
                shutil.copyfile(src, dst)
                strips[direction] = str(dst.relative_to(ROOT)) if dst.is_relative_to(ROOT) else str(dst)
    shown = " ".join(["python", "train_hgn.py", "--dataset", dataset, *flags])
    return {
        "command": shown, "dataset": dataset, "commit": _commit(), "date": time.strftime("%Y-%m-%d %H:%M"),
        # The training process's own record (its oneDNN request is set in train_hgn.py, not here).
        "load_average_at_start": load, "cpu": metrics.get("cpu", cpu.describe()),
        "wall_clock_seconds": round(wall, 1), "peak_rss_gb": round(peak_kb / 1e6, 2),
        **hgn_scores(metrics), "timing_seconds": metrics["timing_seconds"],
        "test_curve": curve, "rollout_strips": strips,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="this run's key in the JSON (e.g. default_seed1)")
    parser.add_argument("--out", default=str(RESULTS / "hgn_quickstart_runs.json"),
                        help="the JSON (runs of other --name in it are kept); give each CPU its own")
    parser.add_argument("--dataset", default="pendulum", choices=SYSTEMS,
                        help="the system train_hgn.py learns (default pendulum, the quick start's)")
    parser.add_argument("flags", nargs="*", help="extra train_hgn.py flags, after --")
    args = parser.parse_args(argv)
    cpu.use_onednn()  # as train_hgn.py does for itself (in main: bench/demo.py imports this module)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.name, args.dataset, args.flags, out)
    save_run(out, "the quick start end to end (bench/hgn_quickstart.py): fresh process, fresh dataset, "
                  "2 cores, nothing else running", args.name, result)
    print(json.dumps({k: result[k] for k in ("wall_clock_seconds", "steps", "test_mse_x1e4", "vpt_median_frames",
                                             "peak_rss_gb")}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
