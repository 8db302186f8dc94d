"""Test set-up: two logical CPUs, so MirroredStrategy really runs two replicas; on the
JAX backend (tests/test_backends.py runs the `both_backends` tests there) float64 on."""

import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_ENABLE_X64", "1")  # read by JAX at import; the float64 tests need it

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
