"""The shared command-line config and crash-safe file helpers (common/config.py, common/runs.py)."""
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Tuple

import pytest

from common.config import field, from_dict, parse_config, positive, to_dict
from common.runs import (HISTORY_FILE, atomic_directory, atomic_write_json, check_writable_dir,
                         claim_run_dir, load_history, run_cli, spent_training_seconds, sweep_temporaries,
                         RunError)

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Toy:
    steps: int = field(100, "training steps")
    lr: float = field(1e-3, "learning rate")
    widths: Tuple[int, ...] = field((64, 64), "hidden widths")
    jit: bool = field(True, "compile with XLA")
    seed: Optional[int] = field(None, "random seed")

    def validate(self):
        positive(self, "steps", "lr", "widths")


PRESETS = {"small": Toy(steps=5), "paper": Toy()}


def test_preset_then_flags():
    config, _ = parse_config(Toy, PRESETS, "small", ["--widths", "32,16", "--no-jit", "--seed", "3"])
    assert config == Toy(steps=5, widths=(32, 16), jit=False, seed=3)
    config, _ = parse_config(Toy, PRESETS, "small", ["--preset", "paper", "--lr", "0.5"])
    assert config == Toy(lr=0.5)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "-1"], "--steps must be > 0, got -1"),
    (["--steps", "abc"], "--steps expects an integer, got 'abc'"),
    (["--lr", "nan"], "--lr expects a finite number"),
    (["--lr", "inf"], "--lr expects a finite number, got 'inf'"),
    (["--lr=-Infinity"], "--lr expects a finite number"),
    (["--widths", "64,0"], "--widths must be > 0"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
])
def test_bad_values_exit_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Toy, PRESETS, "small", argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_config_round_trips_through_json():
    config = Toy(widths=(8, 4), seed=7)
    assert from_dict(Toy, json.loads(json.dumps(to_dict(config)))) == config
    with pytest.raises(ValueError, match="unknown config fields"):
        from_dict(Toy, {"stepz": 3})


def test_atomic_json_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})  # NaN is refused, never written
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_directory_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "export"
    with atomic_directory(target) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("crash mid-export")
    assert (target / "v").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_unwritable_dir_is_named(tmp_path, monkeypatch):
    # A folder this process may not write into: read-only for a user. Root writes anywhere (CI
    # runs as root), so there the write probe's permission error is raised by hand, as the OS
    # would raise it. Either way the error names the flag, the folder and the reason.
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:
        def denied(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(RunError, match=r"--run-dir '.*/locked/run' is not writable: Permission denied"):
        check_writable_dir(locked / "run")
    monkeypatch.undo()
    locked.chmod(0o700)
    assert check_writable_dir(locked / "run") == locked / "run"  # writable again: no error


def test_unwritable_dir_under_a_file_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunError, match="--run-dir .* is not writable"):
        check_writable_dir(blocker / "run")


