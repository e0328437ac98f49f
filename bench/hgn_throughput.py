#!/usr/bin/env python3
"""HGN training throughput (samples/s) and peak memory at batch 16, one subprocess per setting.

    python bench/hgn_throughput.py                       # paper and pytorch configs, all variants
    python bench/hgn_throughput.py --configs pytorch --variants xla_bf16 --steps 20

Settings: the `paper` preset and the `pytorch` preset (the CampusAI re-implementation's sizes:
5 input frames, 30-frame rollouts, 32x32, leapfrog, joint H), each with
`--variants` among xla_fp32, graph_fp32 (tf.function without XLA, oneDNN kernels), xla_bf16 and
graph_bf16 (encoder/decoder in bfloat16 with float32 variables, Hamiltonian in float32), each
with the preset's own `fused_rollout` (the `paper` and `pytorch` presets XLA-compile their latent
leapfrog rollouts: see their comments in hgn/config.py; before that, these variants ran them
unfused), graph_fp32_fused and
graph_bf16_fused (the rollout XLA-compiled whatever the preset says), graph_fp32_unfused and
graph_bf16_unfused (not), and
graph_bf16_chunked (graph_bf16 decoding the window in `--decoder-chunks` chunks under
tf.recompute_grad: less peak memory for one extra decoder forward pass). Every other variant
decodes in one batched call (decoder_chunks=1), whatever the preset says.

Each setting runs in a fresh process (so ru_maxrss is that setting's peak resident memory):
build, compile, `--warmup` steps, then `--steps` timed steps of `fit` on an in-memory batch, at
the preset's full window (a curriculum preset's growing windows are switched off).
FLOPs per step are counted analytically from the conv and dense layers (multiply-add = 2 FLOPs):
forward, backward (x3 for trained nets; x4 for a chunked decoder, which recomputes its forward
pass), and the Hamiltonian's gradient evaluations inside the leapfrog, which training
differentiates again (x3 on top of forward + input-gradient). That is the model's work as written
(`gflop_per_step_analytic`, the measure of equal work against another implementation); the
decoder folds each x2 nearest upsampling into the 3x3 conv after it (`hgn.networks.upsample_conv`)
and executes fewer multiply-adds (`gflop_per_step_executed`). `fraction_of_fp32_peak` divides the
model's GFLOP/s by a float32 matmul's, measured in the same worker after its steps (above 1 is
possible with the fold); `executed_fraction_of_fp32_peak` divides the executed rate.
Results: bench/results/hgn_throughput.json and .png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `common`, run from any folder

from common import cpu  # noqa: E402  (light: no TensorFlow)
from cpu_ceiling import MATMUL, _median_seconds  # noqa: E402  (this folder: the same matmul as its ceiling)

cpu.use_onednn()  # as train_hgn.py: set before this process or its workers load TensorFlow

RESULTS = ROOT / "bench" / "results"
# The PyTorch code's figures that issue 4 set the goal by. They were measured on the 2-core Intel
# Xeon (AMX) of that issue, not on the CPU this runs on: bench/hgn_vs_pytorch.py measures the
# PyTorch code side by side with this project on the CPU at hand.
PEER = {"seconds_per_step": 3.15, "samples_per_second": 5.1, "peak_memory_gb": 1.9, "gflop_per_step": 318.0,
        "source": "PyTorch re-implementation on the 2-core Intel Xeon with AMX of issue 4 (not this CPU; "
                  "see bench/hgn_vs_pytorch.py for a side-by-side run)"}
# (jit, dtype, fused rollout (None: the preset's), chunked decoder)
VARIANTS = {"xla_fp32": (True, "float32"), "graph_fp32": (False, "float32"),
            "xla_bf16": (True, "bfloat16"), "graph_bf16": (False, "bfloat16"),
            "graph_fp32_fused": (False, "float32", True), "graph_bf16_fused": (False, "bfloat16", True),
            "graph_fp32_unfused": (False, "float32", False), "graph_bf16_unfused": (False, "bfloat16", False),
            "graph_bf16_chunked": (False, "bfloat16", None, True)}
# decoder_chunks of the chunked variant (--decoder-chunks). pytorch graph_bf16, idle machine, five runs
# each: k = 1: 1.55 GiB peak at 9.5 samples/s (median); k = 4: 1.37 GiB at 8.5 (one extra decoder forward
# pass). Before the decoder kept only what its backward pass needs (float32 last conv, leaky ReLU
# pre-activations), k = 1, 2, 4 gave 1.95, 1.72, 1.54 GiB; with the unrolled rollout before that, 2.51 at k = 1.
DECODER_CHUNKS = 4


def _conv_flops(layer, in_shape):
    """FLOPs (2 per multiply-add) of a Conv2D on one example, and its output shape."""
    out = layer.compute_output_shape((1, *in_shape))[1:]
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return 2 * out[0] * out[1] * out[2] * k * in_shape[-1], out


# Multiply-adds a 3x3 conv of a x2 nearest-upsampled map executes when the upsampling is folded into
# it (hgn.networks.upsample_conv: 2x2 taps per output pixel, through a stride-2 transposed conv with
# a 4x4 kernel in float32 or four 2x2 convs on the low-resolution map in bfloat16), against the
# unfolded conv.
FOLDED_FRACTION = 16 / 36


def _stack_flops(layers, in_shape, executed: bool = False):
    """FLOPs of a stack of layers on one example, and its output shape.

    `executed=False` counts the model as written (each conv at the shape its layer sees, an
    upsampled map included): the work both implementations of the same model share, the measure
    of "equal work". `executed=True` counts what this project's decoder runs: a 3x3 conv right
    after an x2 nearest upsampling costs `FOLDED_FRACTION` of its count, a residual block's 1x1
    projection a quarter (it runs before the upsampling).
    """
    import keras
    import numpy as np

    from hgn.networks import folds_into

    total = 0
    shape = tuple(in_shape)
    previous = None
    for layer in layers:
        if isinstance(layer, keras.layers.Conv2D):
            f, shape = _conv_flops(layer, shape)
            total += f * (FOLDED_FRACTION if executed and folds_into(previous, layer) else 1)
        elif hasattr(layer, "conv1"):  # ResidualUpsample
            shape = (shape[0] * 2, shape[1] * 2, shape[2])
            folded = {id(layer.conv1): FOLDED_FRACTION, id(layer.skip): 0.25} if executed else {}
            for conv in [layer.conv1, layer.conv2] + ([layer.skip] if layer.skip is not None else []):
                src = shape if conv is not layer.conv2 else (shape[0], shape[1], layer.conv1.filters)
                f, _ = _conv_flops(conv, src)
                total += f * folded.get(id(conv), 1)
            shape = (shape[0], shape[1], layer.conv2.filters)
        elif isinstance(layer, keras.layers.UpSampling2D):
            shape = (shape[0] * 2, shape[1] * 2, shape[2])
        elif hasattr(layer, "convs"):  # EnergyNet
            total += _stack_flops(layer.convs, shape)[0]
            shape = ()
        elif isinstance(layer, keras.layers.Flatten):
            shape = (int(np.prod(shape)),)
        elif isinstance(layer, keras.layers.Dense):  # on a vector (the vector latent's projections, MLPs)
            total += 2 * shape[-1] * layer.units
            shape = (*shape[:-1], layer.units)
        elif isinstance(layer, keras.layers.Reshape):
            shape = tuple(layer.target_shape)
        elif hasattr(layer, "block_size"):  # DepthToSpace
            b = layer.block_size
            shape = (shape[0] * b, shape[1] * b, shape[2] // (b * b))
        previous = layer
    return total, shape


def _energy_flops(net, in_shape) -> int:
    """FLOPs of one energy evaluation: a conv `EnergyNet` or an `MLPEnergyNet`."""
    return _stack_flops(net.convs if hasattr(net, "convs") else [*net.hidden, net.out], in_shape)[0]


def analytic_train_flops(model, executed: bool = False) -> dict:
    """Per-sample training FLOPs of an HGN by part (see the module docstring): of the model as
    written, or (`executed`) as this project's decoder runs it (`_stack_flops`)."""
    c = model.config
    s = c.image_size
    enc, z_shape = _stack_flops(model.encoder.layers, (s, s, 3 * c.input_frames))
    if model.transformer is None:  # the vector latent: the encoder's projection is z = (q, p) itself
        tr, q_shape = 0, (c.state_channels,)
    else:
        z_shape = (*z_shape[:2], c.latent_channels)
        tr, state_shape = _stack_flops(model.transformer.layers, z_shape)
        q_shape = (*state_shape[:2], c.state_channels)
    dec, _ = _stack_flops(model.decoder.layers, q_shape, executed)
    steps = c.window - 1
    passes = 2 if c.training_mode == "forward_backward" else 1
    if c.hamiltonian in ("separable", "fixed_kinetic"):
        f_h = _energy_flops(model.energy_nets["potential"], q_shape)
        # one dV/dq (force reused) + one dK/dp; a fixed K(p) = |p|^2 / 2 has no network
        grad_evals_per_step = 2 if c.hamiltonian == "separable" else 1
    else:
        f_h = _energy_flops(model.energy_nets["joint"], (*q_shape[:-1], 2 * c.state_channels))
        grad_evals_per_step = 3  # dH/dq, dH/dp, dH/dq at the current state
    # A gradient evaluation is a forward and an input-backward pass (2 F); training backprops
    # through it (about 2x more): 6 F each. Trained feed-forward nets: 3 F (forward + backward).
    ham = 6 * f_h * grad_evals_per_step * steps
    # A chunked decoder (decoder_chunks > 1) runs its forward pass again in the backward pass: 4 F.
    dec_passes = 4 if c.decoder_chunks > 1 else 3
    parts = {"encoder": 3 * enc, "transformer": 3 * tr, "decoder": dec_passes * dec * c.window, "hamiltonian": ham}
    parts = {k: v * passes for k, v in parts.items()}
    parts["total"] = sum(parts.values())
    return parts


