"""The judge: each attack compiled once per model, and the model not kept alive by it."""

import gc
import weakref

import keras
import numpy as np
import pytest

from helpers import FAST
from helpers import TraceCounter
from helpers import evaluation_problem
from helpers import judge_for
import keras_gradreg as kg

pytestmark = pytest.mark.every_backend


TINY = kg.AutoAttackBudget(apgd_steps=5, target_classes=3, fab_steps=5, square_queries=20)
"""Budgets too small to break much: what is compiled, not what it finds, is tested here."""


def test_each_attack_is_compiled_once_per_model_and_the_model_is_not_kept_alive():
    """A second evaluation of the same model (another protocol, other radii) traces at most
    a graph for any batch size (TensorFlow relaxes the first size's), a third nothing;
    the compiled functions go when the model goes."""
    model, x, y, _, _ = evaluation_problem(seed=12, n=20, classes=4)
    counter = TraceCounter()
    model = keras.Sequential([keras.Input(x.shape[1:]), counter, model])
    kwargs = dict(attacks=("apgd_ce", "fab_t"), epsilons=(0.05, 0.1), budget=FAST,
                  lower_bound=False, sanity_checks=False, verbose=0)
    kg.evaluate_robustness(model, x, y, **kwargs)
    kg.evaluate_autoattack(model, x, y, epsilons=[0.05, 0.1], budget=TINY,
                           verbose=0)
    first = len(counter.traces)
    assert first > 0
    compiles = kg.backend.current().COMPILES_STEPS  # eager PyTorch counts every call
    for again in range(2):
        kg.evaluate_robustness(model, x, y, **dict(kwargs, epsilons=(0.02, 0.2)))
        kg.evaluate_autoattack(model, x, y, epsilons=0.2, budget=TINY,
                               seed=3, verbose=0)
        if not again:
            second = len(counter.traces)
            if keras.backend.backend() == "tensorflow":  # (JAX traces each batch size)
                assert all(size is None for size in counter.traces[first:]), counter.traces
    if compiles:
        assert len(counter.traces) == second
    held = weakref.ref(model)
    del model
    gc.collect()
    assert held() is None


def test_an_example_counts_when_misclassified_in_range_and_within_its_radius():
    model, x, y, _, _ = evaluation_problem(seed=1, n=8)
    verify = judge_for(model, x, "linf", batch_size=4).verify
    other = (y + 1) % 3  # a label the model does not predict: every x is "misclassified" by it
    ok, size = verify(x, x, other)
    assert ok.all() and (size == 0).all()
    assert not verify(x, x, y)[0].any()  # correctly classified
    outside = x.copy()
    outside[0, 0, 0, 0] = 1.5
    assert not verify(outside, x, other)[0][0]  # outside the data range
    moved = x + 0.02
    ok, size = verify(moved, x, other, epsilon=np.full(8, 0.01))
    np.testing.assert_allclose(size, 0.02, rtol=1e-5)
    assert not ok.any() and verify(moved, x, other, epsilon=0.03)[0].all()


def test_top_k_misclassification_counts_the_classes_scoring_strictly_higher():
    logits = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 2.0, 1.0], [1.0, 1.0, 0.0, 5.0]], "float32")
    y = np.array([0, 0, 1])

    def fooled(k):
        return keras.ops.convert_to_numpy(kg.attacks.judge.fooled(logits, y, k)).tolist()

    assert fooled(1) == [False, True, True]
    assert fooled(2) == [False, True, False]  # a tie is no higher
    assert fooled(3) == [False, True, False]
    model, x, labels, _, scores = evaluation_problem(seed=2, n=16)
    for k in (1, 2):
        verifier = judge_for(model, x, "l2", batch_size=5)
        verifier.top_k = k
        higher = (scores > scores[np.arange(16), labels][:, None]).sum(1)
        np.testing.assert_array_equal(verifier.misclassified(x, labels), higher >= k)
        np.testing.assert_array_equal(verifier.verify(x, x, labels)[0], higher >= k)
