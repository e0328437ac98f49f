#!/usr/bin/env python3
"""The `pytorch` preset against the PyTorch code it reproduces, side by side in the same minutes.

    python bench/hgn_vs_pytorch.py --pytorch-repo PATH --torch-python PYTHON
    python bench/hgn_vs_pytorch.py --pytorch-repo PATH --torch-python PYTHON --isa avx2 --variants graph_fp32,xla_fp32

PATH is a clone of github.com/CampusAI/Hamiltonian-Generative-Networks (the PyTorch
re-implementation whose published figures bench/hgn_quality.py's PUBLISHED lists; MIT licence;
not vendored here), PYTHON an interpreter with PyTorch, NumPy,
SciPy, OpenCV, PyYAML and Matplotlib (what that code imports; e.g. a venv with `pip install
torch==2.13.0 numpy scipy opencv-python-headless pyyaml matplotlib tqdm`). This project's own
environment does not need PyTorch.

What runs: the PyTorch side is that repository's own `HgnTrainer.training_step` (its forward
pass, GECO loss, backward pass and Adam step) on its default networks
(`experiment_params/train_config_default.yaml`: 5 input frames, 30-frame rollouts of 32x32 RGB,
batch 16, float32), fed a fixed random batch (its data loader is not timed; neither is ours).
This side is `bench/hgn_throughput.py`'s worker: `fit` of the `pytorch` preset on a fixed batch,
per `--variants` (graph/XLA, float32/bfloat16). Each pair runs at the same time, one process per
core (`taskset -c N`, one thread each: `torch.set_num_threads(1)`, `TF_NUM_INTRAOP_THREADS=1`),
then again with the cores swapped; the ratio of median step times is reported for both orders.
The FLOPs of one PyTorch training step are counted by `torch.utils.flop_counter` (convolutions
and matrix products, forward and backward), beside this side's analytic count
(`bench/hgn_throughput.py`), so that each pair also reports the ratio of work per step and of
FLOP/s. Since commit e2208a8 the `pytorch` preset is that code's default (26 reconstructed
frames, its [32, 64, 64, 64] joint Hamiltonian): 278.8 GFLOP per step here against 279.2
counted there. Before, its 8-layer Hamiltonian over 30 frames did 1.36x that work (379 GFLOP).
Since commit 6408287 this side's decoder folds each x2 nearest upsampling into the 3x3 conv that
reads it (`hgn.networks.upsample_conv`): the same model, its outputs and gradients, in 212.4 GFLOP
executed per step (`gflop_per_step_executed`, `executed_work_ratio` 0.76); `work_ratio` stays
the model's, the measure of equal work.

`--threads N` (N > 1) measures the machine as a user runs it instead: each side alone on every
core, one after the other (this side, PyTorch, PyTorch, this side, so that slow drift of the
machine hits both), PyTorch with `torch.set_num_threads(N)` and TensorFlow with its own default
thread pools, as `train_hgn.py` runs; each ratio pairs runs that were neighbours in time.

`--alone` runs each side alone on one core with one thread, the other cores idle, in the same
order (TF, PyTorch, PyTorch, TF): the side-by-side setting without the neighbour on the other
core, whose memory traffic slows a step that shares the memory bandwidth with it. Its entry is
`<isa>_alone`.

`--isa avx2` caps both libraries at AVX2 code paths: `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN, used by
both), `ATEN_CPU_CAPABILITY=avx2` (PyTorch's own kernels) and `XLA_FLAGS=--xla_cpu_max_isa=AVX2`.
That emulates the instruction set of an AVX2-only CPU on this one; it is not such a CPU (clock,
caches and memory stay this machine's), so read it as an indication, not a measurement of an
AMD EPYC. On an AVX2-only CPU `--isa native` measures the real thing; give it its own `--out`.

Writes `bench/results/hgn_vs_pytorch.json` (merged by ISA), recording the CPU and both libraries'
versions.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `common` for the CPU description, run from any folder

from common import cpu  # noqa: E402  (light: no TensorFlow)

cpu.use_onednn()  # as train_hgn.py: TensorFlow's workers below inherit it

RESULTS = ROOT / "bench" / "results" / "hgn_vs_pytorch.json"
ISA_ENV = cpu.ISA_ENV
ROLLOUT = {"seq_length": 30, "n_channels": 3, "delta_time": 0.125, "img_size": 32}


def torch_worker(repo: str, batch: int, warmup: int, steps: int, threads: int = 1) -> dict:
    """Times the PyTorch code's own training step (run by the PyTorch interpreter) on `threads` threads."""
    import types

    import numpy as np
    import torch
    import yaml

    sys.path.insert(0, repo)
    try:
        import torchvision  # noqa: F401  (imported by its dataset module, unused by a training step)
    except Exception:  # PyPI's torchvision may not load beside a local torch build
        stub = types.ModuleType("torchvision")
        stub.transforms = types.ModuleType("torchvision.transforms")
        sys.modules.update({"torchvision": stub, "torchvision.transforms": stub.transforms})
    try:
        import torch.utils.tensorboard  # noqa: F401
    except Exception:  # its TrainingLogger imports SummaryWriter; a training step does not log
        logger = types.ModuleType("utilities.training_logger")
        logger.TrainingLogger = object
        sys.modules["utilities.training_logger"] = logger
    from train import HgnTrainer
    from utilities.loader import load_hgn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    params = yaml.safe_load(Path(repo, "experiment_params", "train_config_default.yaml").read_text())
    params["device"] = "cpu"
    params["dataset"] = {"rollout": dict(ROLLOUT)}
    params["optimization"]["batch_size"] = batch
    # HgnTrainer.__init__ also builds data loaders and a logger; the step needs only these.
    trainer = HgnTrainer.__new__(HgnTrainer)
    trainer.params, trainer.device, trainer.dtype = params, "cpu", torch.float
    trainer.hgn = load_hgn(params=params, device="cpu", dtype=torch.float)
    o = params["optimization"]
    trainer.optimizer = torch.optim.Adam([
        {"params": trainer.hgn.encoder.parameters(), "lr": o["encoder_lr"]},
        {"params": trainer.hgn.transformer.parameters(), "lr": o["transformer_lr"]},
        {"params": trainer.hgn.hnn.parameters(), "lr": o["hnn_lr"]},
        {"params": trainer.hgn.decoder.parameters(), "lr": o["decoder_lr"]}])
    trainer.langrange_multiplier = params["geco"]["initial_lagrange_multiplier"]  # as HgnTrainer.fit
    trainer.C_ma = None
    g = torch.Generator().manual_seed(0)
    rollouts = torch.rand(batch, ROLLOUT["seq_length"], 3, ROLLOUT["img_size"], ROLLOUT["img_size"], generator=g)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer.training_step(rollouts)
    for _ in range(warmup):
        trainer.training_step(rollouts)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses, _ = trainer.training_step(rollouts)
        times.append(time.perf_counter() - t0)
    sec = float(np.median(times))
    return {"side": "pytorch", "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "batch_size": batch, "timed_steps": steps,
            "seconds_per_step_median": round(sec, 4), "samples_per_second": round(batch / sec, 2),
            "gflop_per_step_counted": round(counter.get_total_flops() / 1e9, 1),
            "finite_loss": bool(np.isfinite(losses["loss/train"]))}