def worker(config_name: str, variant: str, batch: int, warmup: int, steps: int,
           decoder_chunks: int = DECODER_CHUNKS) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from hgn import PRESETS
    from hgn.training import build_model

    jit, dtype, *rest = VARIANTS[variant]
    fused = PRESETS[config_name].fused_rollout if not rest or rest[0] is None else rest[0]
    chunks = decoder_chunks if len(rest) > 1 and rest[1] else 1
    # curriculum_steps=0: every timed step at the full window. With the curriculum on, a few steps
    # from step 0 would time its first, short windows (the `quick` preset's 8 frames of 30:
    # 0.097 s per step of 16 on the EPYC's 2 cores instead of the full window's).
    config = dataclasses.replace(PRESETS[config_name], batch_size=batch, jit_compile=jit, compute_dtype=dtype,
                                 fused_rollout=fused, decoder_chunks=chunks, curriculum_steps=0)
    model = build_model(config)
    rng = np.random.default_rng(0)
    frames = rng.uniform(0, 1, (batch, config.window, config.image_size, config.image_size, 3)).astype(np.float32)
    ds = tf.data.Dataset.from_tensors({"frames": frames}).repeat()

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times = []

        def on_train_batch_end(self, b, logs=None):
            self.times.append(time.perf_counter())

    t0 = time.perf_counter()
    model.fit(ds, steps_per_epoch=warmup, epochs=1, verbose=0)
    compile_and_warmup = time.perf_counter() - t0
    timer = Timer()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[timer])
    wall = time.perf_counter() - start
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    step_times = np.diff([start] + timer.times)
    cores = len(os.sched_getaffinity(0))
    # Median over steps: robust to the other jobs sharing this machine.
    sec = float(np.median(step_times))
    peak = _fp32_matmul_gflops(tf)
    flops = analytic_train_flops(model)
    gflop_step = flops["total"] * batch / 1e9
    executed_step = analytic_train_flops(model, executed=True)["total"] * batch / 1e9
    return {
        "config": config_name, "variant": variant, "batch_size": batch, "decoder_chunks": chunks,
        "fused_rollout": config.fused_rollout and not config.jit_compile,
        "window_frames": config.window,
        "timed_steps": steps,
        "seconds_per_step_median": round(sec, 4), "seconds_per_step_mean": round(float(step_times.mean()), 4),
        "samples_per_second": round(batch / sec, 2),
        "peak_memory_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3),  # 2^30 bytes
        "compile_and_warmup_seconds": round(compile_and_warmup, 1),
        "gflop_per_step_analytic": round(gflop_step, 1),
        "gflop_per_step_by_part": {k: round(v * batch / 1e9, 2) for k, v in flops.items()},
        "achieved_gflops": round(gflop_step / sec, 1),
        # What the decoder executes with its upsampling folded into the convs (fewer multiply-adds
        # for the same model): the rate the CPU actually sustains.
        "gflop_per_step_executed": round(executed_step, 1),
        "executed_gflops": round(executed_step / sec, 1),
        # Against a float32 matmul measured in this process, with its threads, after the steps.
        "fp32_matmul_gflops": round(peak, 1),
        "fraction_of_fp32_peak": round(gflop_step / sec / peak, 3),
        "executed_fraction_of_fp32_peak": round(executed_step / sec / peak, 3),
        # On a shared machine the process gets a fraction of the cores: CPU seconds per step over
        # the core count estimates the step time on an idle machine (optimistic: it ignores the
        # cache and memory-bandwidth contention that also inflates CPU time under load).
        "cpu_seconds_per_step": round(cpu_seconds / steps, 3),
        "cpu_share_of_machine": round(cpu_seconds / wall / cores, 3),
        "idle_machine_estimate": {
            "seconds_per_step": round(cpu_seconds / steps / cores, 3),
            "samples_per_second": round(batch * steps * cores / cpu_seconds, 2),
            "fraction_of_fp32_peak": round(gflop_step * steps * cores / cpu_seconds / peak, 3)},
        "finite_loss": bool(np.isfinite(float(model.trackers["loss"].result()))),
    }


