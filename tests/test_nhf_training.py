"""NHF training end to end: outputs, export to a fresh process, resume, NaN guard, the input pipeline, the CLI."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from common.runs import NonFiniteLossError, RunError, run_cli
from data import targets
from nhf import evaluation, experiment, training
from nhf.config import PRESETS, NHFConfig
from nhf.export import EXPORT_SEED

ROOT = Path(__file__).resolve().parents[1]
TINY = dataclasses.replace(
    PRESETS["small"], target="banana", num_hamiltonians=2, n_steps=3, step_size=0.3, widths=(32, 32),
    encoder_widths=(32,), steps=800, batch_size=256, learning_rate=1e-2, train_size=10_000, test_size=2000,
    eval_momenta=64, eval_every=400, checkpoint_every=400, log_every=100)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("nhf_run")
    metrics = experiment.run_experiment(TINY, run_dir, progress=False)
    return run_dir, metrics


def energy_distance(x, y):
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (zero iff the distributions agree)."""
    def mean_dist(a, b):
        return np.mean(np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1))
    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)


def test_run_writes_every_output(trained):
    run_dir, metrics = trained
    for name in ("metrics.json", "figure.png", "loss_curve.png", "history.json", "config.json", "saved_model"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "checkpoints").glob("ckpt-800*"))
    assert list((run_dir / "logs").glob("events.out.tfevents.*"))
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("train_nll", "test_nll", "nll_floor", "gap", "parameters", "config"):
        assert key in saved, key
    assert saved["nll_floor"] == pytest.approx(targets.get("banana").nll_floor)
    # An upper bound on the NLL cannot beat the floor by more than its noise (3 standard errors).
    assert saved["test_nll"] > saved["nll_floor"] - 3 * saved["test_nll_stderr"]
    # The paired gap is the same bound minus the target's NLL on the same points: a KL estimate.
    assert saved["gap_paired"] == pytest.approx(saved["test_nll"] - saved["test_floor_sample"], abs=1e-9)
    assert saved["gap_paired"] > -3 * saved["gap_paired_stderr"]
    assert saved["training"]["nonfinite_steps"] == 0


def test_paired_gap_is_zero_for_the_target_itself_and_sees_a_shift():
    target = targets.get("mixture")
    x = target.sample(4000, seed=3)
    true_lp = target.log_prob(tf.constant(x, tf.float64)).numpy()
    exact = evaluation.paired_gap(target, x, true_lp)
    assert exact["gap_paired"] == pytest.approx(0.0, abs=1e-12) and exact["gap_paired_stderr"] < 1e-12
    assert exact["test_floor_sample"] == pytest.approx(target.nll_floor, abs=0.06)  # 3 standard errors
    worse = evaluation.paired_gap(target, x, true_lp - 0.02 - 0.01 * np.abs(x[:, 0]))
    assert worse["gap_paired"] == pytest.approx(0.02 + 0.01 * np.abs(x[:, 0]).mean(), abs=1e-9)


def test_trained_flow_samples_match_target(trained):
    # Energy distance on 1,000 samples each (fixed seeds). Threshold 0.05: a moment-matched
    # Gaussian (clearly wrong shape) scores above it, showing the statistic can fail; the
    # trained flow must score below it.
    run_dir, _ = trained
    run = training.build_run(TINY, run_dir)
    training.restore_latest(run, required=True)
    target = targets.get("banana")
    x_target = target.sample(1000, seed=100)
    x_model = run.density.sample(1000, seed=(4, 2)).numpy().astype(np.float64)
    ref = target.sample(20_000, seed=7)
    x_wrong = np.random.default_rng(3).multivariate_normal(ref.mean(0), np.cov(ref.T), size=1000)
    wrong, model = energy_distance(x_wrong, x_target), energy_distance(x_model, x_target)
    assert wrong > 0.05, wrong
    assert model < 0.05, model


