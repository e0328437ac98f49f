"""Test-session set-up shared by every test file.

The tests run TensorFlow with the kernels the command lines use: `train_hgn.py` asks for oneDNN's
before TensorFlow loads (`common.cpu.use_onednn`), and so does this file, before any test module
imports TensorFlow. Without it, on a CPU where TensorFlow leaves oneDNN off (an AVX2-only AMD
EPYC), a test that compares this process with a training subprocess would compare two kernel
libraries.

`python3 dev.py test` runs whole files in two processes (`--dist loadfile`) and hands them out in
collection order (`--no-loadscope-reorder`). `pytest_collection_modifyitems` puts the longest
files first, so that the short ones fill the gaps at the end instead of one long file running
alone on one core while the other idles.
"""
from common import cpu

cpu.use_onednn()

# Seconds each file took, summed over its tests (setup included), in `python3 dev.py test
# --durations=0` on the 2-core AMD EPYC at d5eddf1: 1,750 s of work in all. Files not listed run
# after these, in their own order. Only the order matters: a stale figure costs balance, never a
# test.
FILE_SECONDS = {
    "test_hgn_run.py": 268, "test_hgn_distribute.py": 177, "test_bad_inputs.py": 174, "test_hgn_vector.py": 173,
    "test_nhf_training.py": 162, "test_reliability.py": 140, "test_nhf_data.py": 136,
    "test_nhf_distribute.py": 126, "test_hgn_model.py": 109, "test_common_integrators.py": 107,
    "test_common_distribute.py": 85, "test_nhf.py": 41, "test_serving.py": 22, "test_onednn_choice.py": 14,
    "test_targets.py": 10,
}


def pytest_collection_modifyitems(config, items):
    # Longest file first (a stable sort keeps each file's own test order).
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.name, 0))
