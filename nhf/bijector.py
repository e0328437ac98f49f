"""`NeuralHamiltonianFlow`: a volume-preserving TFP bijector on phase space [q, p].

The forward map pushes a state s = [q, p] (event size 2d) through T learned Hamiltonians,
integrating each with `n_steps` leapfrog steps of size `step_size` (via `common.integrate`):

    s_T = Phi_T o ... o Phi_1 (s_0),   Phi_t = (leapfrog_{eps, H_t})^n_steps

A leapfrog step of a separable H is a composition of shears, so |det J| = 1 exactly and
`forward_log_det_jacobian` is zero. The inverse integrates the Hamiltonians in reverse order
with step -eps (leapfrog is time-reversible), which undoes the forward map up to round-off.

Pitfalls handled (TFP's bijector contract; FFJORD in tfp/bijectors/ffjord.py does the same):
`is_constant_jacobian` stays False (the Jacobian is
not constant, only its determinant), `_parameter_properties` is `{}` (the parameters are
networks), and the networks are `tf.Module`s of `tf.Variable`s so that any distribution holding
the bijector lists them in `trainable_variables`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_probability as tfp

from common import PhaseSpace, integrate, integrators
from nhf.hamiltonians import LearnedHamiltonian

tfb = tfp.bijectors
Tensor = tf.Tensor


class NeuralHamiltonianFlow(tfb.Bijector):
    """T learned Hamiltonian flows, each integrated by a reversible symplectic method.

    Acts on vectors `[batch..., 2d]`: the first d entries are q, the last d are p.

    Args:
      dim: d, the size of q. The event size is 2d.
      num_hamiltonians: T, the number of Hamiltonians in sequence.
      n_steps: integration steps per Hamiltonian (a Python int: XLA needs a static count).
      step_size: eps > 0; the integration time per Hamiltonian is `n_steps * eps`.
      widths: hidden widths of the energy MLPs.
      activation: smooth activation (`softplus`, `tanh`, `swish`).
      kinetic: `"learned"` (MLP K(p)) or `"fixed"` (K = p^T M^-1 p / 2, learned diagonal M).
      method: a symplectic, time-reversible integrator from `common.integrators` (`leapfrog`
        or `yoshida4`).
      unroll: unroll the step loop in the graph (faster under XLA for few steps).
      init_scale: output-layer initialisation scale of the energy networks (learned forces of
        order `init_scale` at the start).
      init_log_mass: initial log mass of the quadratic kinetic term; the flow starts as a free
        motion of speed ~exp(-init_log_mass) perturbed by small learned forces: near the
        identity for a large mass, never exactly at it.
      hamiltonians: optional prebuilt `LearnedHamiltonian`s (then `num_hamiltonians`, `widths`,
        `activation`, `kinetic`, `init_scale`, `init_log_mass`, `seed` are ignored).
      dtype: float dtype of the variables and of the states it accepts.
      seed: integer seed for the initial weights.
      validate_args: TFP's flag; checks the event size at run time.
      name: name scope.

    Raises:
      ValueError: for a non-positive dim, T, n_steps or step_size, or a method that is not
        symplectic and reversible, naming the bad value.

    Example:
      >>> flow = NeuralHamiltonianFlow(dim=2, num_hamiltonians=2, n_steps=4, step_size=0.1)
      >>> base = tfd.MultivariateNormalDiag(tf.zeros(4), tf.ones(4))
      >>> dist = tfd.TransformedDistribution(base, flow)   # a density on [q, p]
      >>> len(dist.trainable_variables) > 0
      True
    """

    def __init__(self, dim: int, num_hamiltonians: int = 2, n_steps: int = 4, step_size: float = 0.1,
                 widths: Sequence[int] = (64, 64), activation: str = "softplus", kinetic: str = "learned",
                 method: str = "leapfrog", unroll: bool = True, init_scale: float = 0.1, init_log_mass: float = 0.0,
                 hamiltonians: Optional[Sequence[LearnedHamiltonian]] = None, dtype=tf.float32, seed: int = 0,
                 validate_args: bool = False, name: str = "neural_hamiltonian_flow"):
        parameters = dict(locals())
        for flag, value in (("dim", dim), ("num_hamiltonians", num_hamiltonians), ("n_steps", n_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{flag} must be a positive integer, got {value!r}")
        if not float(step_size) > 0:
            raise ValueError(f"step_size must be > 0, got {step_size!r}")
        integrator = integrators.get(method)
        if not (integrator.symplectic and integrator.reversible):
            raise ValueError(f"method {method!r} is not symplectic and time-reversible; "
                             "use leapfrog or yoshida4")
        dtype = tf.as_dtype(dtype)
        with tf.name_scope(name) as name:
            if hamiltonians is None:
                hamiltonians = [LearnedHamiltonian(dim, widths, activation, kinetic, dtype, seed + 1000 * t,
                                                   init_scale, init_log_mass, name=f"hamiltonian_{t}")
                                for t in range(num_hamiltonians)]
            self._hamiltonians = list(hamiltonians)
            self._dim = dim
            self._n_steps = n_steps
            self._step_size = float(step_size)
            self._method = integrator
            self._unroll = bool(unroll)
            super().__init__(forward_min_event_ndims=1, is_constant_jacobian=False, validate_args=validate_args,
                             dtype=dtype, parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

    @property
    def hamiltonians(self) -> Sequence[LearnedHamiltonian]:
        """The T learned Hamiltonians, in forward order."""
        return tuple(self._hamiltonians)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @property
    def step_size(self) -> float:
        return self._step_size

    def _split(self, x: Tensor) -> PhaseSpace:
        if self.validate_args:
            tf.debugging.assert_equal(tf.shape(x)[-1], 2 * self._dim,
                                      message=f"{self.name}: event size must be 2 * dim = {2 * self._dim}")
        return PhaseSpace(x[..., : self._dim], x[..., self._dim:])

    def _integrate(self, x: Tensor, sign: float) -> Tensor:
        state = self._split(x)
        order = self._hamiltonians if sign > 0 else reversed(self._hamiltonians)
        dt = tf.constant(sign * self._step_size, x.dtype)
        for h in order:
            state = integrate(h.as_separable(), state, dt, self._n_steps, method=self._method, unroll=self._unroll)
        return state.concat()

    def _forward(self, x):
        return self._integrate(x, 1.0)

    def _inverse(self, y):
        return self._integrate(y, -1.0)

    def _zero_log_det(self, x):
        # Volume preserving: exactly zero, in the input's dtype and batch shape.
        return tf.zeros(tf.shape(x)[:-1], dtype=x.dtype)

    def _forward_log_det_jacobian(self, x):
        return self._zero_log_det(x)

    def _inverse_log_det_jacobian(self, y):
        return self._zero_log_det(y)

    def potential(self, q: Tensor, index: int = -1) -> Tensor:
        """V_t(q) of Hamiltonian `index` (default the last, the one acting nearest the data)."""
        return self._hamiltonians[index].potential(q)
