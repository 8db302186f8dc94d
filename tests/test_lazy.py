"""`import keras_gradreg` imports what saved models name and nothing heavier than Keras
itself does: CleverHans, the data pipelines and mlxtend wait until asked for, and on JAX
TensorFlow is not imported."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("tensorflow", "cleverhans", "tensorflow_datasets", "mlxtend", "matplotlib.pyplot")
PROBE = f"""
import sys
import keras
before = set(sys.modules)
import keras_gradreg as kg
print(sorted(m for m in {HEAVY!r} if m in sys.modules and m not in before))
kg.attacks.registry.make_attack
print('cleverhans' in sys.modules)
kg.attacks.cleverhans
print('cleverhans' in sys.modules)
"""


@pytest.mark.processes
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_the_import_loads_no_cleverhans_and_on_jax_no_tensorflow(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded, after_registry, after_adapters = result.stdout.strip().splitlines()[-3:]
    assert loaded == "[]"  # beyond what Keras imports (on TensorFlow: TensorFlow itself)
    # the attacks' registry (TensorFlow) does not import CleverHans; its adapters do
    assert (after_registry, after_adapters) == ("False", "True")
