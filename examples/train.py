"""Trains one model: plain, gradient-regularised, double backprop, or adversarial training
(PGD, fast: FGSM from a random start, N-FGSM, or free; single-step training optionally with a
regulariser against catastrophic overfitting).

    python examples/train.py --method=gradreg --attack_norm=linf --penalty_weight=1 --model_dir=runs/gr

The model is saved as MODEL_DIR/model.keras with its training time, TensorBoard logs in
MODEL_DIR/logs and the epoch history in MODEL_DIR/history.csv. If the process is killed,
the same command resumes from the last completed epoch.

On several machines (JAX backend; every machine has the data, process 0 writes model_dir):

    KERAS_BACKEND=jax python examples/train.py --strategy=data_parallel \
        --coordinator_address=HOST0:1234 --num_processes=2 --process_id=I --model_dir=runs/gr

Single-step training with the local-linearity regulariser (ELLE), no radius ramp:

    python examples/train.py --method=fgsm_at --at_epsilon=0.3 --at_ramp_epochs=0 \
        --at_regularizer=local_linearity --at_regularizer_weight=100 --model_dir=runs/elle

Paper's CIFAR-10 setting:
--dataset=cifar10 --model=resnext34_2x32 --optimizer=sgd --learning_rate=0.1
--schedule=paper --weight_decay=5e-4 --epochs=200 --cutout --penalty_weight=0.1.
"""

import dataclasses

from absl import app
from absl import flags

import keras_gradreg as kg
from keras_gradreg import training
from keras_gradreg import validation

_DEFAULTS = training.TrainConfig(model_dir="")
flags.DEFINE_string("model_dir", None, "Where the model, logs and backups go.", required=True)
flags.DEFINE_enum("dataset", _DEFAULTS.dataset, list(kg.data.DATASETS), "Dataset.")
flags.DEFINE_enum("model", _DEFAULTS.model, list(kg.architectures.MODELS), "Architecture.")
flags.DEFINE_enum("activation", _DEFAULTS.activation, list(kg.architectures.ACTIVATIONS),
                  "Activation of the zoo model.")
flags.DEFINE_enum("method", _DEFAULTS.method, list(training.TRAINING_METHODS), "Training method.")
flags.DEFINE_float("penalty_weight", _DEFAULTS.penalty_weight, "lambda of the penalty.")
flags.DEFINE_float("h", _DEFAULTS.h, "Finite-difference step, in input units.")
flags.DEFINE_enum("attack_norm", _DEFAULTS.attack_norm, list(kg.ATTACK_NORMS),
                  "Attack to defend against; the penalty is the squared dual norm of the input "
                  "gradient (linf: the paper's squared l1 penalty).")
flags.DEFINE_enum("difference", _DEFAULTS.difference, list(kg.DIFFERENCES),
                  "Finite difference.")
flags.DEFINE_integer("penalty_every", _DEFAULTS.penalty_every,
                     "Penalise every k-th step only, with k x penalty_weight (lazy regularisation).",
                     lower_bound=1)
flags.DEFINE_float("at_epsilon", _DEFAULTS.at_epsilon, "Adversarial training's radius.")
flags.DEFINE_enum("at_norm", _DEFAULTS.at_norm, list(kg.primitives.BALL_NORMS),
                  "Adversarial training's ball: linf or l2 (pgd_at, fgsm_at, n_fgsm).")
flags.DEFINE_integer("at_ramp_epochs", _DEFAULTS.at_ramp_epochs,
                     "Epochs over which adversarial training's radius ramps up from 0 (0: none).")
flags.DEFINE_enum("at_regularizer", _DEFAULTS.at_regularizer,
                  list(kg.adversarial_training.AT_REGULARIZERS),
                  "fgsm_at, n_fgsm: regulariser against catastrophic overfitting (ELLE, ELLE-A, "
                  "the finite-difference gradient penalty at --h, GradAlign).")
flags.DEFINE_float("at_regularizer_weight", _DEFAULTS.at_regularizer_weight,
                   "Weight of --at_regularizer (> 0 with one).")
flags.DEFINE_integer("at_steps", _DEFAULTS.at_steps, "pgd_at: PGD steps per batch.")
flags.DEFINE_integer("free_replays", _DEFAULTS.free_replays,
                     "free_at: replays m of each batch (train for epochs / m epochs).")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Epochs.")
flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size, "Global batch size.")
flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer, ["adam", "sgd"], "Adam, or SGD with momentum 0.9.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Initial learning rate.")
flags.DEFINE_enum("schedule", _DEFAULTS.schedule, list(training.SCHEDULES),
                  "constant, or the paper's x0.2 steps at 30/60/80% of the epochs.")
flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay, "Decoupled weight decay.")
flags.DEFINE_bool("cutout", _DEFAULTS.cutout, "Cutout 16 in the CIFAR augmentation.")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, list(training.STRATEGIES),
                  "default; mirrored (TensorFlow, one machine's GPUs); data_parallel (JAX: "
                  "KERAS_BACKEND=jax, every device of every process).")
flags.DEFINE_string("coordinator_address", None,
                    "data_parallel over several processes: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", _DEFAULTS.num_processes,
                     "data_parallel: processes in the run (one per machine).")
flags.DEFINE_integer("process_id", _DEFAULTS.process_id,
                     "data_parallel: this process, 0 .. num_processes - 1 (0 writes the files).")
flags.DEFINE_integer("coordinator_timeout", _DEFAULTS.coordinator_timeout,
                     "Seconds to wait for all processes to connect.")
flags.DEFINE_bool("mixed_precision", _DEFAULTS.mixed_precision, "mixed_float16 policy.")
flags.DEFINE_bool("jit_compile", _DEFAULTS.jit_compile, "XLA-compile the train step (always on under "
                  "JAX, where Keras without it runs each step op by op).")
flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of data order, augmentation and weights.")
flags.DEFINE_string("data_dir", None, "TFDS data directory.")
flags.DEFINE_bool("download", False, "Let TFDS download the dataset (needs network).")
flags.DEFINE_integer("train_limit", None, "Use only the first N training images.")
flags.DEFINE_bool("overwrite", False, "Start afresh, replacing a finished or unfinished run in MODEL_DIR.")
FLAGS = flags.FLAGS


def config_from_flags() -> training.TrainConfig:
    return training.TrainConfig(**{f.name: getattr(FLAGS, f.name)
                                   for f in dataclasses.fields(training.TrainConfig)})


def main(argv):
    del argv
    with validation.exit_on_bad_value("train.py"):
        config = training.validate(config_from_flags())
        training.check_model_dir(config)  # a finished run or other settings there
    _, history, seconds = training.train(config)
    last = {k: round(v[-1], 4) for k, v in history.history.items()} if history.history else {}
    penalised = ""
    if config.method in ("gradreg", "double_backprop"):
        dual = kg.DUAL_NORMS[config.attack_norm]
        penalised = f"penalised the squared {dual} norm of the input gradient (against {config.attack_norm}); "
    print(f"trained in {seconds:.1f} s; {penalised}last epoch: {last}")


if __name__ == "__main__":
    app.run(main)
