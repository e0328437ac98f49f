"""Small MLPs built from `tf.Variable`s in `tf.Module`s, with analytic input gradients.

The networks are plain `tf.Module`s (not Keras 3 layers) so that any TFP bijector or
distribution holding them reports their variables (checked with TF 2.21, TFP 0.25 and Keras
3.15: a TFP module does not track Keras 3 layers; tests/test_nhf.py covers it), and a
`tf.train.Checkpoint` or SavedModel finds them.

`ScalarMLP` is an energy network `E(x) -> [batch...]` that also returns its exact gradient
dE/dx from a hand-written backward pass. The leapfrog integrator needs dV/dq and dK/dp at
every step; computing them analytically keeps the training graph first order (autodiff of
an explicit formula, instead of a gradient tape nested in another), which is markedly faster
under XLA on CPU. `tests/test_nhf.py` checks the analytic gradient against autodiff.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence, Tuple

import tensorflow as tf

Tensor = tf.Tensor
Activation = Tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]


def _softplus_grad(z):
    return tf.sigmoid(z)


def _tanh_grad(z):
    return 1.0 - tf.square(tf.tanh(z))


def _swish(z):
    return z * tf.sigmoid(z)


def _swish_grad(z):
    s = tf.sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


# Smooth activations only: the training loss involves second derivatives of the energies
# (the force is dV/dq), and ReLU's vanish almost everywhere.
ACTIVATIONS: Dict[str, Activation] = {
    "softplus": (tf.nn.softplus, _softplus_grad),
    "tanh": (tf.tanh, _tanh_grad),
    "swish": (_swish, _swish_grad),
}


def get_activation(name: str) -> Activation:
    """`(f, f')` for a smooth activation name.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid activations: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def _glorot(rng: tf.random.Generator, fan_in: int, fan_out: int, dtype, scale: float = 1.0) -> Tensor:
    limit = scale * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform([fan_in, fan_out], -limit, limit, dtype=dtype)


def _check_widths(widths: Sequence[int]) -> Tuple[int, ...]:
    widths = tuple(int(w) for w in widths)
    if any(w <= 0 for w in widths):
        raise ValueError(f"hidden widths must be positive, got {widths}")
    return widths


class MLP(tf.Module):
    """x -> act(x W0 + b0) -> ... -> x Wout + bout, on the last axis of any batch shape.

    Args:
      in_dim: input size.
      out_dim: output size.
      widths: hidden layer widths, e.g. `(64, 64)`; empty for an affine map.
      activation: name in `ACTIVATIONS`.
      dtype: variable dtype.
      seed: integer seed for the initial weights.
      out_scale: multiplies the Glorot range of the output layer (small values start the
        network near a constant output).
      output_bias: whether the output layer has a bias.
      name: module name.
    """

    def __init__(self, in_dim: int, out_dim: int, widths: Sequence[int] = (64, 64), activation: str = "softplus",
                 dtype=tf.float32, seed: int = 0, out_scale: float = 1.0, output_bias: bool = True,
                 name: Optional[str] = None):
        super().__init__(name=name)
        self.widths = _check_widths(widths)
        self.activation_name = activation
        self._act, self._act_grad = get_activation(activation)
        rng = tf.random.Generator.from_seed(seed)
        sizes = (in_dim, *self.widths, out_dim)
        self.weights = []
        self.biases = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            self.weights.append(tf.Variable(_glorot(rng, a, b, dtype, out_scale if last else 1.0), name=f"w{i}"))
            if not last or output_bias:
                self.biases.append(tf.Variable(tf.zeros([b], dtype), name=f"b{i}"))

    def __call__(self, x: Tensor) -> Tensor:
        h = x
        for w, b in zip(self.weights[:-1], self.biases):
            h = self._act(tf.matmul(h, w) + b)
        out = tf.matmul(h, self.weights[-1])
        return out + self.biases[-1] if len(self.biases) == len(self.weights) else out


class ScalarMLP(MLP):
    """An energy network E(x): an `MLP` with one output, squeezed, and its analytic gradient.

    `__call__(x)` is `[batch..., in_dim] -> [batch...]`; `grad(x)` is dE/dx, `[batch..., in_dim]`.
    The output layer has no bias: a constant energy offset changes no force, so it would be a
    variable without a gradient.
    """

    def __init__(self, in_dim: int, widths: Sequence[int] = (64, 64), activation: str = "softplus",
                 dtype=tf.float32, seed: int = 0, out_scale: float = 1.0, name: Optional[str] = None):
        if not widths:
            raise ValueError("an energy network needs at least one hidden layer (an affine energy has a constant force)")
        super().__init__(in_dim, 1, widths, activation, dtype, seed, out_scale, output_bias=False, name=name)

    def __call__(self, x: Tensor) -> Tensor:
        return tf.squeeze(super().__call__(x), axis=-1)

    def grad(self, x: Tensor) -> Tensor:
        """dE/dx by the chain rule through the layers (batch axes untouched)."""
        pre = []
        h = x
        for w, b in zip(self.weights[:-1], self.biases):
            z = tf.matmul(h, w) + b
            pre.append(z)
            h = self._act(z)
        g = tf.transpose(self.weights[-1])  # [1, width]: dE/dh of the last hidden layer
        for z, w in zip(reversed(pre), reversed(self.weights[:-1])):
            g = tf.matmul(g * self._act_grad(z), w, transpose_b=True)
        return g
