"""The Hamiltonian Generative Network as a Keras 3 model with its own `train_step`/`test_step`.

Shapes: frames are `[B, T, H, W, 3]` floats in [0, 1] (batch, time, event); the latent state is
a `PhaseSpace(q, p)` of `[B, 4, 4, C]` maps (`latent="spatial"`, the paper's) or `[B, C]`
vectors (`latent="vector"`, DeepMind's HGN++); latent trajectories carry a leading time axis
`[T, B, ...]` (the `common.trajectory` convention).

Inference: the first `k = input_frames` frames, stacked on channels, give the posterior
q(z | x) = N(mean, exp(log_scale)^2); z is mapped to (q0, p0) by the transformer. Backward
inference feeds the last k frames in reverse time order (what the encoder sees is a forward
movie of the time-reversed motion), and negates the inferred momentum so that the state is the
one at the window's end in forward time; rolling it with -dt then replays the window backward.

Objective (per example, normalised by T*H*W*C as in the paper):

    mse = mean over frames and pixels of (x - decode(q_t))^2
    kl  = KL(q(z | x) || N(0, I)) / (T * H * W * C)
    GECO:  minimise kl + lambda * (mse - kappa) over the networks, lambda = softplus(phi),
           while phi ascends lambda * (mse - kappa) (its own Adam): lambda grows while the
           reconstruction constraint is violated and decays once it holds.
    beta:  minimise mse + beta * kl.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import keras
import tensorflow as tf

from common import Hamiltonian, PhaseSpace, SeparableHamiltonian, quadratic_kinetic
from common import integrators as _integrators
from common.callbacks import BuiltAhead
from hgn.config import HGNConfig
from hgn.networks import build_decoder, build_encoder, build_energy_nets, build_transformer

# Static rollouts up to this length are unrolled in Python when XLA compiles them (XLA fuses
# across steps). Without XLA the rollout is a tf.while_loop: the unrolled graph, with the second
# derivatives training takes through it, made the pytorch-preset step 0.5 GB larger at peak and
# its first step 4x slower to build, for no speed (bench/results/hgn_throughput.json).
_MAX_UNROLL = 64


def _inverse_softplus(y: float) -> float:
    return math.log(math.expm1(y))


def _batch_major(x: tf.Tensor) -> tf.Tensor:
    """`[T, B, ...]` -> `[B, T, ...]` for a tensor of any rank >= 2."""
    return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])


def _all_finite(tensors) -> tf.Tensor:
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors if t is not None])


@tf.custom_gradient
def _after(x: tf.Tensor, token: tf.Tensor):
    """`x`, read only once `token` is computed; in the backward pass, `token`'s gradient (zero) is
    released only once `x`'s has arrived.

    Orders otherwise independent branches of a graph both ways: chaining decoder chunks through
    it makes the executor run them one after another in the forward pass and in reverse order in
    the backward pass, instead of interleaving them (which would keep every chunk's recomputed
    activations alive at once).
    """
    with tf.control_dependencies([token]):
        y = tf.identity(x)

    def grad(dy):
        with tf.control_dependencies([dy]):
            d_token = tf.zeros_like(token)
        return dy, d_token

    return y, grad


class HGN(BuiltAhead, keras.Model):
    """Hamiltonian Generative Network (Toth et al., ICLR 2020).

    Args:
      config: an `HGNConfig`.

    Attributes:
      encoder, transformer, decoder: Keras networks (see `hgn.networks`).
      energy_nets: `{"kinetic", "potential"}`, `{"potential"}` (fixed kinetic energy) or `{"joint"}`
        energy nets.
      hamiltonian: the `common` Hamiltonian over latent maps (separable or not, by config).
      geco_param: phi, with the Lagrange multiplier lambda = softplus(phi).
      train_steps: batches consumed by training (the resume counter; also counts skipped steps).
    """

    def __init__(self, config: HGNConfig, **kwargs):
        super().__init__(name=kwargs.pop("name", "hgn"), **kwargs)
        config.validate()
        self.config = config
        self.encoder = build_encoder(config)
        self.transformer = build_transformer(config)  # None for the vector latent
        self.energy_nets = build_energy_nets(config)
        self.decoder = build_decoder(config)
        if config.hamiltonian == "separable":
            self.hamiltonian = SeparableHamiltonian(self.energy_nets["kinetic"], self.energy_nets["potential"],
                                                    name="latent_hamiltonian")
        elif config.hamiltonian == "fixed_kinetic":
            # K(p) = |p|^2 / 2 over every event axis (a vector, or a spatial map); a constant mass
            # would only rescale p, which the encoder learns anyway.
            kinetic, kinetic_grad = quadratic_kinetic(event_ndims=1 if config.latent == "vector" else 3)
            self.hamiltonian = SeparableHamiltonian(kinetic, self.energy_nets["potential"], kinetic_grad=kinetic_grad,
                                                    name="latent_hamiltonian")
        else:
            joint = self.energy_nets["joint"]
            self.hamiltonian = Hamiltonian(lambda q, p: joint(tf.concat([q, p], axis=-1)), name="latent_hamiltonian")
        self.integrator = _integrators.get(config.integrator)
        self.geco_param = self.add_weight(
            name="geco_param", shape=(), initializer=keras.initializers.Constant(_inverse_softplus(config.geco_init_lambda)))
        # Counters updated in replica context: every replica computes the same value (the
        # finite check is global), so under tf.distribute the first replica's update stands.
        self.train_steps = self.add_weight(name="train_steps", shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica")
        self.nonfinite_streak = self.add_weight(name="nonfinite_streak", shape=(), dtype="int64",
                                                initializer="zeros", trainable=False,
                                                aggregation="only_first_replica")
        # Scale of the learning-rate schedule (lowered by rollbacks, checkpointed); only runs with a
        # warm-up or decay have one, so checkpoints of constant-rate runs keep their layout.
        self.lr_scale = None
        if config.warmup_steps or config.decay != "none":
            self.lr_scale = self.add_weight(name="lr_scale", shape=(), initializer="ones", trainable=False,
                                            aggregation="only_first_replica")
        # Training seconds spent (checkpointed, fed by `hgn.training`'s clock) for `--pace time`;
        # other runs have none and keep their checkpoint layout.
        self.train_seconds = None
        if config.pace == "time":
            self.train_seconds = self.add_weight(name="train_seconds", shape=(), initializer="zeros",
                                                 trainable=False, aggregation="only_first_replica")
        self.seed_generator = keras.random.SeedGenerator(config.seed, name="posterior_seed")
        self.geco_optimizer = keras.optimizers.Adam(config.geco_learning_rate, name="geco_adam")
        names = ["loss", "reconstruction", "kl", "lagrange_multiplier", "energy_drift"]
        self.trackers = {n: keras.metrics.Mean(name=n) for n in names}

    # ------------------------------------------------------------------ building blocks
    @property
    def metrics(self):
        return list(self.trackers.values())

    @property
    def lagrange_multiplier(self) -> tf.Tensor:
        return tf.nn.softplus(tf.convert_to_tensor(self.geco_param))

    @property
    def network_variables(self):
        """Variables trained by the main optimizer (every trainable weight but phi)."""
        return [v for v in self.trainable_variables if v is not self.geco_param]

    def _check_frames(self, frames, min_frames: int) -> tf.Tensor:
        frames = tf.convert_to_tensor(frames)
        s = self.config.image_size
        if frames.dtype != tf.float32:
            raise ValueError(f"frames must be float32 in [0, 1], got {frames.dtype.name}")
        if frames.shape.rank != 5 or tuple(frames.shape[2:]) != (s, s, 3):
            raise ValueError(f"frames must have shape [batch, time, {s}, {s}, 3], got {frames.shape}")
        if frames.shape[1] is not None and frames.shape[1] < min_frames:
            raise ValueError(f"need at least {min_frames} frames, got {frames.shape[1]}")
        return frames

    def posterior(self, frames: tf.Tensor, backward: bool = False):
        """Posterior statistics from the first (or, backward, the last, time-reversed) k frames.

        Returns:
          `(mean, log_scale)`, each `[B, h, w, latent_channels]` (vector latent: `[B, 2 * state_channels]`).
        """
        k = self.config.input_frames
        x = frames[:, ::-1] if backward else frames
        x = x[:, :k]
        x = tf.transpose(x, [0, 2, 3, 1, 4])  # [B, H, W, k, 3]: frames stacked on channels
        shape = tf.shape(x)
        x = tf.reshape(x, tf.concat([shape[:3], [3 * k]], 0))
        stats = tf.cast(self.encoder(x), tf.float32)
        mean, log_scale = tf.split(stats, 2, axis=-1)
        return mean, log_scale

    def to_state(self, z: tf.Tensor, backward: bool = False) -> PhaseSpace:
        """Transformer: z -> PhaseSpace(q, p) (momentum negated for backward inference).

        The vector latent has no transformer: z is (q, p) itself.
        """
        q, p = tf.split(z if self.transformer is None else self.transformer(z), 2, axis=-1)
        return PhaseSpace(q, -p if backward else p)

    @property
    def latent_shape(self) -> tuple:
        """Shape `(h, w, latent_channels)` of one posterior sample z."""
        if "_latent_shape" not in self.__dict__:
            c = self.config
            mean, _ = self.posterior(tf.zeros([1, c.input_frames, c.image_size, c.image_size, 3]))
            self.__dict__["_latent_shape"] = tuple(int(d) for d in mean.shape[1:])
        return self.__dict__["_latent_shape"]

    def infer(self, frames: tf.Tensor, backward: bool = False, sample: bool = False, noise=None):
        """Initial state from frames.

        Args:
          frames: `[B, T >= k, H, W, 3]`.
          backward: infer the state at the last frame (see the module docstring).
          sample: draw z from the posterior (training); otherwise use its mean.
          noise: optional standard-normal draws `[B, h, w, latent_channels]` for that sample
            (training takes them from the data pipeline, so every strategy and a resumed run see
            the same numbers); by default they come from the model's seed generator.

        Returns:
          `(state, mean, log_scale)`.
        """
        mean, log_scale = self.posterior(frames, backward)
        z = mean
        if sample:
            if noise is None:
                noise = keras.random.normal(tf.shape(mean), seed=self.seed_generator)
            z = mean + tf.exp(log_scale) * tf.cast(noise, mean.dtype)
        return self.to_state(z, backward), mean, log_scale

    def integrate(self, state: PhaseSpace, n_steps, dt) -> PhaseSpace:
        """Latent trajectory `[n_steps + 1, B, ...]` from `state` with the configured integrator."""
        static = tf.get_static_value(n_steps) if tf.is_tensor(n_steps) else n_steps
        xla = self.config.jit_compile or self.config.fused_rollout
        unroll = xla and static is not None and int(static) <= _MAX_UNROLL
        if unroll and self.config.fused_rollout and not self.config.jit_compile and not self.__dict__.get("_building"):
            return self._fused_trajectory(int(static))(state.q, state.p, tf.cast(dt, state.q.dtype))
        return _integrators.trajectory(self.hamiltonian, state, dt, int(static) if static is not None else n_steps,
                                       method=self.integrator, unroll=unroll)

    def _fused_trajectory(self, n_steps: int):
        # One XLA cluster for the whole unrolled rollout (and, through autodiff, its gradient).
        cache = self.__dict__.setdefault("_fused_fns", {})
        if n_steps not in cache:
            def fused(q, p, dt):
                return _integrators.trajectory(self.hamiltonian, PhaseSpace(q, p), dt, n_steps,
                                               method=self.integrator, unroll=True)

            cache[n_steps] = tf.function(fused, jit_compile=True)
        return cache[n_steps]

    def decode(self, q: tf.Tensor) -> tf.Tensor:
        """q `[B, 4, 4, C]` (or `[B, C]`) -> frame `[B, H, W, 3]` in (0, 1), float32."""
        return tf.cast(self.decoder(q), tf.float32)

    def _decode_flat(self, q: tf.Tensor) -> tf.Tensor:
        """q with two leading axes `[A, B, ...]` (time and batch, either order) -> frames
        `[A * B, H, W, 3]`, in one batched decoder call."""
        return self.decode(tf.reshape(q, tf.concat([[-1], tf.shape(q)[2:]], 0)))

    def decode_trajectory(self, q: tf.Tensor) -> tf.Tensor:
        """q along a trajectory `[T, B, ...]` -> frames `[B, T, H, W, 3]` (one batched decoder call)."""
        shape = tf.shape(q)
        frames = self._decode_flat(q)
        frames = tf.reshape(frames, tf.concat([shape[:2], tf.shape(frames)[1:]], 0))
        return tf.transpose(frames, [1, 0, 2, 3, 4])

    def energy(self, trajectory: PhaseSpace) -> tf.Tensor:
        """Latent H along a trajectory `[T, B, ...]` -> `[B, T]`."""
        return tf.transpose(self.hamiltonian.trajectory_energy(trajectory, batch_ndims=1))

    def rollout(self, frames: tf.Tensor, n_steps, dt: Optional[float] = None, backward: bool = False
                ) -> Dict[str, tf.Tensor]:
        """Infers the state from `frames` and rolls it out `n_steps` steps of `dt` (posterior mean).

        Args:
          frames: `[B, T >= k, H, W, 3]`.
          n_steps: steps to integrate (any length; the result has n_steps + 1 frames).
          dt: step; defaults to `config.dt` (`-config.dt` when `backward`). Rescale it to speed up
            or slow down time; negate it to run backward.
          backward: infer from the last k frames (state at the last frame).

        Returns:
          dict with `frames` `[B, n+1, H, W, 3]`, `q`, `p` `[B, n+1, ...state shape]`, `energy` `[B, n+1]`.
        """
        frames = self._check_frames(frames, self.config.input_frames)
        if dt is None:
            dt = -self.config.dt if backward else self.config.dt
        state, _, _ = self.infer(frames, backward=backward)
        return self._unroll(state, n_steps, dt)

    def _unroll(self, state: PhaseSpace, n_steps, dt) -> Dict[str, tf.Tensor]:
        traj = self.integrate(state, n_steps, dt)
        return {"frames": self.decode_trajectory(traj.q), "q": _batch_major(traj.q), "p": _batch_major(traj.p),
                "energy": self.energy(traj)}

    def sample(self, n: int, n_steps, dt: Optional[float] = None, seed=None) -> Dict[str, tf.Tensor]:
        """New trajectories from the prior z ~ N(0, I), rolled out `n_steps` steps."""
        dt = self.config.dt if dt is None else dt
        mean, _ = self.posterior(tf.zeros([1, self.config.input_frames, self.config.image_size,
                                           self.config.image_size, 3]))
        shape = tf.concat([[n], tf.shape(mean)[1:]], 0)
        z = keras.random.normal(shape, seed=seed if seed is not None else self.seed_generator)
        return self._unroll(self.to_state(z), n_steps, dt)

    def call(self, frames, training=False):
        """Reconstruction of a window: frames `[B, T, H, W, 3]` -> predicted `[B, T, H, W, 3]`."""
        frames = self._check_frames(frames, self.config.input_frames)
        state, _, _ = self.infer(frames, sample=bool(training) and self.config.variational)
        traj = self.integrate(state, frames.shape[1] - 1, self.config.dt)
        return self.decode_trajectory(traj.q)

    def build_all(self) -> "HGN":
        """Creates every variable (networks and both optimizers' slots) with one dummy pass."""
        c = self.config
        frames = tf.zeros([2, c.window, c.image_size, c.image_size, 3])  # 2: split mode halves the batch
        # Uncompiled under --fused-rollout too: compiling this batch-2 rollout only to create the
        # variables cost time and resident memory.
        self.__dict__["_building"] = True
        try:
            self.compute_losses(frames, training=False)
        finally:
            self.__dict__["_building"] = False
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.network_variables)
        if not self.geco_optimizer.built:
            self.geco_optimizer.build([self.geco_param])
        self.built = True
        return self


    # ------------------------------------------------------------------ objective
    def _window_terms(self, target: tf.Tensor, sign, training: bool, noise=None, keys=None):
        """Per-example `(mse, kl, drift)`, each `[B]`, of windows rolled forward or backward in time.

        Args:
          target: windows `[B, T, H, W, 3]` in the order the rollout replays them: a backward
            example's frames come time-reversed (its encoder then sees the last k frames, reversed,
            which is what `posterior(backward=True)` feeds it).
          sign: `1.0` (forward) or `-1.0` (backward) for the whole batch, or a `[B]` tensor of
            them: a backward example's inferred momentum is negated and it is rolled with -dt.
            Per example, the split mode's forward and backward halves share one encoder call, one
            rollout and one decoder call (the rollout's many small ops are paid once, not twice).
          training, noise, keys: as in `compute_losses` (one direction's draws, `[B, ...]`).
        """
        c = self.config
        state, mean, log_scale = self.infer(target, sample=training and c.variational, noise=noise)
        if isinstance(sign, float):
            if sign < 0:
                state = PhaseSpace(state.q, -state.p)
            dt = sign * c.dt
        else:
            sign = tf.reshape(tf.cast(sign, state.p.dtype), [-1] + [1] * (state.p.shape.rank - 1))
            state = PhaseSpace(state.q, sign * state.p)
            dt = sign * c.dt
        length = target.shape[1] if target.shape[1] is not None else tf.shape(target)[1]  # dynamic in a curriculum
        traj = self.integrate(state, length - 1, dt)
        if training and c.decoded_frames:
            mse = self._subset_mse(traj.q, target, keys)
        elif c.decoder_chunks > 1:
            mse = self._chunked_mse(traj.q, target)
        else:
            pred = self.decode_trajectory(traj.q)
            mse = tf.reduce_mean(tf.square(target - pred), axis=[1, 2, 3, 4])
        if c.variational:
            kl = 0.5 * (tf.square(mean) + tf.exp(2.0 * log_scale) - 1.0) - log_scale
            kl = tf.reduce_sum(kl, axis=list(range(1, kl.shape.rank))) / (
                tf.cast(length, tf.float32) * float(c.image_size * c.image_size * 3))
        else:
            kl = tf.zeros(tf.shape(mse))
        energy = self.energy(traj)
        drift = tf.reduce_mean(tf.abs(energy - energy[:, :1]), axis=1)
        return mse, kl, drift

    def _subset_mse(self, q: tf.Tensor, target: tf.Tensor, keys=None) -> tf.Tensor:
        """Per-pixel MSE `[B]` over `config.decoded_frames` frames of each window, drawn without replacement.

        Args:
          q: positions along the rollout `[T, B, ...]`.
          target: frames `[B, T, H, W, 3]`.
          keys: optional uniform draws `[B, >= T]`; each example decodes the frames of its smallest
            keys (training takes them from the data pipeline, like the posterior noise, so every
            strategy and a resumed run decode the same frames); by default from the seed generator.

        Every frame is equally likely to be drawn, so this is an unbiased estimate of the whole
        window's MSE; gradients still reach every step of the rollout through the drawn frames.
        """
        length = tf.shape(target)[1]
        if keys is None:
            keys = keras.random.uniform(tf.shape(target)[:2], seed=self.seed_generator)
        drawn = tf.argsort(keys[:, :length], axis=1)[:, :tf.minimum(self.config.decoded_frames, length)]
        q = tf.gather(_batch_major(q), drawn, batch_dims=1)  # [B, k, ...]
        target = tf.gather(target, drawn, batch_dims=1)  # [B, k, H, W, 3]
        pred = tf.reshape(self._decode_flat(q), tf.shape(target))
        return tf.reduce_mean(tf.square(target - pred), axis=[1, 2, 3, 4])

    def _chunked_mse(self, q: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        """Per-pixel MSE `[B]` of `decode(q)` against `target`, decoded in `config.decoder_chunks` chunks.

        Args:
          q: positions along the rollout `[T, B, ...]`.
          target: frames `[B, T, H, W, 3]`.

        The T time steps are split into chunks of (as nearly as possible) equal length; each chunk's
        sum of squared errors comes from a `tf.recompute_grad` function, which keeps none of the
        decoder's activations after its forward pass and recomputes them when its gradient is
        needed. The chunks are chained (`_after`) so that one chunk's activations are alive at a
        time; the whole-window prediction is never materialised.
        """
        steps = int(q.shape[0])
        k = min(self.config.decoder_chunks, steps)
        sizes = [steps // k + (1 if i < steps % k else 0) for i in range(k)]
        target = tf.transpose(target, [1, 0, 2, 3, 4])  # time-major like q: [T, B, H, W, 3]

        def chunk_sse(q_chunk, target_chunk):  # per example: [B]
            pred = tf.reshape(self._decode_flat(q_chunk), tf.shape(target_chunk))  # float32
            return tf.reduce_sum(tf.square(target_chunk - pred), axis=[0, 2, 3, 4])

        chunk_sse = tf.recompute_grad(chunk_sse)
        sses = []
        for q_chunk, target_chunk in zip(tf.split(q, sizes), tf.split(target, sizes)):
            if sses:  # one chunk at a time: the recomputations must not run side by side
                q_chunk = _after(q_chunk, sses[-1])
            sses.append(chunk_sse(q_chunk, target_chunk))
        sse = tf.add_n(sses)
        return sse / tf.cast(tf.size(target) // tf.shape(target)[1], tf.float32)  # per example: T * H * W * 3

    def schedule_step(self) -> tf.Tensor:
        """Where the run stands in its schedule (warm-up, curriculum, cosine decay), in steps (float32).

        `pace="steps"`: the step count. `pace="time"`: max(step, steps * seconds / budget), so a
        CPU that completes fewer steps within `max_train_minutes` still reaches the end of its
        decay and curriculum when the budget ends. Both are checkpointed counters: a resumed run
        continues the same schedule.
        """
        step = tf.cast(self.train_steps, tf.float32)
        if self.train_seconds is None:
            return step
        c = self.config
        return tf.maximum(step, c.steps * self.train_seconds / (60.0 * c.max_train_minutes))

    def curriculum_window(self) -> tf.Tensor:
        """Training window length at the current step: grows linearly from `curriculum_start` frames
        to `window` over the first `curriculum_steps` steps of `schedule_step`."""
        c = self.config
        start = min(c.curriculum_start, c.window)
        frac = tf.minimum(self.schedule_step() / float(max(c.curriculum_steps, 1)), 1.0)
        return tf.cast(tf.round(start + frac * (c.window - start)), tf.int32)

    def compute_losses(self, frames, training: bool = False, noise=None, keys=None) -> Dict[str, tf.Tensor]:
        """The objective's terms on a batch of windows `[B, T, H, W, 3]`.

        `noise` (optional, `[B, 2, h, w, latent_channels]` standard normal) is the posterior
        sampling noise of the forward (index 0) and backward (index 1) inference; `keys` (optional,
        `[B, 2, window]` uniform) choose the frames decoded in training with `decoded_frames`.

        Returns:
          dict: `loss` (minimised by the networks), `geco_loss` (minimised by phi), `reconstruction`
          (per-pixel MSE), `kl` (per pixel), `lagrange_multiplier`, `energy_drift`
          (mean |H_t - H_0| over the rollout).
        """
        c = self.config
        frames = self._check_frames(frames, c.input_frames)
        if frames.shape[1] is None:  # pipelines lose the static window length; the rollout needs it
            frames = tf.ensure_shape(frames, [None, c.window, c.image_size, c.image_size, 3])
        if training and c.curriculum_steps:
            frames = frames[:, :self.curriculum_window()]
        noise_f = noise_b = keys_f = keys_b = None
        if noise is not None:
            noise_f, noise_b = noise[:, 0], noise[:, 1]
        if keys is not None:
            keys_f, keys_b = keys[:, 0], keys[:, 1]
        if c.training_mode == "split":
            # Half the batch forward, half backward: the forward_backward objective's unbiased
            # estimate at the cost of one direction (each example is rolled out once). Both halves
            # go through the networks and the rollout together, each with its own sign of time,
            # and the objective is the mean of the two halves' means.
            half = tf.shape(frames)[0] // 2
            target = tf.concat([frames[:half], frames[half:, ::-1]], 0)
            sign = tf.concat([tf.ones([half]), -tf.ones([tf.shape(frames)[0] - half])], 0)
            join = lambda f, b: None if f is None else tf.concat([f[:half], b[half:]], 0)
            terms = self._window_terms(target, sign, training, noise=join(noise_f, noise_b), keys=join(keys_f, keys_b))
            mse, kl, drift = [(tf.reduce_mean(t[:half]) + tf.reduce_mean(t[half:])) / 2.0 for t in terms]
        else:
            mse, kl, drift = [tf.reduce_mean(t) for t in self._window_terms(frames, 1.0, training, noise=noise_f,
                                                                            keys=keys_f)]
        if c.training_mode == "forward_backward":
            terms_b = self._window_terms(frames[:, ::-1], -1.0, training, noise=noise_b, keys=keys_b)
            mse, kl, drift = [(f + tf.reduce_mean(b)) / 2.0 for f, b in zip((mse, kl, drift), terms_b)]
        lam = self.lagrange_multiplier
        if c.objective == "geco":
            constraint = mse - c.geco_kappa
            loss = kl + tf.stop_gradient(lam) * constraint
            geco_loss = -lam * tf.stop_gradient(constraint)
        else:
            loss = mse + c.beta * kl
            geco_loss = tf.zeros([])
        return {"loss": loss, "geco_loss": geco_loss, "reconstruction": mse, "kl": kl,
                "lagrange_multiplier": lam, "energy_drift": drift}

    def _apply_gradients(self, grads, net_vars) -> None:
        self.optimizer.apply(grads[:-1], net_vars)
        if self.config.objective == "geco":
            self.geco_optimizer.apply(grads[-1:], [self.geco_param])

    def train_step(self, data):
        """One step on a (per-replica) batch: `data` is frames or `{"frames", "noise", "keys"}`.

        Under `tf.distribute`, each replica's loss is divided by the number of replicas, so the
        optimizer's all-reduce (a sum) yields the gradient of the global batch mean; whether the
        step is finite is decided for the global batch, so all replicas skip or apply together.
        """
        frames = data["frames"] if isinstance(data, dict) else data
        noise = data.get("noise") if isinstance(data, dict) else None
        keys = data.get("keys") if isinstance(data, dict) else None
        net_vars = self.network_variables
        ctx = tf.distribute.get_replica_context()
        replicas = ctx.num_replicas_in_sync
        with tf.GradientTape() as tape:
            terms = self.compute_losses(frames, training=True, noise=noise, keys=keys)
            total = terms["loss"] + terms["geco_loss"]
            if replicas > 1:
                total = total / float(replicas)
        grads = tape.gradient(total, net_vars + [self.geco_param])
        finite = tf.logical_and(_all_finite([terms["loss"], terms["geco_loss"]]), _all_finite(grads))
        names = list(self.trackers)
        if replicas > 1:
            # One all-reduce for the logged terms and the finite flag: every replica then holds the
            # global-batch values (logs need no further reduction) and takes the same branch below.
            local = tf.stack([tf.cast(terms[n], tf.float32) for n in names] + [1.0 - tf.cast(finite, tf.float32)])
            reduced = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, local)
            terms = dict(terms, **{n: reduced[i] for i, n in enumerate(names)})
            finite = tf.equal(reduced[-1], 0.0)

        # A non-finite step is skipped: nothing NaN reaches the weights, so none reaches a checkpoint.
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, lambda: self._apply_gradients(grads, net_vars), lambda: None)
        else:
            # MirroredStrategy on CPUs: the optimizer synchronises through merge_call, which may not
            # sit inside a cond in replica context; decide in cross-replica context (as Keras's
            # LossScaleOptimizer does) and apply in each replica from there.
            def cross_replica(distribution, grads, finite):
                ok = distribution.experimental_local_results(finite)[0]

                def apply():
                    distribution.extended.call_for_each_replica(self._apply_gradients, args=(grads, net_vars))

                tf.cond(ok, apply, lambda: None)

            ctx.merge_call(cross_replica, args=(grads, finite))
        weight = tf.cast(finite, tf.float32)
        for name, tracker in self.trackers.items():
            value = tf.cast(terms[name], tf.float32)
            tracker.update_state(tf.where(finite, value, tf.zeros_like(value)), sample_weight=weight)
        skipped = 1 - tf.cast(finite, tf.int64)
        self.train_steps.assign_add(1)
        self.nonfinite_streak.assign((self.nonfinite_streak + skipped) * skipped)
        # The progress bar shows what a user reads: the skip counter stays a variable (the guard reads
        # it), and the multiplier only appears where it moves (GECO).
        logs = {name: t.result() for name, t in self.trackers.items()
                if name != "lagrange_multiplier" or self.config.objective == "geco"}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker logs with a mean over axis 0, which needs rank >= 1; the
            # values are already global (all-reduced above), so the mean returns them unchanged.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def test_step(self, data):
        frames = data["frames"] if isinstance(data, dict) else data
        terms = self.compute_losses(frames, training=False)
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        return {name: t.result() for name, t in self.trackers.items()}
