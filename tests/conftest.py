"""Test-session set-up shared by every test file.

The tests run TensorFlow with the kernels the command lines use: `train_hgn.py` asks for oneDNN's
before TensorFlow loads (`common.cpu.use_onednn`), and so does this file, before any test module
imports TensorFlow. Without it, on a CPU where TensorFlow leaves oneDNN off (an AVX2-only AMD
EPYC), a test that compares this process with a training subprocess would compare two kernel
libraries.
"""
import importlib.util
from pathlib import Path

import pytest

from common import cpu

cpu.use_onednn()

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def load_bench():
    """`load_bench("NAME")`: the module of `bench/NAME.py` (bench scripts are not a package)."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
