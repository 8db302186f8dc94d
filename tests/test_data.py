"""The offline MNIST digits: shapes, ranges, a fixed stratified split, no network."""

import numpy as np

import keras_gradreg as kg


def test_offline_mnist_split_is_stratified_fixed_and_in_range():
    (x_train, y_train), (x_test, y_test) = kg.load_offline_mnist(seed=0)
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0.0 == x_train.min() and x_train.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)
    np.testing.assert_array_equal(np.bincount(y_train), [400] * 10)
    (again, _), (again_test, _) = kg.load_offline_mnist(seed=0)
    np.testing.assert_array_equal(again, x_train)
    (_, _), (other_test, _) = kg.load_offline_mnist(seed=1)
    assert not np.array_equal(other_test, again_test)
    # no digit is in both halves
    train_keys = {img.tobytes() for img in x_train}
    assert not any(img.tobytes() in train_keys for img in x_test)
