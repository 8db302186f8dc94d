"""The optimizer a run is given: the paper's schedules and the paper's kind of weight decay."""

import keras
import pytest

from keras_gradreg import optimizers
from keras_gradreg import training


def _rate(optimizer, step):
    """The optimizer's learning rate at an optimizer step."""
    optimizer.iterations.assign(int(step))
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def test_the_paper_schedule_steps_down_five_times_at_30_60_and_80_percent():
    config = training.TrainConfig(model_dir="", optimizer="sgd", learning_rate=0.1,
                                  schedule="paper", epochs=200)
    optimizer = training.recipe.make_optimizer(config, steps_per_epoch=10)
    rates = {epoch: _rate(optimizer, epoch * 10) for epoch in (0, 59, 61, 119, 121, 159, 161)}
    assert rates == pytest.approx({0: 0.1, 59: 0.1, 61: 0.02, 119: 0.02, 121: 0.004,
                                   159: 0.004, 161: 0.0008})


def test_the_imagenet_schedule_is_the_authors_per_image_rates_over_the_run():
    config = training.TrainConfig(model_dir="", optimizer="sgd", learning_rate=0.25,
                                  schedule="paper_imagenet", epochs=29, batch_size=256)
    optimizer = training.recipe.make_optimizer(config, steps_per_epoch=100)
    # the authors' lr / global batch, times 256: 0.25/512 -> 0.5/512 over epochs 0-8, ...
    for epoch, authors in ((0, 0.25 / 512), (8, 0.5 / 512), (15, 0.1 / 192), (25, 0.01 / 192),
                           (28.5, (0.000625 + 0.0000625) / 2 / 128)):
        assert _rate(optimizer, epoch * 100) == pytest.approx(256 * authors, rel=2e-3), epoch
    assert _rate(optimizer, 14.99 * 100) == pytest.approx(256 * 0.0625 / 512, rel=2e-2)  # the jump
    shorter = training.recipe.make_optimizer(training.TrainConfig(
        model_dir="", optimizer="sgd", learning_rate=0.25, schedule="paper_imagenet",
        epochs=58), steps_per_epoch=100)
    assert _rate(shorter, 16 * 100) == pytest.approx(_rate(optimizer, 8 * 100))  # scaled to --epochs


def test_l2_is_the_coupled_decay_of_sgd_and_refused_elsewhere():
    config = training.check_config(training.TrainConfig(model_dir="", optimizer="sgd", l2=5e-4))
    optimizer = training.recipe.make_optimizer(config, steps_per_epoch=1)
    assert isinstance(optimizer, optimizers.CoupledWeightDecaySGD) and optimizer.l2 == 5e-4
    assert optimizer.momentum == 0.9 and "l2" in training.settings(config)
    assert training.settings(training.TrainConfig(model_dir=""))["l2"] == 0.0
    assert training.upgrade_settings({"method": "plain"})["l2"] == 0.0  # 0.6 runs match
    for bad in (dict(optimizer="adam", l2=5e-4), dict(optimizer="sgd", l2=5e-4, weight_decay=1e-4)):
        with pytest.raises(ValueError, match="l2=0.0005 is SGD's L2 weight decay"):
            training.check_config(training.TrainConfig(model_dir="", **bad))
    with pytest.raises(ValueError, match="l2"):
        training.check_config(training.TrainConfig(model_dir="", optimizer="sgd", l2=-1.0))
