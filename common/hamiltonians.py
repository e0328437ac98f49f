"""Hamiltonians: energy functions H(q, p) and the gradients the integrators need.

A Hamiltonian is any callable `H(q, p) -> energy per example` whose result has the batch shape
of the state (the event axes are reduced). Gradients come from `tf.GradientTape`, so a user
writes only the energy; a `Hamiltonian` may still be given analytic gradients for speed.

Gradients of `sum(H)` with respect to the state equal the per-example gradients as long as
examples do not interact inside H (no batch normalisation across the batch, for instance).
"""
from __future__ import annotations

from typing import Callable, Optional

import tensorflow as tf

from common.phase_space import PhaseSpace, as_phase_space

Tensor = tf.Tensor
HamiltonianFn = Callable[[Tensor, Tensor], Tensor]
EnergyFn = Callable[[Tensor], Tensor]
GradFn = Callable[[Tensor], Tensor]


def _grad(fn: EnergyFn, x: Tensor) -> Tensor:
    with tf.GradientTape() as tape:
        tape.watch(x)
        energy = tf.reduce_sum(fn(x))
    return tape.gradient(energy, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


class Hamiltonian:
    """A general, possibly non-separable Hamiltonian H(q, p).

    Args:
      fn: `H(q, p) -> energy`, reducing the event axes (result shape = batch shape).
      name: for name scopes and error messages.
    """

    is_separable = False

    def __init__(self, fn: Optional[HamiltonianFn] = None, name: str = "hamiltonian"):
        self._fn = fn
        self.name = name

    def __call__(self, q: Tensor, p: Tensor) -> Tensor:
        if self._fn is None:
            raise NotImplementedError(f"{type(self).__name__} needs an energy function")
        return self._fn(q, p)

    def gradients(self, q: Tensor, p: Tensor) -> PhaseSpace:
        """(dH/dq, dH/dp) at (q, p), from one backward pass."""
        with tf.GradientTape() as tape:
            tape.watch([q, p])
            energy = tf.reduce_sum(self(q, p))
        dq, dp = tape.gradient(energy, [q, p], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return PhaseSpace(dq, dp)

    def dh_dq(self, q: Tensor, p: Tensor) -> Tensor:
        """dH/dq: minus the force; the integrators' momentum update ("kick")."""
        return _grad(lambda x: self(x, p), q)

    def dh_dp(self, q: Tensor, p: Tensor) -> Tensor:
        """dH/dp: the velocity; the integrators' position update ("drift")."""
        return _grad(lambda x: self(q, x), p)

    def energy(self, state) -> Tensor:
        """H on a state `[batch..., event...]`: shape `[batch...]`."""
        q, p = as_phase_space(state)
        return self(q, p)

    def trajectory_energy(self, trajectory, batch_ndims: int = 1) -> Tensor:
        """H along a trajectory `[time, batch..., event...]`: shape `[time, batch...]`.

        Time and `batch_ndims` batch axes are merged for the call, so networks that expect one
        batch axis (convolutions) work on trajectories too.
        """
        q, p = as_phase_space(trajectory, "trajectory")
        lead = tf.shape(q)[: 1 + batch_ndims]
        event = tf.shape(q)[1 + batch_ndims:]
        flat_shape = tf.concat([[-1], event], axis=0)
        energy = self(tf.reshape(q, flat_shape), tf.reshape(p, flat_shape))
        return tf.reshape(energy, lead)


class SeparableHamiltonian(Hamiltonian):
    """H(q, p) = K(p) + V(q).

    The integrators then need only dK/dp and dV/dq, and a leapfrog step evaluates one new dV/dq
    (the last kick's force is reused by the next step's first kick).

    Args:
      kinetic: `K(p) -> energy per example`.
      potential: `V(q) -> energy per example`.
      kinetic_grad: optional analytic dK/dp (e.g. `lambda p: p / m`); autodiff otherwise.
      potential_grad: optional analytic dV/dq; autodiff otherwise.
    """

    is_separable = True

    def __init__(
        self,
        kinetic: EnergyFn,
        potential: EnergyFn,
        kinetic_grad: Optional[GradFn] = None,
        potential_grad: Optional[GradFn] = None,
        name: str = "separable_hamiltonian",
    ):
        super().__init__(name=name)
        self.kinetic = kinetic
        self.potential = potential
        self._kinetic_grad = kinetic_grad
        self._potential_grad = potential_grad

    def __call__(self, q: Tensor, p: Tensor) -> Tensor:
        return self.kinetic(p) + self.potential(q)

    def dk_dp(self, p: Tensor) -> Tensor:
        if self._kinetic_grad is not None:
            return self._kinetic_grad(p)
        return _grad(self.kinetic, p)

    def dv_dq(self, q: Tensor) -> Tensor:
        if self._potential_grad is not None:
            return self._potential_grad(q)
        return _grad(self.potential, q)

    def dh_dq(self, q: Tensor, p: Tensor) -> Tensor:
        return self.dv_dq(q)

    def dh_dp(self, q: Tensor, p: Tensor) -> Tensor:
        return self.dk_dp(p)

    def gradients(self, q: Tensor, p: Tensor) -> PhaseSpace:
        return PhaseSpace(self.dv_dq(q), self.dk_dp(p))


def quadratic_kinetic(mass=1.0, event_ndims: int = 1) -> tuple:
    """K(p) = sum(p^2 / (2 m)) over the last `event_ndims` axes, with its analytic gradient p / m.

    Returns:
      `(kinetic, kinetic_grad)`, ready for `SeparableHamiltonian`.
    """
    axes = list(range(-event_ndims, 0))

    def kinetic(p):
        return tf.reduce_sum(tf.square(p) / (2.0 * tf.cast(mass, p.dtype)), axis=axes)

    def kinetic_grad(p):
        return p / tf.cast(mass, p.dtype)

    return kinetic, kinetic_grad


def as_hamiltonian(h) -> Hamiltonian:
    """Wraps a plain callable `H(q, p)` as a `Hamiltonian`; passes `Hamiltonian`s through."""
    if isinstance(h, Hamiltonian):
        return h
    if callable(h):
        return Hamiltonian(h)
    raise ValueError(f"hamiltonian must be a Hamiltonian or a callable H(q, p), got {type(h).__name__}")
