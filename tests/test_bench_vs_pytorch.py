"""`bench/hgn_vs_pytorch.py`: how its two kinds of measurement run each side.

The README's speed ratios against the PyTorch code come from this bench, and neither library is
run here (the PyTorch side needs a PyTorch interpreter and a clone of that code), so what is
checked is what each worker is given: one thread per library side by side, each library's own
default thread pools on the whole machine, and ratios that pair runs neighbouring in time.
"""
import argparse
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture(scope="module")
def bench(load_bench):
    return load_bench("hgn_vs_pytorch")


@pytest.fixture
def args():
    return argparse.Namespace(isa="native", batch_size=16, warmup=2, steps=10, threads=2, alone=False,
                              torch_python="/torch/bin/python", pytorch_repo="/clone")


def test_side_by_side_gives_each_library_one_thread(bench, args, monkeypatch):
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "7")  # the caller's setting must not leak through
    for side in ("tensorflow", "pytorch"):
        env = bench._env(args, side, one_thread=True)
        assert [env[name] for name in THREAD_VARS] == ["1"] * 4, side
    cmds = bench._commands("graph_fp32", args, torch_threads=1)
    assert cmds["pytorch"][-2:] == ["--threads", "1"]
    assert cmds["tensorflow"][:1] == [sys.executable] and "graph_fp32" in cmds["tensorflow"]
    assert cmds["pytorch"][:1] == ["/torch/bin/python"] and "/clone" in cmds["pytorch"]


def test_whole_machine_leaves_each_library_its_own_pools(bench, args, monkeypatch):
    for name in THREAD_VARS:
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    tf_env, torch_env = (bench._env(args, side, one_thread=False) for side in ("tensorflow", "pytorch"))
    for env in (tf_env, torch_env):
        assert not any(name in env for name in THREAD_VARS)
    # This side imports the project from its root; the PyTorch interpreter gets no PYTHONPATH.
    assert tf_env["PYTHONPATH"].split(":") == [str(ROOT), "/elsewhere"]
    assert "PYTHONPATH" not in torch_env
    assert bench._commands("graph_fp32", args, torch_threads=args.threads)["pytorch"][-2:] == ["--threads", "2"]


def test_whole_machine_pairs_runs_neighbouring_in_time(bench, args, monkeypatch):
    # Order TF, PyTorch, PyTorch, TF: the first TF run is set against the first PyTorch run and
    # the last against the last, so that a machine slowing down over the minutes hits both ratios
    # alike. Each fake run reports its position in the sequence as its speed.
    order = []

    def fake_solo(variant, args, side):
        order.append(side)
        return {"samples_per_second": float(len(order)), "seconds_per_step_median": 1.0, "timed_steps": 10,
                "gflop_per_step_analytic": 280.0, "peak_memory_gib": 1.0, "finite_loss": True,
                "gflop_per_step_counted": 280.0}

    monkeypatch.setattr(bench, "solo", fake_solo)
    rows, _ = bench.whole_machine(["graph_fp32"], args)
    assert order == ["tensorflow", "pytorch", "pytorch", "tensorflow"]
    assert [(r["tensorflow"]["samples_per_second"], r["pytorch"]["samples_per_second"]) for r in rows] == \
        [(1.0, 2.0), (4.0, 3.0)]
    assert [r["ratio"] for r in rows] == [0.5, 1.33]
    assert [r["flops_per_second_ratio"] for r in rows] == [0.5, 1.33]  # equal work: the same ratio
    assert all(r["threads"] == 2 for r in rows)


def test_alone_runs_each_side_on_one_core_with_one_thread(bench, args, monkeypatch, tmp_path, capsys):
    # --alone: the side-by-side settings (one thread, one core) with the other core idle, in the
    # same neighbouring order as the whole-machine runs.
    started = []

    def fake_start(cmd, core, env):
        started.append((cmd, core, env))
        return len(started)

    def fake_result(proc, what):
        return {"samples_per_second": float(proc), "seconds_per_step_median": 1.0, "timed_steps": 10,
                "gflop_per_step_analytic": 280.0, "peak_memory_gib": 1.0, "finite_loss": True,
                "gflop_per_step_counted": 280.0}

    monkeypatch.setattr(bench, "_start", fake_start)
    monkeypatch.setattr(bench, "_result", fake_result)
    args.alone, args.threads = True, 1
    rows, pinning = bench.whole_machine(["graph_fp32"], args)
    core = sorted(__import__("os").sched_getaffinity(0))[0]
    assert [c for _, c, _ in started] == [core] * 4
    assert all([env[name] for name in THREAD_VARS] == ["1"] * 4 for _, _, env in started)
    assert [cmd[0] for cmd, _, _ in started] == [sys.executable, "/torch/bin/python", "/torch/bin/python",
                                                 sys.executable]
    assert [r["ratio"] for r in rows] == [0.5, 1.33] and all(r["threads"] == 1 for r in rows)
    assert "one core" in pinning
    clone = tmp_path / "clone"  # what the bench checks a clone of the PyTorch code for
    (clone / "utilities").mkdir(parents=True)
    (clone / "train.py").write_text("")
    (clone / "utilities" / "loader.py").write_text("")
    with pytest.raises(SystemExit) as info:  # one core each: not with --threads > 1
        bench.main(["--pytorch-repo", str(clone), "--alone", "--threads", "2"])
    assert info.value.code == 2 and "--alone" in capsys.readouterr().err