def test_run_cli_prints_one_line(capsys):
    def failing(argv):
        raise RuntimeError("checkpoint  is\n corrupted")

    assert run_cli(failing, []) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint is corrupted" in err and "Traceback" not in err
    assert run_cli(failing, ["--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_run_cli_shortens_huge_messages_but_keeps_both_ends(capsys):
    # TensorFlow errors can print whole tensors; the advice at the end must survive.
    def failing(argv):
        raise ValueError("cannot convert " + "0.123, " * 5000 + "; regenerate with python -m data.generate")

    assert run_cli(failing, []) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 800
    assert "cannot convert" in err and "python -m data.generate" in err and " ... " in err


def test_spent_training_seconds_is_the_latest_logged_clock_reading():
    history = [{"step": 10, "train_seconds": 4.0}, {"step": 20, "train_seconds": 9.5}]
    curve = [{"step": 15, "train_seconds": 7.0}]
    assert spent_training_seconds(history, curve) == 9.5
    assert spent_training_seconds([], [{"step": 30, "train_seconds": 12.0}]) == 12.0
    assert spent_training_seconds([{"step": 10, "loss": 1.0}]) == 0.0  # a run from before the field: from 0
    assert spent_training_seconds() == 0.0


def test_load_history_keeps_what_the_checkpoint_covers(tmp_path):
    assert load_history(tmp_path, 100) == []  # a new run
    atomic_write_json(tmp_path / HISTORY_FILE, [{"step": s, "loss": 1.0 / s} for s in (50, 100, 150)])
    assert [h["step"] for h in load_history(tmp_path, 100)] == [50, 100]
    assert load_history(str(tmp_path), 0) == []


def test_console_quiet_drops_only_the_listed_library_notices(caplog):
    import logging

    from common import console

    tf_logger, absl_logger = logging.getLogger("tensorflow"), logging.getLogger("absl")
    noise = "From x.py:95: LinearOperator.graph_parents (from tensorflow.python.ops.linalg) is deprecated"
    try:
        console.quiet(True)
        console.quiet(True)  # idempotent
        with caplog.at_level(logging.WARNING):
            tf_logger.warning(noise)
            absl_logger.warning("Using custom data configuration: %s", "PhysicsConfig(...)")
            tf_logger.warning("a real problem with the run")
        assert [r.getMessage() for r in caplog.records] == ["a real problem with the run"]
        caplog.clear()
        console.quiet(False)  # --verbose 2: the notices are back
        with caplog.at_level(logging.WARNING):
            tf_logger.warning(noise)
        assert [r.getMessage() for r in caplog.records] == [noise]
    finally:
        console.quiet(False)


def test_training_clock_leaves_out_each_fit_calls_set_up_and_first_batch():
    import time

    from common.callbacks import ExcludeCompilation, TrainingClock

    clock = TrainingClock()
    exclude = ExcludeCompilation(clock)

    def fit_call(set_up, first, later):  # what Keras calls, with sleeps standing in for the work
        exclude.on_train_begin()
        time.sleep(set_up)
        for batch, seconds in enumerate([first, later]):
            exclude.on_train_batch_begin(batch)
            time.sleep(seconds)
            exclude.on_train_batch_end(batch)

    fit_call(0.2, 0.4, 0.1)  # set-up, then a first batch that compiles
    # Only the later batch counts (tolerance: the callbacks' own time, and sleeps that overrun).
    assert clock.paused >= 0.6 and 0.1 <= clock.seconds() < 0.3
    counted = clock.seconds()
    fit_call(0.0, 0.4, 0.1)  # a resume or rollback compiles again: left out again
    assert clock.paused >= 1.0 and 0.1 <= clock.seconds() - counted < 0.3


def _python(code: str) -> subprocess.Popen:
    """`code` in a fresh Python process that imports this repository (no TensorFlow)."""
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))


