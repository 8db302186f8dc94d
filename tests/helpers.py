"""Small models and reference computations shared by the tests."""

import keras
import numpy as np


def linear_classifier(num_features=5, num_classes=3, dtype="float32", seed=0):
    """logits = x W + b, with random non-zero W and b."""
    rng = np.random.default_rng(seed)
    inputs = keras.Input((num_features,), dtype=dtype)
    dense = keras.layers.Dense(num_classes, dtype=dtype)
    model = keras.Model(inputs, dense(inputs))
    dense.set_weights([rng.normal(size=(num_features, num_classes)), rng.normal(size=num_classes)])
    return model


def small_cnn(activation="softplus", dtype=None, batchnorm=False, dropout=0.0, seed=0):
    """A tiny CNN on 6x6x2 inputs with 3 classes, seeded layers (dtype None: the policy)."""
    init = keras.initializers.GlorotUniform(seed=seed)
    layers = [
        keras.Input((6, 6, 2), dtype=dtype),
        keras.layers.Conv2D(4, 3, activation=activation, kernel_initializer=init, dtype=dtype),
    ]
    if batchnorm:
        layers.append(keras.layers.BatchNormalization(dtype=dtype))
    if dropout:
        layers.append(keras.layers.Dropout(dropout, seed=seed, dtype=dtype))
    layers += [
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(3, kernel_initializer=init, dtype=dtype),
    ]
    return keras.Sequential(layers)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def linear_input_gradient(model, x, y):
    """grad_x of the per-example cross-entropy of a linear classifier, in closed form."""
    w, b = [np.asarray(v, dtype=np.float64) for v in model.get_weights()]
    p = softmax(x @ w + b)
    p[np.arange(len(y)), y] -= 1.0
    gradient = p @ w.T
    assert gradient.shape == x.shape
    return gradient


def numpy_direction(g, norm):
    if norm == "l2":
        n = np.linalg.norm(g, axis=1, keepdims=True)
        return np.divide(g, n, out=np.zeros_like(g), where=n > 0)
    if norm == "l1":
        return np.sign(g) / np.sqrt(g.shape[1])
    d = np.zeros_like(g)
    j = np.argmax(np.abs(g), axis=1)
    d[np.arange(len(g)), j] = np.sign(g[np.arange(len(g)), j])
    return d


def batch(n=8, shape=(5,), num_classes=3, seed=1, dtype="float32"):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n,) + tuple(shape)).astype(dtype)
    y = rng.integers(0, num_classes, size=n)
    return x, y
