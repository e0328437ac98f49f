"""Bad input to both command lines and both SavedModels.

Every case asserts: a non-zero exit with exactly one `prog: error: ...` line naming the problem
and no Python traceback (command lines), or a raised, typed error whose message names the
problem (SavedModels); and that no existing run, checkpoint or dataset was changed.
"""
import io
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

ROOT = Path(__file__).resolve().parents[1]
TYPED_ERRORS = (ValueError, TypeError, tf.errors.InvalidArgumentError)

HGN_TINY = ["--dataset", "pendulum", "--preset", "tiny", "--steps", "2", "--checkpoint-every", "2", "--verbose", "0"]
NHF_TINY = ["--target", "mixture", "--preset", "small", "--steps", "20", "--batch-size", "64", "--train-size", "1000",
            "--test-size", "200", "--eval-momenta", "4", "--eval-every", "10", "--checkpoint-every", "10",
            "--log-every", "10", "--widths", "8", "--encoder-widths", "8", "--no-jit", "--no-progress"]


def _cli(script, *args, timeout=600, tf_log_level="2"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=tf_log_level)
    if tf_log_level is None:  # as a user runs it: TensorFlow's C++ start-up lines are the command's to hide
        del env["TF_CPP_MIN_LOG_LEVEL"]
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def _tree_digest(path: Path) -> str:
    """A hash of every file's name and bytes below `path` (what 'not damaged' means here)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def _assert_one_line_error(proc, script, *phrases):
    assert proc.returncode != 0, proc.stdout[-1000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{script}: error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for phrase in phrases:
        assert phrase in errors[0], errors[0]


@pytest.fixture(scope="module")
def hgn_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad_hgn")
    run, data_dir = base / "run", base / "data"
    proc = _cli("train_hgn.py", *HGN_TINY, "--run-dir", run, "--data-dir", data_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run, data_dir


@pytest.fixture(scope="module")
def nhf_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("bad_nhf") / "run"
    proc = _cli("train_nhf.py", *NHF_TINY, "--run-dir", run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


# ----------------------------------------------------------------------------- argument errors
ARGUMENT_CASES = [
    ("train_hgn.py", ["--dataset", "pendulun"], ["unknown --dataset 'pendulun'", "pendulum, mass_spring"]),
    ("train_hgn.py", ["--steps", "0"], ["--steps must be > 0"]),
    ("train_hgn.py", ["--batch-size", "-4"], ["--batch-size must be > 0"]),
    ("train_hgn.py", ["--learning-rate", "fast"], ["--learning-rate expects a number"]),
    ("train_hgn.py", ["--dt", "inf"], ["--dt expects a finite number, got 'inf'"]),
    ("train_hgn.py", ["--integrator", "verlet"], ["verlet", "leapfrog"]),
    ("train_hgn.py", ["--preset", "huge"], ["invalid choice: 'huge'"]),
    ("train_hgn.py", ["--resume", "--run-dir", "/nonexistent/hgn-run"], ["does not exist"]),
    ("train_hgn.py", ["--eval-only"], ["--eval-only needs --resume"]),
    ("train_nhf.py", ["--target", "spiral"], ["spiral", "valid targets: banana, checkerboard"]),
    ("train_nhf.py", ["--prior", "cauchy"], ["cauchy", "valid: normal, learned_normal, student_t, laplace"]),
    ("train_nhf.py", ["--steps", "-3"], ["--steps must be > 0"]),
    ("train_nhf.py", ["--target", "rings", "--resume"], ["--resume needs --run-dir"]),  # it resolved a new config
    ("train_nhf.py", ["--learning-rate", "nan"], ["--learning-rate expects a finite number"]),
    ("train_nhf.py", ["--lr", "nan"], ["--learning-rate expects a finite number"]),  # the old spelling, same check
    ("train_nhf.py", ["--data", "x.npy", "--mode", "vi", "--target", "funnel"], ["--data", "--mode density"]),
    ("train_nhf.py", ["--widths", "64,0"], ["--widths must be > 0"]),
    ("train_nhf.py", ["--dtype", "float16"], ["float16"]),
    ("train_nhf.py", ["--batch-size", "1e3"], ["--batch-size expects an integer"]),
]


@pytest.mark.parametrize("script, args, phrases", ARGUMENT_CASES,
                         ids=[f"{s[6:9]}:{' '.join(a)}" for s, a, _ in ARGUMENT_CASES])
def test_bad_arguments(script, args, phrases, capsys, monkeypatch):
    """In-process (argument checks need no subprocess): exit status 2 and one line on stderr."""
    import importlib

    from common.runs import run_cli

    monkeypatch.setattr(sys, "argv", [script])
    main = importlib.import_module(script[:-3]).main
    with pytest.raises(SystemExit) as info:
        run_cli(main, args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    proc = subprocess.CompletedProcess(args, 2, stdout="", stderr=err)
    _assert_one_line_error(proc, script, *phrases)


@pytest.mark.parametrize("script, args, status", [
    ("train_hgn.py", ["--dataset", "nope"], 2), ("train_nhf.py", ["--target", "nope"], 2),
    ("train_hgn.py", ["--decoder", "subpixl"], 2), ("train_hgn.py", ["--integrator", "leapfrg"], 2),
    ("train_hgn.py", ["--replicas", "0"], 2), ("train_nhf.py", ["--replicas", "0"], 2),  # checked after the config
    ("train_hgn.py", ["--help"], 0), ("train_nhf.py", ["--help"], 0),
    ("data.generate", ["nope"], 2), ("data.generate", ["--help"], 0), ("hgn.predict", ["/nonexistent"], 2)])
def test_flags_are_checked_before_tensorflow_loads(script, args, status):
    """A typo or --help is answered without loading TensorFlow (under a second, not 6-8 s)."""
    run = "runpy.run_path(sys.argv[0]" if script.endswith(".py") else f"runpy.run_module({script!r}"
    code = (f"import runpy, sys\nsys.argv = [{script!r}, *{args!r}]\n"
            f"try:\n    {run}, run_name='__main__')\nexcept SystemExit as e:\n    status = e.code\n"
            "print('exit', status, 'tensorflow loaded:', 'tensorflow' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.stdout.strip().splitlines()[-1] == f"exit {status} tensorflow loaded: False", proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- run-time errors
def test_unwritable_run_dir(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for script, args in (("train_hgn.py", HGN_TINY), ("train_nhf.py", NHF_TINY)):
        proc = _cli(script, *args, "--run-dir", blocker / "run", timeout=180)
        _assert_one_line_error(proc, script, "not writable")
    assert blocker.read_text() == ""


def _only_the_error_line(proc):
    # Run as a user runs it (no TF_CPP_MIN_LOG_LEVEL), after TensorFlow loaded: none of its
    # C++ start-up lines may come before the error.
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


def test_existing_nhf_run_is_not_overwritten_without_resume(nhf_run):
    before = _tree_digest(nhf_run)
    proc = _cli("train_nhf.py", *NHF_TINY, "--run-dir", nhf_run, timeout=300, tf_log_level=None)
    _assert_one_line_error(proc, "train_nhf.py", "already holds checkpoints")
    _only_the_error_line(proc)
    assert _tree_digest(nhf_run) == before


def test_existing_hgn_run_is_not_overwritten_without_resume(hgn_run):
    run, data_dir = hgn_run
    before = _tree_digest(run)
    proc = _cli("train_hgn.py", *HGN_TINY, "--run-dir", run, "--data-dir", data_dir, timeout=300, tf_log_level=None)
    _assert_one_line_error(proc, "train_hgn.py", "already holds checkpoints")
    _only_the_error_line(proc)
    assert _tree_digest(run) == before


def test_hgn_checkpoint_of_another_system(hgn_run):
    run, data_dir = hgn_run
    before = _tree_digest(run)
    proc = _cli("train_hgn.py", "--run-dir", run, "--resume", "--dataset", "mass_spring", timeout=300)
    _assert_one_line_error(proc, "train_hgn.py", "'pendulum'", "'mass_spring'")
    assert _tree_digest(run) == before


def _corrupt_checkpoint(run: Path) -> None:
    data_files = sorted((run / "checkpoints").glob("*.data-*"))
    assert data_files, "no checkpoint data files to corrupt"
    for f in data_files:
        raw = bytearray(f.read_bytes())
        raw[: len(raw) // 2] = b"\x00" * (len(raw) // 2)
        f.write_bytes(bytes(raw[: len(raw) * 3 // 4]))


@pytest.mark.parametrize("which", ["hgn", "nhf"])
def test_corrupted_checkpoint(which, hgn_run, nhf_run, tmp_path):
    original = hgn_run[0] if which == "hgn" else nhf_run
    before = _tree_digest(original)
    run = tmp_path / "copy"
    shutil.copytree(original, run)
    _corrupt_checkpoint(run)
    script = f"train_{which}.py"
    args = ["--run-dir", run, "--resume", "--eval-only"]
    if which == "nhf":
        args += ["--no-progress"]
    proc = _cli(script, *args, timeout=300)
    _assert_one_line_error(proc, script, "checkpoint")
    assert _tree_digest(original) == before


@pytest.mark.parametrize("which", ["hgn", "nhf"])
def test_missing_checkpoint(which, hgn_run, nhf_run, tmp_path):
    original = hgn_run[0] if which == "hgn" else nhf_run
    run = tmp_path / "copy"
    shutil.copytree(original, run)
    shutil.rmtree(run / "checkpoints")
    script = f"train_{which}.py"
    proc = _cli(script, "--run-dir", run, "--resume", timeout=300)
    _assert_one_line_error(proc, script, "checkpoint")


def test_truncated_dataset_file(hgn_run, tmp_path):
    _, data_dir = hgn_run
    before = _tree_digest(data_dir)
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    records = sorted(copy.rglob("*.tfrecord*"))
    assert records
    records[0].write_bytes(records[0].read_bytes()[:100])
    proc = _cli("train_hgn.py", *HGN_TINY, "--run-dir", tmp_path / "run", "--data-dir", copy, timeout=300)
    _assert_one_line_error(proc, "train_hgn.py", "data.generate")
    assert _tree_digest(data_dir) == before


def test_full_disk(tmp_path):
    """A 512 kB filesystem (enough for checkpoints, not for the SavedModel): the run stops with one line and nothing half-written stays behind."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {made.stderr.decode().strip()}")
    try:
        proc = _cli("train_nhf.py", *NHF_TINY, "--run-dir", mount / "run", timeout=300)
        _assert_one_line_error(proc, "train_nhf.py", "No space left on device")
        run = mount / "run"
        # Training finished and checkpointed (20 steps: NHF_TINY) before the SavedModel filled the
        # disk; the export left nothing behind, neither a half-written saved_model nor its temporary.
        assert (run / "checkpoints" / "ckpt-20.index").is_file(), sorted(p.name for p in run.rglob("*"))
        assert not (run / "saved_model").exists()
        leftovers = [p.name for p in run.rglob("*") if ".tmp" in p.name]
        assert not leftovers, leftovers
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# ----------------------------------------------------------------------------- SavedModels
@pytest.fixture(scope="module")
def hgn_export(hgn_run):
    return tf.saved_model.load(str(hgn_run[0] / "saved_model"))


