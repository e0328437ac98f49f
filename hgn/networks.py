"""The four HGN networks, built from an `HGNConfig`.

All are Keras 3 layers on NHWC maps (batch axis first, event axes H, W, C):

* `build_encoder`: stacked frames `[B, H, W, 3k]` -> posterior statistics `[B, h, w, 2 * latent]`
  (spatial latent) or `[B, 4 * state_channels]` (vector latent: the map flattened and linearly
  projected, DeepMind's `linear_projection` aggregation).
* `build_transformer`: z `[B, h, w, latent]` -> state `[B, 4, 4, 2 * state_channels]` (q then p);
  the vector latent has none (z is (q, p)).
* `EnergyNet`: a map `[B, 4, 4, C]` -> energy `[B]`, a softplus conv net summed over space.
* `MLPEnergyNet`: a vector `[B, C]` -> energy `[B]` (HGN++'s MLP Hamiltonian, swish).
* `build_decoder`: q `[B, 4, 4, state_channels]` (or `[B, state_channels]`, first linearly
  projected to a 4x4 map) -> frame `[B, H, W, 3]` in (0, 1).

Softplus (never ReLU) in the energy nets: training differentiates through dH/dq and dH/dp, so
the loss needs second derivatives of H, which ReLU makes zero almost everywhere.
"""
from __future__ import annotations

from typing import Optional

import keras
import tensorflow as tf

from common.cpu import resolve_compute_dtype

from hgn.config import HGNConfig

layers = keras.layers


def _policy(config: HGNConfig) -> str:
    return "mixed_bfloat16" if resolve_compute_dtype(config.compute_dtype) == "bfloat16" else "float32"


def build_encoder(config: HGNConfig) -> keras.Sequential:
    """Posterior network: `[B, H, W, 3 * input_frames]` -> `[B, h, w, 2 * latent_channels]`.

    `strided` (paper): three blocks of (2x2 stride-2 VALID conv, 4x4 SAME conv), ReLU, to an
    `H/8 x W/8` map. `full_res` (PyTorch re-implementation): 3x3 stride-1 convs at full
    resolution. Both end in a linear 3x3 conv giving mean and log-scale.
    """
    dtype = _policy(config)
    stack = []
    if config.encoder == "strided":
        w = config.encoder_widths
        for block in range(3):
            stack += [layers.Conv2D(w[2 * block], 2, strides=2, padding="valid", activation="relu", dtype=dtype),
                      layers.Conv2D(w[2 * block + 1], 4, padding="same", activation="relu", dtype=dtype)]
    else:
        stack += [layers.Conv2D(w, 3, padding="same", activation="relu", dtype=dtype) for w in config.encoder_widths]
    if config.latent == "vector":
        stack += [layers.Flatten(dtype=dtype),
                  layers.Dense(4 * config.state_channels, dtype="float32", name="linear_projection")]
    else:
        stack.append(layers.Conv2D(2 * config.latent_channels, 3, padding="same", dtype="float32"))
    return keras.Sequential(stack, name="encoder")


def build_transformer(config: HGNConfig) -> Optional[keras.Sequential]:
    """z -> initial state: hidden 3x3 ReLU convs, then a linear 3x3 conv to `2 * state_channels`.

    None for the vector latent, whose posterior sample is the state itself (HGN++ has no latent
    transform).
    """
    if config.latent == "vector":
        return None
    stack = [layers.Conv2D(w, 3, strides=s, padding="same", activation="relu")
             for w, s in zip(config.transformer_widths, config.transformer_strides)]
    stack.append(layers.Conv2D(2 * config.state_channels, 3, padding="same"))
    return keras.Sequential(stack, name="transformer")


class EnergyNet(keras.layers.Layer):
    """A scalar energy of a spatial map: softplus convs, a linear 1-channel conv, summed over space.

    Args:
      widths: hidden conv channels.
      kernels: kernel sizes (one per hidden conv plus the final conv).
      strides: strides (same length as kernels); stride-2 convs use VALID padding as in the paper.
      activation: of the hidden convs (`softplus` in the paper).
    """

    def __init__(self, widths, kernels, strides, activation: str = "softplus", **kwargs):
        super().__init__(**kwargs)
        self.convs = []
        for i, k in enumerate(kernels):
            last = i == len(kernels) - 1
            s = strides[i]
            self.convs.append(layers.Conv2D(1 if last else widths[i], k, strides=s,
                                            padding="valid" if s > 1 else "same",
                                            activation=None if last else activation,
                                            # a constant offset of H changes no dynamics: no bias
                                            use_bias=not last))

    def call(self, x):
        for conv in self.convs:
            x = conv(x)
        return tf.reduce_sum(x, axis=[1, 2, 3])


