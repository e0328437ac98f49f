"""Physics and contracts of the shared integrators (common/)."""
import numpy as np
import pytest
import tensorflow as tf
from scipy.integrate import solve_ivp

import common
from common import PhaseSpace, SeparableHamiltonian, integrators

SYMPLECTIC = ("leapfrog", "symplectic_euler", "yoshida4")
NON_SYMPLECTIC = ("euler", "rk4")


def harmonic():
    return SeparableHamiltonian(lambda p: tf.reduce_sum(0.5 * p**2, -1), lambda q: tf.reduce_sum(0.5 * q**2, -1))


def pendulum():
    # The reference suite's pendulum: m = 0.5, g = 3, l = 1.
    m, g, l = 0.5, 3.0, 1.0
    return SeparableHamiltonian(lambda p: tf.reduce_sum(p**2 / (2 * m * l**2), -1),
                                lambda q: tf.reduce_sum(m * g * l * (1 - tf.cos(q)), -1))


def nonlinear_2d():
    """A separable H in d = 2 whose flow mixes the coordinates (coupled quartic potential)."""
    def potential(q):
        return 0.5 * tf.reduce_sum(q**2, -1) + 0.25 * q[..., 0] ** 2 * q[..., 1] ** 2 + 0.1 * q[..., 0] ** 4

    return SeparableHamiltonian(lambda p: tf.reduce_sum(0.5 * p**2, -1), potential)


def pendulum_reference(q0, p0, t):
    m, g, l = 0.5, 3.0, 1.0
    sol = solve_ivp(lambda _, y: [y[1] / (m * l**2), -m * g * l * np.sin(y[0])], (0, t), [q0, p0],
                    method="DOP853", rtol=1e-13, atol=1e-13)
    return sol.y[:, -1]


def measured_order(method, system):
    dts = np.array([0.1, 0.05, 0.025, 0.0125])
    t_end = 2.0
    q0, p0 = 1.1, 0.4
    state = PhaseSpace(tf.constant([[q0]], tf.float64), tf.constant([[p0]], tf.float64))
    if system == "harmonic":
        h = harmonic()
        exact = np.array([q0 * np.cos(t_end) + p0 * np.sin(t_end), -q0 * np.sin(t_end) + p0 * np.cos(t_end)])
    else:
        h = pendulum()
        exact = pendulum_reference(q0, p0, t_end)
    errors = []
    for dt in dts:
        out = common.integrate(h, state, dt, int(round(t_end / dt)), method=method)
        errors.append(np.hypot(out.q.numpy().item() - exact[0], out.p.numpy().item() - exact[1]))
    return np.polyfit(np.log(dts), np.log(errors), 1)[0]


@pytest.mark.parametrize("system", ["harmonic", "pendulum"])
@pytest.mark.parametrize("method", integrators.names())
def test_measured_order_matches_declared(method, system):
    slope = measured_order(method, system)
    assert abs(slope - integrators.get(method).order) < 0.2, f"{method} on {system}: measured order {slope:.3f}"


def test_order_check_can_fail():
    # The same fit detects a lie: leapfrog is not of order 4.
    assert abs(measured_order("leapfrog", "pendulum") - 4) > 0.2


def symplecticity_defect(method, dt=0.2, n_steps=10):
    h = nonlinear_2d()
    x0 = tf.constant(np.random.default_rng(0).normal(size=(5, 4)) * 0.8, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x0)
        out = common.integrate(h, PhaseSpace.split(x0), dt, n_steps, method=method)
        x1 = out.concat()
    jac = tape.batch_jacobian(x1, x0).numpy()
    d = 2
    omega = np.block([[np.zeros((d, d)), np.eye(d)], [-np.eye(d), np.zeros((d, d))]])
    defect = np.einsum("bji,jk,bkl->bil", jac, omega, jac) - omega
    return np.abs(defect).max()


SYMPLECTIC_TOL = 1e-12  # float64, 10 steps: symplectic methods measured at <= 5e-16
NON_SYMPLECTIC_MIN = 1e-4  # RK4 misses by 6.5e-4 on the same check, Euler by 3.6


@pytest.mark.parametrize("method", SYMPLECTIC)
def test_symplectic_methods_preserve_omega(method):
    assert symplecticity_defect(method) < SYMPLECTIC_TOL


