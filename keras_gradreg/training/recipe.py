"""What a run is built from: its model, wrapped for its method, its optimizer, and
held-out images."""

from typing import Optional

import keras

from keras_gradreg import architectures
from keras_gradreg import data as data_lib
from keras_gradreg import datasets
from keras_gradreg import models
from keras_gradreg import optimizers
from keras_gradreg.regularizers import trades
from keras_gradreg.training.config import PAPER_IMAGENET_SCHEDULE
from keras_gradreg.training.config import PAPER_SCHEDULE
from keras_gradreg.training.config import TrainConfig
from keras_gradreg.training.config import step_jit_compile


def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The run's optimizer; the paper's schedule counts optimizer updates (free adversarial
    training makes `replays` of them per batch)."""
    if config.method == "free_at":
        steps_per_epoch *= config.replays
    learning_rate = config.learning_rate
    if config.schedule == "paper":
        boundaries = [int(f * config.epochs * steps_per_epoch) for f, _ in PAPER_SCHEDULE]
        values = [config.learning_rate] + [config.learning_rate * m for _, m in PAPER_SCHEDULE]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.schedule == "paper_imagenet":
        last = PAPER_IMAGENET_SCHEDULE[-1][0]
        learning_rate = optimizers.PiecewiseLinear(
            [e / last * config.epochs * steps_per_epoch for e, _ in PAPER_IMAGENET_SCHEDULE],
            [config.learning_rate * m for _, m in PAPER_IMAGENET_SCHEDULE])
    if config.optimizer == "sgd" and config.l2:
        return optimizers.CoupledWeightDecaySGD(learning_rate, momentum=0.9, l2=config.l2,
                                                decay_biases=config.decay_biases)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=False,
                                    weight_decay=config.weight_decay or None)
    return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay) \
        if config.weight_decay else keras.optimizers.Adam(learning_rate)


def wrap(config: TrainConfig, base: keras.Model) -> keras.Model:
    """`base` wrapped for the run's method, not yet compiled: the one place a method
    becomes a model (training runs and the benchmark alike)."""
    threat = dict(epsilon=config.epsilon, attack_norm=config.attack_norm, seed=config.seed)
    if config.method == "plain":
        return base
    if config.method == "free_at":
        return models.FreeAdversarialTrainingModel.from_model(base, replays=config.replays,
                                                              **threat)
    if config.method == "trades":
        return models.AdversarialTrainingModel.from_model(
            base, attack="pgd", steps=config.attack_steps, step_size=trades.STEP_SIZE,
            start=trades.START, regularizer="trades", regularizer_weight=config.trades_beta,
            **threat)
    if config.method in ("pgd_at", "fgsm_rs", "n_fgsm"):
        return models.AdversarialTrainingModel.from_model(
            base, attack="pgd" if config.method == "pgd_at" else config.method,
            steps=config.attack_steps, regularizer=config.regularizer,
            regularizer_weight=config.regularizer_weight, h=config.h, **threat)
    return models.GradRegModel.from_model(
        base, penalty_weight=config.penalty_weight, h=config.h, attack_norm=config.attack_norm,
        difference=config.difference, penalty_every=config.penalty_every,
        penalty_power=config.penalty_power, clean_weight=config.clean_weight,
        penalty_warmup=config.penalty_warmup,
        epsilon=config.epsilon if config.penalty_power == 1 else None,
        estimator="double_backprop" if config.method == "double_backprop" else "finite_difference")


def build(config: TrainConfig) -> keras.Model:
    """The model of a run, wrapped for its method, not yet compiled."""
    info = datasets.DATASETS[config.dataset]
    return wrap(config, architectures.build_model(config.model, info.image_shape,
                                                  info.num_classes, config.activation))


def compiled(config: TrainConfig, steps_per_epoch: int) -> keras.Model:
    """The model of a run, wrapped for its method and compiled as the run trains it: its
    optimizer and schedule, sparse cross-entropy on logits, accuracy."""
    model = build(config)
    model.compile(optimizer=make_optimizer(config, steps_per_epoch),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=step_jit_compile(config.jit_compile))
    return model


def test_images(dataset: str, num_images: int, *, data_dir: Optional[str] = None,
                download: bool = False) -> tuple:
    """The first `num_images` test images and labels of a dataset, as NumPy arrays."""
    test_split = datasets.DATASETS[dataset].splits[1]
    return data_lib.dataset_arrays(data_lib.load_dataset(
        dataset, test_split, batch_size=256, data_dir=data_dir, download=download, limit=num_images))
