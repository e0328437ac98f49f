"""A few steps of linear regression under a strategy; prints one JSON line of losses.

Run by tests/test_common_distribute.py in subprocesses (the CPU can only be split into logical
devices before TensorFlow initialises, so each strategy gets a fresh process).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common.distribute import is_chief, make_strategy, set_determinism  # noqa: E402


def main(name):
    set_determinism(0)
    strategy = make_strategy(name, replicas=2)
    with strategy.scope():
        w = tf.Variable(tf.ones([4, 1]))
        optimizer = keras.optimizers.Adam(0.1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.arange(4.0).reshape(4, 1)).astype("float32")
    global_batch = 16
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch))

    @tf.function
    def step(batch):
        def replica_step(batch):
            xb, yb = batch
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum((xb @ w - yb) ** 2) / global_batch
            optimizer.apply_gradients(zip(tape.gradient(loss, [w]), [w]))
            return loss

        return strategy.reduce("SUM", strategy.run(replica_step, args=(batch,)), axis=None)

    losses = [float(step(b)) for b in dataset]
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "losses": losses, "chief": is_chief(strategy)}))


if __name__ == "__main__":
    main(sys.argv[1])
