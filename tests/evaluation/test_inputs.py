"""The evaluations' arguments and data, checked before any attack runs: every bad value
named with what is allowed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import evaluation_problem
import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(attack_norm="l1"), "attack_norm='l1'"),
        (dict(attacks=("deepfool",)), "attack='deepfool' is not supported"),
        (dict(attack_norm="linf", attacks=("cw",)), "'cw' does not support attack_norm='linf'"),
        (dict(epsilons=(0.1, 1.5)), r"epsilon=1.5 .*an l_inf radius within the data range \[0, 1\]"),
        (dict(epsilons=(0.0,)), "epsilon=0.0"),
        (dict(epsilons=()), r"epsilons=\(\) names no radius"),
        (dict(epsilons=(float("nan"),)), "epsilon=nan"),
        (dict(clip_max=0.5), "outside the declared range"),
        (dict(num_images=0), "num_images=0"),
    ],
)
def test_bad_input_is_rejected_before_any_attack(kwargs, match):
    model, x, y, _, _ = evaluation_problem()
    with pytest.raises(ValueError, match=match):
        kg.evaluate_robustness(model, x, y, verbose=0, **kwargs)


def test_no_images_and_images_the_model_does_not_take_are_refused_by_name():
    model, x, y, _, _ = evaluation_problem()
    with pytest.raises(ValueError, match="x holds no images"):
        kg.evaluate_robustness(model, x[:0], y[:0], verbose=0)
    with pytest.raises(ValueError, match="The dataset holds no images"):
        kg.evaluate_robustness(model, tf.data.Dataset.from_tensor_slices((x[:0], y[:0])), verbose=0)
    with pytest.raises(ValueError, match=r"takes images of shape \(2, 2, 1\); x holds images of "
                                         r"shape \(4,\)"):
        kg.evaluate_robustness(model, x.reshape(len(x), 4), y, verbose=0)


def test_bad_labels_and_outputs_are_rejected():
    model, x, y, _, _ = evaluation_problem()
    with pytest.raises(ValueError, match="labels"):
        kg.evaluate_robustness(model, x, y[:-1], verbose=0)
    with pytest.raises(ValueError, match=r"integers in \[0, 3\)"):
        kg.evaluate_robustness(model, x, y + 3, verbose=0)
    flat = keras.Model(model.inputs, keras.layers.Flatten()(model.inputs[0])[:, :1])
    with pytest.raises(ValueError, match="class scores"):
        kg.evaluate_robustness(flat, x, y, verbose=0)


def test_images_with_nan_are_refused_naming_the_first():
    model, x, y, _, _ = evaluation_problem()
    x = x.copy()
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf, the first at index 3"):
        kg.evaluate_robustness(model, x, y, verbose=0)


def test_string_labels_are_named_before_any_attack():
    model, x, y, _, _ = evaluation_problem()
    with pytest.raises(ValueError, match="Labels of dtype <U1 are not class indices"):
        kg.evaluate_robustness(model, x, np.array(list("abcdefghijkl"))[:len(y)], verbose=0)


def _tensor_of(framework: str, array: np.ndarray):
    """array as a tensor of `framework` (skips where it is not installed)."""
    if framework == "tensorflow":
        return tf.constant(array)
    module = pytest.importorskip(framework)
    return module.numpy.asarray(array) if framework == "jax" else module.from_numpy(array)


@pytest.mark.parametrize("framework", ["tensorflow", "jax", "torch"])
def test_tensors_of_another_backend_are_named_and_the_running_ones_pass(framework):
    model, x, y, _, _ = evaluation_problem()
    here = keras.backend.backend()
    if framework == here:
        x_here, y_here = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(y)
        report, = kg.evaluate_autoattack(model, x_here, y_here, epsilons=0.1, budget="quick",
                                         attacks=("apgd_ce",), verbose=0)
        reference, = kg.evaluate_autoattack(model, x, y, epsilons=0.1, budget="quick",
                                            attacks=("apgd_ce",), verbose=0)
        np.testing.assert_array_equal(report.broken_by, reference.broken_by)
        return
    named = f"is a {framework} tensor .* but Keras runs on '{here}'"
    with pytest.raises(ValueError, match="x " + named):
        kg.evaluate_robustness(model, _tensor_of(framework, x), y, verbose=0)
    with pytest.raises(ValueError, match="y " + named):
        kg.evaluate_autoattack(model, x, _tensor_of(framework, y), epsilons=0.1, verbose=0)
    with pytest.raises(ValueError, match="adversarial " + named):
        kg.evaluate_autoattack(model, x, y, epsilons=0.1, adversarial=_tensor_of(framework, x),
                               verbose=0)
