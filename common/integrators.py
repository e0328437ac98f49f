"""Symplectic (and baseline) integrators for Hamiltonian dynamics, by name.

The symplectic methods are coefficient tables of one kick-drift composition scheme:

    kick b_0, drift a_0, kick b_1, drift a_1, ..., drift a_{m-1}, kick b_m

with a kick `p <- p - b_i dt dH/dq` and a drift `q <- q + a_i dt dH/dp`. Leapfrog
(Stormer-Verlet, velocity form) is `b = (1/2, 1/2), a = (1,)`; symplectic Euler is
`b = (1, 0), a = (1,)`; Yoshida's 4th-order method is leapfrog composed with step fractions
`(w1, w0, w1)`. `euler` and `rk4` are explicit, non-symplectic baselines.

Guarantees:

* Separable H = K(p) + V(q) (`SeparableHamiltonian`): each composition is exactly symplectic
  (J^T Omega J = Omega up to round-off) and of its declared order; the symmetric ones
  (leapfrog, yoshida4) are time-reversible: n steps with dt then n steps with -dt return the
  start up to round-off. When the first and last kicks are both non-zero, the last kick's
  dV/dq is carried to the next step, so leapfrog evaluates one new dV/dq and one dK/dp per step.
* Non-separable H(q, p) (a plain callable or `Hamiltonian`): the same explicit scheme runs
  with every kick and drift evaluated at the current (q, p), as HGN does with a learned H.
  That map is consistent (first order in general, exact order for separable H) but NOT
  symplectic and NOT exactly reversible; energy may drift. Its gradients are exact for the
  map it computes, which is what a learned model is trained through. Use an implicit method
  (not provided) if exact symplecticity for a non-separable H matters.

All methods work eagerly, in `tf.function` and under `jit_compile=True`, in the dtype of the
state, on any batch/event shapes, and are differentiable with respect to the initial state and
any variables the Hamiltonian captures. A negative `dt` integrates backward in time.
"""
from __future__ import annotations

import math
import numbers
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from common.hamiltonians import Hamiltonian, as_hamiltonian
from common.phase_space import PhaseSpace, as_phase_space

Tensor = tf.Tensor
StepSize = Union[float, Tensor]
Steps = Union[int, Tensor]


class Integrator:
    """One step map `(H, state, dt) -> state`.

    Attributes:
      name: registry name.
      order: global order of accuracy for a separable H.
      symplectic: whether the map is symplectic for a separable H.
      reversible: whether the map is symmetric (n steps of dt undone by n steps of -dt).
    """

    name: str = ""
    order: int = 0
    symplectic: bool = False
    reversible: bool = False

    def gradient_evaluations(self, separable: bool) -> Dict[str, float]:
        """Gradient evaluations per step in a long run (after the first step)."""
        raise NotImplementedError

    # Steps carry an auxiliary "cache" (a force reused by the next step); None when unused.
    def initial_cache(self, h: Hamiltonian, state: PhaseSpace):
        return None

    def step(self, h: Hamiltonian, state: PhaseSpace, dt: Tensor, cache) -> Tuple[PhaseSpace, object]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, order={self.order})"


class Composition(Integrator):
    """A kick-drift composition given by its coefficient tables.

    Args:
      name: registry name.
      kicks: momentum coefficients `b_0 .. b_m` (one more than drifts; zeros are skipped).
      drifts: position coefficients `a_0 .. a_{m-1}`.
      order: declared order (checked by the test suite, not here).
    """

    symplectic = True

    def __init__(self, name: str, kicks: Sequence[float], drifts: Sequence[float], order: int):
        if len(kicks) != len(drifts) + 1:
            raise ValueError(f"{name}: need len(kicks) == len(drifts) + 1, got {len(kicks)} and {len(drifts)}")
        if not math.isclose(sum(kicks), 1.0, abs_tol=1e-12) or not math.isclose(sum(drifts), 1.0, abs_tol=1e-12):
            raise ValueError(f"{name}: kick and drift coefficients must each sum to 1 (consistency)")
        self.name = name
        self.kicks = tuple(float(b) for b in kicks)
        self.drifts = tuple(float(a) for a in drifts)
        self.order = order
        self.reversible = bool(np.allclose(self.kicks, self.kicks[::-1]) and np.allclose(self.drifts, self.drifts[::-1]))
        # First-same-as-last: the closing kick's force is the next step's opening force.
        self._fsal = self.kicks[0] != 0.0 and self.kicks[-1] != 0.0

    def gradient_evaluations(self, separable: bool) -> Dict[str, float]:
        n_kicks = sum(1 for b in self.kicks if b != 0.0)
        if separable:
            return {"dV/dq": n_kicks - (1 if self._fsal else 0), "dK/dp": len(self.drifts)}
        return {"dH/dq": n_kicks, "dH/dp": len(self.drifts)}

    def initial_cache(self, h: Hamiltonian, state: PhaseSpace):
        if h.is_separable and self._fsal:
            return h.dh_dq(state.q, state.p)
        return None

    def step(self, h, state, dt, cache):
        q, p = state
        force = cache if (h.is_separable and self._fsal) else None
        for b, a in zip(self.kicks[:-1], self.drifts):
            if b != 0.0:
                if force is None:
                    force = h.dh_dq(q, p)
                p = p - (b * dt) * force
            q = q + (a * dt) * h.dh_dp(q, p)
            force = None
        if self.kicks[-1] != 0.0:
            force = h.dh_dq(q, p)
            p = p - (self.kicks[-1] * dt) * force
        new_cache = force if (h.is_separable and self._fsal) else None
        return PhaseSpace(q, p), new_cache


