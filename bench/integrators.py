"""Leapfrog throughput of common/ in eager, tf.function and XLA modes.

    python bench/integrators.py [--steps 100] [--repeats 5] [--out bench/results/integrators.json]

Cases:
  mlp_4096x2   a batch of 4096 two-dimensional states (d = 1), separable H with K and V each
               a 2x64 softplus MLP (NHF-sized).
  conv_16x4x4x16  a batch of 16 HGN-sized [4, 4, 16] states, separable H with K and V each a
               small softplus conv net summed over space.
  conv_joint_16x4x4x16  the same states with one non-separable conv H(q, p) (HGN's joint form).

Reported per case and mode: leapfrog steps per second (one step advances the whole batch) and
the gradient evaluations per step actually performed, counted by instrumenting the energy
functions (eagerly: calls per step over a run; in graphs: calls traced into one loop body).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import common  # noqa: E402
from common import PhaseSpace, cpu  # noqa: E402


class Counted(tf.Module):
    """An energy network that counts its calls (each call = one gradient evaluation)."""

    def __init__(self, net, name):
        super().__init__(name=name)
        self.net = net
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        return self.net(*args)


class MLPEnergy(tf.Module):
    def __init__(self, in_dim, width=64, depth=2, seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        sizes = [in_dim] + [width] * depth + [1]
        self.w = [tf.Variable((rng.normal(size=(a, b)) / np.sqrt(a)).astype("float32")) for a, b in zip(sizes, sizes[1:])]
        self.b = [tf.Variable(np.zeros(b, "float32")) for b in sizes[1:]]

    def __call__(self, x):
        for w, b in zip(self.w[:-1], self.b[:-1]):
            x = tf.nn.softplus(x @ w + b)
        return tf.squeeze(x @ self.w[-1] + self.b[-1], -1)


class ConvEnergy(tf.Module):
    """Softplus conv net [B, 4, 4, C] -> energy summed over space, as in HGN's Hamiltonian."""

    def __init__(self, in_channels, channels=(32, 32), seed=0):
        super().__init__()
        rng = np.random.default_rng(seed)
        sizes = [in_channels, *channels]
        self.k = [tf.Variable((rng.normal(size=(3, 3, a, b)) / np.sqrt(9 * a)).astype("float32"))
                  for a, b in zip(sizes, sizes[1:])]
        self.out = tf.Variable((rng.normal(size=(1, 1, sizes[-1], 1)) / np.sqrt(sizes[-1])).astype("float32"))

    def __call__(self, x):
        for k in self.k:
            x = tf.nn.softplus(tf.nn.conv2d(x, k, 1, "SAME"))
        return tf.reduce_sum(tf.nn.conv2d(x, self.out, 1, "SAME"), axis=[1, 2, 3])


def make_case(name):
    if name == "mlp_4096x2":
        kin, pot = Counted(MLPEnergy(1, seed=1), "K"), Counted(MLPEnergy(1, seed=2), "V")
        h = common.SeparableHamiltonian(kin, pot)
        shape = (4096, 1)
        counters = {"dK/dp": kin, "dV/dq": pot}
    elif name == "conv_16x4x4x16":
        kin, pot = Counted(ConvEnergy(16, seed=1), "K"), Counted(ConvEnergy(16, seed=2), "V")
        h = common.SeparableHamiltonian(kin, pot)
        shape = (16, 4, 4, 16)
        counters = {"dK/dp": kin, "dV/dq": pot}
    else:
        joint = ConvEnergy(32, channels=(32, 32), seed=3)
        energy = Counted(lambda q, p: joint(tf.concat([q, p], -1)), "H")
        h = common.Hamiltonian(energy)
        shape = (16, 4, 4, 16)
        counters = {"dH (one of dq or dp)": energy}
    rng = np.random.default_rng(0)
    state = PhaseSpace(tf.constant(rng.normal(size=shape), tf.float32), tf.constant(rng.normal(size=shape), tf.float32))
    return h, state, counters


def measure(case, mode, steps, repeats):
    h, state, counters = make_case(case)

    def run(s):
        return common.integrate(h, s, 0.05, steps)

    fn = {"eager": run, "function": tf.function(run), "xla": tf.function(run, jit_compile=True)}[mode]
    for c in counters.values():
        c.calls = 0
    out = fn(state)  # warm-up (and trace)
    _ = out.q.numpy()
    if mode == "eager":
        evals = {k: (c.calls - (1 if k == "dV/dq" else 0)) / steps for k, c in counters.items()}
        evals_note = "calls per step over an eager run (the initial dV/dq excluded)"
    else:
        # One trace: the pre-loop force (separable) plus one loop body.
        evals = {k: c.calls - (1 if k == "dV/dq" else 0) for k, c in counters.items()}
        evals_note = "calls traced into one while-loop body"
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _ = fn(state).q.numpy()
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"steps_per_second": steps / best, "median_steps_per_second": steps / float(np.median(times)),
            "gradient_evaluations_per_step": evals, "how_counted": evals_note}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="leapfrog steps per timed call")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per case (best and median kept)")
    parser.add_argument("--out", default="bench/results/integrators.json")
    args = parser.parse_args()
    results = {}
    for case in ("mlp_4096x2", "conv_16x4x4x16", "conv_joint_16x4x4x16"):
        for mode in ("eager", "function", "xla"):
            steps = max(10, args.steps // 5) if mode == "eager" else args.steps
            r = measure(case, mode, steps, args.repeats)
            results.setdefault(case, {})[mode] = r
            print(f"{case:22s} {mode:8s} {r['steps_per_second']:10.1f} steps/s   grads/step {r['gradient_evaluations_per_step']}",
                  flush=True)
    report = {
        "benchmark": "leapfrog steps per second (whole batch per step), float32, CPU",
        "command": "python bench/integrators.py " + f"--steps {args.steps} --repeats {args.repeats}",
        "cpu": cpu.describe(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "tensorflow": tf.__version__},
        "results": results,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
