#!/usr/bin/env python3
"""Train, evaluate and export a Hamiltonian Generative Network: `python train_hgn.py --help`."""
import sys

from common.cpu import use_onednn
from common.runs import run_cli

use_onednn()  # before TensorFlow loads: oneDNN's kernels on CPUs where TensorFlow leaves them off

from hgn.cli import main  # noqa: E402  (parses the flags before it loads TensorFlow)

if __name__ == "__main__":
    sys.exit(run_cli(main))
