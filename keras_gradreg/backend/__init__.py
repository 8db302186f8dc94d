"""What differs per Keras backend, one small module each (as Keras splits its trainers).

The mathematics (the direction, the norms, the finite difference, the objectives, the
lazy schedule's weighting, the trackers, the attacks' steps) is written once, in
keras.ops (penalty.py, models/, attacks/); a backend module supplies only the input
gradient (`clean_pass`, `value_and_gradient`), the stateless random draws, how the
attacks are compiled and batched (`compiled`, `fused`, `PADDING`, `SPLITS_BATCHES`), and
the training and evaluation steps around an objective (`train_step`, `test_step`: how the
weight gradient is taken, how a skipped step is skipped, how replicas agree).
"""

import importlib
import sys
import types
from typing import Any, Callable

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")
"""The Keras backends with a module here; importing keras_gradreg under another raises."""

KERAS_VERSIONS_CHECKED = ("3.15.1",)
"""Keras releases the private APIs below were checked on (the whole suite passes)."""
PRIVATE_KERAS_APIS = (
    # (owner, attribute, where keras_gradreg uses it)
    ("keras.Model", "_make_function",
     "backend/{tensorflow,jax}.lazy_train_function: fit's step function (TensorFlow, JAX)"),
    ("keras.Model", "_compile_config", "models/stepped.compiled_loss_fn: compile's loss_weights"),
    ("keras.Model", "_losses_override", "models/gradreg.GradRegModel: add_loss losses on JAX"),
    ("keras.Model", "_call_has_training_arg", "backend/jax.clean_pass (JAX)"),
    ("keras.Model", "_get_state_sharding_spec", "backend/jax.lazy_train_function (JAX)"),
    ("keras.Variable", "_value", "backend/jax.keeps_variables (JAX)"),
    ("keras.utils.Progbar", "_dynamic_display", "evaluation/progress.progress_bar: a line per update in a log"),
    ("tensorflow", "__internal__.distribute.strategy_supports_no_merge_call",
     "backend/tensorflow._apply_if (TensorFlow)"),
)
"""Every private Keras (or TensorFlow) API keras_gradreg uses; tests/test_backends.py fails
naming the one a Keras upgrade removed."""


def check_supported() -> str:
    """The Keras backend's name; ImportError unless keras_gradreg supports it."""
    name = keras.backend.backend()
    if name not in SUPPORTED_BACKENDS:
        raise ImportError(
            f"keras_gradreg supports the Keras backends {', '.join(SUPPORTED_BACKENDS)}; "
            f"KERAS_BACKEND is {name!r}. Set KERAS_BACKEND=tensorflow (the default; one "
            "machine, CPUs or GPUs), KERAS_BACKEND=jax (several machines) or "
            "KERAS_BACKEND=torch (one device) before importing keras."
        )
    return name


_FRAMEWORKS = {"tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax", "torch": "torch"}
"""Top-level modules of tensor types, by the Keras backend whose tensors they are."""


def check_tensor(name: str, value: Any) -> None:
    """A ValueError naming it if `value` is a tensor of another Keras backend's framework
    than the running one's (a PyTorch tensor handed to a model on JAX): NumPy arrays and
    the running backend's own tensors pass."""
    framework = _FRAMEWORKS.get(type(value).__module__.split(".")[0])
    here = keras.backend.backend()
    if framework is not None and framework != here:
        raise ValueError(
            f"{name} is a {framework} tensor ({type(value).__name__}) but Keras runs on "
            f"{here!r}: pass NumPy arrays (e.g. np.asarray({name}) on the CPU) or {here} tensors.")


def current() -> types.ModuleType:
    """The module of the running Keras backend (keras_gradreg.backend.tensorflow, .jax or
    .torch).

    keras_gradreg imports it with the package, so that a call inside a traced function
    (an attack's graph) finds it in sys.modules and imports nothing while tracing."""
    name = f"{__name__}.{check_supported()}"
    return sys.modules.get(name) or importlib.import_module(name)


def clean_pass(model: Callable, x: Any, y: Any, loss_fn: Callable, training: bool,
               differentiable: bool = False):
    """The model at x: its outputs, the per-example loss and its input gradient, taken by
    the running backend's module (a per_example.CleanPass).

    Integer inputs (e.g. uint8 pixels) are cast to float first; gradients, a step h and a
    direction are then in the input's own units. The model's state (BatchNorm statistics,
    seeds) is updated as by an ordinary call. `differentiable`: the weights' gradient
    will flow through the input gradient (double backpropagation, GradAlign), which
    PyTorch must record while taking it; TensorFlow's tape and JAX differentiate it on
    demand either way.
    """
    return current().clean_pass(model, x, y, loss_fn, training, differentiable)


def value_and_gradient(fn: Callable, x: Any) -> tuple:
    """(values, aux, gradient): `fn(x) -> (per-example values, aux)` at x, and the
    gradient of the values' sum with respect to x, shaped like x: the input gradient of
    every attack step and bound, taken by the running backend's module."""
    return current().value_and_gradient(fn, x)
