"""The phase-space state that travels through both models."""
from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf


class PhaseSpace(NamedTuple):
    """A point (or a batch, or a trajectory) in phase space.

    `q` (positions) and `p` (momenta) are tensors of one shape and dtype: `[batch..., event...]`
    vectors for NHF, `[batch, 4, 4, 16]` feature maps for HGN, with a leading time axis for
    trajectories. Being a named tuple, it is a `tf.nest` structure: it passes through
    `tf.function`, `tf.while_loop` and `tf.map_fn` unchanged.
    """

    q: tf.Tensor
    p: tf.Tensor

    @property
    def dtype(self) -> tf.DType:
        return self.q.dtype

    @property
    def shape(self) -> tf.TensorShape:
        return self.q.shape

    def concat(self, axis: int = -1) -> tf.Tensor:
        """`[q, p]` concatenated along `axis` (the NHF convention for vectors)."""
        return tf.concat([self.q, self.p], axis=axis)

    @classmethod
    def split(cls, x: tf.Tensor, axis: int = -1) -> "PhaseSpace":
        """Inverse of `concat`: the first half of `axis` is q, the second half p."""
        q, p = tf.split(x, 2, axis=axis)
        return cls(q, p)


def as_phase_space(state, name: str = "state") -> PhaseSpace:
    """Converts `(q, p)` to a validated `PhaseSpace` of tensors.

    Raises:
      ValueError: if q and p differ in dtype or (statically known) shape, naming both.
    """
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise ValueError(f"{name} must be a PhaseSpace(q, p) or a (q, p) pair, got {type(state).__name__}")
    q, p = state
    q = tf.convert_to_tensor(q)
    p = tf.convert_to_tensor(p, dtype_hint=q.dtype)
    if q.dtype != p.dtype:
        raise ValueError(f"{name}: q and p must share a dtype, got q: {q.dtype.name} and p: {p.dtype.name}")
    if not q.dtype.is_floating:
        raise ValueError(f"{name}: q and p must be floating point, got {q.dtype.name}")
    if not q.shape.is_compatible_with(p.shape):
        raise ValueError(f"{name}: q and p must have the same shape, got q: {q.shape} and p: {p.shape}")
    return PhaseSpace(q, p)
