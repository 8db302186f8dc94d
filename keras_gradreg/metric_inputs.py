"""How GradRegModel shows its inputs to the bound metrics it was compiled with (a Keras
metric sees only labels and predictions; LipschitzBound and CurvatureBound need the model
and x). Free of TensorFlow, so the models import it on every backend."""

import contextlib
import threading
from typing import Any

import keras

_FEED = threading.local()  # .stack: (model, inputs, cache) of the enclosing model_inputs


def fed() -> list:
    """The (model, inputs, cache) entries of the enclosing `model_inputs`, innermost last."""
    return getattr(_FEED, "stack", [])


@contextlib.contextmanager
def model_inputs(model: Any, x: Any):
    """Lets bound metrics called inside see the model and its inputs.

    GradRegModel wraps its evaluation `compute_metrics` in it, which is how
    `compile(metrics=[...])` feeds the bound metrics. In a custom loop, call
    `metric.update_from_model` instead. With model None the metrics record nothing.
    """
    _FEED.stack = fed() + [(model, x, {})]
    try:
        yield
    finally:
        _FEED.stack = fed()[:-1]


def paused():
    """Bound metrics called inside record nothing (GradRegModel's training steps)."""
    return model_inputs(None, None)


def metric_names(model: keras.Model) -> list:
    """Names (as in the logs) of the metrics compiled into a model that need its inputs
    (those with `needs_model_inputs`: the bound metrics)."""
    names = []
    for metric in model.metrics:
        for member in getattr(metric, "metrics", [metric]):
            if getattr(member, "needs_model_inputs", False):
                names.append(member.name)
    return names
