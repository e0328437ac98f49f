#!/usr/bin/env python3
"""The convolutions that dominate the `pytorch` preset's training step, TensorFlow against PyTorch,
kernel by kernel, side by side in the same minutes.

    python bench/conv_kernels.py --torch-python PYTHON
    python bench/conv_kernels.py --torch-python PYTHON --isa avx2 --out bench/results/conv_kernels_avx2.json

Why: a profile of the `pytorch` preset's training step (float32, one core) puts about nine
tenths of it in convolutions, and most of those in the decoder's full-resolution 3x3 convs. So
how far this project's step can run ahead of the PyTorch code's at *equal work* is bounded by how
far TensorFlow's convolution kernels run ahead of PyTorch's on the same shapes. This bench
measures that bound, per kernel: forward pass (as in training), gradient of the input, gradient
of the weights and bias. Each library runs its conv as the two training steps do: TensorFlow on
NHWC maps through its oneDNN ops (`TF_ENABLE_ONEDNN_OPTS=1`, in a `tf.function`; the bias fused
as Grappler fuses it), PyTorch on NCHW tensors as the CampusAI code runs them
(`torch.nn.functional.conv2d`, `aten.convolution_backward`). Both call oneDNN; a second, untimed
run of each with `ONEDNN_VERBOSE=1` records which oneDNN implementation served each kernel
(`implementations`), so that a difference in speed can be read as a difference in kernel.

Shapes (float32, 3x3 SAME, stride 1, with bias; batch 16 and a 26-frame window: 416 frames per
decoder call):
  decoder_32: 416 x 32x32, 64 -> 64  (the last decoder block's convs; the PyTorch code runs both
              at this size, this project folds the first into a conv of the 16x16 map with 2x2
              taps per output pixel, see `hgn.networks.upsample_conv`)
  decoder_16: 416 x 16x16, 64 -> 64  (the middle block's)
  decoder_rgb: 416 x 32x32, 64 -> 3  (the last conv, to RGB; since commit 417559f this project's
              float32 decoder runs it as a transposed conv, `hgn.networks.narrow_conv`)
  encoder_32: 16 x 32x32, 64 -> 64   (the full-resolution encoder's hidden convs)

Each library runs in its own process, one core and one thread each, at the same time, then again
with the cores swapped (as bench/hgn_vs_pytorch.py); each kernel's time is the median of
`--repeats` calls after two untimed ones. Reported per kernel: milliseconds, GFLOP/s and the
speed ratio (PyTorch's time over TensorFlow's; above 1: TensorFlow faster), and per shape the
ratio of a training step's three kernels together (`training`). `--isa avx2` caps both at AVX2
code paths (see bench/hgn_vs_pytorch.py: an emulation on this CPU, not an AVX2-only CPU).
Writes bench/results/conv_kernels.json (merged by ISA), recording the CPU and both libraries'
versions.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `common`, run from any folder
sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder: hgn_vs_pytorch's process helpers

from common import cpu  # noqa: E402  (light: no TensorFlow)
from cpu_ceiling import _median_seconds  # noqa: E402
from hgn_vs_pytorch import ISA_ENV, _env, _result, _start  # noqa: E402

cpu.use_onednn()  # as train_hgn.py: TensorFlow's workers below inherit it

RESULTS = ROOT / "bench" / "results" / "conv_kernels.json"
# name: (batch, height = width, input channels, output channels); 3x3 SAME stride-1 convs with bias.
SHAPES = {"decoder_32": (416, 32, 64, 64), "decoder_16": (416, 16, 64, 64), "decoder_rgb": (416, 32, 64, 3),
          "encoder_32": (16, 32, 64, 64)}
KINDS = ("forward", "input_gradient", "weight_gradient")
# oneDNN's propagation kinds, as its verbose log names them, by this bench's kernel kinds.
PROP_KINDS = {"forward_training": "forward", "forward_inference": "forward", "backward_data": "input_gradient",
              "backward_weights": "weight_gradient"}


def gflop(shape) -> float:
    """GFLOP (2 per multiply-add) of one pass of a 3x3 conv of `shape`; each kind does as many."""
    n, s, cin, cout = shape
    return 2 * n * s * s * cin * cout * 9 / 1e9


def _median_ms(fn, repeats: int) -> float:
    """`fn`'s median time over `repeats` calls after two untimed ones (bench/cpu_ceiling.py's timer)."""
    return round(1e3 * _median_seconds(fn, repeats), 2)


def tf_worker(names, repeats: int) -> dict:
    """Each shape's three kernels in TensorFlow: NHWC, in a `tf.function`, oneDNN ops."""
    import numpy as np
    import tensorflow as tf

    out = {"side": "tensorflow", "tensorflow": tf.__version__, "kernels": {}}
    rng = np.random.default_rng(0)
    for name in names:
        n, s, cin, cout = SHAPES[name]
        x = tf.constant(rng.standard_normal((n, s, s, cin), dtype=np.float32))
        dy = tf.constant(rng.standard_normal((n, s, s, cout), dtype=np.float32))
        k = tf.Variable(rng.standard_normal((3, 3, cin, cout), dtype=np.float32) * 0.05)
        b = tf.Variable(np.zeros(cout, np.float32))

        def conv(inputs):
            return tf.nn.bias_add(tf.nn.conv2d(inputs, k, 1, "SAME"), b)

        @tf.function
        def forward():
            return conv(x)

        @tf.function
        def input_gradient():
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = conv(x)
            return tape.gradient(y, x, output_gradients=dy)

        @tf.function
        def weight_gradient():
            with tf.GradientTape() as tape:
                y = conv(x)
            return tape.gradient(y, [k, b], output_gradients=dy)

        fns = {"forward": forward, "input_gradient": input_gradient, "weight_gradient": weight_gradient}
        out["kernels"][name] = {kind: _median_ms(lambda f=fns[kind]: tf.nest.map_structure(
            lambda t: t.numpy(), f()), repeats) for kind in KINDS}
    return out


