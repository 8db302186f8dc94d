"""The judge: each attack compiled once per model, and the model not kept alive by it."""

import gc
import weakref

import numpy as np
import tensorflow as tf

from helpers import FAST
from helpers import evaluation_problem
from helpers import judge_for
import keras_gradreg as kg
from keras_gradreg.attacks import judge


def test_each_attack_is_compiled_once_per_model_and_the_model_is_not_kept_alive():
    """A second evaluation of the same model (another protocol, another radius) traces
    nothing new; the compiled functions go when the model goes."""
    model, x, y, _, _ = evaluation_problem(seed=12, n=20, classes=4)
    kwargs = dict(attacks=("apgd_ce", "fab_t"), epsilons=(0.05, 0.1), budget=FAST,
                  lower_bound=False, verbose=0)
    kg.evaluate_robustness(model, x, y, **kwargs)
    kg.evaluate_autoattack(model, x, y, epsilons=[0.05, 0.1], budget=kg.attacks.SEARCH_BUDGET,
                           verbose=0)

    def compiled(of):
        """{attack: [each of its graphs' tracing counts]}"""
        return {key: [f.experimental_get_tracing_count() for graphs in per_shape.values()
                      for f in graphs.values()]
                for key, per_shape in judge.compiled_for(of).items()
                if isinstance(per_shape, dict)}

    first = compiled(model)
    kg.evaluate_robustness(model, x, y, **dict(kwargs, epsilons=(0.02, 0.2)))
    kg.evaluate_autoattack(model, x, y, epsilons=0.2, budget=kg.attacks.SEARCH_BUDGET,
                           seed=3, verbose=0)
    again = compiled(model)
    # apgd_ce, fab_t and square (the masking check's) serve both protocols at this budget,
    # beside the two PGDs of the checks and the cascade's apgd_t: none is built twice,
    # each graph traced once, at most two a shape (the first batch size met, then any)
    assert again.keys() == first.keys() and len(first) == 6
    assert all(counts == [1] * len(counts) and len(counts) <= 2 for counts in again.values())
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
    fooled = judge.fooled
    logits = tf.constant([[3.0, 2.0, 1.0, 0.0], [0.0, 3.0, 2.0, 1.0], [1.0, 1.0, 0.0, 5.0]])
    y = tf.constant([0, 0, 1], tf.int64)
    assert fooled(logits, y, 1).numpy().tolist() == [False, True, True]
    assert fooled(logits, y, 2).numpy().tolist() == [False, True, False]  # a tie is no higher
    assert fooled(logits, y, 3).numpy().tolist() == [False, True, False]
    model, x, labels, _, scores = evaluation_problem(seed=2, n=16)
    for k in (1, 2):
        verifier = judge_for(model, x, "l2", batch_size=5)
        verifier.top_k = k
        higher = (scores > scores[np.arange(16), labels][:, None]).sum(1)
        np.testing.assert_array_equal(verifier.misclassified(x, labels), higher >= k)
        np.testing.assert_array_equal(verifier.verify(x, x, labels)[0], higher >= k)
