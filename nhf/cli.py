"""The `train_nhf.py` command line: parse, train (or resume, or re-evaluate), write the run directory.

Run directory layout:

    config.json     the full config of the run
    checkpoints/    tf.train checkpoints (density, optimizer, step counter, learning-rate scale)
    logs/           TensorBoard (runs written before this version: tensorboard/)
    history.json    logged training scalars and quick test NLLs
    metrics.json    train/test IWAE NLL in nats, the target's floor, the gap, timings
    figure.png      target and model densities on a grid, samples, potentials (d >= 2)
    loss_curve.png  training loss and quick test NLL
    saved_model/    SavedModel with log_prob(q) and sample(n) (see nhf.export)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from common import console, distribute
from common.config import config_from_args, config_parser, from_dict, resume_presets
from common.runs import check_writable_dir, import_tensorflow_quietly
from data.samples import SampleFileError, check_path
from nhf.config import PRESETS, NHFConfig

DESCRIPTION = """Train a Neural Hamiltonian Flow on a target density or on your own points.

    python train_nhf.py --target mixture                      # quick start (preset small)
    python train_nhf.py --target checkerboard --preset paper --run-dir runs/nhf-checkerboard
    python train_nhf.py --target funnel --mode vi             # reverse KL to a log density
    python train_nhf.py --data samples.npy                    # your points: .npy, .npz or .csv, any dimension
    python train_nhf.py --run-dir runs/nhf-mixture --resume   # continue with the run's own config
    python train_nhf.py --run-dir runs/nhf-mixture --resume --eval-only
    python train_nhf.py --strategy mirrored --replicas 2      # data-parallel over 2 logical CPUs
    TF_CONFIG='{"cluster": {"worker": ["host1:2222", "host2:2222"]}, "task": {"type": "worker", "index": 0}}' \\
        python train_nhf.py --strategy multi_worker           # one such process per worker (index 0, 1, ...)

Writes into --run-dir: metrics.json (train/test IWAE NLL in nats, the target's floor, the gap),
figure.png, loss_curve.png, history.json, config.json, checkpoints/, logs/ (TensorBoard) and
saved_model/ (signatures log_prob(q) and sample(n)).

--data: the file's rows are points (a CSV may have a header line); --test-fraction of them are
held out for the test NLL. The data is standardised inside the model (the output affine layer
starts at the data's mean and standard deviation; its log-Jacobian enters every density), so
NLLs, log_prob and samples are in the data's own units.

Distribution: --batch-size is the global batch, split equally over the replicas; every
strategy draws the same batches and random numbers, so mirrored and multi_worker runs follow
the default run's loss trajectory up to float32 round-off (not bit for bit). Only the chief
(worker 0) writes into --run-dir; checkpoints restore under any strategy. Multi-worker
--resume needs --run-dir on a file system every worker can read.
"""


def build_parser():
    """The full parser: one flag per `NHFConfig` field (old spellings as aliases), then run flags."""
    parser = config_parser(NHFConfig, PRESETS, default_preset="small", description=DESCRIPTION)
    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", default=None, help="output folder (default: runs/nhf-<target>, or runs/nhf-<file> "
                                                     "with --data)")
    run.add_argument("--resume", action="store_true",
                     help="continue from the newest checkpoint in --run-dir (same step, optimizer state, random stream)")
    run.add_argument("--eval-only", action="store_true",
                     help="with --resume: re-evaluate the newest checkpoint and rewrite the outputs, no training")
    run.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1,
                     help="0 silent, 1 progress bar, 2 one line per checkpoint interval and the libraries' "
                          "warnings (default 1)")
    run.add_argument("--no-progress", dest="verbose", action="store_const", const=0, help="same as --verbose 0")
    run.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    distribute.add_arguments(parser)
    return parser


def _resolve(argv: Optional[Sequence[str]]):
    """(args, config, run_dir): a resumed run starts from its own config; flags given now override fields."""
    parser = build_parser()
    args = parser.parse_args(argv)
    presets = PRESETS
    if args.resume and args.run_dir is None:  # the default directory's name depends on the config to resume
        parser.error("--resume needs --run-dir")
    if args.resume:
        saved = Path(args.run_dir) / "config.json"
        if saved.is_file():
            try:
                values = json.loads(saved.read_text())
                if isinstance(values, dict) and "dataset" in values and "target" not in values:
                    parser.error(f"--resume: {args.run_dir!r} is a train_hgn.py run (it has a 'dataset'), "
                                 "not a train_nhf.py run")
                base = from_dict(NHFConfig, values)
            except (ValueError, TypeError) as e:
                parser.error(f"--resume: {str(saved)!r} is not a train_nhf.py config ({e})")
            presets = resume_presets(args, PRESETS, base)
    try:
        config = config_from_args(NHFConfig, presets, args)
    except ValueError as e:
        parser.error(str(e))
    distribute.check_arguments(parser, args, config.batch_size)
    config = distribute.without_time_budget(parser, args, config)
    if config.data is not None:
        try:  # before TensorFlow starts and the run directory is made; the contents are read later
            check_path(config.data)
        except SampleFileError as e:
            parser.error(str(e))
    default_dir = f"runs/nhf-{Path(config.data).stem}" if config.data else f"runs/nhf-{config.target}"
    return args, config, args.run_dir or default_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `train_nhf.py` (see `DESCRIPTION`); returns the exit status."""
    args, config, run_dir = _resolve(argv)
    run_dir = check_writable_dir(run_dir)
    if not args.debug:
        import_tensorflow_quietly()  # after the flags check out, before anything else loads it
    # Before anything creates a tensor: a mirrored strategy on a CPU splits it into devices.
    strategy = distribute.make_strategy(args.strategy, args.replicas)

    from nhf.experiment import run_experiment  # after argument checks

    console.quiet(args.verbose < 2)
    with distribute.hold_run_dir(run_dir, strategy):  # one run per folder
        metrics = run_experiment(config, run_dir, resume=args.resume, eval_only=args.eval_only,
                                 progress=args.verbose, strategy=strategy)
    if metrics.get("chief") is False:
        print(json.dumps({k: metrics[k] for k in ("target", "step", "chief", "final_loss")}))
        print("worker done (outputs are written by the chief)")
        return 0
    keys = ("target", "step", "train_nll", "test_nll", "test_nll_stderr", "nll_floor", "gap", "vi")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}, indent=1))
    print(f"outputs in {run_dir}")
    return 0
