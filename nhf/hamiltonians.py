"""Learned separable Hamiltonians H(q, p) = K(p) + V(q) for the flow.

Two kinds (`KINETIC_KINDS`):

* `"learned"`: K(p) = p^T M^-1 p / 2 + MLP_K(p) and V(q) = MLP_V(q) (the NHF paper's learned
  kinetic energy, on a quadratic base).
* `"fixed"`: K(p) = p^T M^-1 p / 2 with a learned diagonal mass M = diag(exp(log_mass)), only
  V is a network (Souveton et al., AISTATS 2024): fewer parameters, an interpretable V.

Why the quadratic base under the learned K: a pure-MLP K initialised small has a near-zero
velocity dK/dp, so q barely moves and q and p couple only at second order; in measurements
(mixture, 4000 steps) such a flow stayed at the single-Gaussian fit (NLL ~4.25 against a
floor of 2.83) while the quadratic-base versions trained. The MLP part starts small, so the
initial flow is a weakly perturbed free motion whose speed is set by `init_log_mass`.

Each module hands `common` a `SeparableHamiltonian` with analytic gradients, so the leapfrog
integrator in `common.integrate` never nests a gradient tape.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf

from common import SeparableHamiltonian
from nhf.config import KINETIC_KINDS  # the names (kept free of TensorFlow for the command line)
from nhf.networks import ScalarMLP

Tensor = tf.Tensor


class LearnedHamiltonian(tf.Module):
    """One learned H(q, p) = K(p) + V(q) on d-dimensional q and p.

    Args:
      dim: d, the size of q (and of p).
      widths: hidden widths of the V (and K) networks.
      activation: a smooth activation name (`nhf.networks.ACTIVATIONS`).
      kinetic: `"learned"` (MLP K) or `"fixed"` (quadratic K with learned diagonal mass).
      dtype: variable dtype.
      seed: integer seed for the initial weights.
      out_scale: scale of the networks' output-layer initialisation; small values start the
        learned energies near constants (forces of order `out_scale`).
      init_log_mass: initial log of the diagonal mass; a larger mass means slower drift, so
        the flow starts nearer the identity (velocity p / M).
      name: module name.

    Raises:
      ValueError: for an unknown `kinetic` kind or bad widths/activation.
    """

    def __init__(self, dim: int, widths: Sequence[int] = (64, 64), activation: str = "softplus",
                 kinetic: str = "learned", dtype=tf.float32, seed: int = 0, out_scale: float = 0.1,
                 init_log_mass: float = 0.0, name: Optional[str] = None):
        super().__init__(name=name)
        if kinetic not in KINETIC_KINDS:
            raise ValueError(f"unknown kinetic {kinetic!r}; valid: {', '.join(KINETIC_KINDS)}")
        self.dim = int(dim)
        self.kinetic_kind = kinetic
        self.potential_net = ScalarMLP(dim, widths, activation, dtype, seed, out_scale, name="potential")
        self.log_mass = tf.Variable(tf.fill([dim], tf.constant(init_log_mass, dtype)), name="log_mass")
        # "fixed": K(p) = p^T M^-1 p / 2 alone; "learned" adds an MLP.
        self.kinetic_net = None
        if kinetic == "learned":
            self.kinetic_net = ScalarMLP(dim, widths, activation, dtype, seed + 7919, out_scale, name="kinetic")
        elif kinetic != "fixed":
            raise NotImplementedError(f"kinetic {kinetic!r} is in nhf.config.KINETIC_KINDS but not built here")

    def potential(self, q: Tensor) -> Tensor:
        """V(q): `[batch..., d] -> [batch...]`."""
        return self.potential_net(q)

    def kinetic(self, p: Tensor) -> Tensor:
        """K(p): `[batch..., d] -> [batch...]`."""
        quadratic = 0.5 * tf.reduce_sum(tf.square(p) * tf.exp(-self.log_mass), axis=-1)
        if self.kinetic_net is not None:
            return quadratic + self.kinetic_net(p)
        return quadratic

    def kinetic_grad(self, p: Tensor) -> Tensor:
        """dK/dp, the velocity."""
        velocity = p * tf.exp(-self.log_mass)
        if self.kinetic_net is not None:
            return velocity + self.kinetic_net.grad(p)
        return velocity

    def potential_grad(self, q: Tensor) -> Tensor:
        """dV/dq, minus the force."""
        return self.potential_net.grad(q)

    def __call__(self, q: Tensor, p: Tensor) -> Tensor:
        """H(q, p)."""
        return self.kinetic(p) + self.potential(q)

    def as_separable(self) -> SeparableHamiltonian:
        """The `common.SeparableHamiltonian` view the integrators take."""
        return SeparableHamiltonian(self.kinetic, self.potential, kinetic_grad=self.kinetic_grad,
                                    potential_grad=self.potential_grad, name=self.name)
