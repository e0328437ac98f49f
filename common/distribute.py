"""Choosing a `tf.distribute` strategy from the command line, and determinism.

    --strategy default       no distribution (the default strategy)
    --strategy mirrored      MirroredStrategy over the visible devices (GPUs, or logical CPUs
                             made with --replicas N on a CPU-only machine)
    --strategy multi_worker  MultiWorkerMirroredStrategy, configured by the TF_CONFIG variable:
                             '{"cluster": {"worker": ["host1:port", "host2:port"]},
                               "task": {"type": "worker", "index": 0}}'

Batch sizes passed to the trainers are global: each replica sees batch / replicas examples.
Checkpoints and exports are written by the chief (worker 0) only.

TensorFlow is imported inside the functions that use it: the command lines add and check these
flags before TensorFlow loads.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from common.config import given
from common.runs import claim_run_dir

STRATEGIES = ("default", "mirrored", "multi_worker")


def split_cpu(n: int) -> None:
    """Splits the physical CPU into `n` logical devices (before TensorFlow initialises).

    Raises:
      ValueError: if n < 1, or TensorFlow already initialised its devices with another split.
    """
    import tensorflow as tf

    if n < 1:
        raise ValueError(f"--replicas must be >= 1, got {n}")
    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == n:
        return
    if n == 1 and current is None:
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError as e:
        raise ValueError(f"cannot split the CPU into {n} devices after TensorFlow has started: {e}") from None


def tf_config() -> Optional[dict]:
    """The parsed TF_CONFIG environment variable, validated; None when unset.

    Raises:
      ValueError: naming what is wrong with TF_CONFIG.
    """
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON: {e.msg} at character {e.pos}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError("TF_CONFIG needs a non-empty 'cluster', e.g. {\"worker\": [\"localhost:12345\", ...]}")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise ValueError("TF_CONFIG needs a 'task' with 'type' and 'index', e.g. {\"type\": \"worker\", \"index\": 0}")
    members = cluster.get(task["type"])
    if not isinstance(members, list) or not 0 <= int(task["index"]) < len(members):
        raise ValueError(f"TF_CONFIG task {task} is not in the cluster {cluster}")
    return config


def make_strategy(name: str, replicas: int = 1) -> tf.distribute.Strategy:
    """The strategy named `name` (one of `STRATEGIES`).

    Args:
      name: `default`, `mirrored` or `multi_worker`.
      replicas: for `mirrored` on a machine without GPUs, the number of logical CPU devices to
        mirror over (the CPU is split; must run before TensorFlow initialises its devices).

    Raises:
      ValueError: unknown name (listing the valid ones), or `multi_worker` without a valid
        TF_CONFIG.
    """
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ValueError(f"unknown --strategy {name!r}; valid: {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy()
        split_cpu(replicas)
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        # Cross-device ops on CPU: the default NCCL path needs GPUs.
        return tf.distribute.MirroredStrategy(devices=devices,
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if tf_config() is None:
        raise ValueError("--strategy multi_worker needs the TF_CONFIG environment variable (see README)")
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """`default`, `mirrored` or `multi_worker` (the `--strategy` names), else the class name."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    if strategy is tf.distribute.get_strategy() and not tf.distribute.has_strategy():
        return "default"
    return type(strategy).__name__


