#!/usr/bin/env python3
"""Test NLL of NHF against each target's floor and against TFP's RealNVP and MAF.

All three models see the same training samples, the same minibatches (same indices per step),
the same optimiser (Adam, warm-up + cosine schedule, gradient clipping), the same number of
steps and (up to a few percent) the same number of parameters; each has the same learned
elementwise output affine initialised from the data. Reported numbers are test NLL in nats:
exact for RealNVP and MAF, the negative IWAE bound (K = 256, an upper bound on the true NLL)
for NHF, so the comparison is conservative for NHF.

    python bench/nhf_quality.py --steps 3000 --targets mixture,checkerboard
    python bench/nhf_quality.py                    # all five targets, preset `small` settings
    python bench/nhf_quality.py --preset quality --steps 50000 --targets two_moons --keep-runs runs/nhfq
    # score the NHF kept above, retrain only the baseline:
    python bench/nhf_quality.py --preset quality --steps 50000 --targets two_moons --nhf-from runs/nhfq --models nhf,maf

Each baseline row also holds `nhf_nll_minus_this`: NHF's test NLL minus the baseline's, averaged
per test point (> 0 when NHF is worse), with its standard error; the pairing cancels the test
points' own difficulty, so it resolves differences far below either model's own standard error.

RealNVP's coupling networks are tracked `tf.Module`s (`tfb.real_nvp_default_template` would
create untracked compat.v1 variables in TF2); MAF uses
`tfb.AutoregressiveNetwork`, which tracks its variables. Both are seeded: a rerun gives the same figures.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import tf_keras

from common import config as config_lib
from common import cpu
from common.runs import atomic_write_json, holds_checkpoints
from nhf import evaluation, experiment, training
from nhf.config import PRESETS
from nhf.networks import MLP

tfd, tfb = tfp.distributions, tfp.bijectors
DEFAULT_TARGETS = "mixture,checkerboard,two_moons,rings,mixture_nd"


class CouplingNet(tf.Module):
    """RealNVP's shift-and-log-scale function as a tracked module: x[:m] -> (shift, log_scale)."""

    def __init__(self, in_dim, out_dim, widths, seed, dtype):
        super().__init__()
        self.net = MLP(in_dim, 2 * out_dim, widths, "tanh", dtype, seed, out_scale=0.1)

    def __call__(self, x, output_units, **kwargs):
        shift, raw = tf.split(self.net(x), 2, axis=-1)
        return shift, 2.0 * tf.tanh(raw / 2.0)  # bounded log-scale: no overflow early in training


def _affine(data, dtype):
    return tfb.Chain([tfb.Shift(tf.Variable(data.mean(0).astype(dtype))),
                      tfb.ScaleMatvecDiag(tfp.util.TransformedVariable(data.std(0).astype(dtype), tfb.Exp()))])


def build_baseline(kind, dim, n_layers, width, data, dtype, seed=0):
    layers = []
    for i in range(n_layers):
        if kind == "realnvp":
            m = dim // 2
            layers.append(tfb.RealNVP(num_masked=m, shift_and_log_scale_fn=CouplingNet(m, dim - m, (width, width),
                                                                                       seed + i, dtype)))
        else:
            # Seeded like RealNVP's nets: an unseeded initialiser made every MAF run different.
            made = tfb.AutoregressiveNetwork(params=2, event_shape=[dim], hidden_units=[width, width],
                                             activation="tanh", dtype=dtype,
                                             kernel_initializer=tf_keras.initializers.GlorotUniform(seed=seed + i))
            layers.append(tfb.MaskedAutoregressiveFlow(made))
        if i < n_layers - 1:
            layers.append(tfb.Permute(list(reversed(range(dim)))))
    base = tfd.MultivariateNormalDiag(tf.zeros(dim, dtype), tf.ones(dim, dtype))
    dist = tfd.TransformedDistribution(base, tfb.Chain([_affine(data, dtype), *reversed(layers)]))
    dist.log_prob(tf.constant(data[:2]))  # creates the MADE variables
    return dist


def count(variables):
    return int(sum(int(np.prod(v.shape)) for v in variables))


def matched_baseline(kind, dim, n_layers, target_params, data, dtype):
    """The width whose parameter count is closest to `target_params` (n_layers fixed)."""
    best = None
    lo, hi = 2, 512
    while lo <= hi:  # parameter count is monotone in width
        w = (lo + hi) // 2
        n = count(build_baseline(kind, dim, n_layers, w, data[:4], dtype).trainable_variables)
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (w, n)
        if n < target_params:
            lo = w + 1
        else:
            hi = w - 1
    return best


