"""HGN end to end: resume determinism, SavedModel in a fresh process, the command line."""
import dataclasses
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import data
from hgn import PRESETS, predict, training
from hgn.serving import export

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dataclasses.replace(PRESETS["tiny"], steps=12, checkpoint_every=4, objective="geco")


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    return env


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "train_hgn.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=_env(), timeout=timeout)


@pytest.fixture(scope="module")
def arrays():
    return data.generate_arrays("pendulum", 16, n_frames=CONFIG.data_frames)


def _dataset(arrays):
    return data.make_dataset_from_arrays(arrays, window=CONFIG.window, batch_size=CONFIG.batch_size, shuffle=True,
                                         seed=CONFIG.seed, repeat=True)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.train_steps.numpy()) == self.at:
            raise KeyboardInterrupt


def test_resume_after_interruption_matches_uninterrupted_run(arrays, tmp_path):
    full = training.build_model(CONFIG)
    training.train(full, _dataset(arrays), tmp_path / "full", manager=training.checkpoint_manager(full, tmp_path / "full"),
                   verbose=0)
    assert int(full.train_steps.numpy()) == 12

    run = tmp_path / "cut"
    model = training.build_model(CONFIG)
    with pytest.raises(KeyboardInterrupt):
        training.train(model, _dataset(arrays), run, manager=training.checkpoint_manager(model, run), verbose=0,
                       extra_callbacks=[_Interrupt(6)])
    resumed = training.build_model(CONFIG)
    manager = training.checkpoint_manager(resumed, run)
    training.restore_latest(resumed, manager, required=True)
    # Ctrl-C (KeyboardInterrupt) saves a checkpoint at the step reached before exiting.
    assert int(resumed.train_steps.numpy()) == 6
    assert int(resumed.optimizer.iterations.numpy()) == 6
    training.train(resumed, _dataset(arrays), run, manager=manager, verbose=0)
    assert int(resumed.train_steps.numpy()) == 12
    # Same weights, optimizer moments and GECO multiplier as the uninterrupted run: the data order
    # and the posterior noise resumed where they stopped (tolerance: float32 round-off of 12 steps).
    for a, b in zip(full.weights, resumed.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6, err_msg=a.path)
    for a, b in zip(full.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7, err_msg=a.path)
    assert float(full.lagrange_multiplier) == pytest.approx(float(resumed.lagrange_multiplier), rel=1e-5)


_LOADER = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    inp = np.load(sys.argv[2])
    m = tf.saved_model.load(sys.argv[1])
    out = {}
    r = m.rollout(tf.constant(inp["frames"]), tf.constant(7), tf.constant(-0.125))
    out.update({"rollout_" + k: v.numpy() for k, v in r.items()})
    e = m.encode(tf.constant(inp["frames"]))
    out.update({"encode_" + k: v.numpy() for k, v in e.items()})
    out["decode_frame"] = m.decode(tf.constant(inp["q"]))["frame"].numpy()
    out["sample_shape"] = np.array(m.sample(tf.constant(3), tf.constant(4), tf.constant(0.125))["frames"].shape)
    for bad in (tf.zeros([1, 5, 16, 16, 3]), tf.zeros([1, 5, 32, 32, 3], tf.float64)):
        try:
            m.encode(bad)
        except (TypeError, ValueError) as err:
            out.setdefault("errors", []).append(" ".join(str(err).split()))
    try:
        m.encode(tf.zeros([1, 1, 32, 32, 3]))
    except tf.errors.InvalidArgumentError as err:
        out.setdefault("errors", []).append(" ".join(err.message.split()))
    assert not any(name.split(".")[0] in ("hgn", "common", "data") for name in sys.modules), "project imported"
    np.savez(sys.argv[3], **{k: np.asarray(v) for k, v in out.items()})
