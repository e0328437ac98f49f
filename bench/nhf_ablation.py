#!/usr/bin/env python3
"""Ablation of NHF on `mixture`: network width and depth, number of Hamiltonians T, leapfrog
steps and step size (integration time), learned versus fixed kinetic energy, prior, activation.

Every variant starts from the `small` preset and changes one thing; all train for the same
steps on the same data and minibatches. Reported: test NLL (-IWAE bound, K as given; lower is
better, floor 2.831), parameter count, seconds per training step.

    python bench/nhf_ablation.py --steps 2000
    python bench/nhf_ablation.py --steps 500 --only base,fixed_kinetic     # a quick look
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

import numpy as np
import tensorflow as tf

from common import cpu
from common.runs import atomic_write_json
from nhf import evaluation, training
from nhf.config import PRESETS

# (name, group, overrides of the small preset)
VARIANTS = [
    ("base", "base", {}),
    ("width_32", "width", {"widths": (32, 32)}),
    ("width_128", "width", {"widths": (128, 128)}),
    ("depth_1", "depth", {"widths": (64,)}),
    ("depth_3", "depth", {"widths": (64, 64, 64)}),
    ("T_1", "hamiltonians", {"num_hamiltonians": 1}),
    ("T_4", "hamiltonians", {"num_hamiltonians": 4}),
    ("steps_2_eps_0.5", "integration (same time 1.0)", {"n_steps": 2, "step_size": 0.5}),
    ("steps_8_eps_0.125", "integration (same time 1.0)", {"n_steps": 8, "step_size": 0.125}),
    ("steps_4_eps_0.1", "integration time", {"step_size": 0.1}),
    ("steps_4_eps_0.5", "integration time", {"step_size": 0.5}),
    ("fixed_kinetic", "kinetic", {"kinetic": "fixed"}),
    ("prior_learned_normal", "prior", {"prior": "learned_normal"}),
    ("prior_student_t", "prior", {"prior": "student_t"}),
    ("prior_laplace", "prior", {"prior": "laplace"}),
    ("activation_tanh", "activation", {"activation": "tanh"}),
    ("activation_swish", "activation", {"activation": "swish"}),
    ("no_affine", "output affine", {"affine": False}),
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="training steps per variant")
    parser.add_argument("--target", default="mixture", help="target density")
    parser.add_argument("--only", default="", help="comma-separated variant names (default: all)")
    parser.add_argument("--test-size", type=int, default=3000, help="test points")
    parser.add_argument("--eval-momenta", type=int, default=128, help="K of the IWAE bound")
    parser.add_argument("--out", default="bench/results/nhf_ablation.json", help="results JSON (PNG beside it)")
    args = parser.parse_args(argv)
    only = set(filter(None, args.only.split(",")))
    names = [name for name, _, _ in VARIANTS]
    if only - set(names):
        parser.error(f"--only: unknown variant(s) {', '.join(sorted(only - set(names)))}; valid: {', '.join(names)}")
    out = Path(args.out)
    results = {"command": "python bench/nhf_ablation.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "cpu": cpu.describe(), "machine": {"platform": platform.platform(), "tensorflow": tf.__version__},
               "note": "test NLL = -IWAE bound in nats (upper bound), one seed per variant (differences below "
                       "~0.03 nats are within run-to-run noise); shared 2-core CPU: step times noisy",
               "base_config": {k: v for k, v in dataclasses.asdict(PRESETS["small"]).items()},
               "rows": []}
    for name, group, overrides in VARIANTS:
        if only and name not in only:
            continue
        config = dataclasses.replace(PRESETS["small"], target=args.target, steps=args.steps, test_size=args.test_size,
                                     eval_momenta=args.eval_momenta, export=False, eval_every=args.steps,
                                     checkpoint_every=args.steps, **overrides)
        with tempfile.TemporaryDirectory() as d:
            run = training.build_run(config, d)
            t0 = time.perf_counter()
            stats = training.train(run, d, progress=False)
            ev = evaluation.iwae_nll(run.density, run.test_data, args.eval_momenta, seed=321)
        row = {"name": name, "group": group, "overrides": {k: list(v) if isinstance(v, tuple) else v
                                                           for k, v in overrides.items()},
               "test_nll": ev["nll"], "test_nll_stderr": ev["stderr"], "gap": ev["nll"] - run.target.nll_floor,
               "parameters": int(sum(int(np.prod(v.shape)) for v in run.model.density_variables)),
               "seconds_per_step": stats["seconds_per_step"], "nonfinite_steps": stats["nonfinite_steps"],
               "wall_seconds": time.perf_counter() - t0}
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        atomic_write_json(out, results)
    floor = run.target.nll_floor
    print(f"\n| variant | group | test NLL | gap to {floor:.3f} | params | s/step |\n|---|---|---|---|---|---|")
    for r in results["rows"]:
        print(f"| {r['name']} | {r['group']} | {r['test_nll']:.3f} +- {r['test_nll_stderr']:.3f} | {r['gap']:.3f} | "
              f"{r['parameters']} | {r['seconds_per_step']:.4f} |")
    _plot(results, out.with_suffix(".png"), floor)
    return 0


def _plot(results, path, floor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    groups = sorted({r["group"] for r in rows})
    colours = {g: plt.cm.tab10(i % 10) for i, g in enumerate(groups)}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 0.35 * len(rows) + 1.5), sharey=True)
    y = np.arange(len(rows))
    ax1.barh(y, [r["gap"] for r in rows], xerr=[2 * r["test_nll_stderr"] for r in rows],
             color=[colours[r["group"]] for r in rows])
    ax1.set_yticks(y)
    ax1.set_yticklabels([r["name"] for r in rows])
    ax1.invert_yaxis()
    ax1.set_xlabel(f"test NLL - floor ({floor:.3f}) [nats]")
    ax2.barh(y, [r["seconds_per_step"] * 1000 for r in rows], color=[colours[r["group"]] for r in rows])
    for yi, r in zip(y, rows):
        ax2.text(r["seconds_per_step"] * 1000, yi, f" {r['parameters']:,} params", va="center", fontsize=7)
    ax2.set_xlabel("ms per training step (batch 256)")
    fig.suptitle("NHF ablation on mixture (one change from preset small per row)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
