"""`bench/demo.py`: how the README's first command's wall clock is split into its parts.

The split is read from the commands `dev.py demo` announces; a demo that stops announcing one
of them must fail loudly, not be timed as zero.
"""
import pytest


@pytest.fixture(scope="module")
def demo(load_bench):
    return load_bench("demo")


def test_wall_clock_is_split_at_the_announced_commands(demo):
    lines = [(0.5, "creating virtual environment in /x/.venv"),
             (1.0, "+ /x/.venv/bin/python -m pip install --quiet -r requirements.txt"),
             (90.0, "+ /x/.venv/bin/python train_hgn.py --dataset pendulum --run-dir runs/demo-hgn"),
             (100.0, "+ not a command: train_hgn.py mentioned again"),
             (300.0, "the HGN run's own output naming train_nhf.py"),
             (640.0, "+ /x/.venv/bin/python train_nhf.py --target mixture --preset small --run-dir runs/demo-nhf")]
    split = demo.phase_seconds(lines, 800.0)
    assert split == {"setup": 90.0, "hgn": 550.0, "nhf": 160.0, "total": 800.0}


def test_a_demo_without_one_of_its_runs_is_refused(demo):
    lines = [(90.0, "+ /x/.venv/bin/python train_hgn.py --dataset pendulum --run-dir runs/demo-hgn")]
    with pytest.raises(ValueError, match="train_nhf.py"):
        demo.phase_seconds(lines, 200.0)
