"""kg.layers.Conv2D: Keras' grouped convolution, group by group, without XLA."""

import os

import keras
import numpy as np
import pytest

import keras_gradreg as kg
from keras_gradreg import layers

ON_TENSORFLOW = keras.backend.backend() == "tensorflow"


def grouped_convolution(x, kernel, bias, groups, stride):
    """NumPy: a 'valid' grouped convolution of NHWC images, filter f seeing group
    f // (filters / groups) of the input's channels."""
    kh, kw, per_group, filters = kernel.shape
    rows = (x.shape[1] - kh) // stride + 1
    cols = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], rows, cols, filters))
    for f in range(filters):
        group = f // (filters // groups)
        channels = x[..., group * per_group:(group + 1) * per_group]
        for i in range(rows):
            for j in range(cols):
                patch = channels[:, i * stride:i * stride + kh, j * stride:j * stride + kw]
                out[:, i, j, f] = np.einsum("nhwc,hwc->n", patch, kernel[..., f]) + bias[f]
    return out


def _random_layer(groups, **kwargs):
    layer = layers.Conv2D(6 if groups != 4 else 8, 3, groups=groups, **kwargs)
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 4)).astype("float32")
    layer.build(x.shape)
    rng = np.random.default_rng(1)
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])
    return layer, x


@pytest.mark.every_backend
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("stride", [1, 2])
def test_a_grouped_convolution_equals_numpys(groups, stride):
    layer, x = _random_layer(groups, strides=stride)
    kernel, bias = layer.get_weights()
    expected = grouped_convolution(x.astype("float64"), kernel, bias, groups, stride)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.every_backend
@pytest.mark.skipif(ON_TENSORFLOW, reason="TensorFlow has no channels-first convolution on CPU")
def test_channels_first_splits_the_channel_axis():
    layer, x = _random_layer(2)
    first = layers.Conv2D(6, 3, groups=2, data_format="channels_first")
    first.build((2, 4, 7, 7))
    first.set_weights(layer.get_weights())
    out = first(np.transpose(x, (0, 3, 1, 2)))
    np.testing.assert_allclose(np.transpose(keras.ops.convert_to_numpy(out), (0, 2, 3, 1)),
                               keras.ops.convert_to_numpy(layer(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_it_equals_keras_grouped_convolution_and_its_gradient(padding):
    import tensorflow as tf

    ours, x = _random_layer(2, strides=2, padding=padding)
    theirs = keras.layers.Conv2D(6, 3, groups=2, strides=2, padding=padding)
    theirs.build(x.shape)
    theirs.set_weights(ours.get_weights())
    x = tf.constant(x)
    results = []
    for layer in (ours, theirs):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer(x)
            loss = tf.reduce_sum(out**2)
        results.append((out, tape.gradient(loss, x)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)


def _compiled_with_xla(layer, shape) -> bool:
    """Whether the layer's traced graph, or a function it calls, must be compiled by XLA."""
    import tensorflow as tf

    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    functions = [f.attr for f in graph.library.function]
    return any(n.attr["_XlaMustCompile"].b for n in nodes) or any(
        a["_XlaMustCompile"].b for a in functions)


def test_no_xla_where_keras_compiles_the_grouped_convolution_with_it():
    ours, _ = _random_layer(2)
    theirs = keras.layers.Conv2D(6, 3, groups=2)
    assert _compiled_with_xla(theirs, (2, 7, 7, 4))  # what the layer is for
    assert not _compiled_with_xla(ours, (2, 7, 7, 4))


def _models(size=8):
    """The same small ResNeXt-like model with Keras' Conv2D and with ours, same weights."""
    built = []
    for conv in (keras.layers.Conv2D, layers.Conv2D):
        inputs = keras.Input((size, size, 4))
        y = keras.layers.Conv2D(4, 1, name="plain")(inputs)
        y = conv(4, 3, groups=2, padding="same", name="grouped")(y)
        y = keras.layers.Conv2D(4, 1)(y)
        built.append(keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(y))))
    built[1].set_weights(built[0].get_weights())
    return built


def _assert_same_outputs(model, other, x):
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(x)),
                               keras.ops.convert_to_numpy(other(x)), rtol=1e-5, atol=1e-6)


def test_weights_saved_with_either_class_load_into_the_other(tmp_path):
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 4)).astype("float32")
    keras_model, ours = _models()
    for source, target in ((keras_model, ours), (ours, keras_model)):
        path = str(tmp_path / f"{type(source.layers[2]).__module__}.weights.h5")
        source.save_weights(path)
        target.set_weights([np.zeros_like(w) for w in target.get_weights()])
        target.load_weights(path)
        for a, b in zip(source.get_weights(), target.get_weights()):
            np.testing.assert_array_equal(a, b)
    _assert_same_outputs(ours, keras_model, x)


def test_a_checkpoint_of_a_run_with_keras_layer_resumes_with_ours(tmp_path):
    """What a 0.7.0 ResNeXt run interrupted and resumed with 0.7.1 does: the Checkpoint
    callback's save_weights, weights and optimizer state, loaded into the new model."""
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 4)).astype("float32")
    y = np.array([0, 1, 2, 0])
    trained = []
    for model in _models():
        model = kg.GradRegModel.from_model(model, attack_norm="linf")
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        trained.append(model)
    old, new = trained
    old.fit(x, y, batch_size=4, verbose=0)
    old.save_weights(str(tmp_path / "epoch-1.weights.h5"))
    new.optimizer.build(new.trainable_variables)
    new.load_weights(str(tmp_path / "epoch-1.weights.h5"))
    for a, b in zip(old.get_weights() + [v.numpy() for v in old.optimizer.variables],
                    new.get_weights() + [v.numpy() for v in new.optimizer.variables]):
        np.testing.assert_array_equal(a, b)
    assert any(np.any(v.numpy()) for v in new.optimizer.variables[2:])  # momentum carried


def test_a_saved_model_keeps_the_class_and_load_model_swaps_keras_grouped_layers(tmp_path):
    """As runs save them, in a GradRegModel (0.7.0 saved the ResNeXt with Keras' layer)."""
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 4)).astype("float32")
    keras_model, ours = _models()
    for name, model in (("keras", keras_model), ("ours", ours)):
        kg.GradRegModel.from_model(model, attack_norm="linf").save(str(tmp_path / f"{name}.keras"))
        loaded = layers.load_model(str(tmp_path / f"{name}.keras"))
        assert type(loaded.get_layer("grouped")) is layers.Conv2D
        assert type(loaded.get_layer("plain")) is keras.layers.Conv2D  # groups 1: left alone
        _assert_same_outputs(loaded, keras_model, x)
    loaded = keras.models.load_model(str(tmp_path / "ours.keras"))
    assert type(loaded.get_layer("grouped")) is layers.Conv2D  # registered: no custom_objects
    keras.Sequential([keras.Input((8, 8, 4)), keras_model]).save(str(tmp_path / "nested.keras"))
    inner = layers.load_model(str(tmp_path / "nested.keras")).layers[0]
    assert type(inner.get_layer("grouped")) is layers.Conv2D
