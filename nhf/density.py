"""The NHF density model over q: a marginal of a flow on phase space, with proper bounds.

The flow defines an exact density on phase space, rho(q, p) = pi(Phi^-1(q, p)) (times the
log-det of the optional affine output layer; the Hamiltonian part has log-det zero). The
density of q alone is the marginal p(q) = integral rho(q, p) dp, bounded with the momentum
encoder f(p | q):

    elbo(q)      = E_{p ~ f(.|q)} [ log rho(q, p) - log f(p | q) ]                 <= log p(q)
    iwae_K(q)    = E [ log (1/K) sum_k rho(q, p_k) / f(p_k | q) ],  p_k ~ f(.|q)    <= log p(q)

with elbo = iwae_1 <= iwae_K <= iwae_{K+1} (Burda et al. 2016). Training MAXIMISES the ELBO (the
original repository minimised it); evaluation reports the IWAE bound (log-mean-exp, not max).

`HamiltonianFlowDensity` exposes this as a `tfd.Distribution` over q: `sample` is exact (draw
(q0, p0) from the prior, push it through the flow, keep q); `log_prob` is the IWAE estimate
with `num_momenta` samples, a stochastic LOWER BOUND on log p(q) in expectation, not the exact
log density.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from nhf.bijector import NeuralHamiltonianFlow
from nhf.encoder import MomentumEncoder
from nhf.priors import make_prior

tfd = tfp.distributions
tfb = tfp.bijectors
Tensor = tf.Tensor


class HamiltonianFlowDensity(tfd.Distribution):
    """A distribution over q in R^d from a Hamiltonian flow on phase space R^2d.

    Args:
      flow: the `NeuralHamiltonianFlow` (event size 2d).
      prior: base distribution over `[q0, p0]`, event shape `[2d]` (see `nhf.priors`).
      encoder: the `MomentumEncoder` f(p | q).
      output_affine: optional volume-changing bijector applied after the flow (e.g. a learned
        elementwise scale and shift); its log-det enters every density.
      num_momenta: K, the number of momenta per point in `log_prob` (the IWAE bound).
      validate_args: TFP's flag.
      allow_nan_stats: TFP's flag.
      name: name scope.

    Batch shape is scalar; event shape is `[d]`. `log_prob(q)` accepts `[batch..., d]` and an
    optional `seed=` keyword for reproducible momenta.
    """

    def __init__(self, flow: NeuralHamiltonianFlow, prior: tfd.Distribution, encoder: MomentumEncoder,
                 output_affine: Optional[tfb.Bijector] = None, num_momenta: int = 64, validate_args: bool = False,
                 allow_nan_stats: bool = True, name: str = "hamiltonian_flow_density"):
        parameters = dict(locals())
        if isinstance(num_momenta, bool) or not isinstance(num_momenta, int) or num_momenta < 1:
            raise ValueError(f"num_momenta must be a positive integer, got {num_momenta!r}")
        with tf.name_scope(name) as name:
            self._flow = flow
            self._prior = prior
            self._encoder = encoder
            self._output_affine = output_affine
            self._num_momenta = num_momenta
            self._dim = flow.dim
            bijector = flow if output_affine is None else tfb.Chain([output_affine, flow])
            self._phase_space = tfd.TransformedDistribution(prior, bijector, name="phase_space")
            super().__init__(dtype=flow.dtype, reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                             validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                             parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return dict()

    # --- parts ---
    @property
    def flow(self) -> NeuralHamiltonianFlow:
        return self._flow

    @property
    def prior(self) -> tfd.Distribution:
        return self._prior

    @property
    def encoder(self) -> MomentumEncoder:
        return self._encoder

    @property
    def phase_space(self) -> tfd.TransformedDistribution:
        """The exact density rho(q, p) on phase space, event shape `[2d]`."""
        return self._phase_space

    @property
    def num_momenta(self) -> int:
        return self._num_momenta

    @property
    def dim(self) -> int:
        return self._dim

    # --- shapes ---
    def _event_shape(self):
        return tf.TensorShape([self._dim])

    def _event_shape_tensor(self):
        return tf.constant([self._dim], tf.int32)

    def _batch_shape(self):
        return tf.TensorShape([])

    def _batch_shape_tensor(self):
        return tf.constant([], tf.int32)

    # --- bounds ---
    def log_weights(self, q: Tensor, num_momenta: int, seed=None, noise: Optional[Tensor] = None) -> Tensor:
        """log rho(q, p_k) - log f(p_k | q) for K momenta p_k ~ f(.|q): shape `[K, batch...]`.

        Args:
          q: points `[batch..., d]`.
          num_momenta: K.
          seed: stateless seed of the momenta (when `noise` is None).
          noise: optional standard-normal draws `[K, batch..., d]` used instead of `seed` (see
            `MomentumEncoder.sample_and_log_prob`); K is then its leading size.
        """
        q = tf.convert_to_tensor(q, self.dtype)
        if noise is None:
            seed = tfp.random.sanitize_seed(seed)
        p, log_f = self._encoder.sample_and_log_prob(q, num_momenta, seed, noise=noise)
        q_k = tf.broadcast_to(q, tf.shape(p))
        return self._phase_space.log_prob(tf.concat([q_k, p], axis=-1)) - log_f

    def elbo(self, q: Tensor, num_momenta: int = 1, seed=None, noise: Optional[Tensor] = None) -> Tensor:
        """Monte Carlo ELBO per point, averaged over `num_momenta` momenta: `[batch...]`.

        `noise` (optional, `[K, batch..., d]` standard normals) replaces the draws from `seed`.
        """
        return tf.reduce_mean(self.log_weights(q, num_momenta, seed, noise=noise), axis=0)

    def iwae_bound(self, q: Tensor, num_momenta: Optional[int] = None, seed=None,
                   noise: Optional[Tensor] = None) -> Tensor:
        """Importance-weighted bound per point: log-mean-exp of the K log weights, `[batch...]`.

        `noise` (optional, `[K, batch..., d]` standard normals) replaces the draws from `seed`;
        K is then its leading size.
        """
        k = self._num_momenta if num_momenta is None else num_momenta
        log_w = self.log_weights(q, k, seed, noise=noise)
        if noise is not None:  # K is the noise's leading size
            return tf.reduce_logsumexp(log_w, axis=0) - tf.math.log(tf.cast(tf.shape(log_w)[0], log_w.dtype))
        return tf.reduce_logsumexp(log_w, axis=0) - tf.cast(math.log(k), log_w.dtype)

    def _log_prob(self, q, seed=None):
        return self.iwae_bound(q, self._num_momenta, seed)

    def _sample_n(self, n, seed=None):
        states = self._phase_space.sample(n, seed=seed)
        return states[..., : self._dim]

    # --- variational inference (reverse KL to an unnormalised target) ---
    def vi_log_weights(self, target_log_prob: Callable[[Tensor], Tensor], n: int, seed=None,
                       base_samples: Optional[Tensor] = None) -> Tensor:
        """Importance log weights of n flow samples for an unnormalised target over q.

        Samples (q, p) ~ rho exactly and returns log w = log target(q) + log f(p | q) - log rho(q, p),
        where f serves as the auxiliary reverse model. E[log w] <= log Z (maximise it: reverse KL
        on phase space, an upper bound on the reverse KL of the q-marginal), and E[w] = Z, so
        `exp(log w)` are valid importance weights for expectations under the target.

        Args:
          target_log_prob: the unnormalised log density of the target over q.
          n: number of samples (ignored when `base_samples` is given).
          seed: stateless seed of the prior draws (when `base_samples` is None).
          base_samples: optional draws (q0, p0) from the prior, `[n, 2d]`, pushed through the
            flow instead of drawing from `seed`: log rho = log prior(x0) - log|det J(x0)| (the
            Jacobian of the affine output layer; the Hamiltonian part has none). Draw them
            with the reparameterisation (`prior.sample`) inside the gradient tape, so that a
            learned prior still gets its pathwise gradient.
        """
        if base_samples is None:
            states, log_rho = self._phase_space.experimental_sample_and_log_prob(n, seed=seed)
        else:
            x0 = tf.convert_to_tensor(base_samples, self.dtype)
            bijector = self._phase_space.bijector
            states = bijector.forward(x0)
            log_rho = self._prior.log_prob(x0) - bijector.forward_log_det_jacobian(x0, event_ndims=1)
        q, p = states[..., : self._dim], states[..., self._dim:]
        log_f = self._encoder.distribution(q).log_prob(p)
        return target_log_prob(q) + log_f - log_rho

    def potential(self, q: Tensor, index: int = -1) -> Tensor:
        """The learned potential V_t at data-space positions q (mapped through the output affine)."""
        q = tf.convert_to_tensor(q, self.dtype)
        if self._output_affine is not None:
            state = tf.concat([q, tf.zeros_like(q)], axis=-1)
            q = self._output_affine.inverse(state)[..., : self._dim]
        return self._flow.potential(q, index)


def effective_sample_size(log_weights: Tensor) -> Tensor:
    """Kish's effective sample size (sum w)^2 / sum w^2 of importance weights, from log weights."""
    return tf.exp(2.0 * tf.reduce_logsumexp(log_weights) - tf.reduce_logsumexp(2.0 * log_weights))


