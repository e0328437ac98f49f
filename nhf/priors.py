"""Base distributions pi(q0, p0) on phase space, selectable by name.

All priors are over the full state `[q0, p0]` (event size 2d): the bound scores the prior on
both positions and momenta. The fixed ones are standardised to unit variance per coordinate so
that swapping them changes the tails, not the scale:

* `normal`: standard normal.
* `learned_normal`: diagonal Gaussian with learned mean and scale (tracked `tf.Variable`s).
* `student_t`: independent Student-t, 5 degrees of freedom, scale sqrt(3/5) (heavy tails).
* `laplace`: independent Laplace, scale 1/sqrt(2).
"""
from __future__ import annotations

import math
import tensorflow as tf
import tensorflow_probability as tfp

from nhf.config import PRIORS  # the names (kept free of TensorFlow for the command line)

tfd = tfp.distributions
tfb = tfp.bijectors

STUDENT_T_DF = 5.0


def make_prior(name: str, event_size: int, dtype=tf.float32) -> tfd.Distribution:
    """The prior called `name` over vectors of size `event_size` (= 2d).

    Args:
      name: one of `PRIORS`.
      event_size: 2d for a d-dimensional q.
      dtype: float dtype.

    Returns:
      A `tfd.Distribution` with event shape `[event_size]` and scalar batch shape; the learned
      prior holds its variables, so a distribution containing it lists them.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    dtype = tf.as_dtype(dtype)
    zeros = tf.zeros([event_size], dtype)
    ones = tf.ones([event_size], dtype)
    if name == "normal":
        return tfd.MultivariateNormalDiag(zeros, ones, name="normal_prior")
    if name == "learned_normal":
        loc = tf.Variable(zeros, name="prior_loc")
        scale = tfp.util.TransformedVariable(ones, tfb.Exp(), name="prior_scale")
        return tfd.MultivariateNormalDiag(loc, scale, name="learned_normal_prior")
    if name == "student_t":
        scale = math.sqrt((STUDENT_T_DF - 2.0) / STUDENT_T_DF)
        return tfd.Independent(tfd.StudentT(tf.constant(STUDENT_T_DF, dtype), zeros, scale * ones),
                               reinterpreted_batch_ndims=1, name="student_t_prior")
    if name == "laplace":
        return tfd.Independent(tfd.Laplace(zeros, ones / math.sqrt(2.0)), reinterpreted_batch_ndims=1,
                               name="laplace_prior")
    raise ValueError(f"unknown prior {name!r}; valid priors: {', '.join(PRIORS)}")