@pytest.fixture(scope="module")
def nhf_export(nhf_run):
    return tf.saved_model.load(str(nhf_run / "saved_model"))


def _frames(n=2, t=6, size=32, dtype=np.float32):
    return tf.constant(np.random.default_rng(0).uniform(size=(n, t, size, size, 3)).astype(dtype))


def _cast(got: str, wanted: str) -> str:
    """TensorFlow's words for an input that does not fit a signature: spec `got` cast to `wanted`."""
    return f"Can not cast TensorSpec({got}) to TensorSpec({wanted}"


FRAMES_SPEC = "shape=(None, None, 32, 32, 3), dtype=tf.float32, name='frames')"
HGN_EXPORT_CASES = {
    "encode: wrong image size": (lambda m: m.encode(_frames(size=16)),
                                 _cast("shape=(2, 6, 16, 16, 3), dtype=tf.float32, name='frames'", FRAMES_SPEC)),
    "encode: float64 frames": (lambda m: m.encode(_frames(dtype=np.float64)),
                               _cast("shape=(2, 6, 32, 32, 3), dtype=tf.float64, name='frames'", FRAMES_SPEC)),
    "encode: rank-4 frames": (lambda m: m.encode(_frames()[:, 0]),
                              _cast("shape=(2, 32, 32, 3), dtype=tf.float32, name='frames'", FRAMES_SPEC)),
    "encode: too few frames": (lambda m: m.encode(_frames(t=1)), "need at least 3 frames"),
    "encode: NaN in frames": (lambda m: m.encode(tf.tensor_scatter_nd_update(_frames(), [[0, 0, 0, 0, 0]], [np.nan])),
                              "frames must be finite"),
    "rollout: negative n_steps": (lambda m: m.rollout(_frames(), tf.constant(-1), tf.constant(0.125)),
                                  "n_steps must be >= 0"),
    "rollout: Inf in frames": (lambda m: m.rollout(tf.tensor_scatter_nd_update(_frames(), [[1, 2, 3, 4, 0]], [np.inf]),
                                                   tf.constant(3), tf.constant(0.125)), "frames must be finite"),
    "rollout: non-finite dt": (lambda m: m.rollout(_frames(), tf.constant(3), tf.constant(np.nan, tf.float32)),
                               "dt must be finite"),
    "decode: wrong q shape": (lambda m: m.decode(tf.zeros([2, 3, 3, 4])),
                              _cast("shape=(2, 3, 3, 4), dtype=tf.float32, name='q'",
                                    "shape=(None, 4, 4, 4), dtype=tf.float32, name='q')")),
    "sample: n = 0": (lambda m: m.sample(tf.constant(0), tf.constant(3), tf.constant(0.125)), "n must be > 0"),
}


