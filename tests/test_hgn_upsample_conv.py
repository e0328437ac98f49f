"""The decoders' x2 nearest upsampling folded into the 3x3 conv that reads it (`upsample_conv`),
and the float32 conv to RGB run as a transposed conv (`narrow_conv`).

The fold must compute exactly what the layers compute one after the other (up to float32
round-off): the same outputs and the same gradients for the input and for every weight, in every
execution mode, for every decoder that uses it.
"""
import dataclasses
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from hgn import PRESETS, networks

# float32 round-off: the fold sums up to four taps before they multiply, a different order of
# the same sums. Relative to the largest magnitude of each compared tensor.
RTOL = 2e-6


def _assert_close(ours, reference, rtol=RTOL):
    for a, b in zip(ours, reference):
        scale = float(tf.reduce_max(tf.abs(b)))
        assert scale > 0.0
        err = float(tf.reduce_max(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))) / scale
        assert err <= rtol, err


def _outputs_and_grads(fn, x, conv, weight, mode):
    """`fn(x)` and the gradients of `sum(fn(x) * weight)` (a different upstream gradient per output
    element) for the input and `conv`'s kernel and bias, in `mode` (eager, function or jit)."""
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * weight)
        return (y, *tape.gradient(loss, [x, conv.kernel, conv.bias]))
    if mode != "eager":
        step = tf.function(step, jit_compile=mode == "jit")
    return step(x)


def _upsample_conv_and_reference(x, conv, mode, method=None):
    """Outputs and gradients (input, kernel, bias) of the fold and of upsampling then `conv`."""
    up = keras.layers.UpSampling2D(2, interpolation="nearest")
    weight = tf.random.stateless_normal([*x.shape[:1], 2 * x.shape[1], 2 * x.shape[2], conv.filters], seed=[3, 0])
    return (_outputs_and_grads(lambda x: networks.upsample_conv(x, conv, method=method), x, conv, weight, mode),
            _outputs_and_grads(lambda x: conv(up(x)), x, conv, weight, mode))


@pytest.mark.parametrize("method", networks.UPSAMPLE_CONV_METHODS)
@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_upsample_conv_equals_the_conv_of_the_upsampled_map(mode, method):
    # Odd, non-square maps: every border phase and both padding sides are exercised.
    x = tf.random.stateless_normal([2, 5, 3, 4], seed=[1, 0])
    conv = keras.layers.Conv2D(6, 3, padding="same", activation=networks._leaky_relu_02)
    conv.build(x.shape)
    conv.bias.assign(tf.random.stateless_normal([6], seed=[2, 0]))  # a zero bias would hide its gradient
    ours, reference = _upsample_conv_and_reference(x, conv, mode, method)
    assert ours[0].shape == (2, 10, 6, 6)
    _assert_close(ours, reference)


def _swap_two_phases(kernels):
    return [kernels[i] for i in (1, 0, 2, 3)]


def _swap_two_taps(kernel):
    return tf.gather(kernel, [1, 0, 2, 3], axis=0)


@pytest.mark.parametrize("method, helper, mistake", [
    ("phases", "_phase_kernels", _swap_two_phases),       # two output phases trade kernels
    ("transposed", "_transposed_kernel", _swap_two_taps),  # two rows of the 4x4 kernel trade places
])
def test_upsample_conv_check_has_teeth(monkeypatch, method, helper, mistake):
    # The same check fails for either method if its kernel is built wrong.
    x = tf.random.stateless_normal([2, 5, 3, 4], seed=[1, 0])
    conv = keras.layers.Conv2D(6, 3, padding="same")
    conv.build(x.shape)
    build = getattr(networks, helper)
    monkeypatch.setattr(networks, helper, lambda k: mistake(build(k)))
    ours, reference = _upsample_conv_and_reference(x, conv, "eager", method)
    with pytest.raises(AssertionError):
        _assert_close(ours[:1], reference[:1])


def test_upsample_conv_picks_its_method_by_compute_dtype(monkeypatch):
    # float32: the transposed conv; bfloat16: the four phases (the same model either way).
    used = []
    for helper in ("_phase_kernels", "_transposed_kernel"):
        build = getattr(networks, helper)
        monkeypatch.setattr(networks, helper, lambda k, build=build, helper=helper: used.append(helper) or build(k))
    x = tf.random.stateless_normal([2, 4, 4, 3], seed=[1, 0])
    for dtype in ("float32", "mixed_bfloat16"):
        conv = keras.layers.Conv2D(5, 3, padding="same", dtype=dtype)
        conv.build(x.shape)
        assert networks.upsample_conv(x, conv).shape == (2, 8, 8, 5)
    assert used == ["_transposed_kernel", "_phase_kernels"]
    with pytest.raises(ValueError, match="valid: transposed, phases"):
        networks.upsample_conv(x, conv, method="winograd")