def test_export_loads_in_a_fresh_process_without_the_project(trained, tmp_path):
    run_dir, _ = trained
    q = targets.get("banana").sample(16, seed=9).astype(np.float32)
    np.save(tmp_path / "q.npy", q)
    run = training.build_run(TINY, run_dir)
    training.restore_latest(run, required=True)
    expected = run.density.iwae_bound(tf.constant(q), TINY.eval_momenta, seed=tf.constant(EXPORT_SEED, tf.int32))
    script = textwrap.dedent(f"""
        import sys, json
        import numpy as np, tensorflow as tf
        m = tf.saved_model.load({str(run_dir / 'saved_model')!r})
        q = np.load({str(tmp_path / 'q.npy')!r})
        lp = m.log_prob(tf.constant(q)).numpy()
        sig = m.signatures["log_prob"](q=tf.constant(q))["log_prob"].numpy()
        s = m.sample(tf.constant(5)).numpy()
        s2 = m.signatures["sample"](n=tf.constant(3))["q"].numpy()
        project = sorted({{k.split('.')[0] for k in sys.modules}} & {{'nhf', 'common', 'data', 'tensorflow_probability'}})
        print(json.dumps({{"lp": lp.tolist(), "sig": sig.tolist(), "shape": list(s.shape), "shape2": list(s2.shape),
                           "project": project}}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["project"] == []  # neither this project nor TFP was imported
    np.testing.assert_allclose(result["lp"], expected.numpy(), atol=1e-4)  # same graph, same seed
    np.testing.assert_allclose(result["sig"], result["lp"], atol=1e-6)
    assert result["shape"] == [5, 2] and result["shape2"] == [3, 2]


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    base = dataclasses.replace(TINY, steps=60, checkpoint_every=30, eval_every=10**6, log_every=30, export=False,
                               test_size=200, eval_momenta=8, widths=(16,), encoder_widths=(16,))
    whole = training.build_run(base, tmp_path / "whole")
    training.train(whole, tmp_path / "whole", progress=False)
    first = training.build_run(dataclasses.replace(base, steps=30), tmp_path / "split")
    training.train(first, tmp_path / "split", progress=False)
    resumed = training.build_run(base, tmp_path / "split")
    assert training.restore_latest(resumed, required=True).endswith("ckpt-30")
    assert resumed.step == 30
    assert int(resumed.model.optimizer.iterations.numpy()) == 30  # Adam state restored too
    training.train(resumed, tmp_path / "split", progress=False)
    for a, b in zip(whole.model.density_variables, resumed.model.density_variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=a.name)  # XLA on CPU


def test_a_resumed_run_continues_its_time_budget(tmp_path, capsys):
    # --max-train-minutes is a total over resumes: a resumed run's clock starts at the training
    # seconds its history logged up to the restored step (the field is new; runs without it restart at 0).
    base = dataclasses.replace(TINY, steps=60, checkpoint_every=20, eval_every=10**6, log_every=10, export=False,
                               test_size=200, eval_momenta=8, widths=(16,), encoder_widths=(16,), max_train_minutes=1.0)
    first = training.build_run(dataclasses.replace(base, steps=20), tmp_path / "spent")
    training.train(first, tmp_path / "spent", progress=False)
    history = json.loads((tmp_path / "spent" / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20]
    assert 0.0 < history[0]["train_seconds"] < history[1]["train_seconds"] < 60.0  # the clock, not wall time since start
    shutil.copytree(tmp_path / "spent", tmp_path / "fresh")
    # As if those 20 steps had used the whole minute: the resumed run stops after one step.
    history[-1]["train_seconds"] = 60.5
    (tmp_path / "spent" / "history.json").write_text(json.dumps(history))
    for name, end in (("spent", 21), ("fresh", 60)):  # untouched, the same resume trains to the end
        resumed = training.build_run(base, tmp_path / name)
        training.restore_latest(resumed, required=True)
        training.train(resumed, tmp_path / name, progress=False)
        assert int(resumed.model.train_steps.numpy()) == end, name
        spent_note = "note: --max-train-minutes 1 is already spent (1.0 minutes of training so far): one step"
        assert (spent_note in capsys.readouterr().err) == (name == "spent")


def test_pipeline_started_at_a_step_continues_the_same_stream():
    # Resuming at step s must see the batches and noise an uninterrupted run sees at step s,
    # also across an epoch boundary (10 points per epoch of batch 4: 2 batches, 2 points left).
    points = np.arange(20, dtype=np.float32).reshape(10, 2)
    whole = list(training.sample_batches(points, 4, seed=3, momenta=2).take(7).as_numpy_iterator())
    later = list(training.sample_batches(points, 4, seed=3, momenta=2, start_step=3).take(4).as_numpy_iterator())
    for a, b in zip(whole[3:], later):
        np.testing.assert_array_equal(a["q"], b["q"])
        np.testing.assert_array_equal(a["noise"], b["noise"])
    # Without replacement within an epoch; a new order each epoch; another seed, another stream.
    epoch0 = np.concatenate([whole[0]["q"], whole[1]["q"]])[:, 0]
    assert len(set(epoch0)) == 8
    assert not np.array_equal(whole[0]["q"], whole[2]["q"])
    other = next(training.sample_batches(points, 4, seed=4, momenta=2).as_numpy_iterator())
    assert not np.array_equal(other["q"], whole[0]["q"])
    with pytest.raises(ValueError, match="fewer than one batch"):
        training.sample_batches(points, 11, seed=0, momenta=1)


def _poison(monkeypatch, steps_from: int, attempts: int):
    """NaN points in the batches with index >= `steps_from` (those of steps `steps_from` + 1 on, as
    the step counter counts after the step) in the first `attempts` calls of `fit`; later calls
    replay clean data. A checkpoint exists at step 10."""
    real = training.training_batches
    calls = [0]

    def poisoned(run_, start):
        calls[0] += 1
        dataset = real(run_, start)
        if calls[0] > attempts:
            return dataset
        steps = tf.data.Dataset.range(start, 2**62)

        def maybe_nan(step, batch):
            q = tf.where(step >= steps_from, batch["q"] * np.nan, batch["q"])
            return {"q": q, "noise": batch["noise"]}

        return tf.data.Dataset.zip((steps, dataset)).map(maybe_nan)

    monkeypatch.setattr(training, "training_batches", poisoned)


NAN_CONFIG = dataclasses.replace(TINY, steps=40, checkpoint_every=10, eval_every=10**6, log_every=5, export=False,
                                 max_nonfinite_steps=3, test_size=200, eval_momenta=8, widths=(16,),
                                 encoder_widths=(16,), jit_compile=False)


def test_rollback_lowers_the_learning_rate_and_training_completes(tmp_path, monkeypatch):
    config = dataclasses.replace(NAN_CONFIG, max_rollbacks=2, rollback_lr_factor=0.25)
    run = training.build_run(config, tmp_path)
    _poison(monkeypatch, steps_from=15, attempts=1)  # steps 16, 17, 18: then a rollback to step 10
    stats = training.train(run, tmp_path, progress=False)
    assert stats["nonfinite_steps"] == 3 and stats["rollbacks"] == 1
    assert stats["lr_scale"] == 0.25
    assert run.step == 40
    schedule = training.learning_rate_schedule(config)
    history = {h["step"]: h for h in stats["history"]}
    assert sorted(history) == list(range(5, 41, 5))  # steps 11-15 redone, logged once
    assert all(np.isfinite(h["loss"]) for h in history.values())
    # Before the rollback the schedule's rate; after it, factor * the schedule's rate at that step.
    assert history[10]["learning_rate"] == pytest.approx(float(schedule(10)), rel=1e-6)
    for step in (20, 40):
        assert history[step]["learning_rate"] == pytest.approx(0.25 * float(schedule(step)), rel=1e-6)
    # The lowered rate is checkpointed: a resumed run continues with it.
    restored = training.build_run(config, tmp_path)
    assert training.restore_latest(restored, required=True).endswith("ckpt-40")
    assert float(restored.model.lr_scale.numpy()) == 0.25
    lr = float(restored.model.optimizer.learning_rate.numpy())
    assert lr == pytest.approx(0.25 * float(schedule(40)), rel=1e-6)
    assert all(np.isfinite(v.numpy()).all() for v in restored.model.density_variables)


@pytest.mark.parametrize("max_rollbacks, attempts", [(0, 1), (1, 10**6)])
def test_non_finite_loss_stops_with_a_clear_message(tmp_path, monkeypatch, max_rollbacks, attempts):
    # No rollback allowed, or a NaN that persists after one: the run stops, naming the step,
    # the rollbacks and the checkpoint that holds the last finite weights.
    config = dataclasses.replace(NAN_CONFIG, max_rollbacks=max_rollbacks)
    run = training.build_run(config, tmp_path)
    _poison(monkeypatch, steps_from=15, attempts=attempts)
    message = (f"non-finite for 3 consecutive steps (last at step 18) after {max_rollbacks} rollback(s) "
               f"(--max-rollbacks {max_rollbacks})")
    with pytest.raises(NonFiniteLossError, match=re.escape(message)) as e:
        training.train(run, tmp_path, progress=False)
    assert "the newest checkpoint ckpt-10 holds the last finite weights" in str(e.value)
    restored = training.build_run(config, tmp_path)
    assert training.restore_latest(restored, required=True).endswith("ckpt-10")
    assert all(np.isfinite(v.numpy()).all() for v in restored.model.density_variables)
    assert float(restored.model.lr_scale.numpy()) == 1.0  # the scale lowered by the rollback was never saved


def test_checkpoint_from_before_the_keras_model_still_restores(tmp_path):
    # Runs written before NHFModel saved `step` as a plain tf.Variable and, before rollbacks
    # lowered the learning rate, had no `lr_scale`: they restore (with the scale left as it was).
    config = dataclasses.replace(NAN_CONFIG, steps=5)
    old = training.build_run(config)
    legacy = tf.train.Checkpoint(model=old.density, optimizer=old.model.optimizer,
                                 step=tf.Variable(7, dtype=tf.int64, name="step"))
    tf.train.CheckpointManager(legacy, str(tmp_path / training.CHECKPOINT_DIR), max_to_keep=1).save(7)
    run = training.build_run(config, tmp_path)
    run.model.lr_scale.assign(0.5)
    assert training.restore_latest(run, required=True).endswith("ckpt-7")
    assert run.step == 7 and float(run.model.lr_scale.numpy()) == 0.5  # left as it was
    fresh = training.build_run(config, tmp_path)
    training.restore_latest(fresh, required=True)
    assert float(fresh.model.lr_scale.numpy()) == 1.0
    for a, b in zip(old.model.density_variables, fresh.model.density_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_keras_fit_and_evaluate_on_the_model_directly():
    # The Keras surface: compile + fit on the pipeline, evaluate on held-out points.
    config = dataclasses.replace(NAN_CONFIG, steps=60, warmup_steps=0, target="mixture")
    target, train, test = training.load_data(config)
    model = training.build_model(config, target.dim, train)
    before = model.evaluate(tf.data.Dataset.from_tensor_slices({"q": test}).batch(100), verbose=0,
                            return_dict=True)["nll"]
    history = model.fit(training.sample_batches(train, 64, seed=0, momenta=1), steps_per_epoch=60, epochs=1,
                        verbose=0, shuffle=False)
    assert set(history.history) >= {"loss", "grad_norm"} and int(model.train_steps.numpy()) == 60
    after = model.evaluate(tf.data.Dataset.from_tensor_slices({"q": test}).batch(100), verbose=0,
                           return_dict=True)["nll"]
    assert np.isfinite(before) and after < before - 0.2  # 60 steps at the full rate: measured 4.98 -> 4.36


def test_float64_end_to_end(tmp_path):
    # Train, checkpoint, restore, evaluate, sample and export in float64 (the figure is skipped
    # for time; it shares the float32 code path).
    config = dataclasses.replace(TINY, dtype="float64", steps=20, eval_every=10**6, checkpoint_every=20,
                                 log_every=10, test_size=200, train_size=2000, eval_momenta=8, widths=(16,),
                                 encoder_widths=(16,))
    trained = training.build_run(config, tmp_path)
    training.train(trained, tmp_path, progress=False)
    run = training.build_run(config, tmp_path)
    training.restore_latest(run, required=True)
    assert all(v.dtype == tf.float64 for v in run.model.density_variables)
    for a, b in zip(trained.model.density_variables, run.model.density_variables):  # restored exactly
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
    metrics = evaluation.evaluate(run)
    assert np.isfinite(metrics["test_nll"]) and np.isfinite(metrics["train_nll"])
    assert run.density.sample(3, seed=(1, 1)).dtype == tf.float64
    from nhf.export import export_saved_model

    loaded = tf.saved_model.load(str(export_saved_model(run.density, tmp_path / "saved_model", 8)))
    q = tf.constant(run.test_data[:5])
    lp = loaded.log_prob(q)
    assert lp.dtype == tf.float64 and np.isfinite(lp.numpy()).all()
    # The export is the restored model's bound at the export's fixed seed, to float64 round-off.
    from nhf.export import EXPORT_SEED

    expected = run.density.iwae_bound(q, 8, seed=tf.constant(EXPORT_SEED, tf.int32)).numpy()
    np.testing.assert_allclose(lp.numpy(), expected, rtol=0, atol=1e-9)


def test_vi_mode_reports_ess(tmp_path):
    config = dataclasses.replace(TINY, mode="vi", target="funnel", steps=40, eval_every=20, checkpoint_every=40,
                                 log_every=20, export=False, test_size=200, eval_momenta=8, widths=(16,),
                                 encoder_widths=(16,))
    run = training.build_run(config, tmp_path)
    stats = training.train(run, tmp_path, progress=False)
    assert "vi_ess_fraction" in stats["history"][-1]
    vi = evaluation.evaluate(run)["vi"]
    assert 0 < vi["ess_fraction"] <= 1 and np.isfinite(vi["elbo"])
    assert vi["elbo"] <= vi["log_z_estimate"] + 1e-9  # Jensen: mean log w <= log mean w


def _main(argv):
    import train_nhf  # the repository root is on pytest's pythonpath (pyproject.toml)

    return run_cli(train_nhf.main, argv)


def test_help_documents_every_field(capsys):
    with pytest.raises(SystemExit) as e:
        _main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for f in dataclasses.fields(NHFConfig):
        assert "--" + f.name.replace("_", "-") in text, f.name
    for flag in ("--run-dir", "--resume", "--eval-only", "--preset", "--debug", "--strategy", "--replicas"):
        assert flag in text
    # The old spellings stay documented aliases of the names shared with train_hgn.py.
    for alias in ("--lr", "--lr-final-fraction", "--max-bad-steps", "--jit", "--no-jit"):
        assert alias in text, alias


# (An unknown --target or --prior and a negative --steps are cases of tests/test_bad_inputs.py.)
@pytest.mark.parametrize("argv, code, pattern", [
    (["--mode", "vi", "--target", "pinwheel"], 2, "needs a target with a log density"),
    (["--widths", "abc"], 2, "expects an integer"),
    (["--rollback-lr-factor", "0"], 2, "--rollback-lr-factor must be in (0, 1]"),
    (["--rollback-lr-factor", "1.5"], 2, "--rollback-lr-factor must be in (0, 1]"),
])
def test_bad_arguments_exit_2_with_one_line(argv, code, pattern, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        _main([*argv, "--run-dir", str(tmp_path)])
    assert e.value.code == code
    err = capsys.readouterr().err.strip().splitlines()
    assert pattern in err[-1]


def test_run_errors_exit_1_with_one_line(trained, capsys, tmp_path):
    run_dir, _ = trained
    assert _main(["--target", "banana", "--run-dir", str(run_dir)]) == 1
    assert "already holds checkpoints" in capsys.readouterr().err
    assert _main(["--eval-only", "--run-dir", str(tmp_path)]) == 1
    assert "--eval-only needs --resume" in capsys.readouterr().err
    assert _main(["--resume", "--run-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no checkpoint" in err[0]


def test_cli_subprocess_exit_code_and_single_line():
    out = subprocess.run([sys.executable, "train_nhf.py", "--target", "nope"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 2
    lines = [l for l in out.stderr.strip().splitlines() if l.startswith("train_nhf.py: error")]
    assert len(lines) == 1 and "valid targets" in lines[0]


def test_old_flag_spellings_and_saved_configs_still_work():
    # The names shared with train_hgn.py, and the old NHF spellings as aliases (flags and the
    # keys of a config.json written before the rename).
    from common.config import config_from_args, from_dict, to_dict
    from nhf.cli import build_parser

    old = build_parser().parse_args(["--lr", "0.5", "--lr-final-fraction", "0.2", "--max-bad-steps", "7", "--no-jit"])
    new = build_parser().parse_args(["--learning-rate", "0.5", "--final-lr-fraction", "0.2",
                                     "--max-nonfinite-steps", "7", "--no-jit-compile"])
    assert config_from_args(NHFConfig, PRESETS, old) == config_from_args(NHFConfig, PRESETS, new)
    saved = to_dict(PRESETS["small"])
    for name, alias in (("learning_rate", "lr"), ("final_lr_fraction", "lr_final_fraction"),
                        ("max_nonfinite_steps", "max_bad_steps"), ("jit_compile", "jit")):
        saved[alias] = saved.pop(name)
    assert from_dict(NHFConfig, saved) == PRESETS["small"]
