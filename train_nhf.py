#!/usr/bin/env python3
"""Train a Neural Hamiltonian Flow on a target density.

    python train_nhf.py --target mixture                      # quick start (preset small)
    python train_nhf.py --target checkerboard --preset paper --run-dir runs/nhf-checkerboard
    python train_nhf.py --target funnel --mode vi             # reverse KL to a log density
    python train_nhf.py --run-dir runs/nhf-mixture --resume   # continue with the run's own config
    python train_nhf.py --run-dir runs/nhf-mixture --resume --eval-only

Writes into --run-dir: metrics.json (train/test IWAE NLL in nats, the target's floor, the gap),
figure.png, loss_curve.png, history.json, config.json, checkpoints/, tensorboard/ and
saved_model/ (signatures log_prob(q) and sample(n)).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from common.runs import check_writable_dir, import_tensorflow_quietly, run_cli

if "--debug" not in sys.argv:
    import_tensorflow_quietly()  # before anything imports TensorFlow: hides its start-up log lines

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
    run_dir = check_writable_dir(args.run_dir or f"runs/nhf-{config.target}")

    from nhf.training import run_experiment  # imports TensorFlow: after argument checks

    metrics = run_experiment(config, run_dir, resume=args.resume, eval_only=args.eval_only,
                             progress=not args.no_progress)
    keys = ("target", "step", "train_nll", "test_nll", "nll_floor", "gap", "vi")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=1))
    print(f"outputs in {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
