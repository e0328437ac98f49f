#!/usr/bin/env python3
"""Train, evaluate and export a Hamiltonian Generative Network: `python train_hgn.py --help`."""
import sys

from common.runs import run_cli
from hgn.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