def _fp32_matmul_gflops(tf, repeats: int = 7) -> float:
    """GFLOP/s of bench/cpu_ceiling.py's float32 matmul (MATMUL^3) on this CPU, median of `repeats`."""
    a = tf.random.normal([MATMUL, MATMUL])
    matmul = tf.function(lambda: tf.matmul(a, a))
    return 2 * MATMUL ** 3 / 1e9 / _median_seconds(lambda: matmul().numpy(), repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="paper,pytorch", help="comma-separated presets (default paper,pytorch)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (include XLA compilation)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps")
    parser.add_argument("--decoder-chunks", type=int, default=DECODER_CHUNKS,
                        help=f"decoder_chunks of the graph_bf16_chunked variant (default {DECODER_CHUNKS})")
    parser.add_argument("--repeats", type=int, default=1,
                        help="fresh processes per setting; the run with the median samples/s is reported, "
                             "with every run's samples/s and peak memory beside it (step times on a shared "
                             "VM vary by up to 10%% between processes)")
    parser.add_argument("--out", default=str(RESULTS / "hgn_throughput.json"))
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker, args.batch_size, args.warmup, args.steps,
                                            args.decoder_chunks)), flush=True)
        return 0
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    for v in args.variants.split(","):
        if v not in VARIANTS:
            parser.error(f"unknown variant {v!r}; valid: {', '.join(VARIANTS)}")
    from hgn.config import PRESETS  # light: no TensorFlow

    for c in args.configs.split(","):
        if c not in PRESETS:
            parser.error(f"unknown config {c!r}; valid: {', '.join(PRESETS)}")
    out = Path(args.out)
    # Settings measured before (e.g. by an earlier invocation with other --configs) are kept.
    old = json.loads(out.read_text()) if out.exists() else {}
    previous = old.get("results", [])
    this_command = "python bench/hgn_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results = []
    load_at_start = round(os.getloadavg()[0], 2)
    # The worker imports the project from this checkout even where the editable install is stale.
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    for config_name in args.configs.split(","):
        for variant in args.variants.split(","):
            cmd = [sys.executable, __file__, "--worker", config_name, variant, "--batch-size", str(args.batch_size),
                   "--warmup", str(args.warmup), "--steps", str(args.steps),
                   "--decoder-chunks", str(args.decoder_chunks)]
            runs = []
            for _ in range(args.repeats):
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
                lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                    runs = [{"config": config_name, "variant": variant, "error": tail[-500:]}]
                    break
                runs.append(json.loads(lines[0][len("RESULT "):]))
            results.append(_median_run(runs))
            print(json.dumps(results[-1]), flush=True)
    done = {(r["config"], r["variant"]) for r in results}
    results = [r for r in previous if (r["config"], r["variant"]) not in done] + results
    report = {
        "commands": [c for c in old.get("commands", [old["command"]] if "command" in old else []) if c != this_command]
        + [this_command],
        "cpu": cpu.describe(),
        "machine": {"cores": os.cpu_count(), "load_average_1min_at_start": load_at_start,
                    "note": "median step reported; see load_average_1min_at_start (about 0 = idle machine) and "
                            "each result's cpu_share_of_machine for how much of the CPU the run had"},
        "peer": PEER,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out.with_suffix(".png"))
    return 0


def _median_run(runs: list) -> dict:
    """The run with the median samples/s (the lower middle one for an even count), listing all runs."""
    if len(runs) == 1:
        return runs[0]
    ranked = sorted(runs, key=lambda r: r["samples_per_second"])
    return {**ranked[(len(ranked) - 1) // 2], "repeats": len(runs),
            "samples_per_second_repeats": [r["samples_per_second"] for r in runs],
            "peak_memory_gib_repeats": [r["peak_memory_gib"] for r in runs]}


def _plot(report, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if "samples_per_second" in r]
    if not ok:
        return
    labels = [f"{r['config']}\n{r['variant']}" for r in ok] + ["PyTorch code\n(issue 4's Xeon)"]
    values = [r["samples_per_second"] for r in ok] + [report["peer"]["samples_per_second"]]
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 3.5))
    ax.bar(range(len(values)), values, color=["C0"] * len(ok) + ["grey"])
    ax.axhline(7.6, color="C3", ls="--", lw=1, label="issue 4's goal for the pytorch config on its Xeon (7.6)")
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    ax.set_ylabel("training samples / s (batch 16)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
