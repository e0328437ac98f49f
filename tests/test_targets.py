"""Target densities: seeded samplers, normalised exact densities, and their NLL floors."""
import math

import numpy as np
import pytest
import tensorflow as tf

from data import targets

WITH_DENSITY = [n for n in targets.names() if targets.get(n).log_prob is not None]


def test_names_and_unknown_target_lists_valid_ones():
    assert {"mixture", "circular_mixture", "two_moons", "rings", "checkerboard", "pinwheel", "two_spirals",
            "banana", "funnel", "mixture_nd"} <= set(targets.names())
    with pytest.raises(ValueError, match="valid targets: .*checkerboard.*mixture"):
        targets.get("gaussians8")
    with pytest.raises(ValueError, match="2-dimensional"):
        targets.get("mixture", dim=3)
    with pytest.raises(ValueError, match="dim >= 1"):
        targets.get("mixture_nd", dim=0)


@pytest.mark.parametrize("name", targets.names())
def test_sampler_is_seeded_shaped_and_finite(name):
    t = targets.get(name)
    a, b, c = t.sample(500, seed=1), t.sample(500, seed=1), t.sample(500, seed=2)
    assert a.shape == (500, t.dim) and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)  # exact: same seed, same samples
    assert not np.allclose(a, c)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_log_prob_finite_on_own_samples_and_dtype_follows_input(name):
    t = targets.get(name)
    x = t.sample(2000, seed=3)
    for dtype in (tf.float32, tf.float64):
        lp = t.log_prob(tf.constant(x, dtype))
        assert lp.dtype == dtype and lp.shape == (2000,)
        assert np.isfinite(lp.numpy()).all()
    # Batch shapes pass through: [4, 500, d] -> [4, 500].
    assert t.log_prob(tf.constant(x.reshape(4, 500, t.dim))).shape == (4, 500)


@pytest.mark.parametrize("name", ["mixture", "circular_mixture", "two_moons", "rings", "banana", "checkerboard"])
def test_density_integrates_to_one_on_a_grid(name):
    # Midpoint rule on [-6, 6]^2: 600^2 cells (0.02) for the rings (noise 0.08 spans 4 cells),
    # 300^2 (0.04) for the others (narrowest feature std 0.25). Tolerance 1e-2 covers the
    # quadrature error and the mass outside the box.
    t = targets.get(name)
    n = 600 if name == "rings" else 300
    edges = np.linspace(-6, 6, n + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    xx, yy = np.meshgrid(mids, mids)
    grid = tf.constant(np.stack([xx.ravel(), yy.ravel()], axis=1))
    density = np.concatenate([np.exp(t.log_prob(chunk).numpy()) for chunk in tf.split(grid, 20)])
    mass = density.sum() * (edges[1] - edges[0]) ** 2
    assert mass == pytest.approx(1.0, abs=1e-2)


@pytest.mark.parametrize("name", [n for n in WITH_DENSITY if targets.get(n).nll_floor is not None])
def test_nll_floor_matches_monte_carlo(name):
    # The floor is the entropy E[-log p(x)]; 40,000 samples, tolerance 5 standard errors
    # plus 0.002 nats for the rounding of the stored Monte Carlo floors.
    t = targets.get(name)
    x = t.sample(40_000, seed=11)
    lp = t.log_prob(tf.constant(x)).numpy()
    se = lp.std() / math.sqrt(len(lp))
    assert -lp.mean() == pytest.approx(t.nll_floor, abs=5 * se + 0.002)


def test_floors_quoted_in_reference():
    assert targets.get("mixture").nll_floor == pytest.approx(2.831, abs=1e-3)
    assert targets.get("checkerboard").nll_floor == pytest.approx(math.log(32), abs=1e-12)
    assert targets.get("circular_mixture").nll_floor == pytest.approx(2.176, abs=1e-3)


def test_mixture_geometry_matches_ffjord():
    # Centres on a circle of radius 4/sqrt(2), std 0.5/sqrt(2): checked on 20,000 samples by
    # assigning each to the nearest centre (tolerances: 0.02 in radius, 0.01 in std).
    x = targets.get("mixture").sample(20_000, seed=5)
    angle = np.round(np.arctan2(x[:, 1], x[:, 0]) / (np.pi / 4)) * (np.pi / 4)
    centre = 4 / np.sqrt(2) * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    assert np.linalg.norm(centre, axis=1).mean() == pytest.approx(2.8284, abs=0.02)
    assert (x - centre).std() == pytest.approx(0.5 / np.sqrt(2), abs=0.01)


def test_checkerboard_samples_lie_on_the_support_and_density_is_zero_off_it():
    t = targets.get("checkerboard")
    x = t.sample(5000, seed=2)
    assert np.all(t.log_prob(tf.constant(x)).numpy() == pytest.approx(-math.log(32)))
    off = tf.constant([[1.0, 3.0], [-3.0, -1.0], [5.0, 0.0]])  # odd-parity cells and outside
    assert np.all(np.isneginf(t.log_prob(off).numpy()))


def test_mixture_nd_dimension():
    t = targets.get("mixture_nd", dim=5)
    assert t.dim == 5 and t.sample(10, 0).shape == (10, 5)
    assert targets.get("mixture_nd").dim == 10