class ExplicitEuler(Integrator):
    """Forward Euler on the Hamiltonian vector field: a first-order, non-symplectic baseline."""

    name = "euler"
    order = 1

    def gradient_evaluations(self, separable: bool) -> Dict[str, float]:
        return {"dV/dq": 1, "dK/dp": 1} if separable else {"dH/dq,dH/dp (one pass)": 1}

    def step(self, h, state, dt, cache):
        dq, dp = h.gradients(state.q, state.p)
        return PhaseSpace(state.q + dt * dp, state.p - dt * dq), None


class RungeKutta4(Integrator):
    """Classical 4th-order Runge-Kutta: accurate, but not symplectic (energy drifts)."""

    name = "rk4"
    order = 4

    def gradient_evaluations(self, separable: bool) -> Dict[str, float]:
        return {"dV/dq": 4, "dK/dp": 4} if separable else {"dH/dq,dH/dp (one pass)": 4}

    def step(self, h, state, dt, cache):
        def field(q, p):
            dq, dp = h.gradients(q, p)
            return dp, -dq

        q, p = state
        k1q, k1p = field(q, p)
        k2q, k2p = field(q + 0.5 * dt * k1q, p + 0.5 * dt * k1p)
        k3q, k3p = field(q + 0.5 * dt * k2q, p + 0.5 * dt * k2p)
        k4q, k4p = field(q + dt * k3q, p + dt * k3p)
        q = q + dt / 6.0 * (k1q + 2.0 * k2q + 2.0 * k3q + k4q)
        p = p + dt / 6.0 * (k1p + 2.0 * k2p + 2.0 * k3p + k4p)
        return PhaseSpace(q, p), None


def _yoshida4() -> Composition:
    cbrt2 = 2.0 ** (1.0 / 3.0)
    w1 = 1.0 / (2.0 - cbrt2)
    w0 = -cbrt2 / (2.0 - cbrt2)
    return Composition("yoshida4", kicks=(w1 / 2, (w1 + w0) / 2, (w0 + w1) / 2, w1 / 2), drifts=(w1, w0, w1), order=4)


_REGISTRY: Dict[str, Integrator] = {}


def register(integrator: Integrator) -> Integrator:
    """Adds an integrator to the registry under `integrator.name`."""
    if not integrator.name:
        raise ValueError("an integrator needs a name to be registered")
    _REGISTRY[integrator.name] = integrator
    return integrator


def names() -> Tuple[str, ...]:
    """The registered method names."""
    return tuple(sorted(_REGISTRY))