@pytest.mark.parametrize("case", sorted(HGN_EXPORT_CASES))
def test_hgn_saved_model_rejects(case, hgn_export):
    call, phrase = HGN_EXPORT_CASES[case]
    with pytest.raises(TYPED_ERRORS) as info:
        call(hgn_export)
    assert phrase in str(info.value)  # the message names the problem (TF's own words for a wrong spec)


Q_SPEC = "shape=(None, 2), dtype=tf.float32, name='q')"
NHF_EXPORT_CASES = {
    "log_prob: wrong event size": (lambda m: m.log_prob(tf.zeros([4, 3])),
                                   _cast("shape=(4, 3), dtype=tf.float32, name='q'", Q_SPEC)),
    "log_prob: int32 points": (lambda m: m.log_prob(tf.zeros([4, 2], tf.int32)),
                               _cast("shape=(4, 2), dtype=tf.int32, name='q'", Q_SPEC)),
    "log_prob: rank-1 points": (lambda m: m.log_prob(tf.zeros([2])),
                                _cast("shape=(2,), dtype=tf.float32, name='q'", Q_SPEC)),
    "log_prob: NaN in points": (lambda m: m.log_prob(tf.constant([[0.0, np.nan]], tf.float32)), "q must be finite"),
    "log_prob: Inf in points": (lambda m: m.log_prob(tf.constant([[np.inf, 0.0]], tf.float32)), "q must be finite"),
    "sample: negative n": (lambda m: m.sample(tf.constant(-1)), "n must be >= 0"),
    "sample: float n": (lambda m: m.sample(tf.constant(2.0)),
                        _cast("shape=(), dtype=tf.float32, name='n'", "shape=(), dtype=tf.int32, name='n')")),
}


