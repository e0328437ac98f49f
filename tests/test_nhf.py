"""The NHF bijector and density model: invertibility, volume preservation, bounds, TFP plumbing."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from nhf.bijector import NeuralHamiltonianFlow
from nhf.density import HamiltonianFlowDensity, build_density, effective_sample_size
from nhf.networks import ACTIVATIONS, ScalarMLP
from nhf.priors import PRIORS, make_prior

tfd, tfb = tfp.distributions, tfp.bijectors


def random_flow(dim=2, dtype=tf.float64, kinetic="learned", seed=1, **kw):
    """A flow far from the identity: O(1) output layers, unit mass, integration time 1."""
    kw = {"num_hamiltonians": 2, "n_steps": 5, "step_size": 0.1, "widths": (16, 16), **kw}
    return NeuralHamiltonianFlow(dim, kinetic=kinetic, init_scale=2.0, dtype=dtype, seed=seed, **kw)


@pytest.fixture(scope="module")
def flow64():
    return random_flow()


@pytest.fixture(scope="module")
def states():
    return np.random.default_rng(0).normal(size=(256, 4)) * 1.5


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_analytic_energy_gradient_matches_autodiff(activation):
    net = ScalarMLP(3, (16, 8), activation, tf.float64, seed=3, out_scale=1.0)
    x = tf.constant(np.random.default_rng(1).normal(size=(5, 4, 3)))
    with tf.GradientTape() as tape:
        tape.watch(x)
        e = tf.reduce_sum(net(x))
    np.testing.assert_allclose(net.grad(x).numpy(), tape.gradient(e, x).numpy(), atol=1e-12)


@pytest.mark.parametrize("kinetic", ["learned", "fixed"])
@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_inverse_undoes_forward_on_fresh_tensors(kinetic, mode, states):
    flow = random_flow(kinetic=kinetic)
    fwd, inv = flow.forward, flow.inverse
    if mode != "eager":
        fwd = tf.function(fwd, jit_compile=mode == "jit")
        inv = tf.function(inv, jit_compile=mode == "jit")
    x = tf.constant(states)
    y = fwd(x)
    # Not the identity: the test would prove nothing otherwise.
    assert np.abs(y.numpy() - states).mean() > 0.1
    # Fresh tensor: TFP caches forward/inverse pairs by tensor identity.
    x_back = inv(tf.constant(y.numpy()))
    np.testing.assert_allclose(x_back.numpy(), states, atol=1e-10)  # float64 round-off
    y_again = fwd(tf.constant(x_back.numpy()))
    np.testing.assert_allclose(y_again.numpy(), y.numpy(), atol=1e-10)


def test_float32_inverse_tolerance(states):
    flow = random_flow(dtype=tf.float32)
    y = flow.forward(tf.constant(states, tf.float32))
    x_back = flow.inverse(tf.constant(y.numpy()))
    np.testing.assert_allclose(x_back.numpy(), states, atol=1e-4)  # float32 round-off over 10 steps


def test_log_det_is_exactly_zero_and_matches_autodiff_jacobian(flow64, states):
    x = tf.constant(states[:32])
    fldj = flow64.forward_log_det_jacobian(x, event_ndims=1)
    ildj = flow64.inverse_log_det_jacobian(tf.constant(states[:32]), event_ndims=1)
    assert fldj.dtype == tf.float64 and fldj.shape == (32,)
    assert np.all(fldj.numpy() == 0.0) and np.all(ildj.numpy() == 0.0)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = flow64.forward(x)
    jac = tape.batch_jacobian(y, x)
    sign, logdet = np.linalg.slogdet(jac.numpy())
    assert np.all(sign > 0)
    np.testing.assert_allclose(logdet, 0.0, atol=1e-9)  # float64; the map is symplectic
    # ... and the Jacobian is far from constant (why is_constant_jacobian must stay False).
    assert np.abs(jac.numpy() - jac.numpy().mean(axis=0)).max() > 0.05
    assert not flow64.is_constant_jacobian


def test_symplectic_jacobian(flow64, states):
    x = tf.constant(states[:8])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = flow64.forward(x)
    jac = tape.batch_jacobian(y, x).numpy()
    omega = np.block([[np.zeros((2, 2)), np.eye(2)], [-np.eye(2), np.zeros((2, 2))]])
    np.testing.assert_allclose(np.einsum("bji,jk,bkl->bil", jac, omega, jac),
                               np.broadcast_to(omega, jac.shape), atol=1e-9)  # J^T Omega J = Omega


def test_parameter_properties_empty_and_constructor_validates():
    assert NeuralHamiltonianFlow._parameter_properties(tf.float32) == {}
    with pytest.raises(ValueError, match="n_steps"):
        NeuralHamiltonianFlow(2, n_steps=0)
    with pytest.raises(ValueError, match="step_size"):
        NeuralHamiltonianFlow(2, step_size=-0.1)
    with pytest.raises(ValueError, match="'rk4' is not symplectic"):
        NeuralHamiltonianFlow(2, method="rk4")
    with pytest.raises(ValueError, match="valid activations"):
        NeuralHamiltonianFlow(2, activation="relu")
    with pytest.raises(ValueError, match="valid: learned, fixed"):
        NeuralHamiltonianFlow(2, kinetic="quartic")


def test_batch_shapes_and_composition(flow64):
    x = tf.constant(np.random.default_rng(2).normal(size=(3, 5, 4)))
    assert flow64.forward(x).shape == (3, 5, 4)
    assert flow64.forward_log_det_jacobian(x, event_ndims=1).shape == (3, 5)
    assert flow64.forward_log_det_jacobian(x, event_ndims=2).shape == (3,)
    chain = tfb.Chain([tfb.Shift(tf.constant([1.0, 0.0, 0.0, 0.0], tf.float64)), flow64])
    np.testing.assert_allclose(chain.forward(x).numpy(), flow64.forward(x).numpy() + [1, 0, 0, 0], atol=1e-12)
    inverted = tfb.Invert(flow64)
    np.testing.assert_allclose(inverted.forward(tf.constant(flow64.forward(x).numpy())).numpy(), x.numpy(),
                               atol=1e-10)


def test_variables_tracked_through_distributions(flow64):
    n_flow = len(flow64.trainable_variables)
    assert n_flow == 2 * (5 + 5 + 1)  # per Hamiltonian: K and V nets (w0, b0, w1, b1, w2), log_mass
    base = tfd.MultivariateNormalDiag(tf.zeros(4, tf.float64), tf.ones(4, tf.float64))
    dist = tfd.TransformedDistribution(base, flow64)
    assert len(dist.trainable_variables) == n_flow
    chained = tfd.TransformedDistribution(base, tfb.Chain([tfb.Invert(tfb.Invert(flow64))]))
    assert len(chained.trainable_variables) == n_flow


def test_phase_space_density_integrates_to_one():
    # d = 1: the state [q, p] is 2-D. Midpoint rule on [-9, 9]^2, 500^2 cells; the standard
    # normal base has < 1e-15 mass outside after a volume-preserving map of bounded reach, so
    # the tolerance 2e-3 covers the quadrature error.
    flow = random_flow(dim=1)
    base = tfd.MultivariateNormalDiag(tf.zeros(2, tf.float64), tf.ones(2, tf.float64))
    dist = tfd.TransformedDistribution(base, flow)
    edges = np.linspace(-9, 9, 501)
    mids = 0.5 * (edges[1:] + edges[:-1])
    qq, pp = np.meshgrid(mids, mids)
    grid = tf.constant(np.stack([qq.ravel(), pp.ravel()], axis=1))
    density = np.exp(tf.function(dist.log_prob, jit_compile=True)(grid).numpy())
    mass = density.sum() * (edges[1] - edges[0]) ** 2
    assert mass == pytest.approx(1.0, abs=2e-3)
    # The flow really reshaped the density (not the base Gaussian evaluated on a grid).
    base_density = np.exp(base.log_prob(grid).numpy())
    assert np.abs(density - base_density).max() > 0.02


@pytest.mark.parametrize("name", PRIORS)
def test_priors_build_and_score(name):
    prior = make_prior(name, 4, tf.float64)
    x = prior.sample(100, seed=(1, 2))
    assert x.shape == (100, 4) and x.dtype == tf.float64
    assert np.isfinite(prior.log_prob(x).numpy()).all()
    # Unit variance by construction, exactly (Student-t(5) without its sqrt(3/5) scale: 5/3) ...
    np.testing.assert_allclose(prior.variance().numpy(), 1.0, rtol=1e-12)
    # ... and the sampler agrees: the std of 40,000 draws has a standard error of at most 0.007
    # (Student-t(5), kurtosis 9), so 0.05 is 7 of them; the unscaled Student-t would give 1.29.
    many = prior.sample(10_000, seed=(3, 4)).numpy()
    assert np.std(many) == pytest.approx(1.0, abs=0.05)
    assert len(prior.trainable_variables) == (2 if name == "learned_normal" else 0)


def test_unknown_prior_lists_valid():
    with pytest.raises(ValueError, match="valid priors: normal, learned_normal, student_t, laplace"):
        make_prior("cauchy", 4)


@pytest.fixture(scope="module")
def density64():
    data = np.random.default_rng(3).normal(size=(500, 2)) * 2
    model = build_density(2, num_hamiltonians=2, n_steps=3, step_size=0.2, widths=(16,), encoder_widths=(16,),
                          prior="learned_normal", data=data, init_scale=1.0, dtype=tf.float64, seed=4,
                          num_momenta=16)
    return model, data


def test_density_is_a_tfd_distribution(density64):
    model, _ = density64
    assert isinstance(model, tfd.Distribution)
    assert model.event_shape == [2] and model.batch_shape == []
    s = model.sample(7, seed=(3, 4))
    assert s.shape == (7, 2) and s.dtype == tf.float64
    assert model.sample([2, 3], seed=(3, 4)).shape == (2, 3, 2)
    lp = model.log_prob(s, seed=(1, 1))
    assert lp.shape == (7,) and np.isfinite(lp.numpy()).all()
    np.testing.assert_allclose(lp.numpy(), model.log_prob(s, seed=(1, 1)).numpy(), atol=1e-12)  # seeded
    names = {v.name for v in model.trainable_variables}
    assert {"prior_loc:0", "output_shift:0"} <= names
    # Flow + encoder + prior + affine: every part's variables are listed.
    parts = (model.flow.trainable_variables + model.encoder.trainable_variables
             + model.prior.trainable_variables)
    assert len(model.trainable_variables) == len(parts) + 2


def test_sample_is_exact_marginal_of_phase_space(density64):
    model, _ = density64
    states = model.phase_space.sample(4000, seed=(5, 6)).numpy()
    q = model.sample(4000, seed=(5, 6)).numpy()
    np.testing.assert_allclose(q, states[:, :2], atol=1e-12)  # same seed: the q half of the state


def test_iwae_at_least_elbo_and_tightens_with_k(density64):
    # Means over 300 points and 4 seeds; the tolerance is 3 standard errors of each difference.
    model, data = density64
    q = tf.constant(data[:300])
    elbo = np.concatenate([model.elbo(q, 32, seed=(s, 0)).numpy() for s in range(4)])
    iwae = {k: np.concatenate([model.iwae_bound(q, k, seed=(s, 1)).numpy() for s in range(4)]) for k in (8, 128)}

    def margin(a, b):
        return 3 * np.std(a - b) / np.sqrt(len(a))

    assert iwae[8].mean() - elbo.mean() > margin(iwae[8], elbo)
    assert iwae[128].mean() - iwae[8].mean() > margin(iwae[128], iwae[8])
    # Pointwise with shared momenta: log-mean-exp >= mean (Jensen), exactly.
    log_w = model.log_weights(q, 16, seed=(7, 7))
    lme = tf.reduce_logsumexp(log_w, 0) - np.log(16.0)
    assert np.all(lme.numpy() >= tf.reduce_mean(log_w, 0).numpy() - 1e-12)


def test_every_variable_gets_a_finite_gradient(density64):
    model, data = density64
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model.elbo(tf.constant(data[:64]), 2, seed=(0, 0)))
    grads = tape.gradient(loss, variables)
    for v, g in zip(variables, grads):
        assert g is not None, v.name
        assert np.isfinite(tf.convert_to_tensor(g).numpy()).all(), v.name
        assert np.abs(tf.convert_to_tensor(g).numpy()).max() > 0, v.name


def test_float32_and_float64_and_jit_agree():
    data = np.random.default_rng(3).normal(size=(64, 2))
    kw = dict(num_hamiltonians=2, n_steps=2, step_size=0.2, widths=(8,), encoder_widths=(8,), init_scale=1.0, seed=9)
    m32 = build_density(2, dtype=tf.float32, **kw)
    m64 = build_density(2, dtype=tf.float64, **kw)
    for v32, v64 in zip(m32.trainable_variables, m64.trainable_variables):
        v32.assign(tf.cast(v64, tf.float32))  # same weights; only the arithmetic differs
    # Stateless normals of either dtype differ, so both bounds get the same momentum draws (`noise`).
    noise = np.random.default_rng(5).normal(size=(8, 64, 2))
    lp64 = m64.iwae_bound(tf.constant(data), noise=tf.constant(noise))
    lp32 = tf.function(lambda q, n: m32.iwae_bound(q, noise=n), jit_compile=True)(tf.constant(data, tf.float32),
                                                                                  tf.constant(noise, tf.float32))
    assert lp64.dtype == tf.float64 and lp32.dtype == tf.float32
    # float32 round-off: measured 6e-7 on bounds up to 7.8 in magnitude, so 1e-5 leaves 16x; other
    # momentum draws move the bound by about 3 (the check can fail).
    np.testing.assert_allclose(lp32.numpy(), lp64.numpy(), atol=1e-5)
    other = m64.iwae_bound(tf.constant(data), noise=tf.constant(np.random.default_rng(6).normal(size=(8, 64, 2))))
    assert np.abs(other.numpy() - lp64.numpy()).max() > 0.1
    # The flow's phase-space density on fixed (q, p), float32 under XLA against float64: measured
    # 1.1e-6 on values up to 13.8.
    p = np.random.default_rng(4).normal(size=(64, 2))
    s64 = m64.phase_space.log_prob(tf.constant(np.concatenate([data, p], 1)))
    s32 = tf.function(m32.phase_space.log_prob, jit_compile=True)(tf.constant(np.concatenate([data, p], 1), tf.float32))
    assert s32.dtype == tf.float32 and s64.dtype == tf.float64
    np.testing.assert_allclose(s32.numpy(), s64.numpy(), atol=1e-5)
    assert np.isfinite(lp32.numpy()).all() and np.isfinite(lp64.numpy()).all()


def test_vi_weights_estimate_the_analytic_log_z(density64):
    # Target: the unnormalised standard normal exp(-|q|^2 / 2) in d = 2, so log Z = log(2 pi).
    # E[w] = Z for the importance weights of the flow's samples: the estimate must agree with
    # log Z within 3 standard errors (delta method: stderr of log mean w = std(w) / (mean(w) sqrt(n)),
    # 0.03 here with this seed), and the ELBO (mean log w) must lie below it.
    model, _ = density64
    n = 20_000
    log_w = model.vi_log_weights(lambda q: -0.5 * tf.reduce_sum(q ** 2, -1), n, seed=(1, 2)).numpy()
    assert log_w.shape == (n,) and np.isfinite(log_w).all()
    w = np.exp(log_w - log_w.max())
    log_z = np.log(w.mean()) + log_w.max()
    stderr = w.std() / (w.mean() * np.sqrt(n))
    assert stderr < 0.1  # precise enough for the comparison to mean something
    assert abs(log_z - np.log(2 * np.pi)) < 3 * stderr, (log_z, np.log(2 * np.pi), stderr)
    assert log_w.mean() < np.log(2 * np.pi)
    ess = effective_sample_size(tf.constant(log_w)).numpy()
    assert ess == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-9)  # Kish's formula
    assert effective_sample_size(tf.zeros(100, tf.float64)).numpy() == pytest.approx(100.0, rel=1e-12)


@pytest.fixture(scope="module")
def density_1d():
    """A 1-D density from a flow far from the identity, with its q-marginal by quadrature over p.

    p(q) = integral rho(q, p) dp on a grid (q and p in [-12, 12], steps 0.05 and 0.025; the grid
    holds all but 1e-6 of the mass).
    """
    model = build_density(1, num_hamiltonians=2, n_steps=5, step_size=0.2, widths=(16, 16), encoder_widths=(16,),
                          init_scale=2.0, dtype=tf.float64, seed=1, num_momenta=16)
    qs, ps = np.linspace(-12, 12, 481), np.linspace(-12, 12, 961)
    grid_q, grid_p = np.meshgrid(qs, ps, indexing="ij")
    log_rho = model.phase_space.log_prob(tf.constant(np.stack([grid_q.ravel(), grid_p.ravel()], -1)))
    density = np.exp(log_rho.numpy().reshape(grid_q.shape)).sum(1) * (ps[1] - ps[0])
    assert density.sum() * (qs[1] - qs[0]) == pytest.approx(1.0, abs=1e-5)
    return model, qs, density


def test_samples_follow_the_density(density_1d):
    # A histogram of 100,000 samples against the quadrature marginal's bin probabilities:
    # chi^2 per bin (30 bins) must be below 1.5 (fixed seed; measured 0.78). The check can fail:
    # the same density shifted by 0.1 (0.04 standard deviations) scores above it (measured 5.4).
    model, qs, density = density_1d
    x = model.sample(100_000, seed=(7, 7)).numpy()[:, 0]
    edges = np.linspace(-4, 5, 31)
    counts, _ = np.histogram(x, edges)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(qs))])

    def chi2_per_bin(shift):
        expected = len(x) * np.diff(np.interp(edges - shift, qs, cdf))
        return ((counts - expected) ** 2 / expected).sum() / len(expected)

    assert chi2_per_bin(0.0) < 1.5
    assert chi2_per_bin(0.1) > 1.5
    assert np.std(x) > 1.5  # not the prior's unit scale: the flow moved the mass


def test_log_prob_approaches_the_quadrature_marginal_from_below(density_1d):
    # The IWAE bound with K = 4,096 momenta is within 0.05 nats of log p(q) by quadrature
    # (measured <= 0.025), and on average below it (a lower bound, up to Monte Carlo noise).
    model, qs, density = density_1d
    q = np.array([-1.5, -0.5, 0.0, 0.7, 1.9])
    exact = np.log(np.interp(q, qs, density))
    bound = model.iwae_bound(tf.constant(q[:, None]), 4096, seed=(1, 1)).numpy()
    np.testing.assert_allclose(bound, exact, atol=0.05)
    assert bound.mean() < exact.mean() + 0.01


def test_flag_names_are_the_implemented_ones():
    """`nhf.config`'s TensorFlow-free name lists (what the flags accept) match the implementations."""
    from nhf import config, hamiltonians

    assert config.ACTIVATION_NAMES == tuple(sorted(ACTIVATIONS))
    for name in config.PRIORS:  # each name builds (an unknown one raises)
        make_prior(name, 4)
    with pytest.raises(ValueError, match="valid priors"):
        make_prior("uniform", 4)
    for kind in config.KINETIC_KINDS:  # "fixed" is the quadratic alone, "learned" adds a network
        h = hamiltonians.LearnedHamiltonian(2, widths=(4,), kinetic=kind)
        assert (h.kinetic_net is None) == (kind == "fixed")
    with pytest.raises(ValueError, match="valid: learned, fixed"):
        hamiltonians.LearnedHamiltonian(2, widths=(4,), kinetic="relativistic")
