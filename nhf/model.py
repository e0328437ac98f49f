"""`NHFModel`: a `HamiltonianFlowDensity` as a Keras 3 model, trained by `fit`, scored by `evaluate`.

    density = build_density(2, data=train)
    model = NHFModel(density, objective="elbo")
    model.compile(AveragedGradientAdam(1e-2))
    model.build_all()                                 # the optimizer's slots for the density's variables
    model.fit(data.samples.sample_batches(train, 256, seed=0, momenta=1), steps_per_epoch=1000, epochs=3)
    model.evaluate(tf.data.Dataset.from_tensor_slices({"q": test}).batch(500))  # {"nll": ...}

(`nhf.training.build_model` does the first four lines from a config.) Batches (see
`data.samples.sample_batches`): density mode `{"q": [B, d], "noise": [B, K, d]}`
(the K standard-normal momentum draws of each point travel with it, so a batch split across
replicas carries its own noise); VI mode `{"seed": [B, 2]}` (the step's stateless seed on every
row; the rows only fix the batch size).

The density is a `tf.Module` (TFP), whose variables Keras 3 does not track: the model lists them
itself (`density_variables`) for the gradient, the optimizer and the checkpoint
(`nhf.training.checkpoint_manager`). Each step under a `tf.distribute` strategy: every replica
computes the loss and gradient of its equal share (XLA-compiled when `jit_compile`), the loss
and gradients are averaged across replicas (MEAN all-reduce), the averaged gradient is clipped
by its global norm and applied only if loss and gradient are finite (the decision is taken on
averaged values, so every replica takes the same branch); `AveragedGradientAdam` then updates
every copy of the variables without a second all-reduce.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

import keras
import tensorflow as tf

from common.callbacks import BuiltAhead
from nhf.density import HamiltonianFlowDensity

Tensor = tf.Tensor
LogProbFn = Callable[[Tensor], Tensor]
MODES = ("density", "vi")
OBJECTIVES = ("elbo", "iwae")


class AveragedGradientAdam(keras.optimizers.Adam):
    """Adam for gradients that are already averaged across replicas (see `NHFModel.train_step`).

    Applied in a replica context, Keras's TensorFlow optimizer first all-reduce-SUMs the
    gradients. The NHF step averages and clips the gradients itself, so this optimizer skips
    that sum and only updates every copy of the mirrored variables with the same,
    already-reduced gradient. Under the default strategy it is plain Adam.
    """

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)


class NHFModel(BuiltAhead, keras.Model):
    """A Neural Hamiltonian Flow density as a Keras model.

    Args:
      density: the `HamiltonianFlowDensity` (built under the strategy the model trains under).
      mode: `density` (maximise a bound on log p of the batch's points) or `vi` (maximise the
        ELBO of `target_log_prob` under the flow: reverse KL).
      objective: density mode: `elbo` (averaged over the momenta) or `iwae` (log-mean-exp).
      global_batch_size: B, the batch size before any split across replicas (VI mode draws the
        prior samples of the whole batch, so that the draws do not depend on the replicas).
      clip_norm: gradient clipping by global norm.
      target_log_prob: VI mode: the unnormalised log density of the target over q.
      eval_momenta: K of the IWAE bound in `test_step`.
      jit_compile: XLA-compile each replica's loss and gradient.

    Attributes:
      train_steps: batches consumed by training (the resume counter; counts skipped steps too).
      nonfinite_streak: consecutive steps skipped because loss or gradient was not finite.
      lr_scale: multiplies the learning-rate schedule (lowered by rollbacks, checkpointed).

    Raises:
      ValueError: an unknown `mode` or `objective`, or VI mode without `target_log_prob`.
    """

    def __init__(self, density: HamiltonianFlowDensity, *, mode: str = "density", objective: str = "elbo",
                 global_batch_size: int = 256, clip_norm: float = 10.0, target_log_prob: Optional[LogProbFn] = None,
                 eval_momenta: int = 32, jit_compile: bool = True, name: str = "nhf", **kwargs):
        super().__init__(name=name, **kwargs)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
        if mode == "vi" and target_log_prob is None:
            raise ValueError("mode 'vi' needs target_log_prob")
        self.density = density
        self.mode, self.objective, self.global_batch_size = mode, objective, global_batch_size
        self.clip_norm, self.target_log_prob, self.eval_momenta = clip_norm, target_log_prob, eval_momenta
        # Counters updated in replica context: every replica computes the same value (the
        # finite check is on averaged values), so the first replica's update stands.
        self.train_steps = self.add_weight(name="train_steps", shape=(), dtype="int64", initializer="zeros",
                                           trainable=False, aggregation="only_first_replica")
        self.nonfinite_streak = self.add_weight(name="nonfinite_streak", shape=(), dtype="int64",
                                                initializer="zeros", trainable=False, aggregation="only_first_replica")
        self.lr_scale = self.add_weight(name="lr_scale", shape=(), initializer="ones", trainable=False,
                                        aggregation="only_first_replica")
        self.trackers = {n: keras.metrics.Mean(name=n) for n in ("loss", "grad_norm")}
        self.test_tracker = keras.metrics.Mean(name="nll" if mode == "density" else "loss")
        self._replica_gradients = tf.function(self._loss_and_gradients, jit_compile=jit_compile,
                                              reduce_retracing=True)

    @property
    def metrics(self):
        return [*self.trackers.values(), self.test_tracker]

    @property
    def density_variables(self) -> List[tf.Variable]:
        """The trainable variables of the density (Keras 3 does not see them: see the module docstring)."""
        return list(self.density.trainable_variables)

    def build_all(self) -> "NHFModel":
        """Creates the optimizer's slots for the density's variables; call after `compile`."""
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.density_variables)
        self.built = True
        return self


    def call(self, q, training=False):
        """The IWAE bound (K = `eval_momenta`) at points q `[batch, d]`."""
        return self.density.iwae_bound(q, self.eval_momenta, seed=tf.constant([0, 0], tf.int32))

    # ------------------------------------------------------------------ losses
    def density_loss(self, q: Tensor, noise: Tensor) -> Tensor:
        """-mean bound of the points q `[b, d]` with their momentum noise `[b, K, d]`."""
        bound = self.density.iwae_bound if self.objective == "iwae" else self.density.elbo
        return -tf.reduce_mean(bound(q, noise=tf.transpose(noise, [1, 0, 2])))

    def vi_loss(self, seeds: Tensor, replica) -> Tensor:
        """-mean VI log weight of this replica's share of the global batch.

        The prior draws of the whole global batch come from the step's seed (`seeds[0]`) and are
        reparameterised (a learned prior gets its pathwise gradient); each replica keeps its slice.
        """
        local = tf.shape(seeds)[0]
        x0 = self.density.prior.sample(self.global_batch_size, seed=seeds[0])
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync
        if replicas > 1:
            x0 = tf.gather(tf.reshape(x0, [replicas, local, -1]), replica)
        return -tf.reduce_mean(self.density.vi_log_weights(self.target_log_prob, local, base_samples=x0))

    def _loss_and_gradients(self, data: Dict[str, Tensor], replica):
        variables = self.density_variables
        with tf.GradientTape() as tape:
            if self.mode == "vi":
                loss = self.vi_loss(data["seed"], replica)
            else:
                loss = self.density_loss(data["q"], data["noise"])
        return loss, tape.gradient(loss, variables)

    # ------------------------------------------------------------------ steps
    def _apply(self, grads) -> None:
        self.optimizer.apply(grads, self.density_variables)  # already averaged: no further all-reduce

    def train_step(self, data):
        """One step on this replica's share of the batch (see the module docstring)."""
        ctx = tf.distribute.get_replica_context()
        loss, grads = self._replica_gradients(data, ctx.replica_id_in_sync_group)
        if ctx.num_replicas_in_sync > 1:  # equal shares: the mean of the replicas' means is the global mean
            loss, grads = ctx.all_reduce(tf.distribute.ReduceOp.MEAN, (loss, grads))
        grads, norm = tf.clip_by_global_norm(grads, tf.cast(self.clip_norm, loss.dtype))
        finite = tf.math.is_finite(loss) & tf.math.is_finite(norm)
        # A non-finite step is skipped: nothing NaN reaches the weights, so none reaches a checkpoint.
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            tf.cond(finite, lambda: self._apply(grads), lambda: None)
        else:
            # MirroredStrategy: the optimizer synchronises through merge_call, which may not sit
            # inside a cond in replica context; decide in cross-replica context and apply in each
            # replica from there (as hgn.model.HGN.train_step does).
            def cross_replica(distribution, grads, finite):
                def apply():
                    distribution.extended.call_for_each_replica(self._apply, args=(grads,))

                tf.cond(distribution.experimental_local_results(finite)[0], apply, lambda: None)

            ctx.merge_call(cross_replica, args=(grads, finite))
        weight = tf.cast(finite, tf.float32)
        for name, value in (("loss", loss), ("grad_norm", norm)):
            value = tf.cast(value, tf.float32)
            self.trackers[name].update_state(tf.where(finite, value, tf.zeros_like(value)), sample_weight=weight)
        skipped = 1 - tf.cast(finite, tf.int64)
        self.train_steps.assign_add(1)
        self.nonfinite_streak.assign((self.nonfinite_streak + skipped) * skipped)
        logs = {name: t.result() for name, t in self.trackers.items()}  # the skip counter stays a variable
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras reduces multi-worker logs with a mean over axis 0, which needs rank >= 1; the
            # values are already global (all-reduced above), so the mean returns them unchanged.
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def test_step(self, data):
        """Density mode: the mean negative IWAE bound (K = `eval_momenta`) of the batch's points
        `{"q": [b, d]}` (momenta from a fixed seed); VI mode: the VI loss of `{"seed": [b, 2]}`."""
        if self.mode == "vi":
            value = self.vi_loss(data["seed"], 0)
        else:
            value = -tf.reduce_mean(self.call(data["q"]))
        self.test_tracker.update_state(tf.cast(value, tf.float32))
        return {self.test_tracker.name: self.test_tracker.result()}
