"""The `train_hgn.py` command line: parse and check the flags (and a resumed run's saved
config), then run `hgn.experiment.run_experiment`, which writes the run directory (its layout is
in `hgn.experiment`)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

from common import config as config_lib
from common import console, distribute
from common.runs import RunError, check_writable_dir, import_tensorflow_quietly
from hgn.config import DEFAULT_PRESET, PRESETS, HGNConfig, presets_for

DESCRIPTION = """Train and evaluate a Hamiltonian Generative Network on a rendered physics dataset.

  python train_hgn.py --dataset pendulum                     # the quick preset, runs/hgn-pendulum
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
    run.add_argument("--eval-only", action="store_true",
                     help="with --resume: only evaluate and re-export (add --export if the run had --no-export)")
    run.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="0 silent, 1 progress bar, 2 one line per checkpoint interval and the libraries' "
                          "warnings (default 1)")
    run.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
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
        presets = presets_for(dataset)
        if saved:
            presets = config_lib.resume_presets(args, presets, config_lib.from_dict(HGNConfig, saved["config"]))
        config = config_lib.config_from_args(HGNConfig, presets, args)
    except ValueError as e:
        parser.error(str(e))
    distribute.check_arguments(parser, args, config.batch_size)
    config = distribute.without_time_budget(parser, args, config)
    run_dir = Path(args.run_dir or f"runs/hgn-{dataset}")
    data_dir = args.data_dir or (saved or {}).get("data_dir")
    return args, config, dataset, run_dir, data_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `train_hgn.py` (see `DESCRIPTION`); returns the exit status."""
    args, config, dataset, run_dir, data_dir = _resolve(argv)
    check_writable_dir(run_dir)
    if not args.debug:
        import_tensorflow_quietly()  # after the flags check out, before anything else loads it
    console.quiet(args.verbose < 2)
    try:
        # Before anything initialises TensorFlow's devices (mirrored splits the CPU).
        strategy = distribute.make_strategy(args.strategy, args.replicas)
    except ValueError as e:
        raise RunError(str(e)) from None
    from hgn import experiment

    with distribute.hold_run_dir(run_dir, strategy):  # one run per folder
        result = experiment.run_experiment(
            config, dataset, run_dir, data_dir=data_dir, resume=args.resume, eval_only=args.eval_only,
            verbose=args.verbose, strategy=strategy,
            command=" ".join(["train_hgn.py", *(sys.argv[1:] if argv is None else argv)]))
    if result is not None and args.verbose:
        print(experiment.summary(result, run_dir), flush=True)
    return 0
