"""NHF on the user's own points: `train_nhf.py --data FILE` and `nhf.fit_samples` (bad files are in
tests/test_bad_inputs.py)."""
import json

import numpy as np
import pytest
import tensorflow as tf

from common.config import from_dict
from common.runs import run_cli
from data.samples import load_samples, split_samples
from nhf import NHFConfig, evaluation, fit_samples, training

MU = np.array([100.0, -5.0, 0.3])
SCALE = np.array([0.01, 2.0, 30.0])
ENTROPY = float(0.5 * np.sum(np.log(2 * np.pi * SCALE ** 2)) + 1.5)  # of N(MU, diag(SCALE^2)): 3.746 nats
FAST = ["--batch-size", "256", "--widths", "16", "--encoder-widths", "16", "--log-every", "50", "--no-progress"]


def _main(argv):
    from nhf.cli import main

    return run_cli(main, argv)


@pytest.fixture(scope="module")
def gaussian_run(tmp_path_factory):
    """600 steps on 4,000 points of a 3-D Gaussian with very different scales and a far-off mean."""
    tmp = tmp_path_factory.mktemp("nhf_data")
    points = MU + SCALE * np.random.default_rng(0).normal(size=(4000, 3))
    np.save(tmp / "gauss.npy", points)
    run_dir = tmp / "run"
    assert _main(["--data", str(tmp / "gauss.npy"), "--steps", "600", "--checkpoint-every", "600",
                  "--eval-momenta", "64", "--eval-every", "300", *FAST, "--run-dir", str(run_dir)]) == 0
    return points, run_dir


def test_nll_is_the_analytic_entropy_in_the_data_units(gaussian_run):
    # NLLs are in the data's own units: the standardisation's log-Jacobian is counted (without
    # it the NLL would be off by sum(log SCALE) = -0.51 nats). On 20,000 fresh points the IWAE
    # NLL (K = 256) must match the entropy within 3 standard errors (stderr ~0.009; measured
    # 3.740 against 3.746); on the held-out split, paired with the true density on the same
    # points, the gap must be within 3 of its standard errors (measured -0.004 +- 0.005).
    points, run_dir = gaussian_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["target"] == "data:gauss.npy" and metrics["dim"] == 3 and metrics["nll_floor"] is None
    config = from_dict(NHFConfig, json.loads((run_dir / "config.json").read_text()))
    run = training.build_run(config, run_dir)
    training.restore_latest(run, required=True)
    fresh = MU + SCALE * np.random.default_rng(5).normal(size=(20_000, 3))
    lp = evaluation.iwae_log_probs(run.density, fresh.astype(np.float32), 256, seed=2)
    nll, stderr = -lp.mean(), lp.std() / np.sqrt(len(lp))
    assert stderr < 0.02
    assert abs(nll - ENTROPY) < 3 * stderr, (nll, ENTROPY, stderr)
    _, test = split_samples(points, config.test_fraction, config.seed)
    np.testing.assert_allclose(run.test_data, test.astype(np.float32))  # the held-out split
    true_lp = -0.5 * np.sum(((test - MU) / SCALE) ** 2 + np.log(2 * np.pi * SCALE ** 2), axis=1)
    gap = true_lp - evaluation.iwae_log_probs(run.density, run.test_data, 256, seed=1)
    assert abs(gap.mean()) < 3 * gap.std() / np.sqrt(len(gap))
    # Samples come back in the data's units: means within 0.1 standard deviations, scales within 5%.
    x = run.density.sample(20_000, seed=(1, 2)).numpy()
    assert np.all(np.abs(x.mean(0) - MU) < 0.1 * SCALE), x.mean(0)
    assert np.all(np.abs(x.std(0) / SCALE - 1) < 0.05), x.std(0)


def test_data_run_writes_the_usual_outputs_and_resumes(gaussian_run):
    _, run_dir = gaussian_run
    for name in ("metrics.json", "history.json", "loss_curve.png", "config.json", "saved_model", "logs"):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "figure.png").exists()  # 3-D points: no figure
    loaded = tf.saved_model.load(str(run_dir / "saved_model"))
    # The export's density at the data's mean against the true -2.246 nats: measured -2.13 (a
    # 600-step fit, at one point); in the standardised units, without the data's scales, it would be
    # off by sum(log SCALE) = 0.51 nats, which 0.2 rejects.
    lp = loaded.log_prob(tf.constant([[100.0, -5.0, 0.3]], tf.float32)).numpy()
    assert lp.shape == (1,) and lp[0] == pytest.approx(-np.sum(np.log(np.sqrt(2 * np.pi) * SCALE)), abs=0.2)
    # --resume reads the file named in config.json again.
    assert _main(["--run-dir", str(run_dir), "--resume", "--steps", "610", "--no-export", "--no-progress"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["step"] == 610
    # The export kept step 600's weights: metrics.json says so and how to refresh it.
    assert "saved_model" not in metrics
    assert f"--run-dir {run_dir} --resume --eval-only --export" in metrics["saved_model_stale"]


def test_csv_with_header_in_2d_draws_a_figure(tmp_path):
    points = np.random.default_rng(1).normal(size=(600, 2)) * [3.0, 0.5] + [10.0, -20.0]
    lines = ["x,y"] + [f"{a},{b}" for a, b in points]
    (tmp_path / "pts.csv").write_text("\n".join(lines) + "\n")
    np.testing.assert_allclose(load_samples(tmp_path / "pts.csv"), points)
    assert _main(["--data", str(tmp_path / "pts.csv"), "--steps", "10", "--eval-momenta", "8", "--batch-size", "64",
                  "--widths", "8", "--encoder-widths", "8", "--no-progress", "--no-export",
                  "--run-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "figure.png").exists()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_nll"]) and metrics["step"] == 10


@pytest.mark.parametrize("batched", [False, True])
def test_fit_samples_takes_an_array_or_a_dataset(batched, tmp_path):
    points = np.random.default_rng(2).normal(size=(300, 2)).astype(np.float32)
    data = tf.data.Dataset.from_tensor_slices(points)
    data = data.batch(7) if batched else data
    kw = dict(steps=5, batch_size=32, widths=(8,), encoder_widths=(8,), eval_momenta=4, figure=False, export=False)
    density, metrics = fit_samples(data, tmp_path / "ds", **kw)
    same, again = fit_samples(points, tmp_path / "array", **kw)
    assert metrics["test_nll"] == again["test_nll"]  # the same points and seed: the same fit
    assert density.event_shape == [2] and np.isfinite(density.sample(3, seed=(0, 1)).numpy()).all()
