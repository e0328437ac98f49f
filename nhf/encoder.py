"""The momentum encoder f(p | q): a diagonal Gaussian whose mean and log-variance are MLPs of q.

Unlike the original repository (scalars broadcast over dimensions), both outputs are
d-dimensional. The log-variance is squashed smoothly into (-LOG_VAR_BOUND, LOG_VAR_BOUND) so
that a bad step cannot produce a zero or infinite variance (a source of NaNs in the bound).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import tensorflow as tf
import tensorflow_probability as tfp

from nhf.networks import MLP

tfd = tfp.distributions
Tensor = tf.Tensor
LOG_VAR_BOUND = 7.0


class MomentumEncoder(tf.Module):
    """f(p | q) = N(p; mu(q), diag(exp(log_var(q)))).

    Args:
      dim: d, the size of q and p.
      widths: hidden widths of the mean and log-variance MLPs.
      activation: smooth activation name.
      dtype: variable dtype.
      seed: integer seed for the initial weights.
      name: module name.
    """

    def __init__(self, dim: int, widths: Sequence[int] = (64, 64), activation: str = "softplus",
                 dtype=tf.float32, seed: int = 0, name: Optional[str] = "momentum_encoder"):
        super().__init__(name=name)
        self.dim = int(dim)
        # Small output layers: f starts close to N(0, I) whatever q is.
        self.mean_net = MLP(dim, dim, widths, activation, dtype, seed, out_scale=0.1, name="mean")
        self.log_var_net = MLP(dim, dim, widths, activation, dtype, seed + 1, out_scale=0.1, name="log_var")

    def mean_and_log_var(self, q: Tensor) -> Tuple[Tensor, Tensor]:
        """mu(q) and log_var(q), each `[batch..., d]`."""
        raw = self.log_var_net(q)
        return self.mean_net(q), LOG_VAR_BOUND * tf.tanh(raw / LOG_VAR_BOUND)

    def distribution(self, q: Tensor) -> tfd.Distribution:
        """f(. | q) as a `tfd.MultivariateNormalDiag` with batch shape `q.shape[:-1]`."""
        mean, log_var = self.mean_and_log_var(q)
        return tfd.MultivariateNormalDiag(mean, tf.exp(0.5 * log_var))

    def sample_and_log_prob(self, q: Tensor, num_samples: int, seed=None,
                            noise: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """`num_samples` reparameterised momenta per q and their log f(p | q).

        p = mu(q) + exp(log_var(q) / 2) * eps with standard-normal eps, drawn here from `seed`
        or passed in as `noise` (a distributed run draws eps for the global batch and gives each
        replica its share, so that every strategy sees the same numbers).

        Args:
          q: `[batch..., d]`.
          num_samples: K (ignored when `noise` is given: K is its leading size).
          seed: a stateless seed (shape [2] int tensor); used when `noise` is None.
          noise: optional standard-normal draws eps, shape `[K, batch..., d]`.

        Returns:
          `p` of shape `[K, batch..., d]` and `log f(p | q)` of shape `[K, batch...]`.
        """
        mean, log_var = self.mean_and_log_var(q)
        if noise is None:
            shape = tf.concat([[num_samples], tf.shape(q)], axis=0)
            eps = tf.random.stateless_normal(shape, seed, dtype=q.dtype)
        else:
            eps = tf.convert_to_tensor(noise, q.dtype)
        p = mean + tf.exp(0.5 * log_var) * eps
        log_f = -0.5 * tf.reduce_sum(tf.square(eps) + log_var, axis=-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return p, log_f