def get(name: Union[str, Integrator]) -> Integrator:
    """The integrator registered as `name` (an `Integrator` passes through).

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(name, Integrator):
        return name
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown integration method {name!r}; valid methods: {', '.join(names())}") from None


register(Composition("leapfrog", kicks=(0.5, 0.5), drifts=(1.0,), order=2))
register(Composition("symplectic_euler", kicks=(1.0, 0.0), drifts=(1.0,), order=1))
register(_yoshida4())
register(ExplicitEuler())
register(RungeKutta4())


def _static_steps(n_steps: Steps) -> Optional[int]:
    if isinstance(n_steps, bool):
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    if isinstance(n_steps, numbers.Integral):
        value = int(n_steps)
    elif isinstance(n_steps, numbers.Real):
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    else:
        n_steps = tf.convert_to_tensor(n_steps)
        if not n_steps.dtype.is_integer:
            raise ValueError(f"n_steps must be an integer tensor, got dtype {n_steps.dtype.name}")
        static = tf.get_static_value(n_steps)
        if static is None:
            return None
        value = int(static)
    if value < 0:
        raise ValueError(f"n_steps must be >= 0, got {value}")
    return value


def _to_loop(cache):
    # tf.while_loop cannot carry None; an empty tuple is an empty structure it accepts.
    return () if cache is None else cache


def _from_loop(cache):
    return None if isinstance(cache, tuple) and not cache else cache


def _prepare(hamiltonian, state, dt, n_steps, method):
    integrator = get(method)
    h = as_hamiltonian(hamiltonian)
    state = as_phase_space(state)
    static_n = _static_steps(n_steps)
    n = static_n if static_n is not None else tf.cast(n_steps, tf.int32)
    dt = tf.cast(dt, state.dtype)
    return integrator, h, state, dt, static_n, n


def integrate(hamiltonian, state, dt: StepSize, n_steps: Steps, method: Union[str, Integrator] = "leapfrog",
              unroll: bool = False) -> PhaseSpace:
    """Integrates Hamilton's equations for `n_steps` steps of size `dt`.

    Args:
      hamiltonian: a `Hamiltonian`, `SeparableHamiltonian`, or any callable `H(q, p) -> energy`
        with result shape = batch shape.
      state: `PhaseSpace(q, p)` (or a pair) of any matching shape; the dtype follows it.
      dt: step size, a scalar or a tensor broadcastable to q (per-example step sizes). Negative
        integrates backward in time.
      n_steps: number of steps, a non-negative Python int or int tensor. Under `jit_compile`
        with gradients, pass a Python int so the loop has a static trip count.
      method: a registered name (`common.integrators.names()`) or an `Integrator`.
      unroll: unroll the loop in Python (only for a Python-int `n_steps`); larger graphs, but
        XLA can fuse across steps.

    Returns:
      The final `PhaseSpace`, same shape and dtype as `state`.

    Raises:
      ValueError: unknown method (listing valid ones), q/p of different shape or dtype,
        or `n_steps < 0`.
    """
    integrator, h, state, dt, static_n, n = _prepare(hamiltonian, state, dt, n_steps, method)
    cache = integrator.initial_cache(h, state)
    if static_n is not None and (unroll or static_n == 0):
        for _ in range(static_n):
            state, cache = integrator.step(h, state, dt, cache)
        return state

    def body(i, q, p, c):
        new_state, new_c = integrator.step(h, PhaseSpace(q, p), dt, _from_loop(c))
        return i + 1, new_state.q, new_state.p, _to_loop(new_c)

    loop_vars = (tf.constant(0), state.q, state.p, _to_loop(cache))
    _, q, p, _ = tf.while_loop(lambda i, *_: i < n, body, loop_vars, maximum_iterations=static_n)
    return PhaseSpace(q, p)


def trajectory(hamiltonian, state, dt: StepSize, n_steps: Steps, method: Union[str, Integrator] = "leapfrog",
               unroll: bool = False) -> PhaseSpace:
    """Like `integrate`, but returns every state: `PhaseSpace` with a leading time axis of
    length `n_steps + 1` (index 0 is the initial state).
    """
    integrator, h, state, dt, static_n, n = _prepare(hamiltonian, state, dt, n_steps, method)
    cache = integrator.initial_cache(h, state)
    if static_n is not None and (unroll or static_n == 0):
        qs, ps = [state.q], [state.p]
        for _ in range(static_n):
            state, cache = integrator.step(h, state, dt, cache)
            qs.append(state.q)
            ps.append(state.p)
        return PhaseSpace(tf.stack(qs), tf.stack(ps))

    size = static_n + 1 if static_n is not None else n + 1
    q_ta = tf.TensorArray(state.dtype, size=size, element_shape=state.q.shape).write(0, state.q)
    p_ta = tf.TensorArray(state.dtype, size=size, element_shape=state.p.shape).write(0, state.p)

    def body(i, q, p, c, q_ta, p_ta):
        new_state, new_c = integrator.step(h, PhaseSpace(q, p), dt, _from_loop(c))
        return (i + 1, new_state.q, new_state.p, _to_loop(new_c),
                q_ta.write(i + 1, new_state.q), p_ta.write(i + 1, new_state.p))

    loop_vars = (tf.constant(0), state.q, state.p, _to_loop(cache), q_ta, p_ta)
    _, _, _, _, q_ta, p_ta = tf.while_loop(lambda i, *_: i < n, body, loop_vars, maximum_iterations=static_n)
    return PhaseSpace(q_ta.stack(), p_ta.stack())
