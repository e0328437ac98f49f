#!/usr/bin/env python3
"""Train, evaluate and export a Neural Hamiltonian Flow: `python train_nhf.py --help` (see `nhf.cli`)."""
import sys

from common.cpu import use_onednn
from common.runs import import_tensorflow_quietly, run_cli

use_onednn()  # before TensorFlow loads: oneDNN's kernels on CPUs where TensorFlow leaves them off
if "--debug" not in sys.argv:
    import_tensorflow_quietly()  # before anything imports TensorFlow: hides its start-up log lines

from nhf.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