def _start(cmd, core: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", str(core), *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=ROOT)


def _result(proc: subprocess.Popen, what: str) -> dict:
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(err.strip().splitlines()[-4:])
        raise SystemExit(f"{what} failed (exit {proc.returncode}): {tail[-800:]}")
    return json.loads(lines[0][len("RESULT "):])


# Of this side's worker result, kept in each row.
TF_FIELDS = ("samples_per_second", "seconds_per_step_median", "timed_steps", "gflop_per_step_analytic",
             "gflop_per_step_executed", "peak_memory_gib", "fused_rollout", "finite_loss")


def _commands(variant: str, args, torch_threads: int) -> dict:
    """The two workers' command lines, by side: this side's `hgn_throughput.py` worker and the PyTorch one."""
    timing = ["--batch-size", str(args.batch_size), "--warmup", str(args.warmup), "--steps", str(args.steps)]
    return {"tensorflow": [sys.executable, str(ROOT / "bench" / "hgn_throughput.py"), "--worker", "pytorch",
                           variant, *timing],
            "pytorch": [args.torch_python, str(Path(__file__).resolve()), "--torch-worker", "--pytorch-repo",
                        args.pytorch_repo, *timing, "--threads", str(torch_threads)]}


def _env(args, side: str, one_thread: bool) -> dict:
    """`side`'s environment: one thread per library (side by side), or each library's own default pools."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **ISA_ENV[args.isa])
    names = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    for name in names:
        env.pop(name, None)
    if one_thread:
        env.update(dict.fromkeys(names, "1"))
    env.pop("PYTHONPATH", None)
    if side == "tensorflow":
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def _row(variant: str, ours: dict, theirs: dict) -> dict:
    row = {"variant": variant, "tensorflow": {k: ours[k] for k in TF_FIELDS if k in ours}, "pytorch": theirs,
           "ratio": round(ours["samples_per_second"] / theirs["samples_per_second"], 2),
           # Work done per step differs between the two (see the module docstring): the ratio of
           # FLOP/s (this side's analytic count against PyTorch's counted one) beside samples/s.
           "work_ratio": round(ours["gflop_per_step_analytic"] / theirs["gflop_per_step_counted"], 2),
           "flops_per_second_ratio": round(ours["samples_per_second"] * ours["gflop_per_step_analytic"]
                                           / (theirs["samples_per_second"] * theirs["gflop_per_step_counted"]), 2)}
    if "gflop_per_step_executed" in ours:
        # The same model, fewer multiply-adds executed: the decoder's upsampling folded into its convs.
        row["executed_work_ratio"] = round(ours["gflop_per_step_executed"] / theirs["gflop_per_step_counted"], 2)
    return row


def pair(variant: str, args, ours_core: int, torch_core: int) -> dict:
    """One side-by-side measurement: this side on `ours_core`, the PyTorch code on `torch_core`."""
    cmds = _commands(variant, args, torch_threads=1)
    ours = _start(cmds["tensorflow"], ours_core, _env(args, "tensorflow", one_thread=True))
    theirs = _start(cmds["pytorch"], torch_core, _env(args, "pytorch", one_thread=True))
    a, b = _result(ours, f"this side ({variant})"), _result(theirs, "the PyTorch side")
    return {**_row(variant, a, b), "cores": {"tensorflow": ours_core, "pytorch": torch_core}}


def solo(variant: str, args, side: str) -> dict:
    """One side alone on every core of this process's affinity, or with `args.alone` on its first core
    with one thread, the other cores idle (the side-by-side setting without the neighbour's memory
    traffic).

    On every core this side gets what `train_hgn.py` gets with no thread settings:
    `TF_NUM_INTRAOP_THREADS` and `TF_NUM_INTEROP_THREADS` unset, so TensorFlow sizes both pools to
    the cores. The PyTorch code calls `torch.set_num_threads(args.threads)`.
    """
    cores = sorted(os.sched_getaffinity(0))
    where = cores[0] if args.alone else ",".join(map(str, cores))
    cmd = _commands(variant, args, torch_threads=1 if args.alone else args.threads)[side]
    return _result(_start(cmd, where, _env(args, side, one_thread=args.alone)), f"{side} alone on {where} ({variant})")


def whole_machine(variants, args) -> tuple:
    """Each side alone (`solo`), in the order ours, theirs, theirs, ours per variant: on the whole
    machine, or with `args.alone` on one core with one thread."""
    threads = 1 if args.alone else args.threads
    rows = []
    for variant in variants:
        runs = {"tensorflow": [], "pytorch": []}
        for side in ("tensorflow", "pytorch", "pytorch", "tensorflow"):
            runs[side].append(solo(variant, args, side))
            print(f"[{args.isa}, {threads} thread(s){', one core' if args.alone else ''}] {variant}: {side} alone "
                  f"{runs[side][-1]['samples_per_second']} samples/s", flush=True)
        for a, b in zip(runs["tensorflow"], runs["pytorch"]):  # each TF run with the PyTorch run beside it in time
            rows.append({**_row(variant, a, b), "threads": threads})
    if args.alone:
        return rows, ("each side alone on one core, one thread, the other cores idle, one after the other "
                      "(TF, PyTorch, PyTorch, TF)")
    return rows, "each side alone on every core, one after the other (TF, PyTorch, PyTorch, TF); each library's threads"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pytorch-repo", required=True,
                        help="a clone of CampusAI/Hamiltonian-Generative-Networks")
    parser.add_argument("--torch-python", default=None,
                        help="the Python interpreter with PyTorch (default: this one)")
    parser.add_argument("--variants", default="graph_fp32,xla_fp32,graph_bf16,xla_bf16",
                        help="this side's settings, of bench/hgn_throughput.py's variants")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default="native",
                        help="native, or avx2: cap both libraries at AVX2 code paths (see above)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (include XLA compilation)")
    parser.add_argument("--steps", type=int, default=15, help="timed steps per side")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--threads", type=int, default=1,
                        help="1 (default): the two side by side, one core and one thread each. N > 1: each side "
                             "alone on the whole machine, one after the other, PyTorch with N threads and "
                             "TensorFlow with its own default pools (what train_hgn.py runs with)")
    parser.add_argument("--alone", action="store_true",
                        help="each side alone on one core with one thread, the other cores idle, one after the "
                             "other (TF, PyTorch, PyTorch, TF): the side-by-side setting without the neighbour's "
                             "memory traffic (not with --threads > 1)")
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    repo = Path(args.pytorch_repo)
    if not (repo / "train.py").is_file() or not (repo / "utilities" / "loader.py").is_file():
        parser.error(f"--pytorch-repo {str(repo)!r} is not a clone of CampusAI/Hamiltonian-Generative-Networks "
                     "(no train.py and utilities/loader.py)")
    if args.torch_worker:
        print("RESULT " + json.dumps(torch_worker(str(repo.resolve()), args.batch_size, args.warmup, args.steps,
                                                  args.threads)), flush=True)
        return 0
    args.torch_python = args.torch_python or sys.executable
    args.pytorch_repo = str(repo.resolve())
    cores = sorted(os.sched_getaffinity(0))
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.alone and args.threads > 1:
        parser.error("--alone runs each side on one core with one thread: not with --threads > 1")
    if len(cores) < 2:
        parser.error("needs two cores (one per side side by side, or a whole machine for --threads > 1)")
    variants = [v for v in args.variants.split(",") if v]
    if args.threads > 1 or args.alone:
        rows, pinning = whole_machine(variants, args)
    else:
        rows, pinning = [], "one process per core, side by side, cores swapped in the second run; one thread each"
        for variant in variants:
            for ours_core, torch_core in ((cores[0], cores[1]), (cores[1], cores[0])):
                row = pair(variant, args, ours_core, torch_core)
                rows.append(row)
                print(f"[{args.isa}] {variant} (TF on core {ours_core}): {row['tensorflow']['samples_per_second']} "
                      f"samples/s against PyTorch {row['pytorch']['samples_per_second']}: {row['ratio']}x",
                      flush=True)
    summary = {}
    for variant in variants:
        ratios = [r["ratio"] for r in rows if r["variant"] == variant]
        per_flop = [r["flops_per_second_ratio"] for r in rows
                    if r["variant"] == variant and "flops_per_second_ratio" in r]
        summary[variant] = {"ratios": ratios, "mean_ratio": round(sum(ratios) / len(ratios), 2)}
        if per_flop:
            summary[variant]["flops_per_second_ratios"] = per_flop
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    key = f"{args.isa}_alone" if args.alone else args.isa if args.threads == 1 else f"{args.isa}_{args.threads}_threads"
    report[key] = {
        "command": "python bench/hgn_vs_pytorch.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu.describe(), "isa_environment": ISA_ENV[args.isa],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "pinning": pinning, "threads": args.threads,
        "summary": summary, "runs": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