def torch_worker(names, repeats: int) -> dict:
    """Each shape's three kernels in PyTorch (run by the PyTorch interpreter): NCHW, one thread."""
    import torch

    torch.set_num_threads(1)
    out = {"side": "pytorch", "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "kernels": {}}
    g = torch.Generator().manual_seed(0)
    for name in names:
        n, s, cin, cout = SHAPES[name]
        x = torch.randn(n, cin, s, s, generator=g, requires_grad=True)
        dy = torch.randn(n, cout, s, s, generator=g)
        w = (torch.randn(cout, cin, 3, 3, generator=g) * 0.05).requires_grad_()
        b = torch.zeros(cout, requires_grad=True)

        def backward(mask):
            return torch.ops.aten.convolution_backward(dy, x.detach(), w.detach(), [cout], [1, 1], [1, 1], [1, 1],
                                                       False, [0, 0], 1, mask)

        fns = {"forward": lambda: torch.nn.functional.conv2d(x, w, b, padding=1),  # records the graph: training
               "input_gradient": lambda: backward([True, False, False]),
               "weight_gradient": lambda: backward([False, True, True])}
        out["kernels"][name] = {kind: _median_ms(fns[kind], repeats) for kind in KINDS}
    return out


_PROBLEM = re.compile(r"mb(\d+)_?(?:g\d+)?ic(\d+)oc(\d+)_ih(\d+)")


def implementations(log: str) -> dict:
    """`{shape name: {kind: sorted oneDNN implementations}}` from a `ONEDNN_VERBOSE=1` log: each
    executed convolution primitive, matched to `SHAPES` by its batch, channels and height."""
    by_problem = {(n, cin, cout, s): name for name, (n, s, cin, cout) in SHAPES.items()}
    found: dict = {}
    for line in log.splitlines():
        fields = line.strip().split(",")
        if "exec" not in fields or "convolution" not in fields:
            continue
        i = fields.index("convolution")
        kind = PROP_KINDS.get(fields[i + 2]) if i + 2 < len(fields) else None
        problem = next((m for m in map(_PROBLEM.search, fields) if m), None)
        if kind is None or problem is None:
            continue
        name = by_problem.get(tuple(int(v) for v in problem.groups()))
        if name is not None:
            found.setdefault(name, {}).setdefault(kind, set()).add(fields[i + 1])
    return {name: {kind: sorted(impls) for kind, impls in kinds.items()} for name, kinds in found.items()}


def _commands(args, names) -> dict:
    common = ["--worker-shapes", ",".join(names), "--repeats", str(args.repeats)]
    return {"tensorflow": [sys.executable, str(Path(__file__).resolve()), "--worker", "tensorflow", *common],
            "pytorch": [args.torch_python, str(Path(__file__).resolve()), "--worker", "pytorch", *common]}


def _verbose_run(args, side: str, names) -> dict:
    """One call of each kernel with oneDNN's verbose log on (not timed): the implementations it used."""
    cmd = _commands(argparse.Namespace(**{**vars(args), "repeats": 1}), names)[side]
    env = {**_env(args, side, one_thread=True), "ONEDNN_VERBOSE": "1"}
    proc = _start(cmd, sorted(os.sched_getaffinity(0))[0], env)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{side} verbose run failed (exit {proc.returncode}): {err.strip()[-800:]}")
    return implementations(out + "\n" + err)


def summarise(runs, names) -> dict:
    """Per shape and kernel: each side's median over `runs` (ms), GFLOP/s and PyTorch's time over ours."""
    summary = {}
    for name in names:
        row = {}
        for kind in (*KINDS, "training"):
            def ms(side):
                kinds = KINDS if kind == "training" else (kind,)
                return statistics.median(sum(r[side]["kernels"][name][k] for k in kinds) for r in runs)
            ours, theirs = ms("tensorflow"), ms("pytorch")
            work = gflop(SHAPES[name]) * (len(KINDS) if kind == "training" else 1)
            row[kind] = {"tensorflow_ms": round(ours, 1), "pytorch_ms": round(theirs, 1),
                         "tensorflow_gflops": round(work / ours * 1e3, 1),
                         "pytorch_gflops": round(work / theirs * 1e3, 1), "ratio": round(theirs / ours, 2)}
        summary[name] = row
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", default=None, help="the Python interpreter with PyTorch (default: this one)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), default="native",
                        help="native, or avx2: cap both libraries at AVX2 code paths")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--repeats", type=int, default=7, help="timed calls per kernel (median)")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", choices=("tensorflow", "pytorch"), help=argparse.SUPPRESS)
    parser.add_argument("--worker-shapes", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        names = args.worker_shapes.split(",")
        result = (tf_worker if args.worker == "tensorflow" else torch_worker)(names, args.repeats)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    names = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in names if s not in SHAPES]
    if unknown or not names:
        parser.error(f"--shapes: unknown {unknown}; valid: {', '.join(SHAPES)}")
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        parser.error("needs two cores: one per library, side by side")
    args.torch_python = args.torch_python or sys.executable
    runs = []
    for ours_core, torch_core in ((cores[0], cores[1]), (cores[1], cores[0])):
        cmds = _commands(args, names)
        ours = _start(cmds["tensorflow"], ours_core, _env(args, "tensorflow", one_thread=True))
        theirs = _start(cmds["pytorch"], torch_core, _env(args, "pytorch", one_thread=True))
        runs.append({"tensorflow": _result(ours, "the TensorFlow side"), "pytorch": _result(theirs, "the PyTorch side"),
                     "cores": {"tensorflow": ours_core, "pytorch": torch_core}})
        print(f"[{args.isa}] TF on core {ours_core}: " + ", ".join(
            f"{name} {sum(runs[-1]['tensorflow']['kernels'][name].values()):.0f} ms vs "
            f"{sum(runs[-1]['pytorch']['kernels'][name].values()):.0f}" for name in names), flush=True)
    summary = summarise(runs, names)
    impls = {side: _verbose_run(args, side, names) for side in ("tensorflow", "pytorch")}
    for name in names:
        print(f"{name} {SHAPES[name]}:")
        for kind, r in summary[name].items():
            used = " / ".join(", ".join(impls[side].get(name, {}).get(kind, ["?"])) for side in impls) \
                if kind != "training" else ""
            print(f"  {kind:16s} TF {r['tensorflow_ms']:7.1f} ms ({r['tensorflow_gflops']:5.1f} GFLOP/s)  "
                  f"PyTorch {r['pytorch_ms']:7.1f} ms ({r['pytorch_gflops']:5.1f})  {r['ratio']:.2f}x  {used}")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.is_file() else {}
    report[args.isa] = {
        "command": "python bench/conv_kernels.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu.describe(), "isa_environment": ISA_ENV[args.isa],
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "pinning": "one process per core, side by side, cores swapped in the second run; one thread each",
        "versions": {"tensorflow": runs[0]["tensorflow"]["tensorflow"], "torch": runs[0]["pytorch"]["torch"],
                     "torch_cpu_capability": runs[0]["pytorch"]["cpu_capability"]},
        "shapes": {name: dict(zip(("batch", "size", "in_channels", "out_channels"), SHAPES[name])) for name in names},
        "summary": summary, "implementations": impls, "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
