"""Learning-rate schedules shared by both trainers: warm-up then cosine decay, with a scale.

The scale is a variable that the non-finite guard lowers at each rollback; it lives in the
checkpoint, so a lowered rate persists across a resume.
"""
from __future__ import annotations

from typing import Callable, Optional

import keras
import tensorflow as tf


class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """`schedule(step) * scale`, with `scale` a variable (lowered by rollbacks, checkpointed).

    `step_fn` (optional) replaces the optimizer's step count as the schedule's position, e.g.
    a position that follows a time budget (`hgn.model.HGN.schedule_step`).
    """

    def __init__(self, schedule: keras.optimizers.schedules.LearningRateSchedule, scale: tf.Variable,
                 step_fn: Optional[Callable[[], tf.Tensor]] = None):
        self.schedule = schedule
        self.scale = scale
        self.step_fn = step_fn

    def __call__(self, step):
        lr = self.schedule(self.step_fn() if self.step_fn is not None else step)
        return lr * tf.cast(self.scale, lr.dtype)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule)}


def warmup_cosine(peak: float, steps: int, warmup_steps: int = 0, final_fraction: float = 1.0
                  ) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warm-up from 0 to `peak` over `warmup_steps`, then cosine decay to `final_fraction * peak`
    at `steps` (`final_fraction=1` keeps the rate constant after the warm-up)."""
    decay_steps = max(steps - warmup_steps, 1)
    return keras.optimizers.schedules.CosineDecay(
        0.0 if warmup_steps else peak, decay_steps, alpha=final_fraction,
        warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)
