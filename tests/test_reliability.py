"""Crash safety and determinism of the training runs: SIGKILL, SIGINT, same seed -> same losses."""
import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
NHF_ARGS = ["--target", "mixture", "--steps", "400", "--batch-size", "64", "--train-size", "2000",
            "--test-size", "300", "--eval-momenta", "8", "--eval-every", "400", "--log-every", "10",
            "--widths", "16", "--encoder-widths", "16", "--no-jit", "--no-progress", "--no-export"]


def _default_sigint():
    # A shell without job control starts background jobs with SIGINT ignored, and the ignore is
    # inherited: under `nohup bash .ci/run &` the trainer would never see Ctrl-C. Give the child
    # the default disposition, so Python installs its KeyboardInterrupt handler as in a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args, program="train_nhf.py"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    return subprocess.Popen([sys.executable, str(ROOT / program), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)


def _checkpoint_steps(run: Path):
    return sorted(int(p.name.split("-")[-1].split(".")[0]) for p in (run / "checkpoints").glob("ckpt-*.index"))


def _wait_for(predicate, proc, timeout=240):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() - t0 < timeout, "timed out waiting for the run"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run = tmp_path_factory.mktemp("nhf_full") / "run"
    proc = _start([*NHF_ARGS, "--checkpoint-every", "50", "--run-dir", run])
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return json.loads((run / "metrics.json").read_text())


def test_sigkill_then_resume_matches_an_uninterrupted_run(uninterrupted, tmp_path):
    run = tmp_path / "run"
    proc = _start([*NHF_ARGS, "--checkpoint-every", "50", "--run-dir", run])
    _wait_for(lambda: (run / "checkpoints" / "checkpoint").exists(), proc)
    time.sleep(random.Random(0).uniform(0.0, 1.5))  # "a random moment", reproducibly chosen
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = _checkpoint_steps(run)
    assert saved and saved[-1] < 400
    # No half-written file: every file is written to a hidden temporary and renamed into place
    # (common.runs.atomic_write_*), so a SIGKILL can leave such a temporary, if it lands inside a
    # write (seen once in CI: `.history.json.<random>.tmp`), but never a torn file under its name.
    leftovers = [p for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert all(p.name.startswith(".") for p in leftovers), leftovers
    written = [p for p in run.glob("*.json") if not p.name.startswith(".")]
    assert any(p.name == "config.json" for p in written)
    for p in written:
        json.loads(p.read_text())  # whole: a torn JSON file would not parse

    # What such a kill leaves is swept by the resumed run, which holds the folder (claim_run_dir):
    # planted here, since the kill above lands inside a write only now and then.
    (run / ".metrics.json.planted1.tmp").write_text("{")  # tempfile's 8 random characters
    resumed = _start(["--run-dir", run, "--resume", "--no-progress"])  # the run's own config
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == uninterrupted["step"] == 400
    # Same step counter, optimizer state, data position and random stream: the same model.
    # Tolerance: float32 round-off only (a different stream would differ by ~1e-2 nats).
    assert metrics["test_nll"] == pytest.approx(uninterrupted["test_nll"], abs=1e-5)
    assert metrics["train_nll"] == pytest.approx(uninterrupted["train_nll"], abs=1e-5)


@pytest.mark.parametrize("program, args", [("train_nhf.py", NHF_ARGS),
                                           ("train_hgn.py", ["--dataset", "pendulum", "--preset", "tiny"])])
def test_a_second_trainer_on_a_live_run_dir_is_refused_and_writes_nothing(program, args, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom common.runs import claim_run_dir\n"
                               "with claim_run_dir(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(300)",
                               str(run)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "held"
        second = _start([*args, "--run-dir", run], program)
        out, err = second.communicate(timeout=300)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert second.returncode == 1, err[-3000:]
    assert f"{program}: error: --run-dir '{run}' is in use by a run that has not ended (pid {holder.pid}:" in err
    assert not list(run.iterdir())  # no config, checkpoint or output of its own


def test_sigint_saves_a_checkpoint_before_exiting(tmp_path):
    run = tmp_path / "run"
    proc = _start([*NHF_ARGS, "--checkpoint-every", "1000", "--run-dir", run])
    # TensorBoard scalars appear every 10 steps: wait until training is under way.
    _wait_for(lambda: any(p.stat().st_size > 400 for p in (run / "logs").glob("events*")), proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "I0000" not in err  # one line, no TensorFlow start-up chatter
    saved = _checkpoint_steps(run)
    assert len(saved) == 1 and 0 < saved[0] < 400  # no periodic checkpoint was due: this is Ctrl-C's
    resumed = _start([*NHF_ARGS, "--checkpoint-every", "1000", "--run-dir", run, "--resume", "--steps",
                      str(saved[0] + 10)])
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert json.loads((run / "metrics.json").read_text())["step"] == saved[0] + 10


def test_same_seed_gives_bit_identical_nhf_losses(tmp_path):
    from nhf import PRESETS, training

    config = dataclasses.replace(PRESETS["small"], target="mixture", steps=8, batch_size=64, train_size=1000,
                                 test_size=200, log_every=1, eval_every=1000, checkpoint_every=1000,
                                 widths=(16,), encoder_widths=(16,), jit_compile=False, export=False)
    losses = []
    for i in range(2):
        run = training.build_run(config, tmp_path / str(i))
        history = training.train(run, tmp_path / str(i), progress=False)["history"]
        losses.append([h["loss"] for h in history])
    assert len(losses[0]) == 8
    assert losses[0] == losses[1]  # bit-identical, not approximately equal
    other = dataclasses.replace(config, seed=1)
    run = training.build_run(other, tmp_path / "other")
    assert [h["loss"] for h in training.train(run, tmp_path / "other", progress=False)["history"]] != losses[0]


def test_same_seed_gives_bit_identical_hgn_losses(tmp_path):
    import keras

    import data
    from hgn import PRESETS, training

    config = dataclasses.replace(PRESETS["tiny"], steps=4, checkpoint_every=4)
    arrays = data.generate_arrays("pendulum", 8, n_frames=config.data_frames)

    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))

    losses = []
    # The third run, with another --seed, shows the check can fail. (Keras's global seed alone
    # changes nothing: build_model seeds from the config, which is what makes runs repeatable.)
    for i, seed in enumerate((0, 0, 1)):
        keras.utils.set_random_seed(seed)
        run_config = dataclasses.replace(config, seed=config.seed + seed)
        model = training.build_model(run_config)
        ds = data.make_dataset_from_arrays(arrays, window=config.window, batch_size=config.batch_size, shuffle=True,
                                           seed=run_config.seed, repeat=True)
        record = Record()
        training.train(model, ds, tmp_path / str(i), manager=training.checkpoint_manager(model, tmp_path / str(i)),
                       verbose=0, extra_callbacks=[record])
        losses.append(record.losses)
    assert len(losses[0]) == 4 and np.all(np.isfinite(losses[0]))
    assert losses[0] == losses[1]  # bit-identical, not approximately equal
    assert losses[2] != losses[0]