def train_baseline(dist, run, steps):
    c = run.config
    variables = dist.trainable_variables
    optimizer = keras.optimizers.Adam(training.learning_rate_schedule(dataclasses.replace(c, steps=steps)))
    optimizer.build(variables)

    @tf.function(jit_compile=c.jit_compile)
    def grads(batch):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(batch))
        g, norm = tf.clip_by_global_norm(tape.gradient(loss, variables), c.clip_norm)
        return loss, tf.math.is_finite(loss) & tf.math.is_finite(norm), g

    @tf.function
    def apply(g):
        optimizer.apply_gradients(zip(g, variables))

    bad = 0
    batches = iter(training.sample_batches(run.train_data, c.batch_size, seed=c.seed, momenta=1))  # NHF's batches
    t0 = time.perf_counter()
    for s in range(steps):
        loss, ok, g = grads(next(batches)["q"])
        if bool(ok):
            apply(g)
        else:
            bad += 1
    seconds = time.perf_counter() - t0
    lp_fn = tf.function(dist.log_prob, jit_compile=c.jit_compile)
    lp = np.concatenate([lp_fn(tf.constant(chunk)).numpy() for chunk in np.array_split(run.test_data, 10)])
    lp = lp.astype(np.float64)
    return {**_scores(run, lp), "nonfinite_steps": bad, "seconds": seconds, "seconds_per_step": seconds / steps}, lp


def _paired_difference(lp_nhf, lp_other):
    """NHF's test NLL minus the other model's, per test point, averaged: > 0 when NHF is worse.

    Its standard error is far smaller than either model's own, because both models score the
    same points and the points' own difficulty cancels.
    """
    mean, stderr = evaluation.mean_and_stderr(lp_other - lp_nhf)
    return {"nhf_nll_minus_this": mean, "nhf_nll_minus_this_stderr": stderr}


