"""SavedModel export of a trained `HamiltonianFlowDensity`, loadable without this project.

The export is a `tf.Module` with two `tf.function`s of fixed input signatures (also saved as
serving signatures):

* `log_prob(q: float[None, d]) -> float[None]`: the IWAE bound with K momenta, drawn with a
  fixed stateless seed, so the same input gives the same output in every process.
* `sample(n: int32[]) -> float[n, d]`: exact samples.

Points with NaN or Inf and a negative `n` fail a named check (InvalidArgumentError).

Only TensorFlow ops end up in the graph: `tf.saved_model.load(path)` works in a process that
never imports TFP or this project.
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from common.runs import atomic_directory
from nhf.density import HamiltonianFlowDensity

EXPORT_SEED = (20200, 1909)


class ExportedDensity(tf.Module):
    """The exported interface (see module docstring)."""

    def __init__(self, model: HamiltonianFlowDensity, num_momenta: int):
        super().__init__(name="nhf_density")
        self.model = model
        self.num_momenta = num_momenta
        dtype, d = model.dtype, model.dim

        def log_prob(q):
            q = tf.debugging.assert_all_finite(q, "q must be finite (no NaN or Inf)")
            return model.iwae_bound(q, num_momenta, seed=tf.constant(EXPORT_SEED, tf.int32))

        def sample(n):
            with tf.control_dependencies([tf.debugging.assert_non_negative(n, message="n must be >= 0")]):
                return model.sample(tf.identity(n))

        self.log_prob = tf.function(log_prob, input_signature=[tf.TensorSpec([None, d], dtype, name="q")])
        self.sample = tf.function(sample, input_signature=[tf.TensorSpec([], tf.int32, name="n")])


def export_saved_model(model: HamiltonianFlowDensity, path, num_momenta: int = 256) -> Path:
    """Writes the SavedModel to `path` atomically (a crash leaves the previous export).

    Args:
      model: the trained density.
      path: target folder (replaced if it exists).
      num_momenta: K of the exported `log_prob`.

    Returns:
      The export path.
    """
    module = ExportedDensity(model, num_momenta)
    signatures = {
        "log_prob": tf.function(lambda q: {"log_prob": module.log_prob(q)},
            input_signature=module.log_prob.input_signature).get_concrete_function(),
        "sample": tf.function(lambda n: {"q": module.sample(n)},
                              input_signature=module.sample.input_signature).get_concrete_function(),
    }
    with atomic_directory(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
    return Path(path)
