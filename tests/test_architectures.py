"""The model zoo: every model builds, and takes a training step with every method."""

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg import training

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _one_step(model, shape, classes=10):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4,) + shape).astype("float32")
    y = rng.integers(0, classes, 4)
    model.compile(keras.optimizers.SGD(0.01), CE)
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("method", training.TRAINING_METHODS)
@pytest.mark.parametrize("name,dataset", [("small_cnn", "offline_mnist"), ("cifar_resnet", "cifar10")])
def test_each_method_takes_a_step(name, dataset, method, tmp_path):
    config = training.TrainConfig(model_dir=str(tmp_path), dataset=dataset, model=name,
                                  method=method, activation="softplus")
    model = training.build(config)
    _one_step(model, kg.data.DATASETS[dataset].image_shape)


def test_papers_resnext_has_three_stages_of_five_grouped_bottlenecks():
    model = kg.architectures.build_model("resnext34_2x32", (8, 8, 3), 10, "smooth_relu")
    grouped = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.groups == 2]
    assert len(grouped) == 15
    assert all(type(l) is kg.layers.Conv2D for l in grouped)  # no XLA (tests/test_layers.py)
    assert model.output_shape == (None, 10)
    _one_step(kg.GradRegModel.from_model(model, attack_norm="l2"), (8, 8, 3))


def test_resnet50_takes_the_chosen_activation():
    model = kg.architectures.build_model("resnet50", (32, 32, 3), 7, "softplus")
    activations = {l.get_config()["activation"] for l in model.layers
                   if isinstance(l, keras.layers.Activation)}
    assert activations == {"softplus"}
    assert model.output_shape == (None, 7)


@pytest.mark.parametrize("activation,expected", [("gelu", keras.activations.gelu),
                                                 ("silu", keras.activations.silu),
                                                 ("elu", keras.activations.elu),
                                                 ("smooth_relu", kg.smooth_relu)])
def test_any_activation_keras_knows_is_taken(activation, expected):
    """The zoo's listed activations and any other name of keras.activations."""
    model = kg.architectures.build_model("small_cnn", (8, 8, 1), 3, activation)
    hidden = [l for l in model.layers if l.get_config().get("activation") not in (None, "linear")]
    assert len(hidden) == 3
    assert all(l.activation is expected for l in hidden)
    x = np.linspace(-2.0, 2.0, 7, dtype="float32")
    np.testing.assert_allclose(np.asarray(hidden[0].activation(x)), np.asarray(expected(x)))


@pytest.mark.parametrize("kwargs,match", [(dict(name="vgg"), "model='vgg'"),
                                          (dict(activation="gelu2"), "activation='gelu2'"),
                                          (dict(activation=None), "activation=None")])
def test_bad_model_arguments(kwargs, match):
    args = {"name": "small_cnn", "input_shape": (28, 28, 1), "num_classes": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        kg.architectures.build_model(**args)


def test_the_zoo_was_kg_models_until_0_5_and_that_name_now_says_where_it_went():
    """keras_gradreg.models holds the training models since 0.7; the zoo's builders asked
    for there are named in the error."""
    with pytest.raises(AttributeError, match="keras_gradreg.models.small_cnn is "
                                             "keras_gradreg.architectures.small_cnn"):
        kg.models.small_cnn  # pylint: disable=pointless-statement
    with pytest.raises(AttributeError, match="no attribute 'modles'"):
        kg.modles  # pylint: disable=pointless-statement
