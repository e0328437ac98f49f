"""Test-session set-up shared by every test file.

The tests run TensorFlow with the kernels the command lines use: `train_hgn.py` asks for oneDNN's
before TensorFlow loads (`common.cpu.use_onednn`), and so does this file, before any test module
imports TensorFlow. Without it, on a CPU where TensorFlow leaves oneDNN off (an AVX2-only AMD
EPYC), a test that compares this process with a training subprocess would compare two kernel
libraries.
"""
from common import cpu

cpu.use_onednn()