@pytest.mark.parametrize("case", sorted(NHF_EXPORT_CASES))
def test_nhf_saved_model_rejects(case, nhf_export):
    call, phrase = NHF_EXPORT_CASES[case]
    with pytest.raises(TYPED_ERRORS) as info:
        call(nhf_export)
    assert phrase in str(info.value)


def test_exports_still_work_on_good_input(hgn_export, nhf_export):
    """The checks above reject bad input, not all input."""
    out = hgn_export.rollout(_frames(), tf.constant(3), tf.constant(-0.125))
    assert out["frames"].shape == (2, 4, 32, 32, 3)
    lp = nhf_export.log_prob(tf.zeros([3, 2]))
    assert lp.shape == (3,) and np.all(np.isfinite(lp.numpy()))
    assert nhf_export.sample(tf.constant(5)).shape == (5, 2)


# ----------------------------------------------------------------------------- --data files
def _write(path: Path, content) -> Path:
    if isinstance(content, str):
        path.write_text(content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, dict):
        np.savez(path, **content)
    else:
        np.save(path, content)
    return path


_GOOD = np.random.default_rng(0).normal(size=(200, 2))


def _saved(save, *args, **kwargs) -> bytes:
    """What `np.save` / `np.savez` write, as bytes (to put under another file name)."""
    buffer = io.BytesIO()
    save(buffer, *args, **kwargs)
    return buffer.getvalue()