@pytest.mark.parametrize("method", networks.UPSAMPLE_CONV_METHODS)
def test_upsample_conv_in_bfloat16_is_the_conv_of_the_upsampled_map(method):
    # Both methods in bfloat16 against the unfolded conv in bfloat16 (same weights): bfloat16
    # round-off (8 bits of mantissa), up to 7.6e-3 of the largest element over 6 seeds of each
    # method; 3e-2 keeps a margin, a wrong kernel is off by O(1) (the test above).
    x = tf.random.stateless_normal([2, 5, 3, 4], seed=[1, 0])
    conv = keras.layers.Conv2D(6, 3, padding="same", dtype="mixed_bfloat16")
    conv.build(x.shape)
    conv.bias.assign(tf.random.stateless_normal([6], seed=[2, 0]))
    ours, reference = _upsample_conv_and_reference(x, conv, "function", method)
    assert ours[0].dtype == tf.bfloat16
    _assert_close(ours, reference, rtol=3e-2)


def test_only_3x3_same_stride_1_convs_are_fused():
    conv = keras.layers.Conv2D
    assert networks.fusable_upsample_conv(conv(8, 3, padding="same"))
    assert not networks.fusable_upsample_conv(conv(8, 3, padding="valid"))
    assert not networks.fusable_upsample_conv(conv(8, 3, strides=2, padding="same"))
    assert not networks.fusable_upsample_conv(conv(8, 4, padding="same"))
    assert not networks.fusable_upsample_conv(conv(8, 3, padding="same", dilation_rate=2))
    assert not networks.fusable_upsample_conv(keras.layers.Dense(8))
    assert not networks.fusable_upsample_conv(None)


def _narrow_conv_and_reference(x, conv, mode):
    """Outputs and gradients (input, kernel, bias) of `narrow_conv` and of `conv` itself."""
    weight = tf.random.stateless_normal([*x.shape[:3], conv.filters], seed=[3, 1])
    return (_outputs_and_grads(lambda x: networks.narrow_conv(x, conv), x, conv, weight, mode),
            _outputs_and_grads(conv, x, conv, weight, mode))


def _rgb_conv(x):
    conv = keras.layers.Conv2D(3, 3, padding="same", activation="sigmoid")
    conv.build(x.shape)
    conv.bias.assign(tf.random.stateless_normal([3], seed=[2, 1]))
    return conv


@pytest.mark.parametrize("mode", ["eager", "function", "jit"])
def test_narrow_conv_equals_the_conv(mode):
    # Odd, non-square maps, so that a kernel flipped in one axis only would show.
    x = tf.random.stateless_normal([2, 5, 7, 6], seed=[1, 1])
    ours, reference = _narrow_conv_and_reference(x, _rgb_conv(x), mode)
    assert ours[0].shape == (2, 5, 7, 3)
    _assert_close(ours, reference)


def test_narrow_conv_check_has_teeth(monkeypatch):
    # The same check fails if the kernel is flipped in one spatial axis only.
    x = tf.random.stateless_normal([2, 5, 7, 6], seed=[1, 1])
    conv = _rgb_conv(x)
    monkeypatch.setattr(networks, "_flipped_kernel", lambda k: tf.transpose(tf.reverse(k, [0]), [0, 1, 3, 2]))
    ours, reference = _narrow_conv_and_reference(x, conv, "eager")
    with pytest.raises(AssertionError):
        _assert_close(ours[:1], reference[:1])


def test_only_narrow_float32_3x3_convs_run_transposed():
    conv = keras.layers.Conv2D
    assert networks.runs_as_transposed_conv(conv(3, 3, padding="same"))
    assert networks.runs_as_transposed_conv(conv(networks.NARROW_FILTERS - 1, 3, padding="same"))
    assert not networks.runs_as_transposed_conv(conv(networks.NARROW_FILTERS, 3, padding="same"))
    assert not networks.runs_as_transposed_conv(conv(3, 3, padding="same", dtype="mixed_bfloat16"))
    assert not networks.runs_as_transposed_conv(conv(3, 3, padding="valid"))
    assert not networks.runs_as_transposed_conv(conv(3, 3, strides=2, padding="same"))
    assert not networks.runs_as_transposed_conv(keras.layers.Dense(3))


