"""Strategy selection (common/distribute.py): default, mirrored over logical CPUs, multi-worker."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from common import distribute

SCRIPT = Path(__file__).parent / "scripts" / "distributed_toy.py"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(strategy, env_extra=None, timeout=180):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env_extra or {}))
    return subprocess.Popen([sys.executable, str(SCRIPT), strategy], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _result(proc, timeout=180):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_mirrored_over_two_logical_cpus_matches_default():
    default = _result(_run("default"))
    mirrored = _result(_run("mirrored"))
    assert default["replicas"] == 1 and mirrored["replicas"] == 2
    # Same global batch, gradients summed across replicas: same losses up to float32 round-off.
    assert len(mirrored["losses"]) == len(default["losses"]) == 4
    for a, b in zip(default["losses"], mirrored["losses"]):
        assert abs(a - b) <= 1e-5 * max(1.0, abs(a))


def test_two_local_workers_train_to_the_same_result():
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    procs = [_run("multi_worker", {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})})
             for i in range(2)]
    results = [_result(p) for p in procs]
    default = _result(_run("default"))
    assert [r["chief"] for r in results] == [True, False]
    for r in results:
        assert r["replicas"] == 2
        assert len(r["losses"]) == len(default["losses"]) == 4
        for a, b in zip(default["losses"], r["losses"]):
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a))


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match="valid: default, mirrored, multi_worker"):
        distribute.make_strategy("horovod")


@pytest.mark.parametrize("value, message", [
    ("{not json", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {}}', "non-empty 'cluster'"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "is not in the cluster"),
])
def test_bad_tf_config_is_explained(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(ValueError, match=message):
        distribute.make_strategy("multi_worker")


def test_multi_worker_without_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs the TF_CONFIG"):
        distribute.make_strategy("multi_worker")


def test_multi_worker_refuses_to_resume_a_time_paced_run(monkeypatch, capsys, tmp_path):
    """A resumed run's checkpoint holds its paced clock: dropping the pacing would change the
    checkpoint's layout, so it is refused, not dropped as a fresh run's preset pacing is."""
    from common.config import to_dict
    from hgn import cli as hgn_cli
    from hgn.config import PRESETS

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    for pace, refused in (("time", True), ("steps", False)):
        saved = to_dict(dataclasses.replace(PRESETS["quick"], pace=pace))
        (tmp_path / "config.json").write_text(json.dumps({"dataset": "pendulum", "config": saved}))
        argv = ["--resume", "--run-dir", str(tmp_path), "--strategy", "multi_worker"]
        if refused:
            with pytest.raises(SystemExit) as info:
                hgn_cli._resolve(argv)
            assert info.value.code == 2 and "--pace time follows the wall-clock budget" in capsys.readouterr().err
        else:  # a step-paced run's budget is dropped, as before
            config = hgn_cli._resolve(argv)[1]
            assert config.max_train_minutes is None and config.pace == "steps"


def test_multi_worker_drops_a_preset_time_budget_and_refuses_a_given_one(monkeypatch, capsys):
    """Each worker would stop at its own time: the quick preset's 10.5 minutes are dropped (the
    README's multi-worker command was refused), a --max-train-minutes on the command line is
    refused, in both command lines."""
    from hgn import cli as hgn_cli
    from hgn.config import PRESETS
    from nhf import cli as nhf_cli

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    config = hgn_cli._resolve(["--dataset", "pendulum", "--strategy", "multi_worker"])[1]
    # The preset's schedule is paced by its budget: that goes with it.
    assert PRESETS["quick"].pace == "time"
    assert config.max_train_minutes is None and config.steps == PRESETS["quick"].steps and config.pace == "steps"
    assert ("the 10.5-minute budget of the preset (or the resumed run) is dropped (and the schedule follows the "
            "steps, not that budget)") in capsys.readouterr().err
    assert hgn_cli._resolve(["--dataset", "pendulum"])[1].max_train_minutes == 10.5  # kept without multi_worker
    for resolve in (hgn_cli._resolve, nhf_cli._resolve):
        with pytest.raises(SystemExit) as info:
            resolve(["--strategy", "multi_worker", "--max-train-minutes", "5"])
        assert info.value.code == 2
        assert "--max-train-minutes cannot be used with --strategy multi_worker" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # its schedule follows the budget: not dropped, refused
        hgn_cli._resolve(["--strategy", "multi_worker", "--pace", "time"])
    assert info.value.code == 2 and "--pace time follows the wall-clock budget" in capsys.readouterr().err


def test_strategy_name_gives_the_flag_names():
    import tensorflow as tf

    assert distribute.strategy_name(tf.distribute.get_strategy()) == "default"
    assert distribute.strategy_name(tf.distribute.OneDeviceStrategy("/cpu:0")) == "OneDeviceStrategy"