""")


def test_export_loads_in_fresh_process_with_identical_outputs(arrays, tmp_path):
    model = training.build_model(CONFIG)
    path = export(model, tmp_path / "saved_model")
    frames = arrays["images"][:2, :CONFIG.input_frames].astype(np.float32)
    q = model.infer(tf.constant(frames))[0].q.numpy()
    np.savez(tmp_path / "in.npz", frames=frames, q=q)
    script = tmp_path / "load.py"
    script.write_text(_LOADER)
    proc = subprocess.run([sys.executable, str(script), str(path), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = np.load(tmp_path / "out.npz")
    expected = model.rollout(tf.constant(frames), 7, dt=-0.125)
    for key in ("frames", "q", "p", "energy"):
        # Same graph, same weights: equal up to float32 round-off (tolerance 1e-5).
        np.testing.assert_allclose(out["rollout_" + key], expected[key].numpy(), rtol=1e-5, atol=1e-5, err_msg=key)
    np.testing.assert_allclose(out["encode_q"], q, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["decode_frame"], model.decode(tf.constant(q)).numpy(), rtol=1e-5, atol=1e-6)
    assert tuple(out["sample_shape"]) == (3, 5, 32, 32, 3)
    assert len(out["errors"]) == 3, out["errors"]
    assert "TensorSpec" in out["errors"][0] and "float64" in out["errors"][1], out["errors"]
    assert "at least 3 frames" in out["errors"][2], out["errors"]
    cli = subprocess.run([str(Path(sys.executable).parent / "saved_model_cli"), "show", "--all", "--dir", str(path)],
                         capture_output=True, text=True, env=_env(), timeout=120)
    assert cli.returncode == 0, cli.stderr[-2000:]  # TensorFlow's own inspector reads it
    for name in ("encode", "rollout", "rollout_backward", "decode", "sample"):
        assert f"signature_def['{name}']" in cli.stdout


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("cli")
    run, data_dir = base / "run", base / "data"
    # A dataset variant (data.generate's flags): two colours, pixel noise, --frames for --data-frames.
    args = ["--dataset", "pendulum", "--preset", "tiny", "--steps", "4", "--checkpoint-every", "2",
            "--colors", "2", "--noise-std", "0.02", "--frames", "13",
            "--run-dir", str(run), "--data-dir", str(data_dir), "--verbose", "0"]
    proc = _cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, data_dir, proc


def test_cli_writes_every_output(cli_run):
    run, _, proc = cli_run
    # --verbose 0: nothing on stdout, and none of the libraries' notices on stderr.
    assert proc.stdout == ""
    for noise in ("Using custom data configuration", "Downloading and preparing", "graph_parents", "retracing"):
        assert noise not in proc.stderr, proc.stderr[-2000:]
    for name in ("config.json", "metrics.json", "rollout_forward.png", "rollout_forward.gif", "rollout_backward.png",
                 "rollout_backward.gif", "mse_over_time.png", "latent_energy.png", "samples.gif",
                 "saved_model/saved_model.pb"):
        assert (run / name).exists(), name
    assert list((run / "logs").glob("events.out.tfevents.*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 4
    for key in ("train_forward", "train_backward", "test_forward", "test_backward"):
        assert np.isfinite(metrics[key]["mse_x1e4"]) and len(metrics[key]["per_frame_mse"]) == 10
    for key in ("energy", "time_rescaling", "latent_r2"):
        assert key in metrics
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["colors"], config["noise_std"], config["data_frames"]) == (2, 0.02, 13)
    # The variant was generated (TFDS config name tags: 13 frames, 2 colours, noise 0.02).
    assert [p.name for p in (cli_run[1] / "hamiltonian_physics").glob("pendulum*")] == ["pendulum_t13_c2_noise0p02_n16x8"]
    long = metrics["long_horizon"]
    assert long["frames_beyond"] == 6 and long["rollout_frames"] == 10 + 6
    assert all(np.isfinite(long[d]["mse_x1e4"]) for d in ("forward", "backward"))
    assert (run / "long_horizon.png").exists()
    assert json.loads((run / "saved_model" / "hgn_config.json").read_text())["step"] == 4
    assert predict.locate_export(run)[1]["stale"] is None


def test_cli_resume_continues_from_saved_step(cli_run):
    run, data_dir, _ = cli_run
    # --no-export is kept by the resumed config, so neither run below re-exports.
    proc = _cli("--run-dir", str(run), "--resume", "--steps", "6", "--verbose", "0", "--no-export")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == 4 and metrics["step"] == 6 and metrics["config"]["export"] is False
    # The step-4 export is left in place, and python -m hgn.predict says it is behind the run.
    stale = predict.locate_export(run)[1]["stale"]
    assert "step 4" in stale and "step 6" in stale and "--eval-only --export" in stale
    proc = _cli("--run-dir", str(run), "--resume", "--eval-only", "--verbose", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "metrics.json").read_text())["step"] == 6


# (An unknown --dataset, a missing run to resume and --eval-only without --resume are cases of
# tests/test_bad_inputs.py.)
@pytest.mark.parametrize("args, reason", [
    (["--steps", "-5"], "--steps must be > 0"),
    (["--noise-std", "-0.1"], "--noise-std must be >= 0"),
    (["--colors", "0"], "--colors must be > 0"),
])
def test_cli_bad_input_exits_nonzero_with_one_line(args, reason):
    proc = _cli(*args, timeout=120)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("train_hgn.py: error")]
    assert len(lines) == 1 and reason in lines[0], proc.stderr[-2000:]


def test_dataset_picks_up_its_system_settings_and_flags_still_win():
    from hgn import cli
    from hgn.config import PRESETS, SYSTEM_SETTINGS

    def config_of(*argv):
        return cli._resolve(list(argv))[1]

    settings = SYSTEM_SETTINGS["double_pendulum"]
    for preset in ("quick", "quality"):
        config = config_of("--dataset", "double_pendulum", "--preset", preset)
        assert {k: getattr(config, k) for k in settings} == settings
        # Everything else is the recipe's.
        assert dataclasses.replace(config, **{k: getattr(PRESETS[preset], k) for k in settings}) == PRESETS[preset]
    assert config_of("--dataset", "pendulum") == PRESETS["quick"]
    assert config_of("--dataset", "double_pendulum", "--preset", "paper") == PRESETS["paper"]
    assert config_of("--dataset", "double_pendulum", "--curriculum-steps", "500").curriculum_steps == 500


class _FirstBatchTimer(keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None):
        if not hasattr(self, "began"):
            self.began = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if not hasattr(self, "seconds"):
            self.seconds = time.monotonic() - self.began


def test_time_paced_run_feeds_its_clock_to_the_schedule_and_resumes_it(arrays, tmp_path):
    config = dataclasses.replace(CONFIG, pace="time", max_train_minutes=30.0, steps=8, checkpoint_every=4,
                                 warmup_steps=2, decay="cosine")
    model = training.build_model(config)
    first = _FirstBatchTimer()
    with pytest.raises(KeyboardInterrupt):
        training.train(model, _dataset(arrays), tmp_path, manager=training.checkpoint_manager(model, tmp_path),
                       verbose=0, extra_callbacks=[first, _Interrupt(4)])
    spent = float(model.train_seconds.numpy())
    # Fed before every batch (the fourth's value was checkpointed): the steps after the first, whose
    # tracing and compilation (seconds) stay out of the clock; a clock counting them would be above.
    assert 0.0 < spent < first.seconds
    resumed = training.build_model(config)
    manager = training.checkpoint_manager(resumed, tmp_path)
    training.restore_latest(resumed, manager, required=True)
    assert float(resumed.train_seconds.numpy()) == pytest.approx(spent)  # checkpointed
    # The resumed clock continues from the model's restored seconds. Set 15 minutes ahead (no run
    # of this size spends that; still inside its 30-minute budget), the clock must end above it;
    # one restarted at 0 would end far below.
    # (Comparing against this call's own duration instead failed on a fast CPU, where the first
    # run's seconds were fewer than the resumed call's compile and evaluation took.)
    resumed.train_seconds.assign(spent + 900.0)
    training.train(resumed, _dataset(arrays), tmp_path, manager=manager, verbose=0)
    assert int(resumed.train_steps.numpy()) == 8 and float(resumed.train_seconds.numpy()) > spent + 900.0


def test_a_resumed_step_paced_run_continues_its_time_budget(arrays, tmp_path):
    # Without a test curve or time pacing the clock is not checkpointed: a resume reads the training
    # seconds logged in history.json up to the restored step (common.runs.spent_training_seconds).
    config = dataclasses.replace(CONFIG, max_train_minutes=1.0, steps=8, checkpoint_every=4)
    model = training.build_model(config)
    with pytest.raises(KeyboardInterrupt):
        training.train(model, _dataset(arrays), tmp_path, manager=training.checkpoint_manager(model, tmp_path),
                       verbose=0, extra_callbacks=[_Interrupt(4)])
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["step"] for h in history] == [4] and 0.0 < history[0]["train_seconds"] < 60.0
    history[0]["train_seconds"] = 60.5  # as if those 4 steps had used the whole minute
    (tmp_path / "history.json").write_text(json.dumps(history))
    resumed = training.build_model(config)
    manager = training.checkpoint_manager(resumed, tmp_path)
    training.restore_latest(resumed, manager, required=True)
    training.train(resumed, _dataset(arrays), tmp_path, manager=manager, verbose=0)
    assert int(resumed.train_steps.numpy()) == 5  # one step, then the spent budget stops it (a fresh clock: 8)