def _layer_by_layer(decoder, q):
    """The decoder as its layers compute one after the other: upsampling materialised, the
    residual block's 1x1 projection after it (as the PyTorch re-implementation orders them)."""
    up = keras.layers.UpSampling2D(2, interpolation="nearest")
    x = q
    for layer in decoder.layers:
        if isinstance(layer, networks.ResidualUpsample):
            u = up(x)
            residual = layer.skip(u) if layer.skip is not None else u
            h = networks.leaky_relu(layer.conv1(u), 0.01)
            h = networks.leaky_relu(layer.conv2(h), 0.01)
            x = tf.sigmoid(h + residual)
        else:
            x = layer(x)
    return x


@pytest.mark.parametrize("decoder, latent, folds, narrow", [
    ("upsample", "spatial", 3, 1),   # the paper's decoder: every block's first conv; its RGB conv
    ("subpixel", "vector", 2, 0),    # the CPU recipe's: both half-resolution blocks; 12 channels out
    ("residual", "spatial", 3, 1),   # the PyTorch re-implementation's blocks; its RGB conv
])
def test_decoders_fold_their_upsampling_and_match_their_layers(monkeypatch, decoder, latent, folds, narrow):
    config = dataclasses.replace(PRESETS["tiny"], decoder=decoder, latent=latent, decoder_depth=2)
    keras.utils.set_random_seed(7)
    dec = networks.build_decoder(config)
    q_shape = [3, config.state_channels] if latent == "vector" else [3, 4, 4, config.state_channels]
    q = tf.random.stateless_normal(q_shape, seed=[5, 0])
    dec(q)
    # Non-zero biases, so that each bias gradient is checked too; seeded by position, not by the
    # variable's path, whose layer numbers depend on the tests that ran before in this process.
    for i, v in enumerate(dec.trainable_variables):
        v.assign(v + 0.1 * tf.random.stateless_normal(v.shape, seed=[6, i]))
    calls, narrow_calls = [], []
    fold, transposed = networks.upsample_conv, networks.narrow_conv
    monkeypatch.setattr(networks, "upsample_conv", lambda *a, **k: calls.append(1) or fold(*a, **k))
    monkeypatch.setattr(networks, "narrow_conv", lambda *a, **k: narrow_calls.append(1) or transposed(*a, **k))

    def outputs_and_grads(fn):
        with tf.GradientTape() as tape:
            y = fn(q)
            weight = tf.reshape(tf.linspace(-1.0, 1.0, int(np.prod(y.shape))), y.shape)
            loss = tf.reduce_sum(y * weight)  # a different upstream gradient per output element
        return [y, *tape.gradient(loss, dec.trainable_variables)]

    ours = outputs_and_grads(dec)
    assert len(calls) == folds and len(narrow_calls) == narrow
    reference = outputs_and_grads(lambda q: _layer_by_layer(dec, q))
    assert all(g is not None for g in ours[1:]) and len(ours) == len(reference)
    # Deeper than one conv, and the gradients sum thousands of terms of both signs, so round-off
    # relative to the largest element varies with the weights: up to 5.9e-5 over 8 seeds of each
    # decoder (7.0e-5 once in CI, with weights then seeded by layer name); with the transposed
    # convs (5f8318b, 417559f) up to 3.7e-5, except where a leaky ReLU's input lies within
    # round-off of 0, whose gradient then takes the other slope: one of 8 residual-decoder seeds
    # (an input of 6e-8) put one bias gradient 3.8e-2 off. This test's weights have no such input.
    # 5e-4 keeps a margin; a wrong kernel is off by O(1) (see the test above).
    _assert_close(ours, reference, rtol=5e-4)


def test_bench_counts_the_folded_convs_executed_work(load_bench, monkeypatch):
    # bench/hgn_throughput.py reports the model's FLOPs (the measure of equal work against the
    # PyTorch code) and what the folded decoder executes. Counted by hand for `tiny`'s paper
    # decoder (q 4x4x4, width 8, depth 1; multiply-adds per frame): three blocks whose conv reads
    # an upsampled map, then the last 3x3 conv to 3 channels at 32x32.
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "bench"))  # its sibling cpu_ceiling
    throughput = load_bench("hgn_throughput")
    keras.utils.set_random_seed(8)
    dec = networks.build_decoder(PRESETS["tiny"])
    dec(tf.zeros([1, 4, 4, PRESETS["tiny"].state_channels]))
    folded = [8 * 8 * 9 * 4 * 8, 16 * 16 * 9 * 8 * 8, 32 * 32 * 9 * 8 * 8]
    last = 32 * 32 * 9 * 8 * 3
    model, shape = throughput._stack_flops(dec.layers, (4, 4, 4))
    executed, _ = throughput._stack_flops(dec.layers, (4, 4, 4), executed=True)
    assert shape == (32, 32, 3)
    assert model == 2 * (sum(folded) + last)
    assert executed == 2 * (sum(folded) * 16 / 36 + last)
