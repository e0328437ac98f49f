"""One HGN run from its settings to its outputs: `run_experiment`, which `train_hgn.py`
(`hgn.cli`) calls once it has checked the command line (as `nhf.experiment` for NHF).

Run directory layout:

    config.json            the full config, dataset, data directory and compute dtype of the run
    checkpoints/           tf.train checkpoints (networks, both optimizers, GECO, step counter)
    logs/                  TensorBoard
    history.json           training scalars (loss, reconstruction, KL, GECO multiplier, ...)
    metrics.json           evaluation (see hgn.evaluation) and timings
    rollout_{forward,backward}.{png,gif}, mse_over_time.png, latent_energy.png, samples.gif,
    long_horizon.png       per-frame test MSE beyond the training window (--long-horizon-frames)
    training_curves.png    reconstruction MSE (training batches and the test curve), KL, GECO multiplier
    test_curve.json        test MSE forward and backward during training (--curve-every-minutes)
    saved_model/           SavedModel (see hgn.serving); not with --no-export
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import tensorflow as tf

import data
from common import config as config_lib
from common import cpu, distribute
from common.runs import RunError, atomic_write_json, check_resumable, holds_checkpoints, load_history, stale_export_note
from hgn import evaluation, plots, training
from hgn.config import RESUMABLE_CHANGES, HGNConfig
from hgn.serving import export as export_saved_model
from hgn.model import HGN

Say = Callable[[str], None]


def announce_compute_dtype(config: HGNConfig, say: Say) -> str:
    """The compute dtype this run uses (`auto` resolved for this CPU), said once; warns when
    bfloat16 is forced on a CPU that only emulates it."""
    chosen = cpu.resolve_compute_dtype(config.compute_dtype)
    if config.compute_dtype == "bfloat16" and not cpu.native_bfloat16():
        print("warning: --compute-dtype bfloat16 on a CPU without AMX or AVX-512 BF16: bfloat16 is emulated "
              "there, typically tens of times slower than float32, and its bias gradients are summed in "
              "bfloat16 (measured up to 94% off float32); --compute-dtype auto picks float32",
              file=sys.stderr, flush=True)
    why = ""
    if config.compute_dtype == "auto":
        why = " (auto: the CPU has " + ("native bfloat16)" if chosen == "bfloat16" else "no native bfloat16)")
    say(f"compute dtype: {chosen}{why}")
    return chosen


def prepare_data(dataset: str, config: HGNConfig, data_dir, strategy: tf.distribute.Strategy, say: Say,
                 progress: bool):
    """The run's TFDS builder, the dataset generated on first use. Multi-worker: the chief
    generates it first and the others then find it (shared or local storage: generation is
    seeded, so a worker that has to make its own copy makes the same one)."""
    say(f"preparing {dataset} ({config.n_train} train / {config.n_test} test trajectories) in {data_dir}")

    def prepare():
        return data.prepare(dataset, data_dir=data_dir, n_train=config.n_train, n_test=config.n_test,
                            progress=progress, **config.data_variant())

    builder = prepare() if distribute.is_chief(strategy) else None
    distribute.barrier(strategy)
    return builder or prepare()


def build_and_restore(config: HGNConfig, run_dir: Path, strategy: tf.distribute.Strategy, resume: bool, say: Say
                      ) -> Tuple[HGN, tf.train.CheckpointManager, Optional[str]]:
    """The model under `strategy`, its checkpoint manager, and the checkpoint it resumed from.

    Every worker restores the chief's newest checkpoint (multi-worker resume needs the run
    directory on storage all workers can read); non-chief workers then save into their scratch
    directories."""
    model = training.build_model(config, strategy)
    manager = training.checkpoint_manager(model, run_dir)
    restored = training.restore_latest(model, training.checkpoint_manager(model, run_dir, scratch=False),
                                       required=resume)
    if restored:
        say(f"resumed from {restored} at step {int(model.train_steps.numpy())}")
    return model, manager, restored


def train(model: HGN, manager: tf.train.CheckpointManager, builder, dataset: str, run_dir: Path,
          verbose: int) -> None:
    """Trains to `config.steps` (or the time budget) on the dataset's repeated training split,
    with the held-out test-MSE curve when `config.curve_every_minutes` is set (chief only)."""
    config = model.config
    chief = distribute.is_chief(model.distribute_strategy)
    ds = data.make_dataset(dataset, "train", builder=builder, window=config.window, batch_size=config.batch_size,
                           shuffle=True, seed=config.seed, repeat=True)
    curve_frames = None
    if config.curve_every_minutes and chief:
        curve_frames = evaluation.load_split(builder, "test", config, config.curve_trajectories)["frames"]
    training.train(model, ds, run_dir, manager=manager, verbose=verbose if chief else 0, curve_frames=curve_frames)


def evaluate_and_export(model: HGN, builder, dataset: str, run_dir: Path,
                        step: int) -> Tuple[Dict[str, object], Dict[str, str]]:
    """Scores the model (see `hgn.evaluation.evaluate`), draws the run's pictures and (with
    `config.export`) exports the SavedModel with the config's serving caps (`serve_max_*`).

    Returns:
      The metrics (with their private arrays) and the files written, by kind.
    """
    config = model.config
    train_arrays = evaluation.load_split(builder, "train", config, config.eval_trajectories)
    test_arrays = evaluation.load_split(builder, "test", config, config.eval_trajectories)
    fine, long_test = evaluation.fresh_test_sets(dataset, config)
    metrics = evaluation.evaluate(model, train_arrays, test_arrays, fine_test=fine, long_test=long_test)
    samples = model.sample(8, config.eval_frames - 1, seed=config.seed + 1)["frames"].numpy()
    files = plots.save_run_plots(run_dir, metrics, test_arrays["frames"], samples, config.input_frames, config.dt)
    history = load_history(run_dir, step)
    if history:
        plots.training_curves(run_dir / "training_curves.png", history,
                              load_history(run_dir, step, training.CURVE_FILE))
        files["training_curves"] = "training_curves.png"
    if config.export:
        export_saved_model(model, run_dir / "saved_model", max_steps=config.serve_max_steps,
                           max_batch=config.serve_max_batch, max_samples=config.serve_max_samples,
                           max_frames=config.serve_max_frames)
    return metrics, files


def _timings(seconds: Dict[str, float], trained_steps: int, batch_size: int) -> Dict[str, object]:
    train = seconds["train"]
    return {"timing_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "train_samples_per_second": round(trained_steps * batch_size / train, 2) if trained_steps and train else None}


def check_saved_config(config: HGNConfig, run_dir: Path) -> None:
    """Raises `RunError` naming every field in which `config` differs from the run's saved
    `config.json` (fields in `hgn.config.RESUMABLE_CHANGES` may differ); a run without one passes."""
    path = Path(run_dir) / "config.json"
    if path.exists():
        saved = config_lib.to_dict(config_lib.from_dict(HGNConfig, json.loads(path.read_text())["config"]))
        check_resumable(saved, config_lib.to_dict(config), RESUMABLE_CHANGES, path)


def run_experiment(config: HGNConfig, dataset: str, run_dir, *, data_dir=None, resume: bool = False,
                   eval_only: bool = False, verbose: int = 1, strategy: Optional[tf.distribute.Strategy] = None,
                   command: str = "") -> Optional[Dict]:
    """Trains (or resumes, or only re-evaluates) an HGN and writes every output into `run_dir`.

    Args:
      config: the run's settings (validated).
      dataset: one of `data.SYSTEMS`, generated into `data_dir` on first use.
      run_dir: output folder (see the module docstring).
      data_dir: TFDS data directory (None: `data.DEFAULT_DATA_DIR`).
      resume: continue from the newest checkpoint in `run_dir`.
      eval_only: with `resume`, only evaluate and re-export (with `config.export`).
      verbose: 0 silent, 1 progress bar, 2 one line per checkpoint interval.
      strategy: the `tf.distribute` strategy (`common.distribute.make_strategy`; None: default).
      command: the command line, recorded in metrics.json.

    Returns:
      What metrics.json holds, on the chief; None on other workers (they train in lockstep and
      write nothing).

    Raises:
      RunError: `run_dir` already holds checkpoints and `resume` is off, or `resume` finds none.
      NonFiniteLossError: training diverged despite rollbacks.
    """
    run_dir = Path(run_dir)
    strategy = strategy or tf.distribute.get_strategy()
    chief = distribute.is_chief(strategy)
    say: Say = (lambda line: print(line, flush=True)) if verbose and chief else (lambda line: None)
    compute_dtype = announce_compute_dtype(config, say)
    data_dir = data_dir or data.DEFAULT_DATA_DIR
    if not resume and holds_checkpoints(run_dir / training.CHECKPOINT_DIR):
        raise RunError(f"--run-dir {str(run_dir)!r} already holds checkpoints; pass --resume to continue it "
                       f"or choose another --run-dir")
    if resume:
        check_saved_config(config, run_dir)  # before config.json is rewritten with the new config
    if chief:
        atomic_write_json(run_dir / "config.json", {"dataset": dataset, "data_dir": str(data_dir),
                                                    "compute_dtype": compute_dtype,
                                                    "config": config_lib.to_dict(config)})
    seconds = {}
    t0 = time.time()
    builder = prepare_data(dataset, config, data_dir, strategy, say, progress=bool(verbose) and chief)
    seconds["data"] = time.time() - t0
    model, manager, restored = build_and_restore(config, run_dir, strategy, resume, say)
    start = int(model.train_steps.numpy())
    t1 = time.time()
    if not eval_only:
        train(model, manager, builder, dataset, run_dir, verbose)
    seconds["train"] = time.time() - t1
    end = int(model.train_steps.numpy())
    if not chief:
        distribute.remove_scratch(Path(manager.directory).parent, strategy)
        distribute.barrier(strategy)
        return None
    if strategy.num_replicas_in_sync > 1 and manager.latest_checkpoint:
        # Evaluate and export plain (not mirrored) variables: a default-strategy copy of the model.
        model = training.build_model(config)
        training.restore_latest(model, training.checkpoint_manager(model, run_dir), required=True)
    say("evaluating")
    t2 = time.time()
    metrics, files = evaluate_and_export(model, builder, dataset, run_dir, end)
    seconds["eval_export"] = time.time() - t2
    if not config.export and (run_dir / "saved_model").is_dir():
        say(f"note: {stale_export_note('train_hgn.py', run_dir)}")
    result = {
        "dataset": dataset, "step": end, "resumed_from_step": start if restored else None,
        "config": config_lib.to_dict(config), "files": files, **_timings(seconds, end - start, config.batch_size),
        "command": command,
        "strategy": {"name": distribute.strategy_name(strategy), "replicas": strategy.num_replicas_in_sync},
        "compute_dtype": compute_dtype, "cpu": cpu.describe(), **evaluation.public(metrics),
    }
    atomic_write_json(run_dir / "metrics.json", result)
    distribute.barrier(strategy)
    return result


def summary(result: Dict, run_dir) -> str:
    """The lines a run ends with: the test MSE beside the mean-frame baseline, and the long horizon."""
    lines = [f"step {result['step']}: test MSE x1e-4 forward {result['test_forward']['mse_x1e4']:.2f}, "
             f"backward {result['test_backward']['mse_x1e4']:.2f} (mean-frame baseline "
             f"{result['test_mean_frame_mse_x1e4']:.2f}); wrote {run_dir}"]
    if "long_horizon" in result:
        lh = result["long_horizon"]
        lines.append(f"long horizon, {lh['frames_beyond']} frames beyond the window: test MSE x1e-4 forward "
                     f"{lh['forward']['mse_x1e4']:.2f}, backward {lh['backward']['mse_x1e4']:.2f}; VPT "
                     f"{lh['forward']['vpt_median_frames']:g} / {lh['backward']['vpt_median_frames']:g} frames")
    return "\n".join(lines)