class MLPEnergyNet(keras.layers.Layer):
    """A scalar energy of a vector: dense layers with a smooth activation, then a linear unit.

    HGN++'s latent system net (DeepMind's `latent_system_net_type="mlp"`: 250-unit layers,
    swish).

    Args:
      widths: hidden units per layer.
      activation: `softplus` or `swish` (smooth: the loss differentiates through dH).
    """

    def __init__(self, widths, activation: str = "swish", **kwargs):
        super().__init__(**kwargs)
        self.hidden = [layers.Dense(w, activation=activation) for w in widths]
        self.out = layers.Dense(1, use_bias=False)  # a constant offset of H changes no dynamics

    def call(self, x):
        for dense in self.hidden:
            x = dense(x)
        return tf.squeeze(self.out(x), -1)


def build_energy_nets(config: HGNConfig) -> dict:
    """`{"kinetic": K(p), "potential": V(q)}` for the separable form, `{"potential": V(q)}` for the
    fixed-kinetic one (K is |p|^2 / 2, no network), `{"joint": H(q ++ p)}` otherwise."""
    if config.latent == "vector":
        def make(name):
            return MLPEnergyNet(config.hamiltonian_widths, config.hamiltonian_activation, name=name)
    else:
        def make(name):
            return EnergyNet(config.hamiltonian_widths, config.hamiltonian_kernels, config.hamiltonian_strides,
                             activation=config.hamiltonian_activation, name=name)
    if config.hamiltonian == "separable":
        return {"kinetic": make("kinetic"), "potential": make("potential")}
    if config.hamiltonian == "fixed_kinetic":
        return {"potential": make("potential")}
    return {"joint": make("hamiltonian")}


def leaky_relu(x: tf.Tensor, alpha: float) -> tf.Tensor:
    """`tf.nn.leaky_relu` whose gradient is computed from its output rather than its input.

    The sign of the output is the sign of the input (alpha > 0), so the gradient is the same;
    but the backward pass then keeps only the output (which the next conv keeps anyway for its
    weight gradient), not the pre-activation as well: one [B*T, H, W, width] tensor fewer per
    decoder conv.
    """

    @tf.custom_gradient
    def op(features):
        out = tf.nn.leaky_relu(features, alpha)
        return out, lambda grad: tf.raw_ops.LeakyReluGrad(gradients=grad, features=out, alpha=alpha)

    return op(x)


def _leaky_relu_02(x: tf.Tensor) -> tf.Tensor:
    return leaky_relu(x, 0.2)  # the slope of Keras's "leaky_relu" activation, which the paper decoder used


def _leaky_relu_001(x: tf.Tensor) -> tf.Tensor:
    return leaky_relu(x, 0.01)  # PyTorch's default slope, the PyTorch re-implementation's decoder


def _phase_kernels(kernel: tf.Tensor) -> list:
    """The four 2x2 kernels `[2, 2, C_in, C_out]` that a 3x3 kernel applies to a x2 nearest-upsampled
    map, one per output phase (row parity r, column parity s) in the order (0, 0), (0, 1), (1, 0),
    (1, 1).

    Output row 2i + r of the upsampled map reads input rows i - 1 and i (r = 0: taps 0 and 1 + 2)
    or i and i + 1 (r = 1: taps 0 + 1 and 2); columns likewise.
    """
    def split(k, axis):
        a, b, c = tf.unstack(k, axis=axis)
        return tf.stack([a, b + c], axis=axis), tf.stack([a + b, c], axis=axis)

    return [phase for rows in split(kernel, 0) for phase in split(rows, 1)]


def fusable_upsample_conv(layer) -> bool:
    """Whether `upsample_conv` computes `layer(UpSampling2D(2, "nearest")(x))` exactly."""
    return (isinstance(layer, layers.Conv2D) and tuple(layer.kernel_size) == (3, 3)
            and tuple(layer.strides) == (1, 1) and tuple(layer.dilation_rate) == (1, 1)
            and layer.padding == "same" and layer.groups == 1 and layer.data_format == "channels_last")


