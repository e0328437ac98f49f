#!/usr/bin/env python3
"""Train a Neural Hamiltonian Flow on a target density.

    python train_nhf.py --target mixture                      # quick start (preset small)
    python train_nhf.py --target checkerboard --preset paper --run-dir runs/nhf-checkerboard
    python train_nhf.py --target funnel --mode vi             # reverse KL to a log density
    python train_nhf.py --run-dir runs/nhf-mixture --resume   # continue with the run's own config
    python train_nhf.py --run-dir runs/nhf-mixture --resume --eval-only
    python train_nhf.py --strategy mirrored --replicas 2         # data-parallel over 2 logical CPUs
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \
        python train_nhf.py --strategy multi_worker             # one such process per worker (index 0, 1, ...)

Writes into --run-dir: metrics.json (train/test IWAE NLL in nats, the target's floor, the gap),
figure.png, loss_curve.png, history.json, config.json, checkpoints/, tensorboard/ and
saved_model/ (signatures log_prob(q) and sample(n)).

Distribution: --batch-size is the global batch, split equally over the replicas; every
strategy draws the same batches and random numbers, so mirrored and multi_worker runs follow
the default run's loss trajectory up to float32 round-off (not bit for bit). Only the chief
(worker 0) writes into --run-dir; checkpoints restore under any strategy. Multi-worker
--resume needs --run-dir on a file system every worker can read.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.runs import check_writable_dir, import_tensorflow_quietly, run_cli

if "--debug" not in sys.argv:
    import_tensorflow_quietly()  # before anything imports TensorFlow: hides its start-up log lines

from common import distribute  # noqa: E402
from common.config import config_from_args, config_parser, from_dict  # noqa: E402
from nhf.config import PRESETS, NHFConfig  # noqa: E402


def main(argv=None) -> int:
    parser = config_parser(NHFConfig, PRESETS, default_preset="small", description=__doc__)
    parser.add_argument("--run-dir", default=None,
                        help="output folder (default: runs/nhf-<target>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --run-dir (same step, optimizer state, random stream)")
    parser.add_argument("--eval-only", action="store_true",
                        help="with --resume: re-evaluate the newest checkpoint and rewrite the outputs, no training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    distribute.add_arguments(parser)
    args = parser.parse_args(argv)
    presets = PRESETS
    if args.resume and args.run_dir:
        # Resuming starts from the run's own config; flags given now override single fields.
        saved = Path(args.run_dir) / "config.json"
        if saved.is_file():
            try:
                base = from_dict(NHFConfig, json.loads(saved.read_text()))
            except (ValueError, TypeError) as e:
                parser.error(f"--resume: {str(saved)!r} is not a train_nhf.py config ({e})")
            presets = {args.preset: base}
    try:
        config = config_from_args(NHFConfig, presets, args)
    except ValueError as e:
        parser.error(str(e))
    distribute.check_arguments(parser, args, config.batch_size)
    run_dir = check_writable_dir(args.run_dir or f"runs/nhf-{config.target}")
    # Before anything creates a tensor: a mirrored strategy on a CPU splits it into devices.
    strategy = distribute.make_strategy(args.strategy, args.replicas)

    from nhf.training import run_experiment  # after argument checks

    metrics = run_experiment(config, run_dir, resume=args.resume, eval_only=args.eval_only,
                             progress=not args.no_progress, strategy=strategy)
    if metrics.get("chief") is False:
        print(json.dumps({k: metrics[k] for k in ("target", "step", "chief", "final_loss")}))
        print("worker done (outputs are written by the chief)")
        return 0
    keys = ("target", "step", "train_nll", "test_nll", "nll_floor", "gap", "vi")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=1))
    print(f"outputs in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
