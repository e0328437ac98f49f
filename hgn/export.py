"""SavedModel export: a `tf.Module` whose `tf.function`s have fixed input signatures.

The export needs nothing from this project to load (`tf.saved_model.load(path)` in any
process), and `saved_model_cli show --all --dir PATH` lists its signatures:

    encode(frames)             frames float32 [B, T >= k, H, W, 3] -> {q, p} [B, 4, 4, C]
    rollout(frames, n_steps, dt)  -> {frames [B, n+1, H, W, 3], q, p [B, n+1, 4, 4, C], energy [B, n+1]}
                                  (state inferred at the first frame; negative dt runs backward)
    decode(q)                  q [B, 4, 4, C] -> {frame [B, H, W, 3]}
    sample(n, n_steps, dt)     -> {frames [n, n_steps+1, H, W, 3]} from the prior

Inputs of the wrong rank, size or dtype are rejected by the signatures; fewer than k frames, a
negative step count, NaN or Inf in frames, or a non-finite dt fail a named check.
"""
from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from common.runs import atomic_directory
from hgn.model import HGN


class HGNModule(tf.Module):
    """The exported interface of a trained `HGN` (posterior mean for inference)."""

    def __init__(self, model: HGN):
        super().__init__(name="hgn")
        c = model.config
        self.model = model
        self.encoder, self.transformer, self.decoder = model.encoder, model.transformer, model.decoder
        self.energy_nets = dict(model.energy_nets)
        self.k = c.input_frames
        s = c.image_size
        q_shape = model.to_state(model.posterior(tf.zeros([1, c.input_frames, s, s, 3]))[0]).q.shape
        frames_spec = tf.TensorSpec([None, None, s, s, 3], tf.float32, name="frames")
        q_spec = tf.TensorSpec([None, *q_shape[1:]], tf.float32, name="q")
        dt_spec = tf.TensorSpec([], tf.float32, name="dt")
        self.input_frames = tf.Variable(c.input_frames, trainable=False, name="input_frames")
        self.default_dt = tf.Variable(c.dt, trainable=False, name="default_dt")

        def check_frames(frames):
            return tf.debugging.assert_greater_equal(
                tf.shape(frames)[1], self.k, message=f"rollout/encode need at least {self.k} frames on axis 1")

        def finite_frames(frames):
            return tf.debugging.assert_all_finite(frames, "frames must be finite (no NaN or Inf)")

        def finite_dt(dt):
            return tf.debugging.assert_all_finite(dt, "dt must be finite (no NaN or Inf)")

        def check_steps(n_steps):
            return tf.debugging.assert_non_negative(n_steps, message="n_steps must be >= 0")

        @tf.function(input_signature=[frames_spec])
        def encode(frames):
            frames = finite_frames(frames)
            with tf.control_dependencies([check_frames(frames)]):
                state, _, _ = model.infer(tf.identity(frames))
            return {"q": state.q, "p": state.p}

        @tf.function(input_signature=[frames_spec, tf.TensorSpec([], tf.int32, name="n_steps"), dt_spec])
        def rollout(frames, n_steps, dt):
            frames, dt = finite_frames(frames), finite_dt(dt)
            with tf.control_dependencies([check_frames(frames), check_steps(n_steps)]):
                state, _, _ = model.infer(tf.identity(frames))
                return model._unroll(state, tf.identity(n_steps), dt)

        @tf.function(input_signature=[q_spec])
        def decode(q):
            return {"frame": model.decode(q)}

        @tf.function(input_signature=[tf.TensorSpec([], tf.int32, name="n"), tf.TensorSpec([], tf.int32, name="n_steps"),
                                      dt_spec])
        def sample(n, n_steps, dt):
            dt = finite_dt(dt)
            with tf.control_dependencies([check_steps(n_steps),
                                          tf.debugging.assert_positive(n, message="n must be > 0")]):
                mean, _ = model.posterior(tf.zeros([1, c.input_frames, s, s, 3]))
                z = tf.random.normal(tf.concat([[n], tf.shape(mean)[1:]], 0))
                return {"frames": model._unroll(model.to_state(z), tf.identity(n_steps), dt)["frames"]}

        self.encode, self.rollout, self.decode, self.sample = encode, rollout, decode, sample


def export(model: HGN, path) -> Path:
    """Writes the SavedModel to `path` atomically (a crash leaves any previous export intact)."""
    module = HGNModule(model)
    signatures = {"encode": module.encode, "rollout": module.rollout, "decode": module.decode, "sample": module.sample}
    with atomic_directory(path) as tmp:
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        (Path(tmp) / "hgn_config.json").write_text(json.dumps({"input_frames": model.config.input_frames,
                                                              "dt": model.config.dt,
                                                              "image_size": model.config.image_size}, indent=2))
    return Path(path)
