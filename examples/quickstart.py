"""Trains a GradRegModel on the offline MNIST digits and prints its test metrics: the
smallest complete run of `compile` and `fit`.

    python examples/quickstart.py --epochs=3 --penalty_weight=1 --attack_norm=linf
"""

from absl import app
from absl import flags
import keras

import keras_gradreg as kg
import shared_flags

shared_flags.define_training_flags(only=("epochs", "penalty_weight", "h", "attack_norm"))
FLAGS = flags.FLAGS


def main(argv):
    del argv
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = kg.load_offline_mnist()
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(inputs)
    hidden = keras.layers.Conv2D(32, 3, strides=2, activation="relu")(hidden)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(hidden))
    model = kg.GradRegModel(inputs, outputs, penalty_weight=FLAGS.penalty_weight, h=FLAGS.h,
                            attack_norm=FLAGS.attack_norm)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=128, epochs=FLAGS.epochs,
              validation_data=(x_test, y_test), verbose=2)
    results = model.evaluate(x_test, y_test, verbose=0, return_dict=True)
    print("test:", ", ".join(f"{k} {v:.4f}" for k, v in sorted(results.items())))


if __name__ == "__main__":
    app.run(main)
