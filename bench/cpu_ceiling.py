#!/usr/bin/env python3
"""How much float32 throughput one core can give a convolution, and what 1.5x PyTorch would need.

    python bench/cpu_ceiling.py
    python bench/cpu_ceiling.py --torch-python PYTHON     # also PyTorch's own kernels

The `pytorch` preset's training step is mostly 3x3 convolutions of 64 channels on 32x32 maps
(the decoder, over all 26 frames of 16 windows) and their two gradients. This script times that
shape alone, in float32 on one thread pinned to one core, for each `--isas` (native, and avx2:
oneDNN and XLA capped at AVX2 code paths, as in bench/hgn_vs_pytorch.py, an emulation of an
AVX2-only CPU's instruction set on this one): the forward convolution, its input gradient, its
filter gradient, and a 2048^3 matrix product, in TensorFlow (a `tf.function`, oneDNN kernels) and,
with `--torch-python`, in PyTorch (`torch.nn.functional.conv2d` and autograd). Each figure is the
median of `--repeats` timed calls after two untimed ones.

It times the same convolution and gradients on channels-first tensors (`data_format="NCHW"`)
beside the channels-last ones the models use. It also times the same convolution by Winograd's
algorithm, F(2x2, 3x3) and F(4x4, 3x3) (2.25x and 4x fewer multiplications than the direct
convolution), written in TensorFlow ops and compiled by XLA, forward and with both gradients, in
direct-equivalent GFLOP/s (the direct convolution's FLOPs over the time taken): whether
TensorFlow's own ops could beat the direct kernels with a cheaper algorithm on this CPU. Its
maximum error relative to the direct convolution is recorded too.

With bench/results/hgn_vs_pytorch.json present, it then sets the training step's own FLOP/s on
each side (executed FLOPs per step / seconds per step, from that side-by-side run) against these ceilings,
and works out the FLOP/s this side would need for 1.5x the PyTorch code's samples/s, doing the
work it does today and doing exactly PyTorch's work: if that exceeds what the CPU gives the
convolution alone, no kernel choice on that CPU can reach 1.5x at equal work.

Writes bench/results/cpu_ceiling.json (with the CPU's model and flags). On another CPU, give both
scripts their own files, e.g. on the AMD EPYC (AVX2 only, where `native` is the real thing):

    python bench/hgn_vs_pytorch.py ... --isa native --out bench/results/hgn_vs_pytorch_epyc.json
    python bench/cpu_ceiling.py --isas native --side-by-side bench/results/hgn_vs_pytorch_epyc.json \
        --out bench/results/cpu_ceiling_epyc.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import cpu  # noqa: E402  (light: no TensorFlow)

cpu.use_onednn()  # as train_hgn.py: TensorFlow's workers below inherit it

RESULTS = ROOT / "bench" / "results"
ISA_ENV = cpu.ISA_ENV
CONV = dict(batch=256, size=32, channels=64, kernel=3)  # the decoder's last blocks: 64 -> 64, 3x3, SAME
MATMUL = 2048


def _conv_gflop() -> float:
    c = CONV
    return 2 * c["batch"] * c["size"] ** 2 * c["channels"] ** 2 * c["kernel"] ** 2 / 1e9


def _median_seconds(fn, repeats: int) -> float:
    fn(), fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def tf_worker(repeats: int) -> dict:
    import tensorflow as tf

    c = CONV
    x = tf.random.normal([c["batch"], c["size"], c["size"], c["channels"]])
    w = tf.random.normal([c["kernel"], c["kernel"], c["channels"], c["channels"]]) * 0.05
    dy = tf.random.normal(x.shape)
    a = tf.random.normal([MATMUL, MATMUL])

    matmul = tf.function(lambda: tf.matmul(a, a))
    out = {name: _gflops(fn, _conv_gflop(), repeats) for name, fn in _conv_ops(tf, x, w, dy, "NHWC").items()}
    out["matmul"] = _gflops(matmul, 2 * MATMUL ** 3 / 1e9, repeats)
    out["nchw"] = nchw_worker(tf, x, w, dy, repeats)
    out["winograd"] = winograd_worker(tf, x, w, dy, repeats)
    return out


def _conv_ops(tf, x, w, dy, data_format: str) -> dict:
    """The convolution, its input gradient and its filter gradient as `tf.function`s, on `x` and
    `dy` laid out as `data_format` says."""
    layout = dict(strides=[1, 1, 1, 1], padding="SAME", data_format=data_format)
    return {"conv_forward": tf.function(lambda: tf.raw_ops.Conv2D(input=x, filter=w, **layout)),
            "conv_input_grad": tf.function(lambda: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x), filter=w, out_backprop=dy, **layout)),
            "conv_filter_grad": tf.function(lambda: tf.raw_ops.Conv2DBackpropFilter(
                input=x, filter_sizes=tf.shape(w), out_backprop=dy, **layout))}


def _gflops(fn, gflop: float, repeats: int) -> float:
    return round(gflop / _median_seconds(lambda: fn().numpy(), repeats), 1)


def nchw_worker(tf, x, w, dy, repeats: int) -> dict:
    """The same convolution and its two gradients on channels-first tensors (`data_format="NCHW"`,
    which TensorFlow runs on a CPU through oneDNN only): whether the other layout is the faster one."""
    x, dy = (tf.transpose(t, [0, 3, 1, 2]) for t in (x, dy))
    out = {}
    for name, fn in _conv_ops(tf, x, w, dy, "NCHW").items():
        try:
            out[name] = _gflops(fn, _conv_gflop(), repeats)
        except tf.errors.OpError as err:  # TensorFlow's own kernels have no NCHW convolution on a CPU
            out[name] = f"unsupported: {err.message.splitlines()[0][:160]}"
    return out


# Winograd's minimal filtering (Lavin & Gray 2016), F(m x m, 3 x 3): B^T (input tile), G (filter),
# A^T (output tile). F(2, 3): 16 products per 4 outputs instead of 36; F(4, 3): 36 per 16 instead of 144.
WINOGRAD = {
    "f2x2_3x3": ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
                 [[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]],
                 [[1, 1, 1, 0], [0, 1, -1, -1]]),
    "f4x4_3x3": ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
                  [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
                 [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                  [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
                 [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}


def winograd_conv(tf, x, w, name: str):
    """A 3x3 SAME convolution by Winograd's F(m x m, 3 x 3), written in TensorFlow ops: the input
    tiles' transform (strided slices and sums), one batched matrix product per tile position,
    the output transform. Differentiable, so its gradients follow by autodiff."""
    bt, g, at = WINOGRAD[name]
    t, m = len(bt), len(at)
    n, h, wd, c = x.shape

    def combine(matrix, parts):  # rows of `matrix` applied to a list of tensors, skipping zeros
        return [sum(coef * p for coef, p in zip(row, parts) if coef) for row in matrix]

    xp = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
    rows = combine(bt, [xp[:, r:r + h:m] for r in range(t)])
    v = tf.stack([u for row in rows for u in combine(bt, [row[:, :, r:r + wd:m] for r in range(t)])])
    u = tf.einsum("ia,abck,jb->ijck", tf.constant(g, x.dtype), w, tf.constant(g, x.dtype))
    prod = tf.matmul(tf.reshape(v, [t * t, -1, c]), tf.reshape(u, [t * t, c, -1]))
    prod = tf.reshape(prod, [t, t, n, h // m, wd // m, -1])
    out = [tf.stack(combine(at, [row[j] for j in range(t)]), axis=3) for row in combine(at, [prod[i] for i in range(t)])]
    return tf.reshape(tf.stack(out, axis=2), [n, h, wd, -1])


def winograd_worker(tf, x, w, dy, repeats: int) -> dict:
    """Direct-convolution-equivalent GFLOP/s (the direct convolution's FLOPs over the time taken)
    of Winograd convolutions compiled by XLA, forward and forward with both gradients, beside
    the direct convolution's forward with both gradients in one call; and each one's error."""
    def with_grads(conv, jit):
        @tf.function(jit_compile=jit)
        def step():
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                y = conv(x, w)
                loss = tf.reduce_sum(y * dy)
            return [y, *tape.gradient(loss, [x, w])]  # y too: else the forward pass is pruned away
        return step

    def direct(x, w):
        return tf.nn.conv2d(x, w, 1, "SAME")

    def timed(fn, flop_multiple):
        return round(flop_multiple * _conv_gflop() / _median_seconds(lambda: [t.numpy() for t in tf.nest.flatten(fn())],
                                                                       repeats), 1)

    reference, reference_grads = direct(x, w), with_grads(direct, False)()  # [y, dx, dw]
    out = {"direct_forward_and_grads": timed(with_grads(direct, False), 3)}
    for name in WINOGRAD:
        conv = lambda x, w, name=name: winograd_conv(tf, x, w, name)  # noqa: E731
        forward, both = tf.function(lambda: conv(x, w), jit_compile=True), with_grads(conv, True)
        errors = [float(tf.reduce_max(tf.abs(a - b)) / tf.reduce_max(tf.abs(b)))
                  for a, b in zip([forward(), *both()], [reference, *reference_grads])]  # y, y, dx, dw
        out[name + "_xla"] = {"forward": timed(forward, 1), "forward_and_grads": timed(both, 3),
                              "max_relative_error": float(f"{max(errors):.2g}")}
    return out


def torch_worker(repeats: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    c = CONV
    x = torch.randn(c["batch"], c["channels"], c["size"], c["size"])
    w = torch.randn(c["channels"], c["channels"], c["kernel"], c["kernel"]) * 0.05
    dy = torch.randn(x.shape)
    a = torch.randn(MATMUL, MATMUL)
    pad = c["kernel"] // 2

    def grads(inputs: bool):
        xx, ww = x.clone().requires_grad_(inputs), w.clone().requires_grad_(not inputs)
        y = F.conv2d(xx, ww, padding=pad)
        return torch.autograd.grad(y, xx if inputs else ww, dy)

    ops = {"conv_forward": (lambda: F.conv2d(x, w, padding=pad), _conv_gflop()),
           # autograd's call includes the forward pass: its FLOPs are counted too
           "conv_input_grad": (lambda: grads(True), 2 * _conv_gflop()),
           "conv_filter_grad": (lambda: grads(False), 2 * _conv_gflop()),
           "matmul": (lambda: a @ a, 2 * MATMUL ** 3 / 1e9)}
    out = {name: round(gflop / _median_seconds(fn, repeats), 1) for name, (fn, gflop) in ops.items()}
    out["torch"] = torch.__version__
    out["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def _shown(path: Path) -> str:
    """`path` relative to the checkout where it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _run(cmd, isa: str, core: int) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_NUM_INTRAOP_THREADS="1", TF_NUM_INTEROP_THREADS="1",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **ISA_ENV[isa])
    proc = subprocess.run(["taskset", "-c", str(core), *cmd], capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{cmd[0]} worker failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    return json.loads(lines[0][len("RESULT "):])


def against_training(isa: str, ceilings: dict, side_by_side: dict, source: str) -> dict:
    """The side-by-side training steps' FLOP/s set against the convolution ceilings of `isa`."""
    runs = [r for r in side_by_side.get(isa, {}).get("runs", []) if r["variant"] == "graph_fp32"]
    if not runs:
        return {}
    ours_sps = statistics.mean(r["tensorflow"]["samples_per_second"] for r in runs)
    theirs_sps = statistics.mean(r["pytorch"]["samples_per_second"] for r in runs)
    batch = runs[0]["pytorch"]["batch_size"]
    theirs_gflop = runs[0]["pytorch"]["gflop_per_step_counted"]
    # What this side executes: since the decoder's upsampling fold, fewer multiply-adds than the
    # model's count (older JSONs have only the model's, which they then executed).
    ours_gflop = runs[0]["tensorflow"].get("gflop_per_step_executed", runs[0]["tensorflow"]["gflop_per_step_analytic"])
    tf_conv = ceilings["tensorflow"]
    best = max(tf_conv[k] for k in ("conv_forward", "conv_input_grad", "conv_filter_grad"))
    need_ours = 1.5 * theirs_sps * ours_gflop / batch
    need_equal = 1.5 * theirs_sps * theirs_gflop / batch
    return {
        "source": f"{source}, graph_fp32 runs (mean of both core orders)",
        "samples_per_second": {"tensorflow": round(ours_sps, 2), "pytorch": round(theirs_sps, 2)},
        "gflop_per_step": {"tensorflow_executed": ours_gflop, "pytorch": theirs_gflop},
        "training_step_gflops": {"tensorflow": round(ours_sps * ours_gflop / batch, 1),
                                 "pytorch": round(theirs_sps * theirs_gflop / batch, 1)},
        "best_conv_gflops_tensorflow": best,
        "needed_for_1_5x_gflops": {"doing_this_sides_work": round(need_ours, 1),
                                   "doing_pytorchs_work": round(need_equal, 1)},
        "needed_over_best_conv": {"doing_this_sides_work": round(need_ours / best, 2),
                                  "doing_pytorchs_work": round(need_equal / best, 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--isas", default="native,avx2", help="comma-separated: " + ", ".join(ISA_ENV))
    parser.add_argument("--torch-python", default=None, help="an interpreter with PyTorch (optional)")
    parser.add_argument("--core", type=int, default=0, help="the core every worker is pinned to")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(RESULTS / "cpu_ceiling.json"))
    parser.add_argument("--side-by-side", default=str(RESULTS / "hgn_vs_pytorch.json"),
                        help="the JSON of bench/hgn_vs_pytorch.py run on this same CPU (its --out)")
    parser.add_argument("--worker", choices=["tensorflow", "torch"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps((tf_worker if args.worker == "tensorflow" else torch_worker)(args.repeats)))
        return
    isas = [i for i in args.isas.split(",") if i]
    unknown = [i for i in isas if i not in ISA_ENV]
    if unknown:
        raise SystemExit(f"unknown --isas {', '.join(unknown)}; valid: {', '.join(ISA_ENV)}")
    side_path = Path(args.side_by_side)
    side_by_side = json.loads(side_path.read_text()) if side_path.exists() else {}
    result = {"command": "python " + " ".join([f"bench/{Path(__file__).name}", *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu.describe(),
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
              "conditions": f"one thread, pinned to core {args.core}; float32; median of {args.repeats}",
              "shapes": {"conv": CONV, "matmul": MATMUL}, "gflops": {}}
    me = [sys.executable, str(Path(__file__).resolve()), "--repeats", str(args.repeats)]
    for isa in isas:
        entry = {"isa_environment": ISA_ENV[isa], "tensorflow": _run([*me, "--worker", "tensorflow"], isa, args.core)}
        if args.torch_python:
            entry["pytorch"] = _run([args.torch_python, *me[1:], "--worker", "torch"], isa, args.core)
        entry["against_training"] = against_training(isa, entry, side_by_side, _shown(side_path))
        result["gflops"][isa] = entry
        print(f"[{isa}] GFLOP/s " + json.dumps({k: v for k, v in entry.items() if k != "isa_environment"}))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