DATA_CASES = {
    "missing file": ("absent.npy", None, ["does not exist"]),
    "empty file": ("empty.csv", "", ["is empty"]),
    "header only": ("header.csv", "x,y\n", ["header but no rows"]),
    "ragged CSV": ("ragged.csv", "x,y\n1,2\n3,4\n5\n", ["line 4 has 1 values", "ragged"]),
    "text in CSV": ("text.csv", "1,2\n3,four\n", ["line 2", "not comma-separated numbers"]),
    "NaN values": ("nan.npy", np.where(np.arange(400).reshape(200, 2) == 7, np.nan, _GOOD), ["NaN or Inf", "row 3"]),
    "Inf in CSV": ("inf.csv", "1,2\n3,inf\n", ["NaN or Inf"]),
    "one-dimensional array": ("flat.npy", np.arange(300.0), ["one-dimensional", "x[:, None]"]),
    "three-dimensional array": ("cube.npy", np.zeros((4, 3, 2)), ["2-D array", "(4, 3, 2)"]),
    "npz with two arrays": ("two.npz", {"a": _GOOD, "b": _GOOD}, ["holds 2 arrays", "exactly one"]),
    "unknown format": ("points.txt", "1,2\n", ["unknown format '.txt'", ".npy, .npz, .csv"]),
    "fewer points than a batch": ("few.npy", _GOOD[:40], ["36 training points", "fewer than --batch-size 64"]),
    "pandas index column": ("index.csv", ",x,y\n0,1.5,2\n1,3,4\n", ["line 1", "no name", "to_csv(index=False)"]),
    "header of another width": ("width.csv", "x,y,z\n1,2\n3,4\n", ["names 3 columns", "rows have 2 values"]),
    "space-separated CSV": ("spaces.csv", "1.0e+00 2.0e+00\n3.0e+00 4.0e+00\n", ["line 1", "separated by spaces"]),
    "semicolon-separated CSV": ("semi.csv", "1;2\n3;4\n", ["line 1", "separated by semicolons"]),
    "semicolons after a header": ("semi_named.csv", "x;y\n1;2\n", ["line 2", "separated by semicolons"]),
    "tabs after a header": ("tabs_named.csv", "x\ty\n1\t2\n", ["line 2", "separated by tabs"]),
    "ragged first row": ("ragged_first.csv", "x,y\n1,2,3\n4,5\n", ["line 3 has 2 values", "ragged"]),
    "trailing comma": ("trailing.csv", "1,2,\n3,4,\n", ["line 1", "empty value"]),
    "not UTF-8": ("latin1.csv", "x,\u00e9\n1,2\n".encode("latin-1"), ["not UTF-8 text"]),
    "npy named npz": ("fake.npz", _saved(np.save, _GOOD), ["a single .npy array named .npz", "rename it .npy"]),
    "npz named npy": ("fake.npy", _saved(np.savez, a=_GOOD), ["an .npz archive named .npy", "rename it .npz"]),
    "truncated npz": ("cut.npz", _saved(np.savez, a=_GOOD)[:200], ["not a readable .npz file"]),
    "object array in npz": ("objects.npz", {"a": np.array([1, "x", None], dtype=object)},
                            ["array 'a' is not readable", "allow_pickle"]),
}
# Refused by the command line's checks, before TensorFlow starts or the run directory is made.
EARLY_DATA_CASES = {"missing file", "empty file", "unknown format"}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data_file(case, tmp_path, capsys, monkeypatch):
    """`train_nhf.py --data FILE`: exit status 1 (2 for what the flags' check sees) and one line
    naming the file and the problem."""
    from common.runs import run_cli
    from nhf.cli import main

    name, content, phrases = DATA_CASES[case]
    path = tmp_path / name if content is None else _write(tmp_path / name, content)
    monkeypatch.setattr(sys, "argv", ["train_nhf.py"])
    argv = ["--data", str(path), "--batch-size", "64", "--steps", "2", "--no-progress",
            "--run-dir", str(tmp_path / "run")]
    early = case in EARLY_DATA_CASES
    if early:
        with pytest.raises(SystemExit) as info:
            run_cli(main, argv)
        code = info.value.code
    else:
        code = run_cli(main, argv)
    assert code == (2 if early else 1)
    err = capsys.readouterr().err
    proc = subprocess.CompletedProcess([], code, stdout="", stderr=err)
    _assert_one_line_error(proc, "train_nhf.py", name, *phrases)
    assert not (tmp_path / "run" / ("" if early else "checkpoints")).exists()


