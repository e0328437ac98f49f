"""HGN under tf.distribute (mirrored over 2 logical CPUs, two local workers) and NaN rollback.

The distributed runs are `train_hgn.py` subprocesses: the CPU can only be split into logical
devices before TensorFlow initialises, and each worker of a multi-worker run is a process.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import data
from common.runs import NonFiniteLossError
from hgn import PRESETS, training

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--dataset", "pendulum", "--steps", "8", "--checkpoint-every", "2",
        "--eval-trajectories", "4", "--energy-steps", "10", "--verbose", "0"]
# Same global batches, noise and initial weights: a replica computes half the batch and the
# gradients are summed, so the losses differ from one device's only by the order of float32
# sums (measured: identical to 7 digits over 8 steps). A different seed differs by > 1e-3.
RTOL = 1e-4


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run_dir, data_dir, *extra, tf_config=None):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, str(ROOT / "train_hgn.py"), *TINY, "--data-dir", str(data_dir),
                             "--run-dir", str(run_dir), *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _losses(run_dir):
    return [(h["step"], h["loss"]) for h in json.loads((Path(run_dir) / "history.json").read_text())]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """default, seed 1, mirrored (2 logical CPUs) and two local workers, run side by side."""
    root = tmp_path_factory.mktemp("hgn_distribute")
    data_dir = root / "data"
    config = PRESETS["tiny"]
    # Prepared once here: the workers must not generate the same dataset concurrently.
    data.prepare("pendulum", data_dir=str(data_dir), n_train=config.n_train, n_test=config.n_test,
                 n_frames=config.data_frames, dt=config.dt, image_size=config.image_size, seed=config.data_seed)
    cluster = {"worker": [f"localhost:{_free_port()}", f"localhost:{_free_port()}"]}
    procs = {
        # Only the multi-worker run's SavedModel is checked: the others skip the export.
        "default": _start(root / "default", data_dir, "--no-export"),
        "seed1": _start(root / "seed1", data_dir, "--seed", "1", "--no-export"),
        "mirrored": _start(root / "mirrored", data_dir, "--strategy", "mirrored", "--replicas", "2", "--no-export"),
        "mirrored_fused": _start(root / "mirrored_fused", data_dir, "--strategy", "mirrored", "--replicas", "2",
                                 "--fused-rollout", "--no-export"),
        "worker0": _start(root / "multi", data_dir, "--strategy", "multi_worker",
                          tf_config={"cluster": cluster, "task": {"type": "worker", "index": 0}}),
        "worker1": _start(root / "multi", data_dir, "--strategy", "multi_worker",
                          tf_config={"cluster": cluster, "task": {"type": "worker", "index": 1}}),
    }
    outputs = {name: _finish(p) for name, p in procs.items()}
    return {"root": root, "data_dir": data_dir, "outputs": outputs}


def test_mirrored_matches_default(runs):
    default, mirrored = _losses(runs["root"] / "default"), _losses(runs["root"] / "mirrored")
    assert [s for s, _ in default] == [s for s, _ in mirrored] == [2, 4, 6, 8]
    np.testing.assert_allclose([v for _, v in mirrored], [v for _, v in default], rtol=RTOL)
    metrics = json.loads((runs["root"] / "mirrored" / "metrics.json").read_text())
    assert metrics["strategy"] == {"name": "mirrored", "replicas": 2}
    assert metrics["step"] == 8 and np.isfinite(metrics["test_forward"]["mse_x1e4"])


def test_a_fused_rollout_trains_under_mirrored_like_the_default(runs):
    # Each replica traces the XLA-compiled rollout with its own copies of the variables; the
    # losses follow the default run's (XLA's kernels against the graph's, float32: measured within
    # 1.1e-6 relative over the 8 steps).
    default, fused = _losses(runs["root"] / "default"), _losses(runs["root"] / "mirrored_fused")
    assert [s for s, _ in fused] == [2, 4, 6, 8]
    np.testing.assert_allclose([v for _, v in fused], [v for _, v in default], rtol=RTOL)
    config = json.loads((runs["root"] / "mirrored_fused" / "config.json").read_text())
    assert config["config"]["fused_rollout"] is True


def test_two_workers_match_default_and_only_the_chief_writes(runs):
    default, multi = _losses(runs["root"] / "default"), _losses(runs["root"] / "multi")
    assert [s for s, _ in multi] == [2, 4, 6, 8]
    np.testing.assert_allclose([v for _, v in multi], [v for _, v in default], rtol=RTOL)
    run = runs["root"] / "multi"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["strategy"] == {"name": "multi_worker", "replicas": 2}
    # One set of checkpoints (the chief's); the other worker's scratch copies are gone.
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-6.index",
                                                                                 "ckpt-8.index"]
    assert (run / "saved_model" / "saved_model.pb").is_file()
    assert not (runs["root"] / "default" / "saved_model").exists()  # --no-export


def test_the_tolerance_separates_different_runs(runs):
    # The check above can fail: another seed's losses are far outside RTOL.
    default, other = _losses(runs["root"] / "default"), _losses(runs["root"] / "seed1")
    rel = np.abs(np.subtract([v for _, v in other], [v for _, v in default])) / np.abs([v for _, v in default])
    assert rel.max() > 100 * RTOL


def test_a_mirrored_run_resumes_under_the_default_strategy(runs):
    proc = _start(runs["root"] / "mirrored", runs["data_dir"], "--resume", "--steps", "10")
    _finish(proc)
    metrics = json.loads((runs["root"] / "mirrored" / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 8 and metrics["step"] == 10
    assert metrics["strategy"] == {"name": "default", "replicas": 1}


# --------------------------------------------------------------------------- NaN rollback
CONFIG = dataclasses.replace(PRESETS["tiny"], steps=12, checkpoint_every=4, max_nonfinite_steps=3)


def _poisoned_dataset(arrays, poison, armed):
    """The tiny pipeline with NaN frames at batch indices `poison` while `armed["on"]`.

    Disarms itself after the first poisoned pass (or `armed["passes"]` of them), so a replay
    after a rollback is clean (a transient NaN, as from an unlucky step); with `armed["always"]`
    every pass is poisoned.
    """
    base = data.make_dataset_from_arrays(arrays, window=CONFIG.window, batch_size=CONFIG.batch_size, shuffle=True,
                                         seed=CONFIG.seed, repeat=True).map(lambda b: b["frames"])
    spec = base.element_spec

    def gen():
        for i, frames in enumerate(base.as_numpy_iterator()):
            if i in poison and armed["on"]:
                frames = np.full_like(frames, np.nan)
                if i == max(poison) and not armed.get("always"):
                    armed["passes"] = armed.get("passes", 1) - 1
                    armed["on"] = armed["passes"] > 0
            yield frames

    return tf.data.Dataset.from_generator(gen, output_signature=spec)


@pytest.fixture(scope="module")
def arrays():
    return data.generate_arrays("pendulum", 8, n_frames=CONFIG.data_frames)


def _all_finite(model):
    return all(np.all(np.isfinite(w.numpy())) for w in model.weights if "float" in str(w.dtype))


def test_a_transient_nan_rolls_back_with_a_lower_learning_rate(arrays, tmp_path, capsys):
    model = training.build_model(CONFIG)
    manager = training.checkpoint_manager(model, tmp_path)
    # Batches 5-7 (steps 6-8) are NaN once: 3 skipped steps trip the guard at step 8.
    ds = _poisoned_dataset(arrays, poison={5, 6, 7}, armed={"on": True})
    end = training.train(model, ds, tmp_path, manager=manager, verbose=1)
    assert end == 12
    assert "rolled back to" in capsys.readouterr().out
    # Rolled back to the step-4 checkpoint, then trained at half the learning rate.
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.5 * CONFIG.learning_rate, rel=1e-6)
    assert _all_finite(model)
    steps = [int(p.split("-")[-1]) for p in manager.checkpoints]
    assert steps == [4, 8, 12]
    restored = training.build_model(CONFIG)
    training.restore_latest(restored, training.checkpoint_manager(restored, tmp_path), required=True)
    # The lowered rate is part of the checkpoint, so a resumed run keeps it.
    assert float(restored.optimizer.learning_rate.numpy()) == pytest.approx(0.5 * CONFIG.learning_rate, rel=1e-6)


def test_each_rollback_lowers_the_learning_rate_again(arrays, tmp_path, capsys):
    """The NaNs come back on the first replay: the second rollback goes on from the first's
    rate (it restarted from the checkpoint's, and rolled back at the same half rate)."""
    config = dataclasses.replace(CONFIG, max_rollbacks=2)
    model = training.build_model(config)
    ds = _poisoned_dataset(arrays, poison={5, 6, 7}, armed={"on": True, "passes": 2})
    assert training.train(model, ds, tmp_path, manager=training.checkpoint_manager(model, tmp_path)) == 12
    out = capsys.readouterr().out
    assert out.count("rolled back to") == 2 and f"with learning rate {0.25 * config.learning_rate:.3g}" in out
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.25 * config.learning_rate, rel=1e-6)


def test_persistent_nans_stop_with_a_clear_message_and_finite_checkpoints(arrays, tmp_path):
    config = dataclasses.replace(CONFIG, max_rollbacks=1)
    model = training.build_model(config)
    manager = training.checkpoint_manager(model, tmp_path)
    ds = _poisoned_dataset(arrays, poison={5, 6, 7}, armed={"on": True, "always": True})
    with pytest.raises(NonFiniteLossError, match=r"non-finite for 3 consecutive steps .* after 1 rollback"):
        training.train(model, ds, tmp_path, manager=manager, verbose=0)
    assert [int(p.split("-")[-1]) for p in manager.checkpoints] == [4]  # nothing saved during a NaN streak
    restored = training.build_model(config)
    training.restore_latest(restored, training.checkpoint_manager(restored, tmp_path), required=True)
    assert int(restored.train_steps.numpy()) == 4 and _all_finite(restored)
