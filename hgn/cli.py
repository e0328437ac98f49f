"""The `train_hgn.py` command line: parse, prepare data, train, evaluate, write the run directory.

Run directory layout:

    config.json            the full config, dataset and data directory of the run
    checkpoints/           tf.train checkpoints (networks, both optimizers, GECO, step counter)
    logs/                  TensorBoard
    metrics.json           evaluation (see hgn.evaluation) and timings
    rollout_{forward,backward}.{png,gif}, mse_over_time.png, latent_energy.png, samples.gif,
    long_horizon.png       per-frame test MSE beyond the training window (--long-horizon-frames)
    training_curves.png    reconstruction MSE (training batches and the test curve), KL, GECO multiplier
    test_curve.json        test MSE forward and backward during training (--curve-every-minutes)
    saved_model/           SavedModel (see hgn.export)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from common import config as config_lib
from common import console, cpu, distribute
from common.runs import RunError, atomic_write_json, check_writable_dir, holds_checkpoints, load_history
from hgn.config import DEFAULT_PRESET, PRESETS, HGNConfig, presets_for

DESCRIPTION = """Train and evaluate a Hamiltonian Generative Network on a rendered physics dataset.

  python train_hgn.py --dataset pendulum                     # small preset, runs/hgn-pendulum
  python train_hgn.py --dataset mass_spring --preset paper --run-dir runs/ms-paper
  python train_hgn.py --run-dir runs/hgn-pendulum --resume   # continue an interrupted run
  python train_hgn.py --run-dir runs/hgn-pendulum --resume --eval-only