def _scores(run, lp):
    """Test NLL and its standard error, and the paired gap to the target on the same points."""
    summary = evaluation.nll_summary(lp)
    return {"test_nll": summary["nll"], "test_nll_stderr": summary["stderr"],
            **evaluation.paired_gap(run.target, run.test_data, lp)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default=DEFAULT_TARGETS, help="comma-separated target names")
    parser.add_argument("--steps", type=int, default=PRESETS["small"].steps, help="training steps for every model")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS), help="NHF settings")
    parser.add_argument("--models", default="nhf,realnvp,maf", help="subset of nhf,realnvp,maf")
    parser.add_argument("--baseline-layers", type=int, default=4, help="coupling / autoregressive layers")
    parser.add_argument("--test-size", type=int, default=5000, help="test points per target")
    parser.add_argument("--eval-momenta", type=int, default=256, help="K of NHF's IWAE bound")
    parser.add_argument("--keep-runs", metavar="DIR",
                        help="keep each NHF run (checkpoints, config.json, history) in DIR/<target> "
                             "instead of a temporary folder")
    parser.add_argument("--nhf-from", metavar="DIR",
                        help="score the NHF kept by an earlier --keep-runs DIR (same settings) instead of "
                             "training it again; the baselines still train")
    parser.add_argument("--out", default="bench/results/nhf_quality.json", help="results JSON (PNG beside it)")
    args = parser.parse_args(argv)
    if args.keep_runs and args.nhf_from:
        parser.error("--keep-runs and --nhf-from exclude each other")
    models = args.models.split(",")
    unknown = sorted(set(models) - {"nhf", "realnvp", "maf"})
    if unknown:
        parser.error(f"unknown --models {','.join(unknown)}; valid: nhf, realnvp, maf")
    from data import targets as target_registry

    unknown = sorted(set(args.targets.split(",")) - set(target_registry.names()))
    if unknown:
        parser.error(f"unknown --targets {','.join(unknown)}; valid: {', '.join(target_registry.names())}")
    out = Path(args.out)
    results = {"command": "python bench/nhf_quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
               "cpu": cpu.describe(), "machine": {"platform": platform.platform(), "tensorflow": tf.__version__,
                           "tfp": tfp.__version__},
               "note": "test NLL in nats (lower is better); NHF: -IWAE bound (K as given), an upper bound; "
                       "RealNVP/MAF: exact. Shared 2-core CPU: timings noisy.",
               "goals": {"mixture": "within 0.03 of 2.831", "checkerboard": "within 0.15 of 3.466"},
               "rows": []}
    for name in args.targets.split(","):
        config = dataclasses.replace(PRESETS[args.preset], target=name, steps=args.steps, test_size=args.test_size,
                                     eval_momenta=args.eval_momenta, export=False, eval_every=max(args.steps // 4, 1),
                                     checkpoint_every=args.steps)
        row = {"target": name}
        with contextlib.ExitStack() as stack:
            if args.nhf_from:
                d = Path(args.nhf_from) / name
                if not d.is_dir():
                    raise SystemExit(f"--nhf-from: no kept run {str(d)!r} (made by --keep-runs {args.nhf_from})")
            elif args.keep_runs:
                d = Path(args.keep_runs) / name
                if holds_checkpoints(d / training.CHECKPOINT_DIR):
                    raise SystemExit(f"--keep-runs: {str(d)!r} already holds a run; score it with --nhf-from "
                                     f"{args.keep_runs} or choose another folder")
                d.mkdir(parents=True, exist_ok=True)
            else:
                d = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            run = training.build_run(config, d)
            nhf_params = count(run.model.density_variables)
            row["nll_floor"] = run.target.nll_floor
            row["dim"] = run.target.dim
            lp_nhf = None
            if "nhf" in models:
                t0 = time.perf_counter()
                if args.nhf_from:
                    stats = {"restored_from": _restore_nhf(run, config, d)}
                else:
                    atomic_write_json(d / experiment.CONFIG_FILE, config_lib.to_dict(config))
                    trained = training.train(run, d, progress=False)
                    stats = {"nonfinite_steps": trained["nonfinite_steps"],
                             "seconds_per_step": trained["seconds_per_step"]}
                lp_nhf = evaluation.iwae_log_probs(run.density, run.test_data, args.eval_momenta, seed=123)
                if not args.nhf_from:
                    stats["seconds"] = time.perf_counter() - t0
                row["nhf"] = {**_scores(run, lp_nhf), "parameters": nhf_params, **stats}
            for kind in ("realnvp", "maf"):
                if kind not in models:
                    continue
                dtype = run.dtype.as_numpy_dtype
                width, n = matched_baseline(kind, run.target.dim, args.baseline_layers, nhf_params,
                                            run.train_data, dtype)
                dist = build_baseline(kind, run.target.dim, args.baseline_layers, width, run.train_data, dtype)
                scores, lp = train_baseline(dist, run, args.steps)
                row[kind] = {"parameters": count(dist.trainable_variables), "layers": args.baseline_layers,
                             "width": width, **scores}
                if lp_nhf is not None:
                    row[kind].update(_paired_difference(lp_nhf, lp))
        floor = row["nll_floor"]
        for kind in models:
            if floor is not None and kind in row:
                row[kind]["gap"] = row[kind]["test_nll"] - floor
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        atomic_write_json(out, results)
    _table(results)
    _plot(results, out.with_suffix(".png"), models)
    return 0


def _restore_nhf(run, config, run_dir):
    """Loads the NHF an earlier `--keep-runs` trained with these settings; returns its checkpoint."""
    try:
        experiment.check_saved_config(config, run_dir, flag="--nhf-from")
        path = training.restore_latest(run, required=True)
    except training.RunError as e:
        raise SystemExit(f"--nhf-from {run_dir}: {e}")
    if run.step != config.steps:
        raise SystemExit(f"--nhf-from: {path} is at step {run.step}, not --steps {config.steps}")
    return path


def _table(results):
    print("\n| target | floor | NHF | RealNVP | MAF |\n|---|---|---|---|---|")
    for r in results["rows"]:
        cells = [(f"{r[k]['test_nll']:.3f}" + (f" (KL {r[k]['gap_paired']:.3f})" if "gap_paired" in r[k] else "")
                  + (f" (NHF - this {r[k]['nhf_nll_minus_this']:+.3f} +- {r[k]['nhf_nll_minus_this_stderr']:.3f})"
                     if "nhf_nll_minus_this" in r[k] else ""))
                 if k in r else "-" for k in ("nhf", "realnvp", "maf")]
        floor = f"{r['nll_floor']:.3f}" if r["nll_floor"] is not None else "?"
        print(f"| {r['target']} | {floor} | " + " | ".join(cells) + " |")


def _plot(results, path, models):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["nll_floor"] is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(models)
    for i, kind in enumerate(models):
        gaps = [r[kind]["gap"] if kind in r else np.nan for r in rows]
        ax.bar(np.arange(len(rows)) + i * width, gaps, width, label=kind)
    ax.set_xticks(np.arange(len(rows)) + width * (len(models) - 1) / 2)
    ax.set_xticklabels([r["target"] for r in rows])
    ax.set_ylabel("test NLL - floor (nats)")
    ax.set_title("NHF vs RealNVP vs MAF: gap to the true NLL (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
