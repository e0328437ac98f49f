#!/usr/bin/env python3
"""The README's first command as a new user meets it: `python3 dev.py demo` in a fresh clone, timed.

    python bench/demo.py --name xeon --out bench/results/demo.json

Clones this checkout's committed HEAD into a temporary folder (uncommitted changes are not in
it, and the JSON says so), runs `python3 dev.py demo` there exactly as the README's quick start
does (creating `.venv/` from `requirements.txt`, then the default HGN run on pendulum and the
NHF `small` preset on the 8-gaussian mixture) and splits its wall clock by the commands dev.py
announces: set-up (the virtual environment and pip: depends on the network and on pip's cache,
which the JSON records), HGN (dataset generation, training, evaluation, export) and NHF. Records
both runs' scores (HGN test MSE x1e-4 forward and backward over 30 frames, median VPT, the
mean-frame baseline; NHF test NLL, the target's floor and the gap), the peak resident memory of
the largest process, the CPU and the load average at the start, and copies the HGN forward
rollout strip and the NHF figure next to the JSON. Several runs (`--name`) merge into one JSON.
Nothing else should run on the machine meanwhile.
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
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder: hgn_quickstart's helpers

from common import cpu  # noqa: E402  (light: no TensorFlow)
from hgn_quickstart import hgn_scores, save_run  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PHASES = (("hgn", "train_hgn.py"), ("nhf", "train_nhf.py"))


def phase_seconds(stamped_lines: list, total: float) -> dict:
    """Splits `total` seconds by the commands `dev.py` announces (`+ PYTHON train_hgn.py ...`).

    `stamped_lines`: `(seconds since the start, line)` in order. Set-up is everything before the
    first announced program; each program runs until the next one is announced or the end.
    """
    starts = {}
    for t, line in stamped_lines:
        if line.startswith("+ "):
            for phase, program in PHASES:
                if program in line.split() and phase not in starts:
                    starts[phase] = t
    missing = [program for phase, program in PHASES if phase not in starts]
    if missing:
        raise ValueError(f"dev.py demo never announced {', '.join(missing)}: was the demo changed?")
    order = sorted(starts, key=starts.get)
    bounds = [starts[p] for p in order] + [total]
    out = {"setup": round(starts[order[0]], 1)}
    out.update({p: round(bounds[i + 1] - bounds[i], 1) for i, p in enumerate(order)})
    out["total"] = round(total, 1)
    return out


def _git(*args) -> str:
    proc = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


def _pip_cache() -> str:
    """pip's cache folder and whether it holds anything (set-up is far faster from a warm cache)."""
    path = Path(os.environ.get("PIP_CACHE_DIR", Path.home() / ".cache" / "pip"))
    return f"{path} ({'present' if path.is_dir() and any(path.iterdir()) else 'empty or absent'})"


def run(name: str, out: Path) -> dict:
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    pip_cache = _pip_cache()
    with tempfile.TemporaryDirectory(prefix="demo-") as work:
        clone = Path(work) / "clone"
        _git("clone", "--quiet", str(ROOT), str(clone))
        # As on a new machine: no active virtual environment, no extra import path, and no
        # HAMILTONIAN_DATA_DIR (data.generation's dataset folder), so the HGN run renders its data.
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "HAMILTONIAN_DATA_DIR")}
        if os.environ.get("VIRTUAL_ENV"):
            venv_bin = str(Path(os.environ["VIRTUAL_ENV"]) / "bin")
            env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
        load = [round(x, 2) for x in os.getloadavg()]
        stamped, tail = [], []
        t0 = time.perf_counter()
        # Text mode splits Keras' progress bars (carriage returns) into lines too.
        with subprocess.Popen(["python3", "dev.py", "demo"], cwd=clone, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
            for line in proc.stdout:
                now = time.perf_counter() - t0
                if line.startswith("+ "):
                    stamped.append((now, line.strip()))
                    print(f"[{now / 60:5.1f} min] {line.strip()}", flush=True)
                tail = (tail + [line.rstrip()])[-40:]
        total = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"python3 dev.py demo failed (exit {proc.returncode}):\n" + "\n".join(tail))
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux: the largest process
        venv_python = subprocess.run([str(clone / ".venv" / "bin" / "python"), "-c",
                                      "import sys; print(sys.version.split()[0])"],
                                     capture_output=True, text=True).stdout.strip()
        hgn = json.loads((clone / "runs" / "demo-hgn" / "metrics.json").read_text())
        nhf = json.loads((clone / "runs" / "demo-nhf" / "metrics.json").read_text())
        pictures = {}
        for key, src in (("hgn_rollout_forward", clone / "runs" / "demo-hgn" / "rollout_forward.png"),
                         ("nhf_figure", clone / "runs" / "demo-nhf" / "figure.png")):
            if src.is_file():
                dst = out.parent / f"{out.stem}_{name}_{key}.png"
                shutil.copyfile(src, dst)
                pictures[key] = str(dst.relative_to(ROOT)) if dst.is_relative_to(ROOT) else str(dst)
    return {
        "command": "python3 dev.py demo", "commit": commit, "uncommitted_changes_left_out": dirty,
        "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_start": load,
        "cpu": hgn.get("cpu", cpu.describe()), "pip_cache": pip_cache,
        "python": venv_python,  # the clone's .venv, which dev.py built from `python3` on PATH
        "wall_clock_seconds": phase_seconds(stamped, total), "peak_rss_gb": round(peak_kb / 1e6, 2),
        "hgn": hgn_scores(hgn),
        "nhf": {"steps": nhf.get("step"), "target": nhf.get("target"),
                "test_nll": round(nhf["test_nll"], 4), "test_nll_stderr": round(nhf["test_nll_stderr"], 4),
                "nll_floor": nhf.get("nll_floor"), "gap": round(nhf["gap"], 4) if nhf.get("gap") is not None else None},
        "pictures": pictures,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="this run's key in the JSON (e.g. the CPU's name)")
    parser.add_argument("--out", default=str(RESULTS / "demo.json"), help="the JSON (runs of other --name are kept)")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run(args.name, out)
    save_run(out, "`python3 dev.py demo` in a fresh clone (bench/demo.py), 2 cores, nothing else running",
             args.name, result)
    print(json.dumps({k: result[k] for k in ("wall_clock_seconds", "hgn", "nhf", "peak_rss_gb")}))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
