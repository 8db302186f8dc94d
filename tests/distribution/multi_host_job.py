"""One process of the multi-host tests: GradRegModel `fit` under keras.distribution (JAX).

Usage: python multi_host_job.py OUTPUT NUM_PROCESSES PROCESS_ID PORT

Trains a float64 GradRegModel for a few steps on global batches of 8 (each process gets
the same dataset; keras.distribution shards it) and saves the weights to OUTPUT.npz;
then, from the same start, feeds each process its own part of each batch instead, the
mistake the test must catch, and saves those weights to OUTPUT-pre_sharded.npz.
Then the same global batches through AdversarialTrainingModel (N-FGSM with ELLE-A: random
draws and a state shared by all processes; 2-step PGD-AT; TRADES) and
FreeAdversarialTrainingModel: OUTPUT-SUFFIX.npz each.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"

import jax  # noqa: E402

output, num_processes, process_id, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
if num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id,
                               initialization_timeout=60)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gradreg as kg  # noqa: E402
from helpers import batch, small_cnn  # noqa: E402

keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))
x, y = batch(n=32, shape=(6, 6, 2), dtype="float64")
examples = tf.data.Dataset.from_tensor_slices((x, y))
ADVERSARIAL = {
    "-single_step": dict(attack="n_fgsm", regularizer="adaptive_local_linearity",
                         regularizer_weight=30.0),
    "-pgd_at": dict(attack="pgd", steps=2),
    "-trades": dict(attack="pgd", steps=2, start=0.1, regularizer="trades", regularizer_weight=6.0),
}
feeds = {"": examples.batch(8),
         "-pre_sharded": examples.shard(num_processes, process_id).batch(8 // num_processes),
         **{suffix: examples.batch(8) for suffix in ADVERSARIAL}, "-free_at": examples.batch(8)}
for suffix, data in feeds.items():
    keras.utils.set_random_seed(0)
    if suffix in ADVERSARIAL:
        model = kg.AdversarialTrainingModel.from_model(
            small_cnn(dtype="float64"), epsilon=0.1, seed=3, **ADVERSARIAL[suffix])
    elif suffix == "-free_at":
        model = kg.FreeAdversarialTrainingModel.from_model(small_cnn(dtype="float64"),
                                                           epsilon=0.1, replays=2)
    else:
        model = kg.GradRegModel.from_model(small_cnn(dtype="float64"), penalty_weight=1.0,
                                           attack_norm="linf", penalty_every=2)
    model.compile(keras.optimizers.SGD(0.5, momentum=0.5),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64"))
    history = model.fit(data, epochs=2, verbose=0)
    if process_id == 0:
        np.savez(output + suffix, *model.get_weights(), loss=history.history["loss"])
print("done", jax.process_count(), flush=True)
