"""SavedModel export of a trained `HamiltonianFlowDensity`, loadable without this project.

The export is a `tf.Module` with two `tf.function`s of fixed input signatures (also saved as
serving signatures):

* `log_prob(q: float[None, d]) -> float[None]`: the IWAE bound with K momenta, drawn with a
  fixed stateless seed, so the same input gives the same output in every process.
* `sample(n: int32[]) -> float[n, d]`: exact samples.

Points with NaN or Inf and a negative `n` fail a named check (InvalidArgumentError).

Serving caps bound what one request may allocate: `log_prob` takes at most `max_batch` points
and `sample` at most `max_samples`; a larger request fails with an InvalidArgumentError naming
the argument and the cap, checked before any work, and the loaded module keeps serving. The
caps are set at export (`export_saved_model(..., max_batch=, max_samples=)`,
`train_nhf.py --serve-max-batch/--serve-max-samples`; default: what fits in 2 GiB, see
`serving_caps_within`) and kept in the SavedModel as variables of the same names.

Only TensorFlow ops end up in the graph: `tf.saved_model.load(path)` works in a process that
never imports TFP or this project.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from common.runs import atomic_directory
from nhf.density import HamiltonianFlowDensity

EXPORT_SEED = (20200, 1909)
MEMORY_BUDGET = 2 * 2**30  # bytes one request may allocate; sets the default caps


def serving_caps_within(model: HamiltonianFlowDensity, num_momenta: int,
                        budget: int = MEMORY_BUDGET) -> Dict[str, int]:
    """Default serving caps: the largest requests that allocate at most about `budget` bytes.

    A sampled point holds about 8 activations of the widest layer of the flow or the momentum
    encoder (width + 2d values, in the model's dtype); a `log_prob` point holds that for each of
    its K momenta. Measured peak growth (float32, d = 2): 414 kB per `log_prob` point against
    557 estimated (K = 256, widths 64), 815 against 1,081 (widths 128, four Hamiltonians);
    1.6 and 3.2 kB per sample against 2.2 and 4.2.

    Args:
      model: the density to serve.
      num_momenta: K of the exported `log_prob`.
      budget: bytes.

    Returns:
      `{"max_batch": points of one log_prob request, "max_samples": n of one sample request}`.
    """
    width = max((max(v.shape) for v in model.trainable_variables if v.shape.rank == 2), default=1)
    per_point = 8 * (width + 2 * model.dim) * model.dtype.size
    return {"max_batch": max(1, budget // (num_momenta * per_point)), "max_samples": max(1, budget // per_point)}


class ExportedDensity(tf.Module):
    """The exported interface (see module docstring).

    Args:
      model: the trained density.
      num_momenta: K of `log_prob`.
      max_batch, max_samples: serving caps; None: `serving_caps_within(model, num_momenta)`.

    Raises:
      ValueError: a cap that is not a positive integer, naming it.
    """

    def __init__(self, model: HamiltonianFlowDensity, num_momenta: int, max_batch: Optional[int] = None,
                 max_samples: Optional[int] = None):
        super().__init__(name="nhf_density")
        self.model = model
        self.num_momenta = num_momenta
        dtype, d = model.dtype, model.dim
        defaults = serving_caps_within(model, num_momenta)
        self.caps = {"max_batch": defaults["max_batch"] if max_batch is None else max_batch,
                     "max_samples": defaults["max_samples"] if max_samples is None else max_samples}
        for name, value in self.caps.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, tf.Variable(value, dtype=tf.int64, trainable=False, name=name))

        def within_cap(value, cap: str, argument: str):
            return tf.debugging.assert_less_equal(
                tf.cast(value, tf.int64), getattr(self, cap),
                message=f"{argument} must be <= {cap} = {self.caps[cap]} (serving cap set at export)")

        def log_prob(q):
            with tf.control_dependencies([within_cap(tf.shape(q)[0], "max_batch", "the batch of q (axis 0)")]):
                q = tf.debugging.assert_all_finite(tf.identity(q), "q must be finite (no NaN or Inf)")
                return model.iwae_bound(q, num_momenta, seed=tf.constant(EXPORT_SEED, tf.int32))

        def sample(n):
            with tf.control_dependencies([within_cap(n, "max_samples", "n")]):
                with tf.control_dependencies([tf.debugging.assert_non_negative(n, message="n must be >= 0")]):
                    return model.sample(tf.identity(n))

        self.log_prob = tf.function(log_prob, input_signature=[tf.TensorSpec([None, d], dtype, name="q")])
        self.sample = tf.function(sample, input_signature=[tf.TensorSpec([], tf.int32, name="n")])


def export_saved_model(model: HamiltonianFlowDensity, path, num_momenta: int = 256, *,
                       max_batch: Optional[int] = None, max_samples: Optional[int] = None) -> Path:
    """Writes the SavedModel to `path` atomically (a crash leaves the previous export).

    Args:
      model: the trained density.
      path: target folder (replaced if it exists).
      num_momenta: K of the exported `log_prob`.
      max_batch, max_samples: serving caps of `log_prob` (points) and `sample` (n); None: what
        fits in `MEMORY_BUDGET` bytes (`serving_caps_within`).

    Returns:
      The export path.

    Raises:
      ValueError: a cap that is not a positive integer, naming it.
    """
    module = ExportedDensity(model, num_momenta, max_batch=max_batch, max_samples=max_samples)
    signatures = {
        "log_prob": tf.function(lambda q: {"log_prob": module.log_prob(q)},
            input_signature=module.log_prob.input_signature).get_concrete_function(),
        "sample": tf.function(lambda n: {"q": module.sample(n)},
                              input_signature=module.sample.input_signature).get_concrete_function(),
    }
    with atomic_directory(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
    return Path(path)
