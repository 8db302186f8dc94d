"""CleverHans' CW-L2 and SPSA, which break on Keras 3 without the adapters."""

import numpy as np

from helpers import FAST
from helpers import evaluation_problem
from helpers import linear_distance
import keras_gradreg as kg


def test_carlini_wagner_and_spsa_run_on_keras_3():
    """cleverhans 4.0.0's own CW-L2 and SPSA fail on Keras 3; the adapters must keep working."""
    model, x, y, w, logits = evaluation_problem(seed=4, n=4)
    cw = kg.evaluate_robustness(model, x, y, attack_norm="l2", attacks=("cw",), settings=FAST,
                                sanity_checks=False, lower_bound=False, verbose=0)
    assert np.all(np.isfinite(cw.distances))
    spsa = kg.evaluate_robustness(model, x, y, attack_norm="linf", attacks=("spsa",), settings=FAST,
                                  sanity_checks=False, lower_bound=False, verbose=0)
    assert np.sum(np.isfinite(spsa.distances)) >= 2  # gradient-free and given few steps
    assert np.all(spsa.distances >= linear_distance(w, logits, y, "linf") * (1 - 1e-4))