def is_chief(strategy: Optional[tf.distribute.Strategy] = None) -> bool:
    """Whether this process writes checkpoints and exports (worker 0, or a chief task)."""
    import tensorflow as tf

    config = tf_config()
    if config is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `--strategy` and `--replicas` to a trainer's parser (both trainers share them)."""
    group = parser.add_argument_group("distribution")
    group.add_argument("--strategy", default="default", choices=STRATEGIES,
                       help="default: one device; mirrored: MirroredStrategy over the GPUs, or over --replicas "
                            "logical CPU devices on a CPU-only machine; multi_worker: MultiWorkerMirroredStrategy "
                            "configured by the TF_CONFIG environment variable (see README). --batch-size is the "
                            "global batch")
    group.add_argument("--replicas", type=int, default=2,
                       help="mirrored on a CPU-only machine: logical CPU devices to split the CPU into (default 2)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, batch_size: int) -> None:
    """One-line argparse errors for bad distribution flags (before TensorFlow starts)."""
    if args.replicas < 1:
        parser.error(f"--replicas must be >= 1, got {args.replicas}")
    if args.strategy == "mirrored" and batch_size % args.replicas:
        parser.error(f"--batch-size {batch_size} must be divisible by --replicas {args.replicas}")
    if args.strategy == "multi_worker":
        try:
            config = tf_config()
        except ValueError as e:
            parser.error(str(e))
        if config is None:
            parser.error("--strategy multi_worker needs the TF_CONFIG environment variable (see README)")
        workers = sum(len(v) for v in config["cluster"].values())
        if batch_size % workers:
            parser.error(f"--batch-size {batch_size} must be divisible by the {workers} workers in TF_CONFIG")


def without_time_budget(parser: argparse.ArgumentParser, args: argparse.Namespace, config):
    """`config` fit for `--strategy`: under multi_worker a wall-clock budget would stop each
    worker at its own step (and the others would wait for it forever), so a `--max-train-minutes`
    given on the command line is refused, and one from the preset (or the resumed run) is
    dropped with a note on stderr: the run trains all its `--steps`. A schedule paced by time
    (HGN's `--pace time`) follows that budget: the preset's is dropped with it (the schedule then
    follows the steps), and one given on the command line, or a resumed run's (its checkpoint
    holds the clock), is refused."""
    if args.strategy != "multi_worker" or not config.max_train_minutes:
        return config
    if given(args, "max_train_minutes"):
        parser.error("--max-train-minutes cannot be used with --strategy multi_worker (each worker would stop at "
                     "its own time); use --steps")
    changes, paced = {"max_train_minutes": None}, ""
    if getattr(config, "pace", "steps") == "time":
        if given(args, "pace") or getattr(args, "resume", False):
            parser.error("--pace time follows the wall-clock budget, which --strategy multi_worker cannot use (each "
                         "worker would stop at its own time): train or resume this run under --strategy default or "
                         "mirrored")
        changes["pace"], paced = "steps", " (and the schedule follows the steps, not that budget)"
    print(f"note: --strategy multi_worker trains all {config.steps:,} --steps: the {config.max_train_minutes:g}-minute "
          f"budget of the preset (or the resumed run) is dropped{paced}, as each worker would stop at its own time",
          file=sys.stderr)
    return dataclasses.replace(config, **changes)


def shard(strategy: tf.distribute.Strategy, value):
    """Splits a global batch (a tensor or nest of tensors, split on axis 0) into per-replica values.

    Replica r (its global index, across workers) gets the r-th of `num_replicas_in_sync` equal
    pieces, so a run draws the same global batch and random numbers whatever the strategy, and
    the replicas' mean gradient equals the single-device gradient.
    """
    import tensorflow as tf

    n = strategy.num_replicas_in_sync
    if n == 1:
        return value

    def piece(ctx):
        return tf.nest.map_structure(lambda v: tf.split(v, n)[ctx.replica_id_in_sync_group], value)

    return strategy.experimental_distribute_values_from_function(piece)


def shard_by_data(dataset: tf.data.Dataset, strategy: tf.distribute.Strategy) -> tf.data.Dataset:
    """`dataset` set up for `fit` under `strategy`: multi-worker runs keep their part of each global batch.

    Every worker builds the same deterministic pipeline; with the DATA auto-shard policy each keeps
    its share of every global batch (file-based auto-sharding would give the workers different
    data orders). Other strategies get `dataset` unchanged.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def barrier(strategy: Optional[tf.distribute.Strategy]) -> None:
    """Waits until every worker of a multi-worker run gets here (a no-op otherwise).

    Workers call it before exiting, so that no worker leaves while the chief still evaluates and
    exports (TensorFlow's coordination service reports a departed worker as crashed).
    """
    import tensorflow as tf

    if not (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and tf_config() is not None):
        return

    def one():
        return tf.constant(1.0)

    @tf.function(autograph=False)  # eagerly, a collective under this strategy warns of its overhead
    def all_reduce():
        return strategy.reduce("SUM", strategy.run(one), axis=None)

    all_reduce()


def scratch_or(path, strategy: Optional[tf.distribute.Strategy]) -> Path:
    """`path` on the chief; a private temporary directory on other workers.

    Every worker of a multi-worker run must take part in saving a checkpoint (saving may run
    collective ops), but only the chief's copy is kept: the others write into a scratch
    directory that `remove_scratch` deletes.
    """
    if is_chief(strategy):
        return Path(path)
    return Path(tempfile.mkdtemp(prefix="worker-scratch-"))


def hold_run_dir(run_dir, strategy: Optional[tf.distribute.Strategy]):
    """`common.runs.claim_run_dir(run_dir)` on the chief, which writes the run; a no-op context on
    the other workers, which write to scratch folders (`scratch_or`)."""
    return claim_run_dir(run_dir) if is_chief(strategy) else contextlib.nullcontext()


def remove_scratch(path, strategy: Optional[tf.distribute.Strategy]) -> None:
    """Deletes a directory made by `scratch_or` on a non-chief worker (no-op on the chief)."""
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)


def set_determinism(seed: int, deterministic_ops: bool = True) -> None:
    """Seeds Python, NumPy and TensorFlow, and asks TensorFlow for deterministic kernels.

    With deterministic ops, the same seed and config give bit-identical losses on a CPU for the
    ops this project uses; ops without a deterministic kernel then raise instead of silently
    varying. Thread-level parallel reductions in oneDNN are deterministic on a fixed machine
    and thread count, not across machines with different instruction sets.
    """
    import tensorflow as tf

    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    if deterministic_ops:
        tf.config.experimental.enable_op_determinism()
