"""What a run is built from: its model, wrapped for its method, its optimizer, and
held-out images."""

from typing import Optional

import keras

from keras_gradreg import adversarial_training
from keras_gradreg import data as data_lib
from keras_gradreg import model as model_lib
from keras_gradreg import architectures
from keras_gradreg.training.config import PAPER_SCHEDULE
from keras_gradreg.training.config import SINGLE_STEP
from keras_gradreg.training.config import TrainConfig

def make_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The run's optimizer; the paper's schedule counts optimizer updates (free adversarial
    training makes free_replays of them per batch)."""
    if config.method == "free_at":
        steps_per_epoch *= config.free_replays
    learning_rate = config.learning_rate
    if config.schedule == "paper":
        boundaries = [int(f * config.epochs * steps_per_epoch) for f, _ in PAPER_SCHEDULE]
        values = [config.learning_rate] + [config.learning_rate * m for _, m in PAPER_SCHEDULE]
        learning_rate = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=False,
                                    weight_decay=config.weight_decay or None)
    return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay) \
        if config.weight_decay else keras.optimizers.Adam(learning_rate)


def build(config: TrainConfig) -> keras.Model:
    """The model of a run, wrapped for its method, not yet compiled."""
    info = data_lib.DATASETS[config.dataset]
    base = architectures.build_model(config.model, info.image_shape, info.num_classes, config.activation)
    if config.method == "plain":
        return base
    if config.method == "pgd_at":
        return adversarial_training.AdversarialTrainingModel.from_model(
            base, epsilon=config.at_epsilon, steps=config.at_steps, seed=config.seed,
            attack_norm=config.at_norm)
    if config.method in SINGLE_STEP:
        return adversarial_training.SingleStepAdversarialModel.from_model(
            base, epsilon=config.at_epsilon, attack_norm=config.at_norm,
            method="fgsm_rs" if config.method == "fgsm_at" else "n_fgsm",
            regularizer=config.at_regularizer, regularizer_weight=config.at_regularizer_weight,
            h=config.h, seed=config.seed)
    if config.method == "free_at":
        return adversarial_training.FreeAdversarialTrainingModel.from_model(
            base, epsilon=config.at_epsilon, replays=config.free_replays, seed=config.seed)
    method = "double_backprop" if config.method == "double_backprop" else "finite_difference"
    return model_lib.GradRegModel.from_model(
        base, penalty_weight=config.penalty_weight, h=config.h, attack_norm=config.attack_norm,
        difference=config.difference, method=method, penalty_every=config.penalty_every)


def test_images(dataset: str, num_images: int, *, data_dir: Optional[str] = None,
                download: bool = False) -> tuple:
    """The first `num_images` test images and labels of a dataset, as NumPy arrays."""
    test_split = data_lib.DATASETS[dataset].splits[1]
    return data_lib.dataset_arrays(data_lib.load_dataset(
        dataset, test_split, batch_size=256, data_dir=data_dir, download=download, limit=num_images))