@pytest.mark.parametrize("method", NON_SYMPLECTIC)
def test_symplecticity_check_fails_for_non_symplectic(method):
    # The same check, same step, same H: RK4 misses by ~6e-4, Euler by far more.
    assert symplecticity_defect(method) > NON_SYMPLECTIC_MIN


@pytest.mark.parametrize("method", ["leapfrog", "yoshida4"])
def test_reversibility(method):
    h = nonlinear_2d()
    x0 = tf.constant(np.random.default_rng(1).normal(size=(8, 4)), tf.float64)
    start = PhaseSpace.split(x0)
    there = common.integrate(h, start, 0.05, 200, method=method)
    back = common.integrate(h, there, -0.05, 200, method=method)
    assert np.abs(back.concat().numpy() - x0.numpy()).max() < 1e-10
    assert integrators.get(method).reversible


def test_symplectic_euler_is_not_reversible():
    h = nonlinear_2d()
    x0 = tf.constant(np.random.default_rng(1).normal(size=(8, 4)), tf.float64)
    start = PhaseSpace.split(x0)
    back = common.integrate(h, common.integrate(h, start, 0.05, 200, "symplectic_euler"), -0.05, 200,
                            "symplectic_euler")
    assert np.abs(back.concat().numpy() - x0.numpy()).max() > 1e-6
    assert not integrators.get("symplectic_euler").reversible


@tf.function
def _long_energy_error(state, method_index):
    h = pendulum()
    traj_lf = common.trajectory(h, state, 0.1, 10_000, method="leapfrog")
    traj_eu = common.trajectory(h, state, 0.1, 10_000, method="euler")
    e0 = h.energy(state)
    return (tf.abs(h.trajectory_energy(traj_lf) - e0) / e0, tf.abs(h.trajectory_energy(traj_eu) - e0) / e0)


def test_energy_bounded_for_leapfrog_and_drifting_for_euler():
    state = PhaseSpace(tf.constant([[1.5], [2.0]], tf.float64), tf.constant([[0.0], [0.5]], tf.float64))
    err_lf, err_eu = (e.numpy() for e in _long_energy_error(state, 0))
    assert err_lf.shape == (10_001, 2)
    # Leapfrog: bounded, oscillating error; the last thousand steps are no worse than the first.
    assert err_lf.max() < 1e-2  # O(dt^2) at dt = 0.1, amplitude up to 2 rad
    assert err_lf[-1000:].max() < 1.5 * err_lf[:1000].max()
    # Euler: energy grows steadily.
    assert err_eu[-1].min() > 10 * err_eu[100].max()
    assert err_eu[-1].min() > 0.5


def test_leapfrog_gradient_evaluations_per_step():
    calls = {"V": 0, "K": 0}

    def potential(q):
        calls["V"] += 1
        return tf.reduce_sum(1 - tf.cos(q), -1)

    def kinetic(p):
        calls["K"] += 1
        return tf.reduce_sum(p**2, -1) / 2

    h = SeparableHamiltonian(kinetic, potential)
    state = PhaseSpace(tf.ones([3, 2]), tf.zeros([3, 2]))
    common.integrate(h, state, 0.1, 25, unroll=True)
    assert calls == {"V": 26, "K": 25}  # one new dV/dq per step after the first
    assert integrators.get("leapfrog").gradient_evaluations(separable=True) == {"dV/dq": 1, "dK/dp": 1}
    calls.update(V=0, K=0)
    common.integrate(h, state, 0.1, 25, method="yoshida4", unroll=True)
    assert calls == {"V": 1 + 25 * 3, "K": 25 * 3}