def folds_into(upsampling, conv) -> bool:
    """Whether `Decoder` runs the layer `upsampling` then the layer `conv` as one `upsample_conv`."""
    return (isinstance(upsampling, layers.UpSampling2D) and tuple(upsampling.size) == (2, 2)
            and upsampling.interpolation == "nearest" and fusable_upsample_conv(conv))


def _transposed_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """The 4x4 kernel `[4, 4, C_out, C_in]` of the stride-2 transposed conv that computes what a 3x3
    `kernel` `[3, 3, C_in, C_out]` computes on a x2 nearest-upsampled map.

    With SAME padding the transposed conv writes input row i to output rows 2i - 1 .. 2i + 2 through
    taps 0 .. 3. Output row 2i + 1 reads rows i (3x3 taps 0 + 1) and i + 1 (tap 2); row 2i reads
    rows i - 1 (tap 0) and i (taps 1 + 2): taps (2, 1 + 2, 0 + 1, 0). Columns likewise.
    """
    def extend(k, axis):
        a, b, c = tf.unstack(k, axis=axis)
        return tf.stack([c, b + c, a + b, a], axis=axis)

    return tf.transpose(extend(extend(kernel, 0), 1), [0, 1, 3, 2])


def _transposes_in(dtype) -> bool:
    """Whether the decoder's convs run as transposed convs in `dtype` (`upsample_conv`,
    `narrow_conv`): in float32 only, where they are faster; in bfloat16 the bias gradient they sum
    in bfloat16 over a full-resolution map is inaccurate."""
    return tf.as_dtype(dtype) == tf.float32


def _transposed_conv(x: tf.Tensor, kernel: tf.Tensor, stride: int, conv: layers.Conv2D, activation) -> tf.Tensor:
    """`activation(conv2d_transpose(x, kernel) + conv.bias)`, SAME, `stride` x the size of `x`
    `[B, h, w, C_in]` with `conv.filters` channels; `x` and `kernel` in `conv`'s compute dtype."""
    shape = tf.shape(x)
    y = tf.nn.conv2d_transpose(x, kernel, tf.stack([shape[0], stride * shape[1], stride * shape[2], conv.filters]),
                               stride, "SAME")
    if conv.use_bias:
        y = tf.nn.bias_add(y, tf.cast(conv.bias, y.dtype))
    return activation(y) if activation is not None else y


UPSAMPLE_CONV_METHODS = ("transposed", "phases")


def upsample_conv(x: tf.Tensor, conv: layers.Conv2D, activation=None, method=None) -> tf.Tensor:
    """`activation(conv(UpSampling2D(2, interpolation="nearest")(x)))` for a built 3x3 SAME
    stride-1 `conv`, computed on the low-resolution map: `[B, h, w, C_in]` -> `[B, 2h, 2w, C_out]`.

    Every output pixel reads 2x2 input pixels through summed taps of the 3x3 kernel: 16
    multiply-adds per input pixel and channel pair instead of 36, with the same parameters,
    outputs and gradients (up to round-off: the taps are summed before they multiply). The zero
    padding of the upsampled map is the zero padding of `x`. Runs in `conv`'s compute dtype, the
    taps summed in float32. Two ways to compute it (`method`, by default the first in float32 and
    the second in bfloat16):

    * `transposed`: one stride-2 transposed conv with a 4x4 kernel (`_transposed_kernel`), then
      the bias and the activation. One oneDNN kernel and no pads, concatenation or depth-to-space:
      with AVX2 code paths (one core of the Intel Xeon) the `pytorch` preset's float32 step took
      2.82-2.87 s against 3.01-3.03 with `phases`, the `quick` step 0.166-0.168 against
      0.187-0.194 (`bench/results/hgn_throughput_xeon_avx2_{phases,transposed}_{1,2}.json`). In
      bfloat16 it was no faster (the last residual block's pass 622 ms against the phases' 631 on AMX, ad hoc),
      and its full-resolution bias gradient, summed in bfloat16 over 4x the elements of a phase's,
      was 0.33 off float32's (relative norm) where the phases' was 0.07.
    * `phases`: each of the four output phases a 2x2 conv of `x` (`_phase_kernels`), the bias added
      per phase (oneDNN fuses it into the conv), interleaved by depth-to-space.

    The activation (default `conv.activation`) runs after the interleaving, so that the backward
    pass keeps one full-resolution tensor, as the unfolded conv does (applied per phase, the
    phases' activations and their interleaved copy were both kept: 2.70 -> 3.65 GiB peak for `hgnpp`).
    """
    dtype = conv.compute_dtype
    activation = activation or conv.activation
    method = method or ("transposed" if _transposes_in(dtype) else "phases")
    if method not in UPSAMPLE_CONV_METHODS:
        raise ValueError(f"unknown upsample_conv method {method!r}; valid: {', '.join(UPSAMPLE_CONV_METHODS)}")
    x = tf.cast(x, dtype)
    kernel = tf.cast(conv.kernel, tf.float32)
    if method == "transposed":
        return _transposed_conv(x, tf.cast(_transposed_kernel(kernel), dtype), 2, conv, activation)
    bias = tf.cast(conv.bias, dtype) if conv.use_bias else None
    phases = []
    for (r, s), phase_kernel in zip([(0, 0), (0, 1), (1, 0), (1, 1)], _phase_kernels(kernel)):
        y = tf.nn.conv2d(tf.pad(x, [[0, 0], [1 - r, r], [1 - s, s], [0, 0]]), tf.cast(phase_kernel, dtype), 1, "VALID")
        phases.append(tf.nn.bias_add(y, bias) if bias is not None else y)
    y = tf.nn.depth_to_space(tf.concat(phases, -1), 2)
    return activation(y) if activation is not None else y