The dataset is generated into --data-dir on first use. With --resume the run's saved config is
used; config flags given on the command line (e.g. a larger --steps) override it.
"""


def build_parser() -> argparse.ArgumentParser:
    """The full parser: run flags, then one flag per `HGNConfig` field."""
    parser = config_lib.config_parser(HGNConfig, PRESETS, DEFAULT_PRESET, description=DESCRIPTION)
    run = parser.add_argument_group("run")
    run.add_argument("--dataset", default=None,
                     help="physics system: pendulum, mass_spring, double_pendulum, two_body, three_body "
                          "(default: pendulum, or the resumed run's)")
    run.add_argument("--run-dir", default=None, help="output directory (default: runs/hgn-DATASET)")
    run.add_argument("--data-dir", default=None, help="TFDS data directory (default: the data package's, datasets/)")
    run.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last checkpoint")
    run.add_argument("--eval-only", action="store_true", help="with --resume: only evaluate and re-export")
    run.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="0 silent, 1 progress bar, 2 one line per checkpoint interval and the libraries' "
                          "warnings (default 1)")
    run.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    from hgn.export import MAX_BATCH, MAX_SAMPLES, MAX_STEPS

    def cap(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"expects a positive integer, got {text!r}")
        return int(text)

    run.add_argument("--serve-max-steps", type=cap, default=MAX_STEPS, metavar="N",
                     help=f"SavedModel serving cap: n_steps per request (default {MAX_STEPS})")
    run.add_argument("--serve-max-batch", type=cap, default=MAX_BATCH, metavar="N",
                     help=f"SavedModel serving cap: clips (or states) per request (default {MAX_BATCH})")
    run.add_argument("--serve-max-samples", type=cap, default=MAX_SAMPLES, metavar="N",
                     help=f"SavedModel serving cap: n of a sample request (default {MAX_SAMPLES})")
    run.add_argument("--serve-max-frames", type=cap, default=None, metavar="N",
                     help="SavedModel serving cap: frames decoded per request, batch x (n_steps + 1) "
                          "(default: what fits in 2 GiB for this decoder)")
    distribute.add_arguments(parser)
    return parser


def _resolve(argv: Optional[Sequence[str]]):
    import data

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.eval_only and not args.resume:
        parser.error("--eval-only needs --resume (there is nothing to evaluate in a fresh run)")
    if args.resume and args.run_dir is None:
        parser.error("--resume needs --run-dir")
    saved = None
    if args.resume:
        run_dir = Path(args.run_dir)
        if not run_dir.is_dir():
            parser.error(f"--resume: run directory {str(run_dir)!r} does not exist")
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except FileNotFoundError:
            parser.error(f"--resume: {str(run_dir / 'config.json')!r} is missing; not a train_hgn.py run directory")
        if isinstance(saved, dict) and "target" in saved and "dataset" not in saved:
            parser.error(f"--resume: {args.run_dir!r} is a train_nhf.py run (it has a 'target'), "
                         "not a train_hgn.py run")
        if not isinstance(saved, dict) or "dataset" not in saved:
            parser.error(f"--resume: {str(run_dir / 'config.json')!r} has no 'dataset'; "
                         "not a train_hgn.py run directory")
    dataset = args.dataset or (saved["dataset"] if saved else "pendulum")
    if dataset not in data.SYSTEMS:
        parser.error(f"unknown --dataset {dataset!r}; valid: {', '.join(data.SYSTEMS)}")
    if saved and saved["dataset"] != dataset:
        parser.error(f"--resume: the run in {args.run_dir!r} trained on {saved['dataset']!r}, not {dataset!r}")
    try:
        if saved:
            base = config_lib.from_dict(HGNConfig, saved["config"])
            config = config_lib.config_from_args(HGNConfig, {args.preset: base}, args)
        else:
            config = config_lib.config_from_args(HGNConfig, presets_for(dataset), args)
    except ValueError as e:
        parser.error(str(e))
    distribute.check_arguments(parser, args, config.batch_size)
    if args.strategy == "multi_worker" and config.max_train_minutes:
        parser.error("--max-train-minutes cannot be used with --strategy multi_worker (each worker would stop at "
                     "its own time); use --steps")
    run_dir = Path(args.run_dir or f"runs/hgn-{dataset}")
    data_dir = args.data_dir or (saved or {}).get("data_dir")
    return args, config, dataset, run_dir, data_dir


def _announce_compute_dtype(config: HGNConfig, say) -> str:
    """The compute dtype this run uses (`auto` resolved for this CPU), said once; warns when
    bfloat16 is forced on a CPU that only emulates it."""
    chosen = cpu.resolve_compute_dtype(config.compute_dtype)
    if config.compute_dtype == "bfloat16" and not cpu.native_bfloat16():
        print("warning: --compute-dtype bfloat16 on a CPU without AMX or AVX-512 BF16: bfloat16 is emulated "
              "there, typically tens of times slower than float32; --compute-dtype auto picks float32",
              file=sys.stderr, flush=True)
    why = ""
    if config.compute_dtype == "auto":
        why = " (auto: the CPU has " + ("native bfloat16)" if chosen == "bfloat16" else "no native bfloat16)")
    say(f"compute dtype: {chosen}{why}")
    return chosen


def _load_eval_split(builder, split: str, config: HGNConfig, n: int) -> Dict[str, np.ndarray]:
    import data

    n = min(n, builder.info.splits[split].num_examples)
    ds = data.make_dataset(None, split, builder=builder, window=config.eval_frames, batch_size=n, shuffle=False,
                           window_start=0, drop_remainder=False)
    batch = next(iter(ds))
    return {"frames": batch["frames"].numpy(), "x": batch["x"].numpy()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `train_hgn.py` (see `DESCRIPTION`); returns the exit status."""
    args, config, dataset, run_dir, data_dir = _resolve(argv)
    check_writable_dir(run_dir)
    console.quiet(args.verbose < 2)
    try:
        # Before anything initialises TensorFlow's devices (mirrored splits the CPU).
        strategy = distribute.make_strategy(args.strategy, args.replicas)
    except ValueError as e:
        raise RunError(str(e)) from None
    chief = distribute.is_chief(strategy)
    import data

    from hgn import evaluation, plots, training
    from hgn.export import export as export_saved_model

    say = (lambda *a: print(*a, flush=True)) if args.verbose and chief else (lambda *a: None)
    compute_dtype = _announce_compute_dtype(config, say)
    data_dir = data_dir or data.DEFAULT_DATA_DIR
    if not args.resume:
        if holds_checkpoints(run_dir / training.CHECKPOINT_DIR):
            raise RunError(f"--run-dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue it "
                           f"or choose another --run-dir")
    if chief:
        atomic_write_json(run_dir / "config.json", {"dataset": dataset, "data_dir": str(data_dir),
                                                    "compute_dtype": compute_dtype,
                                                    "config": config_lib.to_dict(config)})
    t0 = time.time()
    say(f"preparing {dataset} ({config.n_train} train / {config.n_test} test trajectories) in {data_dir}")
    def prepare():
        return data.prepare(dataset, data_dir=data_dir, n_train=config.n_train, n_test=config.n_test,
                            progress=bool(args.verbose) and chief, **config.data_variant())

    # Multi-worker: the chief generates the dataset first; the others then find it (shared or local
    # storage: generation is seeded, so a worker that has to make its own copy makes the same one).
    builder = prepare() if chief else None
    distribute.barrier(strategy)
    builder = builder or prepare()
    t_data = time.time() - t0

    model = training.build_model(config, strategy)
    manager = training.checkpoint_manager(model, run_dir)
    # Every worker restores the chief's newest checkpoint (multi-worker --resume needs --run-dir on
    # storage all workers can read); non-chief workers then save into their scratch directories.
    restored = training.restore_latest(model, training.checkpoint_manager(model, run_dir, scratch=False),
                                       required=args.resume)
    start = int(model.train_steps.numpy())
    if restored:
        say(f"resumed from {restored} at step {start}")
    t1 = time.time()
    if not args.eval_only:
        ds = data.make_dataset(dataset, "train", builder=builder, window=config.window, batch_size=config.batch_size,
                               shuffle=True, seed=config.seed, repeat=True)
        curve_frames = None
        if config.curve_every_minutes and chief:
            curve_frames = _load_eval_split(builder, "test", config, config.curve_trajectories)["frames"]
        training.train(model, ds, run_dir, manager=manager, verbose=args.verbose if chief else 0,
                       curve_frames=curve_frames)
    t_train = time.time() - t1
    end = int(model.train_steps.numpy())
    if not chief:
        # Non-chief workers trained in lockstep; the chief evaluates and writes the outputs.
        distribute.remove_scratch(Path(manager.directory).parent, strategy)
        distribute.barrier(strategy)
        return 0
    if strategy.num_replicas_in_sync > 1 and manager.latest_checkpoint:
        # Evaluate and export plain (not mirrored) variables: a default-strategy copy of the model.
        model = training.build_model(config)
        training.restore_latest(model, training.checkpoint_manager(model, run_dir), required=True)

    say("evaluating")
    t2 = time.time()
    train_arrays = _load_eval_split(builder, "train", config, config.eval_trajectories)
    test_arrays = _load_eval_split(builder, "test", config, config.eval_trajectories)
    # Fresh test trajectories (other seeds than the dataset's) of the same variant: rendered at
    # dt / 2 for the time-rescaling check, and longer ones for the long-horizon evaluation.
    variant = config.data_variant()
    fine = data.generate_arrays(dataset, min(64, config.eval_trajectories), **{
        **variant, "n_frames": 2 * (config.eval_frames - 1) + 1, "dt": config.dt / 2,
        "seed": config.data_seed + 7919})["images"]
    long_test = None
    if config.long_horizon_frames:
        long_test = data.generate_arrays(dataset, config.long_horizon_trajectories, num_workers=None, **{
            **variant, "n_frames": config.long_horizon_start + config.long_horizon_frames,
            "seed": config.data_seed + 104729})["images"]
    metrics = evaluation.evaluate(model, train_arrays, test_arrays, fine_test=fine, long_test=long_test)
    samples = model.sample(8, config.eval_frames - 1, seed=config.seed + 1)["frames"].numpy()
    files = plots.save_run_plots(run_dir, metrics, test_arrays["frames"], samples, config.input_frames, config.dt)
    history = load_history(run_dir, end)
    if history:
        plots.training_curves(run_dir / "training_curves.png", history,
                              load_history(run_dir, end, training.CURVE_FILE))
        files["training_curves"] = "training_curves.png"
    export_saved_model(model, run_dir / "saved_model", max_steps=args.serve_max_steps, max_batch=args.serve_max_batch,
                       max_samples=args.serve_max_samples, max_frames=args.serve_max_frames)
    t_eval = time.time() - t2

    trained = end - start
    result = {
        "dataset": dataset, "step": end, "resumed_from_step": start if restored else None,
        "config": config_lib.to_dict(config), "files": files,
        "timing_seconds": {"data": round(t_data, 1), "train": round(t_train, 1), "eval_export": round(t_eval, 1)},
        "train_samples_per_second": round(trained * config.batch_size / t_train, 2) if trained and t_train else None,
        "command": " ".join(["train_hgn.py", *(sys.argv[1:] if argv is None else argv)]),
        "strategy": {"name": args.strategy, "replicas": strategy.num_replicas_in_sync},
        "compute_dtype": compute_dtype, "cpu": cpu.describe(),
        **evaluation.public(metrics),
    }
    atomic_write_json(run_dir / "metrics.json", result)
    distribute.barrier(strategy)
    say(f"step {end}: test MSE x1e-4 forward {metrics['test_forward']['mse_x1e4']:.2f}, "
        f"backward {metrics['test_backward']['mse_x1e4']:.2f} (mean-frame baseline "
        f"{metrics['test_mean_frame_mse_x1e4']:.2f}); wrote {run_dir}")
    if "long_horizon" in metrics:
        lh = metrics["long_horizon"]
        say(f"long horizon, {lh['frames_beyond']} frames beyond the window: test MSE x1e-4 forward "
            f"{lh['forward']['mse_x1e4']:.2f}, backward {lh['backward']['mse_x1e4']:.2f}; VPT "
            f"{lh['forward']['vpt_median_frames']:g} / {lh['backward']['vpt_median_frames']:g} frames")
    return 0
