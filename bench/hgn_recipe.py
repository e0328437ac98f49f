#!/usr/bin/env python3
"""HGN recipe study: variants trained for an equal wall-clock budget, scored on one test set.

    python bench/hgn_recipe.py --variants small,vector --budget-minutes 20
    python bench/hgn_recipe.py --variants vector_lr3e-3,vector_w12 --budget-minutes 20   # adds to the table
    python bench/hgn_recipe.py --plot-only

Every variant trains `train_hgn.py --dataset pendulum` on the same generated dataset (20,000
train / 1,000 test trajectories of 32 frames, dt 0.125, 32x32: the paper's rendering, the
size the quick start uses) in its own process pinned to one core (`taskset -c N`,
`TF_NUM_INTRAOP_THREADS=1`, `TF_NUM_INTEROP_THREADS=1`), `--parallel` of them at a time (one per
core). Each records its own steps. While it trains, the run scores the test MSE (forward and
backward, x 1e-4, 30 frames, `--curve-trajectories` held-out trajectories) every
`--curve-every-minutes` of training time, with the scoring time excluded from the budget; after
training, `train_hgn.py`'s evaluation scores 1,000 test trajectories: MSE forward and backward,
VPT, and the mean-frame baseline (every frame predicted as the test set's mean frame).

Writes `bench/results/hgn_recipe.json` (one entry per variant, merged with the variants already
there: the CPU, cores and threads, budget, steps, s/step, final metrics, the curve and the
training minutes at which the test MSE first reached 50, 25 and 15, forward and backward both)
and `bench/results/hgn_recipe.png` (test MSE against training minutes, one line per variant).
Runs go to `runs/recipe/<variant>`; a finished variant is re-scored, not retrained, unless
`--retrain`.
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
RUNS = ROOT / "runs" / "recipe"
THRESHOLDS = (50.0, 25.0, 15.0)
# One dataset for every variant (the recipe's own test set).
DATA_ARGS = ["--n-train", "20000", "--n-test", "1000", "--data-frames", "32", "--eval-trajectories", "1000"]
_VECTOR = ["--preset", "small", "--latent", "vector", "--encoder-widths", "32,32,32,32,32,32", "--state-channels", "16",
           "--hamiltonian-widths", "250,250,250,250", "--hamiltonian-activation", "swish", "--decoder-width", "32",
           "--decoder-depth", "1", "--input-frames", "5", "--objective", "beta", "--beta", "1e-3",
           "--training-mode", "forward_backward", "--learning-rate", "1e-3", "--warmup-steps", "100",
           "--batch-size", "16", "--window", "30"]


def _with(base, **flags):
    """`base` with `--flag value` pairs replaced or added."""
    args = list(base)
    for key, value in flags.items():
        flag = "--" + key.replace("_", "-")
        if flag in args:
            args[args.index(flag) + 1] = str(value)
        else:
            args += [flag, str(value)]
    return args


VARIANTS = {
    # The paper's architecture at its published settings (31 input frames, GECO, lr 1.5e-4).
    "paper": ["--preset", "paper", "--batch-size", "16", "--eval-frames", "30", "--window", "31", "--input-frames", "30"],
    # The quick-start default before this study: spatial 4x4 latent, small conv nets, window 12.
    "small": ["--preset", "small"],
    # The PyTorch re-implementation's networks (joint conv H, full-resolution encoder).
    "pytorch": ["--preset", "pytorch"],
    # DeepMind's HGN++ layout at CPU size: vector latent (q, p of 16), MLP H (4 x 250 swish),
    # 5 input frames, beta-ELBO, forward + backward training, 30-frame windows.
    "vector": _VECTOR,
    "vector_lr3e-4": _with(_VECTOR, learning_rate="3e-4"),
    "vector_lr3e-3": _with(_VECTOR, learning_rate="3e-3"),
    "vector_w12": _with(_VECTOR, window=12),
    # Rollout-length curriculum: training windows grow from 8 to 30 frames over the first 800 steps.
    "vector_cur": _with(_VECTOR, curriculum_steps=800, curriculum_start=8),
    "vector_cur_lr3e-3": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, learning_rate="3e-3"),
    # Half of each batch forward, half backward: both directions at the cost of one.
    "vector_cur_split": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split"),
    "vector_cur_split_lr3e-3": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                     learning_rate="3e-3"),
    "vector_cur_split_cos": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                  decay="cosine", steps=1800, final_lr_fraction=0.1),
    "vector_cur_split_b32": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                  batch_size=32),
    # The winner against its alternatives: GECO instead of the beta-ELBO, batch 32 (its cosine
    # decay over the steps the budget buys at twice the cost per step), float32 instead of
    # bfloat16 (on a CPU with native bfloat16; elsewhere `auto` already picks float32).
    "vector_cur_split_cos_geco": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                       decay="cosine", steps=1800, final_lr_fraction=0.1, objective="geco"),
    "vector_cur_split_cos_b32": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                      decay="cosine", steps=800, final_lr_fraction=0.1, batch_size=32),
    "vector_cur_split_cos_fp32": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                       decay="cosine", steps=1800, final_lr_fraction=0.1, compute_dtype="float32"),
    "vector_cur_fp32": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, compute_dtype="float32"),
    "vector_b32": _with(_VECTOR, batch_size=32),
    "vector_beta0.1": _with(_VECTOR, beta="0.1"),
    "vector_geco": _with(_VECTOR, objective="geco"),
    "vector_forward": _with(_VECTOR, training_mode="forward"),
    "vector_fp32": _with(_VECTOR, compute_dtype="float32"),
    "vector_dm64": _with(_VECTOR, encoder_widths="64,64,64,64,64,64", decoder_width=64, decoder_depth=2),
    # The recipe with the sub-pixel decoder (no conv at full resolution: 3.5 M multiply-adds per
    # frame against 12.9 M), in the compute dtype `auto` picks and in float32 (what a CPU without
    # native bfloat16 runs).
    "vector_cur_split_cos_subpixel": _with(_VECTOR, curriculum_steps=800, curriculum_start=8, training_mode="split",
                                           decay="cosine", steps=1800, final_lr_fraction=0.1, decoder="subpixel"),
    "vector_cur_split_cos_subpixel_fp32": _with(_VECTOR, curriculum_steps=800, curriculum_start=8,
                                                training_mode="split", decay="cosine", steps=1800,
                                                final_lr_fraction=0.1, decoder="subpixel", compute_dtype="float32"),
    # The `quick` preset as it stands (the default command's recipe), and with the fixed kinetic
    # energy K(p) = |p|^2 / 2: the leapfrog evaluates one MLP per step instead of two.
    "quick": ["--preset", "quick"],
    "quick_fixed_kinetic": ["--preset", "quick", "--hamiltonian", "fixed_kinetic"],
}


def _train_command(name: str, budget: float, curve_every: float, curve_n: int, steps: int) -> list:
    run_dir = RUNS / name
    cmd = [sys.executable, str(ROOT / "train_hgn.py"), "--dataset", "pendulum", "--run-dir", str(run_dir),
           "--steps", str(steps), *VARIANTS[name], *DATA_ARGS, "--max-train-minutes", f"{budget:g}",
           "--curve-every-minutes", f"{curve_every:g}", "--curve-trajectories", str(curve_n),
           "--checkpoint-every", "200", "--verbose", "2"]
    return cmd


def _prepare_data() -> None:
    # Generated once, before the variants start (two processes must not build it side by side).
    code = ("import data; data.prepare('pendulum', n_train=20000, n_test=1000, n_frames=32, dt=0.125, "
            "image_size=32, seed=0)")
    subprocess.check_call([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))


def _run_all(names, args) -> None:
    queue = [n for n in names if args.retrain or not (RUNS / n / "metrics.json").is_file()]
    running = {}  # core -> (name, process, log file)
    cores = sorted(os.sched_getaffinity(0))[: args.parallel]
    while queue or running:
        for core in cores:
            if core not in running and queue:
                name = queue.pop(0)
                if args.retrain and (RUNS / name).exists():
                    shutil.rmtree(RUNS / name)
                (RUNS / name).mkdir(parents=True, exist_ok=True)
                cmd = ["taskset", "-c", str(core),
                       *_train_command(name, args.budget_minutes, args.curve_every_minutes, args.curve_trajectories,
                                       args.steps)]
                if (RUNS / name / "checkpoints").is_dir():
                    cmd.append("--resume")
                env = dict(os.environ, TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
                           TF_CPP_MIN_LOG_LEVEL="2")
                log = open(RUNS / name / "bench.log", "w")
                print(f"[core {core}] {name}: " + " ".join(cmd[3:]), flush=True)
                running[core] = (name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT),
                                 log)
        time.sleep(5)
        for core, (name, proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                print(f"[core {core}] {name}: exit {proc.returncode}", flush=True)
                del running[core]


def _first_reach(curve, threshold: float):
    for point in curve:
        if max(point["test_mse_x1e4_forward"], point["test_mse_x1e4_backward"]) <= threshold:
            return round(point["train_seconds"] / 60.0, 2)
    return None


def score(name: str) -> dict:
    """The result entry of a finished variant's run directory (what it ran is read from the run)."""
    run_dir = RUNS / name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    budget = metrics["config"]["max_train_minutes"]
    curve_every = metrics["config"]["curve_every_minutes"]
    curve = json.loads((run_dir / "test_curve.json").read_text()) if (run_dir / "test_curve.json").is_file() else []
    steps, train_s = metrics["step"], metrics["timing_seconds"]["train"]
    return {
        "args": VARIANTS.get(name),
        "command": f"python bench/hgn_recipe.py --variants {name} --budget-minutes {budget:g} "
                   f"--curve-every-minutes {curve_every:g}",
        "train_command": metrics["command"],
        "budget_minutes": budget,
        "cpu": metrics.get("cpu"),
        "steps": steps,
        "batch_size": metrics["config"]["batch_size"],
        "seconds_per_step": round(curve[-1]["train_seconds"] / steps, 3) if curve and steps else None,
        "compute_dtype": metrics.get("compute_dtype"),
        "test_mse_x1e4": {"forward": round(metrics["test_forward"]["mse_x1e4"], 2),
                          "backward": round(metrics["test_backward"]["mse_x1e4"], 2)},
        "vpt_median_frames": {"forward": metrics["test_forward"]["vpt_median_frames"],
                              "backward": metrics["test_backward"]["vpt_median_frames"]},
        "mean_frame_mse_x1e4": round(metrics["test_mean_frame_mse_x1e4"], 2),
        "minutes_to_reach": {f"{t:g}": _first_reach(curve, t) for t in THRESHOLDS},
        "curve": curve,
        "train_seconds_with_scoring": train_s,
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for name, entry in sorted(results["variants"].items()):
        curve = entry["curve"]
        if not curve:
            continue
        minutes = [p["train_seconds"] / 60 for p in curve]
        for ax, direction in zip(axes, ("forward", "backward")):
            ax.plot(minutes, [p[f"test_mse_x1e4_{direction}"] for p in curve], marker=".", label=name)
    baseline = [e["mean_frame_mse_x1e4"] for e in results["variants"].values()]
    for ax, direction in zip(axes, ("forward", "backward")):
        if baseline:
            ax.axhline(baseline[0], color="grey", ls=":", label="mean-frame baseline")
        ax.axhline(11.72, color="black", ls="--", lw=0.8, label="paper (GPU, 500k steps)")
        ax.set_yscale("log")
        ax.set_xlabel("training minutes (one core each)")
        ax.set_title(f"pendulum test MSE x1e-4, {direction}")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("per-pixel MSE x 1e-4 (30 frames)")
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"HGN recipe study on {results['cpu']['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="small,vector",
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--budget-minutes", type=float, default=20.0, help="training minutes per variant")
    parser.add_argument("--steps", type=int, default=100_000_000,
                        help="step cap (and the length of any cosine decay); the budget normally stops first")
    parser.add_argument("--parallel", type=int, default=2, help="variants at a time, one core each")
    parser.add_argument("--curve-every-minutes", type=float, default=2.0)
    parser.add_argument("--curve-trajectories", type=int, default=200)
    parser.add_argument("--retrain", action="store_true", help="delete and retrain runs that exist")
    parser.add_argument("--plot-only", action="store_true", help="redraw the PNG from the JSON")
    parser.add_argument("--out", default=str(RESULTS / "hgn_recipe.json"))
    parser.add_argument("--note", default=None, help="conditions to record with these variants (e.g. other load)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"variants": {}}
    results["cpu"] = cpu.describe()
    if not args.plot_only:
        names = [n for n in args.variants.split(",") if n]
        unknown = [n for n in names if n not in VARIANTS]
        if unknown:
            parser.error(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}")
        if args.budget_minutes <= 0 or args.parallel < 1:
            parser.error("--budget-minutes must be > 0 and --parallel >= 1")
        _prepare_data()
        _run_all(names, args)
        for name in names:
            if not (RUNS / name / "metrics.json").is_file():
                print(f"{name}: no metrics.json (see {RUNS / name / 'bench.log'})", file=sys.stderr)
                continue
            entry = score(name)
            entry["pinning"] = {"cores": args.parallel, "taskset": "one core per run",
                                "TF_NUM_INTRAOP_THREADS": 1, "TF_NUM_INTEROP_THREADS": 1}
            entry["date"] = time.strftime("%Y-%m-%d")
            if args.note:
                entry["note"] = args.note
            results["variants"][name] = entry
            fwd, bwd = entry["test_mse_x1e4"]["forward"], entry["test_mse_x1e4"]["backward"]
            print(f"{name}: {entry['steps']} steps, test MSE x1e-4 forward {fwd}, backward {bwd} "
                  f"(mean frame {entry['mean_frame_mse_x1e4']}); minutes to 50/25/15: "
                  f"{entry['minutes_to_reach']}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
