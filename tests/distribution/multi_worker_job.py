"""One worker of the MultiWorkerMirroredStrategy test: trains and saves its weights.

Keras 3's own `fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585:
it reduces scalar logs over axis 0), so this drives GradRegModel.train_step from a
distributed loop, the recipe docs/guides/distributed.md gives.

Usage: python multi_worker_job.py OUTPUT.npz  (with TF_CONFIG set, or without for
the single-device reference run).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradreg as kg  # noqa: E402
from helpers import batch, small_cnn  # noqa: E402


def main(output):
    if "TF_CONFIG" in os.environ:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
    else:
        strategy = tf.distribute.OneDeviceStrategy("CPU:0")
    keras.utils.set_random_seed(0)
    x, y = batch(n=32, shape=(6, 6, 2), dtype="float64")
    with strategy.scope():
        model = kg.GradRegModel.from_model(small_cnn("softplus", dtype="float64"), penalty_weight=1.0, attack_norm="l2")
        model.compile(keras.optimizers.SGD(0.5),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).with_options(options)
    distributed = strategy.experimental_distribute_dataset(data)

    @tf.function
    def train_step(batch):
        return strategy.run(model.train_step, args=(batch,))

    for _ in range(2):
        for batch_data in distributed:
            train_step(batch_data)
    np.savez(output, *model.get_weights())


if __name__ == "__main__":
    main(sys.argv[1])