# A 3x3 conv with fewer output channels than this runs as a transposed conv in float32 (`narrow_conv`).
NARROW_FILTERS = 8


def runs_as_transposed_conv(layer) -> bool:
    """Whether `Decoder` runs the layer `layer` as `narrow_conv`: a 3x3 SAME stride-1 conv with
    fewer than `NARROW_FILTERS` output channels (the RGB conv of the `upsample` and `residual`
    decoders), computed in float32."""
    return fusable_upsample_conv(layer) and layer.filters < NARROW_FILTERS and _transposes_in(layer.compute_dtype)


def _flipped_kernel(kernel: tf.Tensor) -> tf.Tensor:
    """The kernel `[kh, kw, C_out, C_in]` of the stride-1 transposed conv that computes the SAME conv
    of `kernel` `[kh, kw, C_in, C_out]` (odd kh, kw): flipped in both spatial axes, channels swapped."""
    return tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])


def narrow_conv(x: tf.Tensor, conv: layers.Conv2D) -> tf.Tensor:
    """`conv(x)` for a built 3x3 SAME stride-1 `conv` with few output channels, as the stride-1
    transposed conv of its kernel flipped in both spatial axes (`[3, 3, C_out, C_in]`): the same
    multiply-adds, outputs and gradients (up to round-off), in oneDNN's backward-data kernel,
    which spreads a 64-channel input over its vector lanes where the forward kernel has 3 output
    channels to spread. With AVX2 code paths on one core of the Intel Xeon, the `pytorch`
    preset's RGB conv (416 x 32x32, 64 -> 3) with both gradients took 118-124 against 148-152 ms,
    natively 113-116 against 148-150 (ad hoc); at 8 or 12 output channels it gained nothing. In
    bfloat16 its bias gradient, summed in bfloat16, was inaccurate (as in `upsample_conv`), so
    `Decoder` uses it in float32 only."""
    dtype = conv.compute_dtype
    return _transposed_conv(tf.cast(x, dtype), _flipped_kernel(tf.cast(conv.kernel, dtype)), 1, conv, conv.activation)


def _upsample(x: tf.Tensor) -> tf.Tensor:
    """x2 nearest upsampling of `[B, h, w, C]`."""
    return tf.repeat(tf.repeat(x, 2, axis=1), 2, axis=2)


class ResidualUpsample(keras.layers.Layer):
    """The PyTorch re-implementation's decoder block: x2 nearest upsampling, two 3x3 leaky-ReLU
    convs, a 1x1 projection of the skip when channels differ, sigmoid of the sum.

    The upsampling is folded into the convs that read it: the first 3x3 conv runs on the
    low-resolution map (`upsample_conv`) and the 1x1 projection before the upsampling (they
    commute), so only the second 3x3 conv and the sum run at full resolution.
    """

    def __init__(self, width: int, in_channels: int, dtype=None, **kwargs):
        super().__init__(dtype=dtype, **kwargs)
        self.conv1 = layers.Conv2D(width, 3, padding="same", dtype=dtype)
        self.conv2 = layers.Conv2D(width, 3, padding="same", dtype=dtype)
        self.skip = layers.Conv2D(width, 1, dtype=dtype) if in_channels != width else None

    def build(self, input_shape):
        in_shape = (None, None, None, input_shape[-1])
        self.conv1.build(in_shape)
        self.conv2.build((None, None, None, self.conv1.filters))
        if self.skip is not None:
            self.skip.build(in_shape)

    def call(self, x):
        h = upsample_conv(x, self.conv1, activation=_leaky_relu_001)
        h = _leaky_relu_001(self.conv2(h))
        return tf.sigmoid(h + _upsample(self.skip(x) if self.skip is not None else x))


