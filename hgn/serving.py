"""SavedModel export: a `tf.Module` whose `tf.function`s have fixed input signatures.

The export needs nothing from this project to load (`tf.saved_model.load(path)` in any
process), and `saved_model_cli show --all --dir PATH` lists its signatures:

    encode(frames)             frames float32 [B, T >= k, H, W, 3] -> {q, p} [B, 4, 4, C]
    rollout(frames, n_steps, dt)  -> {frames [B, n+1, H, W, 3], q, p [B, n+1, 4, 4, C], energy [B, n+1]}
                                  (state inferred at the first frame; negative dt runs backward)
    rollout_backward(frames, n_steps, dt)  -> the same keys, backward in time with steps of dt > 0:
                                  the state at the clip's LAST frame is inferred from its last k
                                  frames (`HGN.infer(..., backward=True)`); output frame 0 is the
                                  clip's last frame, frame i the one i steps earlier
    decode(q)                  q [B, 4, 4, C] -> {frame [B, H, W, 3]}
    sample(n, n_steps, dt)     -> {frames [n, n_steps+1, H, W, 3]} from the prior

Inputs of the wrong rank, size or dtype are rejected by the signatures; fewer than k frames, a
negative step count, NaN or Inf in frames, a non-finite dt (or, for `rollout_backward`, dt <= 0)
fail a named check.

Serving caps bound what one request may allocate. They are set at export (`export(...,
max_steps=, max_batch=, max_samples=, max_frames=)`, `train_hgn.py --serve-max-*`), kept in the
SavedModel as variables of the same names and in `hgn_config.json`, and checked before any work:

    n_steps                                <= max_steps    (default 10,000)
    batch: frames or q axis 0              <= max_batch    (default 1,024)
    n of sample                            <= max_samples  (default 10,000)
    frames decoded: batch (or n) x (n_steps + 1)  <= max_frames  (default: what fits in 2 GiB,
                                              see `max_frames_within`)

A request over a cap fails with an `InvalidArgumentError` naming the argument and the cap; the
loaded module keeps serving the next request.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import tensorflow as tf

from common.runs import atomic_directory
from hgn.config import MAX_BATCH, MAX_SAMPLES, MAX_STEPS  # the default serving caps (module docstring)
from hgn.model import HGN

MEMORY_BUDGET = 2 * 2**30  # bytes one request may allocate; sets the default max_frames


def max_frames_within(model: HGN, budget: int = MEMORY_BUDGET) -> int:
    """Frames one request may decode so that it allocates at most about `budget` bytes.

    Decoding is a request's peak: `batch x (n_steps + 1)` frames go through the decoder in one
    batched call. Per frame this counts 5 activations of the decoder's largest layer output (in
    its compute dtype) plus the float32 frame twice. Measured peak growth over 2,000 decoded
    frames is below that estimate for every preset: 48 kB per frame against 104 (tiny, bfloat16),
    194 against 344 (small), 350 / 696 against 664 / 1,304 (paper, bfloat16 / float32) and
    517 / 1,034 against 664 / 1,304 (pytorch's residual decoder, bfloat16 / float32), 44 / 98
    against 104 / 184 (quick's sub-pixel decoder, bfloat16 / float32).

    Args:
      model: the HGN to serve.
      budget: bytes.

    Returns:
      The largest frame count within `budget` (at least 1).
    """
    c = model.config
    state, _, _ = model.infer(tf.zeros([1, c.input_frames, c.image_size, c.image_size, 3]))
    x, largest = state.q, 0
    for layer in model.decoder.layers:
        x = layer(x)
        largest = max(largest, int(tf.size(x)) * x.dtype.size)
    frame = c.image_size * c.image_size * 3 * 4
    return max(1, int(budget // (5 * largest + 2 * frame)))


def _check_caps(caps: dict) -> dict:
    for name, value in caps.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return caps


def _finite(x: tf.Tensor, what: str) -> tf.Tensor:
    return tf.debugging.assert_all_finite(x, f"{what} must be finite (no NaN or Inf)")


def _non_negative_steps(n_steps: tf.Tensor):
    return tf.debugging.assert_non_negative(n_steps, message="n_steps must be >= 0")


class HGNModule(tf.Module):
    """The exported interface of a trained `HGN` (posterior mean for inference).

    Args:
      model: the trained model.
      max_steps, max_batch, max_samples: serving caps (see the module docstring).
      max_frames: frames one request may decode; None: `max_frames_within(model)`.

    Raises:
      ValueError: a cap that is not a positive integer, naming it.
    """

    def __init__(self, model: HGN, max_steps: int = MAX_STEPS, max_batch: int = MAX_BATCH,
                 max_samples: int = MAX_SAMPLES, max_frames: Optional[int] = None):
        super().__init__(name="hgn")
        c = model.config
        if max_frames is None:
            max_frames = max_frames_within(model)
        self.caps = _check_caps({"max_steps": max_steps, "max_batch": max_batch, "max_samples": max_samples,
                                 "max_frames": max_frames})
        for name, value in self.caps.items():
            setattr(self, name, tf.Variable(value, dtype=tf.int64, trainable=False, name=name))
        self.model = model
        self.encoder, self.transformer, self.decoder = model.encoder, model.transformer, model.decoder
        self.energy_nets = dict(model.energy_nets)
        self.k = c.input_frames
        self.input_frames = tf.Variable(c.input_frames, trainable=False, name="input_frames")
        self.default_dt = tf.Variable(c.dt, trainable=False, name="default_dt")
        s = c.image_size
        q_shape = model.to_state(model.posterior(tf.zeros([1, c.input_frames, s, s, 3]))[0]).q.shape
        frames = tf.TensorSpec([None, None, s, s, 3], tf.float32, name="frames")
        q = tf.TensorSpec([None, *q_shape[1:]], tf.float32, name="q")
        dt = tf.TensorSpec([], tf.float32, name="dt")
        n_steps = tf.TensorSpec([], tf.int32, name="n_steps")
        n = tf.TensorSpec([], tf.int32, name="n")
        self.encode = tf.function(self._encode, input_signature=[frames])
        self.rollout = tf.function(self._rollout, input_signature=[frames, n_steps, dt])
        self.rollout_backward = tf.function(self._rollout_backward, input_signature=[frames, n_steps, dt])
        self.decode = tf.function(self._decode, input_signature=[q])
        self.sample = tf.function(self._sample, input_signature=[n, n_steps, dt])

    # ------------------------------------------------------------------ checks
    def _enough_frames(self, frames: tf.Tensor):
        return tf.debugging.assert_greater_equal(
            tf.shape(frames)[1], self.k, message=f"rollout/encode need at least {self.k} frames on axis 1")

    def _within_caps(self, batch=None, n=None, n_steps=None, decodes: bool = True, batch_of: str = "frames"):
        """The cap checks of one request, chained so that the first one violated is reported.

        `batch` (axis 0 of frames or q), `n` (sample) and `n_steps` are scalar tensors; only
        shapes and scalars are read, so nothing request-sized is allocated before the checks
        pass. `decodes`: the request decodes `batch (or n) x (n_steps + 1)` frames; `batch_of`:
        the argument whose axis 0 `batch` is.
        """
        def message(argument, cap):
            return f"{argument} must be <= {cap} = {self.caps[cap]} (serving cap set at export)"

        checks = []
        if n_steps is not None:
            checks.append((n_steps, self.max_steps, message("n_steps", "max_steps")))
        if batch is not None:
            checks.append((batch, self.max_batch, message(f"the batch of {batch_of} (axis 0)", "max_batch")))
        if n is not None:
            checks.append((n, self.max_samples, message("n", "max_samples")))
        if decodes:
            count, what = (batch, "batch") if batch is not None else (n, "n")
            frames = tf.cast(count, tf.int64)
            if n_steps is not None:
                frames *= tf.maximum(tf.cast(n_steps, tf.int64), 0) + 1
                what += " x (n_steps + 1)"
            checks.append((frames, self.max_frames, message(f"frames decoded, {what},", "max_frames")))
        ops = []
        for value, cap, text in checks:
            with tf.control_dependencies(ops[-1:]):
                ops.append(tf.debugging.assert_less_equal(tf.cast(value, tf.int64), cap, message=text))
        return ops

    # ------------------------------------------------------------------ signatures
    def _encode(self, frames):
        with tf.control_dependencies(self._within_caps(batch=tf.shape(frames)[0], decodes=False)):
            frames = _finite(frames, "frames")
            with tf.control_dependencies([self._enough_frames(frames)]):
                state, _, _ = self.model.infer(tf.identity(frames))
        return {"q": state.q, "p": state.p}

    def _rollout(self, frames, n_steps, dt):
        with tf.control_dependencies(self._within_caps(batch=tf.shape(frames)[0], n_steps=n_steps)):
            frames, dt = _finite(frames, "frames"), _finite(dt, "dt")
            with tf.control_dependencies([self._enough_frames(frames), _non_negative_steps(n_steps)]):
                state, _, _ = self.model.infer(tf.identity(frames))
                return self.model._unroll(state, tf.identity(n_steps), dt)

    def _rollout_backward(self, frames, n_steps, dt):
        with tf.control_dependencies(self._within_caps(batch=tf.shape(frames)[0], n_steps=n_steps)):
            frames, dt = _finite(frames, "frames"), _finite(dt, "dt")
            positive_dt = tf.debugging.assert_positive(
                dt, message="rollout_backward needs dt > 0 (it steps backward in time by dt)")
            with tf.control_dependencies([self._enough_frames(frames), _non_negative_steps(n_steps), positive_dt]):
                # Only the last k frames are encoded (time-reversed, momentum negated): the
                # state at the clip's last frame, then rolled with -dt.
                state, _, _ = self.model.infer(tf.identity(frames)[:, -self.k:], backward=True)
                return self.model._unroll(state, tf.identity(n_steps), -tf.identity(dt))

    def _decode(self, q):
        with tf.control_dependencies(self._within_caps(batch=tf.shape(q)[0], batch_of="q")):
            return {"frame": self.model.decode(_finite(q, "q"))}

    def _sample(self, n, n_steps, dt):
        with tf.control_dependencies(self._within_caps(n=n, n_steps=n_steps)):
            dt = _finite(dt, "dt")
            with tf.control_dependencies([_non_negative_steps(n_steps),
                                          tf.debugging.assert_positive(n, message="n must be > 0")]):
                c = self.model.config
                mean, _ = self.model.posterior(tf.zeros([1, c.input_frames, c.image_size, c.image_size, 3]))
                z = tf.random.normal(tf.concat([[tf.identity(n)], tf.shape(mean)[1:]], 0))
                return {"frames": self.model._unroll(self.model.to_state(z), tf.identity(n_steps), dt)["frames"]}


def export(model: HGN, path, max_steps: int = MAX_STEPS, max_batch: int = MAX_BATCH, max_samples: int = MAX_SAMPLES,
           max_frames: Optional[int] = None) -> Path:
    """Writes the SavedModel to `path` atomically (a crash leaves any previous export intact).

    Args:
      model: the trained HGN.
      path: target folder (replaced if it exists).
      max_steps, max_batch, max_samples, max_frames: serving caps (module docstring); None for
        `max_frames`: what fits in `MEMORY_BUDGET` bytes (`max_frames_within`).

    Returns:
      The export path. Beside the SavedModel, `hgn_config.json` records `input_frames`, `dt`,
      `image_size`, the training step of the weights (`step`) and the caps (`serving_caps`).

    Raises:
      ValueError: a cap that is not a positive integer, naming it.
    """
    module = HGNModule(model, max_steps=max_steps, max_batch=max_batch, max_samples=max_samples,
                       max_frames=max_frames)
    signatures = {"encode": module.encode, "rollout": module.rollout, "rollout_backward": module.rollout_backward,
                  "decode": module.decode, "sample": module.sample}
    with atomic_directory(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        (Path(tmp) / "hgn_config.json").write_text(json.dumps({"input_frames": model.config.input_frames,
                                                              "dt": model.config.dt,
                                                              "image_size": model.config.image_size,
                                                              "step": int(model.train_steps.numpy()),
                                                              "serving_caps": module.caps}, indent=2))
    return Path(path)
