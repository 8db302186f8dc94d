"""Test set-up: two logical CPUs, so MirroredStrategy really runs two replicas; on the
JAX backend (tests/test_backends.py runs the `every_backend` tests there) float64 on."""

import gc
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # read by JAX at import; the float64 tests need it
if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker per core: one TensorFlow thread per op in
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")  # it and in the processes it starts

# The example scripts' shared modules (shared_flags, regimes, experiments), as the scripts
# themselves find them beside them.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "examples"))

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
)
assert len(tf.config.list_logical_devices("CPU")) == 2, "the distribution tests need 2 CPUs"
# TensorFlow and Keras leave millions of long-lived objects; a full garbage collection
# walked them all (0.4-0.8 s, measured), and Keras' clear_session ran one after each test:
# a quarter of the suite's time. Frozen, they are never walked again.
gc.freeze()


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Each test starts from the default dtype policy and a seeded RNG."""
    keras.utils.set_random_seed(0)
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session(free_memory=False)  # Python's own collections still run


@pytest.fixture(scope="session")
def trained_cnn():
    """The main job's small CNN trained 2 epochs on the offline digits, and its test digits."""
    import keras_gradreg as kg

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = kg.load_offline_mnist()
    model = kg.architectures.small_cnn((28, 28, 1), 10)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=128, epochs=2, verbose=0)
    return model, x_test, y_test


LONGEST_FIRST = (
    "tests/test_examples.py::test_the_paper_imagenet_",  # minutes each (ResNet-50, the
    "tests/test_examples.py::test_the_paper_cifar10_",  # ResNeXt): one per worker
    "tests/test_backends.py::test_the_shared_tests_pass_on",  # a pytest process per backend
    "tests/test_backends.py::test_models_attacks_and_protocols_agree_across_backends",
    "tests/distribution/test_multi_host.py::test_two_",  # two or three JAX processes each
    "tests/distribution/test_multi_worker.py::",
    "tests/test_examples.py::test_reproduce_on_tiny_settings",
    "tests/test_frontier.py::test_a_tiny_frontier",
    "tests/test_frontier.py::test_an_l2_frontier",
    "tests/training/test_paper_recipes.py::",  # the paper's networks, half a minute each
)
"""Tests of a minute or more (most start processes): started first, so that no worker
starts one when the other is nearly done (pyproject.toml: xdist's worksteal schedule)."""


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: not item.nodeid.startswith(LONGEST_FIRST))  # stable
    if keras.backend.backend() == "torch":  # steps run eagerly there (tests/helpers.run_model_test)
        for item in items:
            if getattr(item, "callspec", None) and item.callspec.params.get("jit_compile") is True:
                item.add_marker(pytest.mark.skip(reason="PyTorch refuses jit_compile=True"))


if keras.backend.backend() == "torch":
    # Keras 3.15 promotes float64 to float32 on PyTorch (and JAX) like JAX without x64
    # (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE), and PyTorch's matmul
    # follows it, so a float64 model computes in float32. The float64 references of the
    # PyTorch pass need float64 kept, as JAX_ENABLE_X64 keeps it on JAX.
    from keras.src.backend.common import dtypes as _dtypes

    _dtypes.BIT64_TO_BIT32_DTYPE["float64"] = "float64"