class DepthToSpace(keras.layers.Layer):
    """`tf.nn.depth_to_space`: `[B, h, w, s*s*C]` -> `[B, s*h, s*w, C]` (a sub-pixel convolution's shuffle)."""

    def __init__(self, block_size: int, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, x):
        return tf.nn.depth_to_space(x, self.block_size)


class Decoder(keras.Sequential):
    """A `keras.Sequential` that runs each x2 nearest upsampling followed by a 3x3 conv as one
    `upsample_conv`: the conv on the low-resolution map, 16 multiply-adds where the upsampled
    map takes 36; and a float32 3x3 conv to few channels as `narrow_conv`. The layers and their
    variables are unchanged (checkpoints and SavedModels alike)."""

    def call(self, inputs, training=None, mask=None):
        x = inputs
        stack = self.layers
        i = 0
        while i < len(stack):
            layer = stack[i]
            following = stack[i + 1] if i + 1 < len(stack) else None
            if folds_into(layer, following):
                x = upsample_conv(x, following)
                i += 2
            elif runs_as_transposed_conv(layer):
                x = narrow_conv(x, layer)
                i += 1
            else:
                x = layer(x)
                i += 1
        return x


def build_decoder(config: HGNConfig) -> keras.Sequential:
    """q `[B, 4, 4, C]` -> frame `[B, H, W, 3]`: three x2 upsampling blocks, then a sigmoid 3x3 conv.

    `upsample` (paper): nearest upsampling and `decoder_depth` 3x3 convs with leaky ReLU 0.2.
    `residual` (PyTorch re-implementation): `ResidualUpsample` blocks.
    `subpixel`: the `upsample` blocks to half resolution, then the last block's x2 is a sub-pixel
    convolution (Shi et al. 2016): a 3x3 conv to 4 x 3 channels at H/2 x W/2, rearranged by
    depth-to-space into the frame. No conv runs at full resolution, where the `upsample`
    decoder spends four fifths of its multiply-adds (at the recipe's width 32 and depth 1:
    3.5 M per frame against 12.9 M).

    Every x2 upsampling is folded into the 3x3 conv that reads it (`Decoder`, `upsample_conv`):
    the same model, 16 multiply-adds where the upsampled map takes 36.
    """
    dtype = _policy(config)
    stack = []
    channels = config.state_channels
    if config.latent == "vector":
        # DeepMind's `linear_projection` de-aggregation: q -> an (H/8 x W/8) map of state_channels.
        side = config.image_size // 8
        stack += [layers.Dense(side * side * channels, dtype=dtype, name="linear_projection"),
                  layers.Reshape((side, side, channels), dtype=dtype)]
    subpixel = config.decoder == "subpixel"
    for _ in range(2 if subpixel else 3):
        if config.decoder in ("upsample", "subpixel"):
            stack.append(layers.UpSampling2D(2, interpolation="nearest", dtype=dtype))
            stack += [layers.Conv2D(config.decoder_width, 3, padding="same", dtype=dtype,
                                    activation=_leaky_relu_02)
                      for _ in range(config.decoder_depth)]
        else:
            stack.append(ResidualUpsample(config.decoder_width, channels, dtype=dtype))
        channels = config.decoder_width
    # The last conv runs in the compute dtype and only the sigmoid in float32: a float32 conv would
    # keep a float32 copy of its [B*T, H, W, width] input for its weight gradient (109 MB for the
    # pytorch preset's 416 frames, batch 16 x a 26-frame window, of 32x32x64), on top of the
    # bfloat16 original.
    if subpixel:
        stack += [layers.Conv2D(3 * 4, 3, padding="same", dtype=dtype), DepthToSpace(2, dtype=dtype)]
    else:
        stack.append(layers.Conv2D(3, 3, padding="same", dtype=dtype))
    stack.append(layers.Activation("sigmoid", dtype="float32"))
    return Decoder(stack, name="decoder")
