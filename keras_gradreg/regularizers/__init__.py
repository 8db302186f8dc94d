"""Regularisers of adversarial training, one file each, by name (REGULARIZERS): each adds
a per-example value, weighted, to AdversarialTrainingModel's objective (see base.py)."""

from keras_gradreg import validation
from keras_gradreg.regularizers.base import Context
from keras_gradreg.regularizers.base import Regularizer
from keras_gradreg.regularizers.grad_align import GradAlign
from keras_gradreg.regularizers.gradient_penalty import GradientPenalty
from keras_gradreg.regularizers.local_linearity import AdaptiveLocalLinearity
from keras_gradreg.regularizers.local_linearity import LocalLinearity
from keras_gradreg.regularizers.local_linearity import local_linearity_error
from keras_gradreg.regularizers.local_linearity import sample_local_linearity_triplet
from keras_gradreg.regularizers.trades import Trades

REGULARIZERS = {
    "local_linearity": LocalLinearity,
    "adaptive_local_linearity": AdaptiveLocalLinearity,
    "gradient_penalty": GradientPenalty,
    "grad_align": GradAlign,
    "trades": Trades,
}
"""Each regulariser by name: ELLE and ELLE-A (Abad Rocamora et al., ICLR 2024), this
library's finite-difference penalty (Finlay & Oberman 2019), GradAlign (Andriushchenko
& Flammarion, NeurIPS 2020) and TRADES (Zhang et al., ICML 2019)."""
NAMES = ("none",) + tuple(REGULARIZERS)
"""Every value of `regularizer=` (and --regularizer): "none" and the regularisers."""


def check(regularizer: str, weight: float) -> float:
    """The weight as a float; a ValueError naming a bad regulariser name or weight (a
    regulariser needs a weight > 0, and a weight > 0 needs a regulariser)."""
    validation.check_choice("regularizer", regularizer, NAMES)
    weight = validation.check_number("regularizer_weight", weight, low_open=False)
    if (regularizer == "none") != (weight == 0):
        raise ValueError(
            f"regularizer={regularizer!r} with regularizer_weight={weight!r}: a regulariser "
            f"needs a weight > 0, and a weight > 0 needs a regulariser (one of "
            f"{', '.join(REGULARIZERS)}).")
    return weight


def get(regularizer: str) -> Regularizer:
    """A new instance of the regulariser of that name ("none": None)."""
    return None if regularizer == "none" else REGULARIZERS[regularizer]()


__all__ = (
    "AdaptiveLocalLinearity",
    "check",
    "Context",
    "get",
    "GradAlign",
    "GradientPenalty",
    "local_linearity_error",
    "LocalLinearity",
    "NAMES",
    "Regularizer",
    "REGULARIZERS",
    "sample_local_linearity_triplet",
    "Trades",
)