def test_csv_forms_that_load(tmp_path):
    """A byte-order mark, a header of names (quoted, or with a trailing comma), comments and
    blank lines are not points."""
    from data.samples import load_samples

    for name, text in [("bom.csv", "\ufeff1,2\n3,4\n"), ("named.csv", "\ufeffx,y\n1,2\n# note\n\n3,4\n"),
                       ("spaced.csv", "x,y\n1, 2\n3 ,4\n"), ("quoted.csv", '"pos, x",y\n1,2\n3,4\n'),
                       ("trailing_header.csv", "x,y,\r\n1,2\r\n3,4\r\n")]:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        np.testing.assert_array_equal(load_samples(path), [[1.0, 2.0], [3.0, 4.0]], err_msg=name)


@pytest.mark.parametrize("points, phrase", [
    (np.full((100, 2), np.inf), "NaN or Inf"),
    (np.arange(100.0), "one-dimensional"),
    (np.zeros((0, 2)), "empty"),
    (np.array([["a", "b"]] * 100), "must hold numbers"),
])
def test_bad_points_from_python(points, phrase, tmp_path):
    from data.samples import SampleFileError
    from nhf import fit_samples

    with pytest.raises(SampleFileError, match=phrase):
        fit_samples(points, tmp_path, steps=2, batch_size=8)


# ----------------------------------------------------------------------------- the other model's run
def _foreign_run(tmp_path: Path, which: str) -> Path:
    """A run directory of `which` model as far as `--resume` reads it: its config.json, written
    as that command line writes it."""
    from common import config as config_lib

    run = tmp_path / f"{which}-run"
    run.mkdir()
    if which == "nhf":
        from nhf import PRESETS as NHF_PRESETS
        saved = config_lib.to_dict(NHF_PRESETS["small"])  # nhf.experiment.run_experiment: the flat config
    else:
        from hgn import PRESETS as HGN_PRESETS
        saved = {"dataset": "pendulum", "data_dir": str(tmp_path / "data"),  # hgn.experiment.run_experiment
                 "config": config_lib.to_dict(HGN_PRESETS["tiny"])}
    (run / "config.json").write_text(json.dumps(saved))
    return run


