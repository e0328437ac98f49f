#!/usr/bin/env python3
"""Train, evaluate and export a Neural Hamiltonian Flow: `python train_nhf.py --help` (see `nhf.cli`)."""
import sys

from common.cpu import use_onednn
from common.runs import run_cli

use_onednn()  # before TensorFlow loads: oneDNN's kernels on CPUs where TensorFlow leaves them off

from nhf.cli import main  # noqa: E402  (parses the flags before it loads TensorFlow)

if __name__ == "__main__":
    sys.exit(run_cli(main))