def _killed_inside(code: str) -> None:
    """Runs `code` in a fresh process in which the `n`-th `os.replace` is a SIGKILL instead (`n`
    set by the code): a crash inside one of common.runs' atomic writes, as a power cut leaves it."""
    proc = _python("import os, signal\n"
                   "calls = [0]\n"
                   "real_replace = os.replace\n"
                   "def replace(*args):\n"
                   "    calls[0] += 1\n"
                   "    if calls[0] == n:\n"
                   "        os.kill(os.getpid(), signal.SIGKILL)\n"
                   "    real_replace(*args)\n"
                   "os.replace = replace\n" + code)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def test_a_held_run_dir_is_refused_until_its_holder_ends_however_it_ends(tmp_path):
    run = check_writable_dir(tmp_path / "run")
    # The holder forks a child that outlives it (as the dataset generator's worker pool may): the
    # child must not keep the claim (common.runs closes it in forked children).
    holder = _python(f"import os, time\n"
                     f"from common.runs import claim_run_dir\n"
                     f"with claim_run_dir({str(run)!r}):\n"
                     f"    child = os.fork()\n"
                     f"    if child == 0:\n"
                     f"        time.sleep(120)\n"
                     f"        os._exit(0)\n"
                     f"    print(child, flush=True)\n"
                     f"    time.sleep(120)")
    child = None
    try:
        child = int(holder.stdout.readline())
        stale = run / ".history.json.abc12345.tmp"
        stale.write_text("[")
        with pytest.raises(RunError, match=rf"--run-dir '.*/run' is in use by a run that has not ended "
                                           rf"\(pid {holder.pid}: .+\); wait for it to end"):
            with claim_run_dir(run):
                pass
        assert stale.exists()  # only the holder sweeps: this could be a live writer's temporary
        assert [p.name for p in run.iterdir()] == [stale.name]  # no lock file: the folder itself is locked
    finally:
        holder.kill()  # SIGKILL: no chance to release anything itself
        holder.wait(timeout=30)
    try:
        with claim_run_dir(run):  # the kernel dropped the killed holder's lock; its live child has none
            assert not stale.exists()  # swept by the new holder
        with claim_run_dir(run):  # released at the end of the block: the same process claims it again
            pass
    finally:
        if child:
            os.kill(child, signal.SIGKILL)


def test_the_sweep_removes_exactly_what_a_kill_inside_an_atomic_write_leaves(tmp_path):
    run = check_writable_dir(tmp_path / "run")
    # Killed inside atomic_write_json (its only os.replace): the old history stays, the new one
    # is a hidden temporary.
    atomic_write_json(run / HISTORY_FILE, [{"step": 1}])
    _killed_inside(f"n = 1\nfrom common.runs import atomic_write_json\n"
                   f"atomic_write_json({str(run / HISTORY_FILE)!r}, [{{'step': 2}}])")
    # Killed inside atomic_directory between its two renames: the previous export is
    # `.saved_model.old`, the new one a temporary, and nothing is named saved_model.
    with atomic_directory(run / "saved_model") as tmp:
        (tmp / "v").write_text("1")
    _killed_inside(f"n = 2\nfrom common.runs import atomic_directory\n"
                   f"with atomic_directory({str(run / 'saved_model')!r}) as tmp:\n"
                   f"    (tmp / 'v').write_text('2')")
    left = sorted(p.name for p in run.iterdir())
    assert not (run / "saved_model").exists() and ".saved_model.old" in left
    assert sum(name.startswith(f".{HISTORY_FILE}.") and name.endswith(".tmp") for name in left) == 1
    assert sum(name.startswith(".saved_model.") and name.endswith(".tmp") for name in left) == 1
    # A probe of check_writable_dir (killed between creating and deleting it).
    probe = tempfile.mkstemp(prefix=".write-probe.", dir=run)
    os.close(probe[0])
    # What is not a leftover: the user's and the run's own files, hidden backups and temporaries
    # of other programs included (the run folder may be any folder).
    for name in ("keep.tmp", ".notes", ".bash_history.tmp", ".history.json.tmp", ".write-probe"):
        (run / name).write_text("x")
    (run / ".config.old").mkdir()

    swept = sweep_temporaries(run)

    assert len(swept) == 4, swept
    assert sorted(p.name for p in run.iterdir()) == [".bash_history.tmp", ".config.old", ".history.json.tmp",
                                                     ".notes", ".write-probe", HISTORY_FILE, "keep.tmp", "saved_model"]
    assert json.loads((run / HISTORY_FILE).read_text()) == [{"step": 1}]
    assert (run / "saved_model" / "v").read_text() == "1"  # the previous export, put back
    assert sweep_temporaries(run) == []
    # An `.old` beside a complete export (killed before deleting it) is a leftover too.
    (run / ".saved_model.old").mkdir()
    assert [p.name for p in sweep_temporaries(run)] == [".saved_model.old"]
    assert (run / "saved_model" / "v").read_text() == "1"