def build_density(dim: int, *, num_hamiltonians: int = 2, n_steps: int = 4, step_size: float = 0.1,
                  widths: Sequence[int] = (64, 64), activation: str = "softplus", kinetic: str = "learned",
                  prior: str = "normal", encoder_widths: Sequence[int] = (64, 64), affine: bool = True,
                  data: Optional[np.ndarray] = None, num_momenta: int = 64, init_scale: float = 0.1,
                  init_log_mass: float = 0.0, unroll: bool = True, dtype=tf.float32, seed: int = 0) -> HamiltonianFlowDensity:
    """Builds a `HamiltonianFlowDensity` from plain settings.

    Args:
      dim: d, the size of q.
      num_hamiltonians, n_steps, step_size, widths, activation, kinetic, unroll, init_scale,
        init_log_mass: see `NeuralHamiltonianFlow`.
      prior: a name in `nhf.priors.PRIORS`.
      encoder_widths: hidden widths of the momentum encoder's MLPs.
      affine: add a learned elementwise scale and shift after the flow (volume-changing; its
        log-det is accounted for). Initialised from `data`'s mean and std when given, so the
        Hamiltonian part works on standardised coordinates.
      data: optional training samples `[n, d]` for that initialisation.
      num_momenta: K for `log_prob`.
      dtype: float32 or float64.
      seed: integer seed for every initial weight.

    Raises:
      ValueError: for unknown names or bad sizes, naming the bad value.
    """
    dtype = tf.as_dtype(dtype)
    if dtype not in (tf.float32, tf.float64):
        raise ValueError(f"dtype must be float32 or float64, got {dtype.name}")
    flow = NeuralHamiltonianFlow(dim, num_hamiltonians, n_steps, step_size, widths, activation, kinetic,
                                 unroll=unroll, init_scale=init_scale, init_log_mass=init_log_mass, dtype=dtype,
                                 seed=seed)
    base = make_prior(prior, 2 * dim, dtype)
    encoder = MomentumEncoder(dim, encoder_widths, activation, dtype, seed + 101)
    output_affine = None
    if affine:
        shift = np.zeros(2 * dim)
        scale = np.ones(2 * dim)
        if data is not None:
            data = np.asarray(data, np.float64)
            shift[:dim] = data.mean(axis=0)
            scale[:dim] = np.maximum(data.std(axis=0), 1e-3)
        output_affine = tfb.Chain([
            tfb.Shift(tf.Variable(tf.constant(shift, dtype), name="output_shift")),
            tfb.ScaleMatvecDiag(tfp.util.TransformedVariable(tf.constant(scale, dtype), tfb.Exp(),
                                                             name="output_scale")),
        ], name="output_affine")
    return HamiltonianFlowDensity(flow, base, encoder, output_affine, num_momenta)
