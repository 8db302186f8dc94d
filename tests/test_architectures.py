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
    _one_step(model, kg.datasets.DATASETS[dataset].image_shape)


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def _add_shapes(model):
    """The output shape of each residual addition, in order: the stages' shapes."""
    return [tuple(l.output.shape[1:]) for l in model.layers if isinstance(l, keras.layers.Add)]


def test_papers_resnext_is_the_authors_network():
    """cfinlay/tulip's ResNeXt34_2x32: their 3,892,298 trainable weights, three stages of
    five 2-branch blocks at 32, 64, 128 channels (32, 16, 8 pixels), the branches' mean,
    BatchNorm without scale before each bias, the activation on the logits too."""
    model = kg.architectures.build_model("resnext34_2x32", (32, 32, 3), 10)
    assert _trainable(model) == 3_892_298
    assert _add_shapes(model) == [(32, 32, 32)] * 5 + [(16, 16, 64)] * 5 + [(8, 8, 128)] * 5
    grouped = [l for l in model.layers if isinstance(l, keras.layers.Conv2D) and l.groups == 2]
    assert len(grouped) == 15 and all(type(l) is kg.layers.Conv2D for l in grouped)  # no XLA
    assert sum(isinstance(l, kg.layers.GroupMean) for l in model.layers) == 15
    assert not any(isinstance(l, keras.layers.Conv2D) and l.strides != (1, 1) for l in model.layers)
    assert sum(isinstance(l, keras.layers.AveragePooling2D) for l in model.layers) == 2
    unscaled = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)
                and not l.scale]
    assert len(unscaled) == 4  # the stem, the two 1x1 blocks, the logits' block
    assert all(l.center and l.momentum == 0.9 and l.epsilon == 1e-5 for l in unscaled)
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    assert np.all(np.asarray(model(x, training=True)) >= 0)  # ReLU on the logits
    _one_step(kg.GradRegModel.from_model(model, attack_norm="linf"), (32, 32, 3))


def test_papers_resnext_draws_its_weights_as_the_authors_do():
    """Uniform in +-1/sqrt(fan_in): convolutions, the linear layer and the blocks' biases."""
    model = kg.architectures.build_model("resnext34_2x32", (32, 32, 3), 10)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = np.asarray(layer.kernel)
            bound = np.float32(1 / np.sqrt(np.prod(kernel.shape[:-1])))  # drawn in float32
            assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.95 * bound
    stem = next(l for l in model.layers if isinstance(l, keras.layers.BatchNormalization))
    beta = np.asarray(stem.beta)
    assert 0.9 / np.sqrt(27) < np.abs(beta).max() <= np.float32(1 / np.sqrt(27))  # 3x3x3 inputs


def test_papers_resnet50_is_the_authors_network():
    """torchvision's ResNet-50 (25,557,032 trainable weights for 1,000 classes; the stride
    on the 3x3 convolutions) as the authors initialise it: each block's last BatchNorm
    scale 0, so each block starts as the identity (after the activation)."""
    model = kg.architectures.build_model("resnet50", (224, 224, 3), 1000)
    assert _trainable(model) == 25_557_032
    assert _add_shapes(model) == ([(56, 56, 256)] * 3 + [(28, 28, 512)] * 4
                                  + [(14, 14, 1024)] * 6 + [(7, 7, 2048)] * 3)
    assert not any(getattr(l, "use_bias", False) for l in model.layers
                   if isinstance(l, keras.layers.Conv2D))
    adds = [l for l in model.layers if isinstance(l, keras.layers.Add)]
    lasts = [l.input[1]._keras_history.operation for l in adds]  # the residual branch's BatchNorm
    assert all(isinstance(l, keras.layers.BatchNormalization) and not np.any(np.asarray(l.gamma))
               for l in lasts)
    classifier = model.layers[-1]
    assert abs(float(np.std(np.asarray(classifier.kernel))) - 0.01) < 5e-4
    probe = keras.Model(model.input, [adds[1].input[0], adds[1].output])  # no shortcut conv
    x = np.random.default_rng(0).uniform(size=(2, 224, 224, 3)).astype("float32")
    block_input, block_output = probe(x, training=True)
    np.testing.assert_allclose(np.asarray(block_output), np.asarray(block_input), atol=1e-6)


def test_group_mean_averages_consecutive_groups_of_channels():
    x = np.random.default_rng(0).normal(size=(2, 3, 3, 6)).astype("float32")
    layer = kg.layers.GroupMean(2)
    np.testing.assert_allclose(np.asarray(layer(x)), (x[..., :3] + x[..., 3:]) / 2, rtol=1e-6)
    assert layer.compute_output_shape((None, 3, 3, 6)) == (None, 3, 3, 3)
    clone = kg.layers.GroupMean.from_config(layer.get_config())
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(layer(x)))
    with pytest.raises(ValueError, match="groups=0"):
        kg.layers.GroupMean(0)
    with pytest.raises(ValueError, match="cannot split 6 channels"):
        kg.layers.GroupMean(4)(x)


@pytest.mark.parametrize("name", ["resnext34_2x32", "resnet50"])
def test_the_papers_networks_take_the_chosen_activation(name):
    model = kg.architectures.build_model(name, (32, 32, 3), 7, "softplus")
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