@pytest.mark.parametrize("which, own, other, differs", [
    ("hgn", "tiny", "small", "--batch-size 4 -> 16"),  # _foreign_run saves the tiny preset
    ("nhf", "small", "paper", ""),  # _foreign_run saves the small preset
])
def test_resume_with_another_preset_is_refused_naming_the_fields(which, own, other, differs, tmp_path):
    """`--resume --preset NAME` starts from that preset, so the fields in which it differs from
    the saved run are refused as any other changed flag is (the preset was silently ignored
    before: the run went on with its saved config). The run's own preset passes."""
    import importlib

    from common.runs import RunError

    cli, experiment = (importlib.import_module(f"{which}.{name}") for name in ("cli", "experiment"))
    presets = importlib.import_module(which).PRESETS
    run = _foreign_run(tmp_path, which)
    config = cli._resolve(["--resume", "--run-dir", str(run), "--preset", other])[1]
    assert config == presets[other] != presets[own]
    with pytest.raises(RunError, match=r"--resume with a different config than .*" + re.escape(differs)):
        experiment.check_saved_config(config, run)
    for argv in (["--preset", own], []):
        config = cli._resolve(["--resume", "--run-dir", str(run), *argv])[1]
        assert config == presets[own]
        experiment.check_saved_config(config, run)


@pytest.mark.parametrize("script, other, phrases", [
    ("train_hgn.py", "nhf", ["is a train_nhf.py run (it has a 'target'), not a train_hgn.py run"]),
    ("train_nhf.py", "hgn", ["is a train_hgn.py run (it has a 'dataset'), not a train_nhf.py run"]),
])
def test_resume_refuses_the_other_models_run(script, other, phrases, tmp_path, capsys, monkeypatch):
    """`--resume --run-dir` of the other command line's run: one line naming it, nothing changed."""
    import importlib

    from common.runs import run_cli

    run = _foreign_run(tmp_path, other)
    before = _tree_digest(run)
    monkeypatch.setattr(sys, "argv", [script])
    main = importlib.import_module(script[:-3]).main
    with pytest.raises(SystemExit) as info:
        run_cli(main, ["--resume", "--run-dir", str(run)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    _assert_one_line_error(subprocess.CompletedProcess([], 2, stdout="", stderr=err), script, str(run), *phrases)
    assert _tree_digest(run) == before


def test_hgn_resume_with_another_model_seed_or_rate_is_refused_naming_the_flags(tmp_path, capsys, monkeypatch):
    """A resumed HGN run may change its budget, evaluation and export (--steps here), not what
    the steps already taken depend on: each such flag is named, and config.json is not rewritten
    (it was, before the restore failed; --seed and --learning-rate were silently accepted)."""
    from common.runs import run_cli
    from train_hgn import main

    run = _foreign_run(tmp_path, "hgn")
    before = _tree_digest(run)
    monkeypatch.setattr(sys, "argv", ["train_hgn.py"])
    code = run_cli(main, ["--resume", "--run-dir", str(run), "--steps", "99", "--seed", "1", "--learning-rate", "0.5",
                          "--latent", "vector", "--verbose", "0"])
    assert code == 1
    err = capsys.readouterr().err
    _assert_one_line_error(subprocess.CompletedProcess([], 1, stdout="", stderr=err), "train_hgn.py",
                           f"--resume with a different config than {str(run / 'config.json')!r}: --latent 'spatial' -> "
                           "'vector', --learning-rate 0.003 -> 0.5, --seed 0 -> 1")
    assert _tree_digest(run) == before