class MLPHamiltonian(tf.Module):
    """A small non-separable H(q, p) = MLP([q, p]) with softplus.

    The output layer has no bias: a constant energy offset does not change the dynamics, so
    it could get no gradient through a rollout.
    """

    def __init__(self, dim, width=16, dtype=tf.float32):
        super().__init__()
        rng = np.random.default_rng(0)
        sizes = [2 * dim, width, width, 1]
        self.weights = [tf.Variable(rng.normal(size=(a, b)) / np.sqrt(a), dtype=dtype) for a, b in zip(sizes, sizes[1:])]
        self.biases = [tf.Variable(rng.normal(size=(b,)) * 0.1, dtype=dtype) for b in sizes[1:-1]]

    def __call__(self, q, p):
        x = tf.concat([q, p], -1)
        for w, b in zip(self.weights[:-1], self.biases):
            x = tf.nn.softplus(x @ w + b)
        return tf.squeeze(x @ self.weights[-1], -1)


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_gradients_reach_every_variable_and_the_initial_state(mode):
    h = MLPHamiltonian(dim=3)
    q0 = tf.random.stateless_normal([4, 3], seed=[1, 2])
    p0 = tf.random.stateless_normal([4, 3], seed=[3, 4])

    def loss_and_grads(q0, p0):
        with tf.GradientTape() as tape:
            tape.watch([q0, p0])
            traj = common.trajectory(h, PhaseSpace(q0, p0), 0.1, 20)
            loss = tf.reduce_mean(traj.q**2) + tf.reduce_mean(traj.p**2)
        return tape.gradient(loss, [*h.trainable_variables, q0, p0])

    fn = {"eager": loss_and_grads, "function": tf.function(loss_and_grads),
          "xla": tf.function(loss_and_grads, jit_compile=True)}[mode]
    grads = fn(q0, p0)
    assert len(grads) == len(h.trainable_variables) + 2
    for g in grads:
        assert g is not None
        assert np.all(np.isfinite(g.numpy()))
        assert np.abs(g.numpy()).max() > 0


@pytest.mark.parametrize("dtype", [tf.float32, tf.float64])
@pytest.mark.parametrize("shape", [(3,), (2, 5), (2, 4, 4, 3)])
def test_dtype_and_shape_follow_the_input(dtype, shape):
    h = common.Hamiltonian(lambda q, p: tf.reduce_sum(0.5 * p**2 + 0.5 * q**2, axis=range(1, len(shape))))
    state = PhaseSpace(tf.ones(shape, dtype), tf.zeros(shape, dtype))
    traj = common.trajectory(h, state, 0.1, 7)
    assert traj.q.dtype == dtype and traj.p.dtype == dtype
    assert traj.q.shape == (8, *shape)
    out = tf.function(lambda s: common.integrate(h, s, 0.1, 7), jit_compile=True)(state)
    np.testing.assert_allclose(out.q.numpy(), traj.q[-1].numpy(), rtol=1e-5, atol=1e-6)


def test_dynamic_step_count_and_per_example_dt():
    h = harmonic()
    state = PhaseSpace(tf.constant([[1.0], [1.0]], tf.float64), tf.constant([[0.0], [0.0]], tf.float64))
    f = tf.function(lambda s, n, dt: common.trajectory(h, s, dt, n))
    traj = f(state, tf.constant(4), tf.constant([[0.1], [-0.1]], tf.float64))
    assert traj.q.shape[0] == 5
    # Same magnitude of step forward and backward on a symmetric potential: same q, opposite p.
    np.testing.assert_allclose(traj.q[:, 0].numpy(), traj.q[:, 1].numpy(), atol=1e-12)
    np.testing.assert_allclose(traj.p[:, 0].numpy(), -traj.p[:, 1].numpy(), atol=1e-12)


def test_zero_steps_return_the_state():
    state = PhaseSpace(tf.ones([2, 2]), tf.zeros([2, 2]))
    out = common.integrate(harmonic(), state, 0.1, 0)
    assert np.array_equal(out.q.numpy(), state.q.numpy())
    assert common.trajectory(harmonic(), state, 0.1, 0).q.shape == (1, 2, 2)


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="valid methods: euler, leapfrog, rk4, symplectic_euler, yoshida4"):
        common.integrate(harmonic(), (tf.ones([1, 1]), tf.ones([1, 1])), 0.1, 3, method="verlet2")


def test_mismatched_shapes_and_dtypes_are_named():
    with pytest.raises(ValueError, match=r"q: \(2, 3\) and p: \(2, 4\)"):
        common.integrate(harmonic(), (tf.ones([2, 3]), tf.ones([2, 4])), 0.1, 3)
    with pytest.raises(ValueError, match="q: float32 and p: float64"):
        common.integrate(harmonic(), (tf.ones([2, 3]), tf.ones([2, 3], tf.float64)), 0.1, 3)


@pytest.mark.parametrize("n_steps", [-1, tf.constant(-2), 2.5, True])
def test_bad_step_counts(n_steps):
    with pytest.raises(ValueError, match="n_steps"):
        common.integrate(harmonic(), (tf.ones([1, 1]), tf.ones([1, 1])), 0.1, n_steps)


def test_coefficient_tables_are_validated():
    with pytest.raises(ValueError, match="sum to 1"):
        integrators.Composition("bad", kicks=(0.5, 0.4), drifts=(1.0,), order=2)
